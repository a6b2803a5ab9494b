"""Hostile input at the API (decision 0060): topology reports are checked like flows, and
no error echoes unbounded input (a 200 kB value used to come back whole in the status)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import grpc
import pytest
from synod.v1 import local_pb2
from synod.v1 import northbound_pb2 as nb

from controller.node import api
from controller.node.client import ClientError
from controller.node.codec import clip, value_pb
from controller.node.join import JOIN_SLOT, make_join_request
from controller.replication import Identity

DP1 = "0000000000000001"
HUGE = 200_000


def _row(table, key, **values):
    row = nb.Row(table=table, key=[value_pb(k) for k in key])
    for name, v in values.items():
        row.values[name].CopyFrom(value_pb(v))
    return row


def _refused(call, request) -> ClientError:
    with pytest.raises(ClientError) as e:
        call(request)
    return e.value


def test_a_topology_report_with_a_negative_port_is_refused_naming_row_and_field(solo):
    with solo.client() as c:
        report = local_pb2.TopologyReport(rows=[
            _row("switches", [DP1], master="edge1"),
            _row("ports", [DP1, -5], up=True),
        ])
        e = _refused(lambda r: c.call(c.local.ReportTopology, r), report)
        assert e.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "rows[1] (ports 0000000000000001/-5): port_no -5 is not an OpenFlow port" in str(e)
        for table in ("switches", "ports"):  # the whole report is refused
            assert not c.call(c.rows.List, nb.ListRequest(table=table)).rows
        for bad, needle in [
            (_row("hosts", ["00:01"], dpid=DP1), "mac '00:01' is not a MAC address"),
            (_row("links", [DP1, 1, DP1, 1], up=True), "two different ends"),
            (_row("hosts", ["00:00:00:00:00:01"], vlan=5000), "vlan 5000 is outside 0..4095"),
            (_row("switches", ["1"], master="x"), "dpid '1' is not a datapath id"),
        ]:
            e = _refused(lambda r: c.call(c.local.ReportTopology, r),
                         local_pb2.TopologyReport(rows=[bad]))
            assert e.code == grpc.StatusCode.INVALID_ARGUMENT and needle in str(e), str(e)
        r = c.call(c.local.ReportTopology, local_pb2.TopologyReport(rows=[
            _row("ports", [DP1, 1], up=True, mac="00:00:00:00:00:01"),
            _row("links", [DP1, 1, "0000000000000002", 1], up=True, latency_ms=0.5)]))
        assert r.rows == 2


@pytest.mark.parametrize("what", ["flow match", "flow id", "dpid", "table", "column", "sql",
                                  "report", "slot (backstop)", "revoke", "join address",
                                  "secede voter (backstop)"])
def test_errors_never_echo_a_200_kb_input(solo, what):
    """Each error is INVALID_ARGUMENT (or its usual code) with a short message, where the
    whole input used to come back (and then outgrew gRPC's limit on a status message)."""
    big = "x" * HUGE
    with solo.client() as c:
        put = lambda rows: c.call(c.rows.Put, nb.PutRequest(rows=rows))  # noqa: E731
        code = grpc.StatusCode.INVALID_ARGUMENT
        if what == "flow match":
            e = _refused(put, [_row("flows", [DP1, "f"], match=big, actions="drop")])
            assert "is not field=value" in str(e)  # the reason survives the cut
        elif what == "flow id":
            e = _refused(put, [_row("flows", [DP1, big], match="in_port=-1")])
        elif what == "dpid":
            e = _refused(put, [_row("flows", [big, "f"])])
        elif what == "table":
            e = _refused(put, [_row(big, ["k"])])
        elif what == "column":
            e = _refused(put, [_row("kv", ["k"], **{big: b"v"})])
        elif what == "sql":
            e = _refused(lambda r: c.call(c.rows.Query, r),  # statements stop at 100 kB
                         nb.QueryRequest(sql=f"SELECT '{big[:90_000]}"))
        elif what == "report":
            e = _refused(lambda r: c.call(c.local.ReportTopology, r),
                         local_pb2.TopologyReport(rows=[_row("hosts", [big])]))
        elif what == "slot (backstop)":
            e = _refused(lambda r: c.call(c.slots.Propose, r),
                         nb.ProposeRequest(slot=f"master/{big}", value=b"\x01"))
            code = grpc.StatusCode.FAILED_PRECONDITION
        elif what == "revoke":
            e = _refused(lambda r: c.call(c.admin.RevokeToken, r), nb.RevokeTokenRequest(id=big))
            code = grpc.StatusCode.NOT_FOUND
        elif what == "join address":  # the servicer aborts on its own context
            cid = bytes.fromhex(c.call(c.cluster.GetStatus, nb.GetStatusRequest()).cluster_id)
            e = _refused(lambda r: c.call(c.slots.Propose, r), nb.ProposeRequest(
                slot=JOIN_SLOT, value=make_join_request(Identity.generate(), cid, big)))
            assert "is not HOST:PORT (longer than 256 bytes)" in str(e)
        else:  # the servicer aborts on its own context, not through Api.call's handlers
            e = _refused(lambda r: c.call(c.lineage.Secede, r),
                         nb.SecedeRequest(voters=[big], confirmed_by="ops"))
            assert "is not one voter" in str(e)
            code = grpc.StatusCode.FAILED_PRECONDITION
    assert e.code == code, str(e)
    assert len(str(e)) <= 1_100, len(str(e))
    assert what == "sql" or "chars cut" in str(e) or "chars)" in str(e)


def test_clip_keeps_head_and_tail():
    assert clip("short") == "short"
    text = "a" * 150 + "b" * 1000 + "the reason"
    cut = clip(text, 200)
    assert cut.startswith("a" * 150) and cut.endswith("the reason")
    assert "[960 chars cut]" in cut and len(cut) < 230


class _Context:
    """What a servicer's abort needs of gRPC's context."""

    details: str | None = None

    async def abort(self, code, details=""):
        self.details = details
        raise RuntimeError("aborted")


class _Servicer:
    closed = False

    async def Unary(self, request, context):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "x" * HUGE)

    async def Stream(self, request, context):
        try:
            yield 1
            yield 2
        finally:
            self.closed = True


def test_a_servicers_own_abort_is_bounded_and_a_stream_still_ends():
    """servicers() gives every method a _BoundedStatus: an abort the servicer makes itself
    (not through Api.call's handlers) is cut at STATUS_CHARS_MAX too."""
    service = SimpleNamespace(methods=[SimpleNamespace(name="Unary"),
                                       SimpleNamespace(name="Stream")])
    servicer, context = api._bounded(_Servicer(), service), _Context()
    with pytest.raises(RuntimeError, match="aborted"):
        asyncio.run(servicer.Unary(None, context))
    assert context.details is not None and "chars cut" in context.details
    assert len(context.details) <= api.STATUS_CHARS_MAX + 30

    async def read_one() -> None:
        replies = servicer.Stream(None, _Context())
        assert await anext(replies) == 1
        await replies.aclose()  # the client went away
        assert servicer.closed  # the method's finally ran (a watcher is removed)

    asyncio.run(read_one())
