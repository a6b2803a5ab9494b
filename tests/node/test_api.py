"""The northbound and local APIs of a real in-process node over gRPC on loopback."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from synod.v1 import local_pb2
from synod.v1 import northbound_pb2 as nb

from controller.node.client import ClientError
from controller.node.codec import value_pb
from controller.replication import encode

from .conftest import InProcessNode

DP1, DP2, DP9 = "0000000000000001", "0000000000000002", "0000000000000009"


def _put(client, table, key, ack=nb.ACK_LOCAL, **values):
    row = nb.Row(table=table, key=[value_pb(k) for k in key])
    for name, v in values.items():
        row.values[name].CopyFrom(value_pb(v))
    return client.call(client.rows.Put, nb.PutRequest(rows=[row], ack=ack))


def _code(exc_info) -> grpc.StatusCode:
    return exc_info.value.code


def test_put_get_list_delete(solo):
    with solo.client() as c:
        r = _put(c, "flows", [DP1, "f1"], priority=10, match="in_port=1", actions="output:2")
        assert r.seq >= 2 and r.ack == nb.ACK_LOCAL and len(r.op_id) == 64
        _put(c, "flows", [DP1, "f2"], priority=20)
        _put(c, "flows", [DP2, "f1"], priority=30)
        got = c.call(c.rows.Get, nb.GetRequest(table="flows", key=[value_pb(DP1),
                                                                   value_pb("f1")]))
        assert got.found and got.row.values["priority"].int_value == 10
        listed = c.call(c.rows.List, nb.ListRequest(table="flows", key_prefix=[value_pb(DP1)]))
        assert [r.key[1].text_value for r in listed.rows] == ["f1", "f2"]
        c.call(c.rows.Delete, nb.DeleteRequest(table="flows", keys=[
            nb.KeyList(key=[value_pb(DP1), value_pb("f1")])]))
        got = c.call(c.rows.Get, nb.GetRequest(table="flows", key=[value_pb(DP1),
                                                                   value_pb("f1")]))
        assert not got.found
        q = c.call(c.rows.Query, nb.QueryRequest(sql="SELECT dpid, priority FROM flows "
                                                     "ORDER BY priority"))
        assert list(q.columns) == ["dpid", "priority"]
        assert [r.values[1].int_value for r in q.rows] == [20, 30]


def test_quorum_of_one_member_is_itself(solo):
    with solo.client() as c:
        r = _put(c, "kv", ["q"], ack=nb.ACK_QUORUM, value=b"x")
        assert r.ack == nb.ACK_QUORUM and r.holders == 1


@pytest.mark.parametrize("row, needle", [
    (nb.Row(table="nope"), "unknown table 'nope'"),
    (nb.Row(table="kv", key=[value_pb(1)]), "kv.key: bad key value"),
    (nb.Row(table="kv", key=[value_pb("a"), value_pb("b")]), "key needs 1 values"),
    (nb.Row(table="kv", key=[value_pb("a")], values={"valu": value_pb(b"")}),
     "no value column 'valu'"),
    (nb.Row(table="kv", key=[value_pb("a")], values={"value": value_pb("text")}),
     "kv.value: not blob"),
])
def test_bad_rows_are_invalid_argument_naming_the_problem(solo, row, needle):
    with solo.client() as c, pytest.raises(ClientError) as e:
        c.call(c.rows.Put, nb.PutRequest(rows=[row]))
    assert _code(e) == grpc.StatusCode.INVALID_ARGUMENT and needle in str(e.value)
    with solo.client() as c:  # and the node keeps serving
        assert c.call(c.cluster.GetDigest, nb.GetDigestRequest()).ops >= 1


def test_tokens_and_roles(solo):
    with solo.client() as admin:
        viewer = admin.call(admin.admin.CreateToken, nb.CreateTokenRequest(role="viewer")).token
        oper = admin.call(admin.admin.CreateToken, nb.CreateTokenRequest(role="operator"))
        with pytest.raises(ClientError) as e:
            admin.call(admin.admin.CreateToken, nb.CreateTokenRequest(role="god"))
        assert _code(e) == grpc.StatusCode.INVALID_ARGUMENT and "unknown role" in str(e.value)
    with solo.client(viewer) as c:
        c.call(c.cluster.GetStatus, nb.GetStatusRequest())
        with pytest.raises(ClientError) as e:
            _put(c, "kv", ["a"], value=b"")
        assert _code(e) == grpc.StatusCode.PERMISSION_DENIED
        assert "role viewer may not write table 'kv' (access policy v0)" in str(e.value)
    with solo.client(oper.token) as c:
        _put(c, "kv", ["a"], value=b"")
        with pytest.raises(ClientError) as e:
            c.call(c.admin.ListTokens, nb.ListTokensRequest())
        assert _code(e) == grpc.StatusCode.PERMISSION_DENIED
    with solo.client() as admin:
        ids = {t.id for t in admin.call(admin.admin.ListTokens, nb.ListTokensRequest()).tokens}
        assert oper.info.id in ids
        admin.call(admin.admin.RevokeToken, nb.RevokeTokenRequest(id=oper.info.id))
    with solo.client(oper.token) as c, pytest.raises(ClientError) as e:
        _put(c, "kv", ["a"], value=b"")
    assert _code(e) == grpc.StatusCode.UNAUTHENTICATED and "revoked" in str(e.value)
    for token, needle in (("", "missing"), ("synod_0123456789abcdef.nope", "unknown token"),
                          ("garbage", "malformed")):
        with solo.client(token) as c, pytest.raises(ClientError) as e:
            c.call(c.cluster.GetStatus, nb.GetStatusRequest())
        assert _code(e) == grpc.StatusCode.UNAUTHENTICATED and needle in str(e.value)


@pytest.mark.parametrize("sql, code, needle", [
    ("DELETE FROM kv", grpc.StatusCode.INVALID_ARGUMENT, "not authorized"),
    ("INSERT INTO kv VALUES ('x', NULL)", grpc.StatusCode.INVALID_ARGUMENT, "not authorized"),
    ("SELEC 1", grpc.StatusCode.INVALID_ARGUMENT, "syntax error"),
    ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c",
     grpc.StatusCode.RESOURCE_EXHAUSTED, "ms limit"),
    ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 50) SELECT x FROM c",
     grpc.StatusCode.RESOURCE_EXHAUSTED, "more than 10 rows"),
])
def test_sql_is_read_only_and_bounded(solo, sql, code, needle):
    with solo.client() as c, pytest.raises(ClientError) as e:
        c.call(c.rows.Query, nb.QueryRequest(sql=sql, row_limit=10), timeout_s=20)
    assert _code(e) == code and needle in str(e.value)


def test_oversized_request_is_refused_and_nothing_is_lost(tmp_path):
    from controller.node.datadir import init_data_dirs

    init_data_dirs([tmp_path / "n"], "big")
    node = InProcessNode(tmp_path / "n", api={"message_bytes_max": 64 << 10}).start()
    try:
        with node.client() as c:
            _put(c, "kv", ["keep"], value=b"1")
            with pytest.raises(ClientError) as e:
                _put(c, "kv", ["big"], value=b"x" * (128 << 10))
            assert _code(e) == grpc.StatusCode.RESOURCE_EXHAUSTED
            got = c.call(c.rows.Get, nb.GetRequest(table="kv", key=[value_pb("keep")]))
            assert got.found
    finally:
        node.stop()


def test_a_flooding_client_is_limited_and_others_still_served(tmp_path):
    from controller.node.datadir import init_data_dirs

    init_data_dirs([tmp_path / "n"], "rate")
    node = InProcessNode(tmp_path / "n", api={"rate_per_s": 20.0, "burst": 20}).start()
    try:
        with node.client() as admin:
            other = admin.call(admin.admin.CreateToken, nb.CreateTokenRequest(role="viewer"))
            codes = []
            for _ in range(60):
                try:
                    admin.call(admin.cluster.GetDigest, nb.GetDigestRequest())
                    codes.append("ok")
                except ClientError as e:
                    codes.append(e.code)
            assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes and codes[0] == "ok"
        with node.client(other.token) as c:
            assert c.call(c.cluster.GetDigest, nb.GetDigestRequest()).ops >= 1
    finally:
        node.stop()


def test_watch_sends_snapshot_then_changes(solo):
    with solo.client() as c:
        _put(c, "hosts", ["aa:bb"], ip="10.0.0.1")
        events = []
        got_two = threading.Event()

        def watch():
            for ev in c.stream(c.rows.Watch, nb.WatchRequest(table="hosts")):
                events.append(ev)
                if len(events) == 3:
                    got_two.set()
                    return

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        for _ in range(100):
            if events:
                break
            threading.Event().wait(0.02)
        _put(c, "hosts", ["cc:dd"], ip="10.0.0.2")
        c.call(c.rows.Delete, nb.DeleteRequest(table="hosts",
                                               keys=[nb.KeyList(key=[value_pb("aa:bb")])]))
        assert got_two.wait(10)
        assert events[0].snapshot and events[0].row.key[0].text_value == "aa:bb"
        assert not events[1].snapshot and events[1].row.key[0].text_value == "cc:dd"
        assert events[2].deleted and events[2].row.key[0].text_value == "aa:bb"


def test_local_api_flows_for_my_switches_and_topology_reports(solo):
    with solo.client() as c:
        _put(c, "flows", [DP1, "f1"], priority=1)
        _put(c, "flows", [DP9, "f1"], priority=1)
        stream = c.local.WatchFlows(local_pb2.WatchFlowsRequest(dpids=[DP1]),
                                    metadata=c.metadata, timeout=5)
        first = next(iter(stream))
        assert first.snapshot and first.flow.key[0].text_value == DP1
        stream.cancel()
        report = local_pb2.TopologyReport(rows=[
            nb.Row(table="switches", key=[value_pb(DP1)], values={"name": value_pb("sw1")}),
            nb.Row(table="hosts", key=[value_pb("00:00:00:00:00:01")],
                   values={"dpid": value_pb(DP1)}),
        ])
        r = c.call(c.local.ReportTopology, report)
        assert r.rows == 2
        with pytest.raises(ClientError) as e:
            c.call(c.local.ReportTopology, local_pb2.TopologyReport(rows=[
                nb.Row(table="flows", key=[value_pb(DP1), value_pb("x")])]))
        assert _code(e) == grpc.StatusCode.INVALID_ARGUMENT and "not topology" in str(e.value)
        c.call(c.local.ReportServiceState, local_pb2.ServiceStateReport(
            service="web", state="running", generation=1))
        got = c.call(c.rows.Get, nb.GetRequest(table="placements", key=[value_pb("web")]))
        assert got.row.values["state"].text_value == "running"


def test_health_and_reflection_work_without_our_protos(solo):
    """A client that knows nothing of synod's .proto files discovers and calls the node."""
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    channel = grpc.insecure_channel(solo.api)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
        assert {"synod.v1.ClusterService", "synod.v1.RowService",
                "synod.v1.LocalService", "grpc.health.v1.Health"} <= services
        pool = descriptor_pool.DescriptorPool(db)  # a fresh pool: only what reflection gives
        method = pool.FindServiceByName("synod.v1.ClusterService").methods_by_name["GetStatus"]
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        call = channel.unary_unary("/synod.v1.ClusterService/GetStatus",
                                   request_serializer=request_cls.SerializeToString,
                                   response_deserializer=response_cls.FromString)
        reply = call(request_cls(), timeout=5,
                     metadata=[("authorization", f"Bearer {solo.admin_token}")])
        assert reply.node_id == solo.info["node_id"] and reply.cluster_name == "solo"
    finally:
        channel.close()


@pytest.mark.parametrize("values, reason", [
    ({"match": "colour=blue"}, "unknown match field 'colour'"),
    ({"match": "ipv4_dst=10.0.0.1/8"}, "host bits set"),
    ({"actions": "output:0"}, "port must be"),
    ({"actions": "teleport"}, "unknown action"),
    ({"priority": 70000}, "priority must be 0..65535"),
])
def test_invalid_flows_are_refused_with_the_reason_and_nothing_is_stored(solo, values, reason):
    with solo.client() as c:
        with pytest.raises(ClientError, match=reason) as exc:
            _put(c, "flows", [DP1, "bad"], **values)
        assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT
        got = c.call(c.rows.Get, nb.GetRequest(table="flows", key=[
            value_pb(DP1), value_pb("bad")]))
        assert not got.found


def test_flows_for_unknown_switches_and_ports_are_refused_once_the_fabric_is_known(solo):
    with solo.client() as c:
        c.call(c.local.ReportTopology, local_pb2.TopologyReport(rows=[
            nb.Row(table="switches", key=[value_pb("0000000000000101")],
                   values={"master": value_pb("edge1")}),
            nb.Row(table="ports", key=[value_pb("0000000000000101"), value_pb(1)],
                   values={"up": value_pb(True)}),
            nb.Row(table="ports", key=[value_pb("0000000000000101"), value_pb(2)],
                   values={"up": value_pb(True)})]))
        with pytest.raises(ClientError, match="no switch 0000000000000777"):
            _put(c, "flows", ["0000000000000777", "f"], actions="output:1")
        with pytest.raises(ClientError, match="has no port 9"):
            _put(c, "flows", ["0000000000000101", "f"], actions="output:9")
        _put(c, "flows", ["0000000000000101", "f"], match="in_port=1", actions="output:2")


@pytest.mark.parametrize("spelling", [3, "3", "0x3", "0X03", "0000000000000003"])
def test_a_dpid_is_stored_in_one_form_however_it_is_written(solo, spelling):
    """One switch is one row: 3, 0x3 and 0000000000000003 name the same key, for put, get,
    list and delete alike."""
    canonical = "0000000000000003"
    with solo.client() as c:
        _put(c, "switches", [spelling], name="s3")
        _put(c, "ports", [spelling, 1], up=True)
        _put(c, "links", [spelling, 1, "0x4", 2], up=True)
        _put(c, "hosts", ["00:00:00:00:00:03"], dpid=spelling if isinstance(spelling, str)
             else "3", port_no=1)
        keys = {t: [[k.WhichOneof("kind") and getattr(k, k.WhichOneof("kind")) for k in r.key]
                    for r in c.call(c.rows.List, nb.ListRequest(table=t)).rows]
                for t in ("switches", "ports", "links")}
        assert keys == {"switches": [[canonical]], "ports": [[canonical, 1]],
                        "links": [[canonical, 1, "0000000000000004", 2]]}
        host = c.call(c.rows.Get, nb.GetRequest(table="hosts",
                                                key=[value_pb("00:00:00:00:00:03")]))
        assert host.row.values["dpid"].text_value == canonical
        got = c.call(c.rows.Get, nb.GetRequest(table="switches", key=[value_pb("0x3")]))
        assert got.found and got.row.values["name"].text_value == "s3"
        listed = c.call(c.rows.List, nb.ListRequest(table="ports", key_prefix=[value_pb(3)]))
        assert len(listed.rows) == 1
        c.call(c.rows.Delete, nb.DeleteRequest(table="switches",
                                               keys=[nb.KeyList(key=[value_pb(3)])]))
        assert not c.call(c.rows.Get, nb.GetRequest(table="switches",
                                                    key=[value_pb(canonical)])).found


@pytest.mark.parametrize("key, needle", [
    (["zz"], "switches.dpid: dpid 'zz' is not a number"),
    (["0"], "switches.dpid: dpid '0' is out of range"),
    (["0x10000000000000000"], "is out of range"),
])
def test_a_malformed_dpid_is_refused_naming_it(solo, key, needle):
    with solo.client() as c, pytest.raises(ClientError) as raised:
        _put(c, "switches", key, name="x")
    assert _code(raised) == grpc.StatusCode.INVALID_ARGUMENT and needle in str(raised.value)



def test_flow_state_waits_for_its_schema_version_then_is_written(solo):
    """flow_state is a table of schema 2 (decision 0037): the first report of it is
    refused with the reason, which asks the voters for `schema/2`; once every member reads
    it (here: this node alone) it is decided and the report goes through."""
    row = nb.Row(table="flow_state", key=[value_pb(DP1), value_pb("f1")],
                 values={"state": value_pb("installed"), "packets": value_pb(3),
                         "bytes": value_pb(180), "seen_ms": value_pb(1)})
    with solo.client() as c:
        with pytest.raises(ClientError) as e:
            c.call(c.local.ReportTopology, local_pb2.TopologyReport(rows=[row]))
        assert _code(e) == grpc.StatusCode.FAILED_PRECONDITION
        assert "schema/2" in str(e.value)

        def decided():
            s = c.call(c.slots.GetSlot, nb.GetSlotRequest(slot="schema/2"))
            return s.decided

        deadline = time.monotonic() + 10
        while not decided() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert decided(), "schema/2 was not decided"
        assert c.call(c.local.ReportTopology, local_pb2.TopologyReport(rows=[row])).rows == 1
        got = c.call(c.rows.Get, nb.GetRequest(table="flow_state",
                                               key=[value_pb(DP1), value_pb("f1")]))
        assert got.row.values["packets"].int_value == 3
        bad = nb.Row(table="flow_state", key=[value_pb(DP1), value_pb("f2")],
                     values={"state": value_pb("great")})
        with pytest.raises(ClientError, match="not one of installed"):
            c.call(c.local.ReportTopology, local_pb2.TopologyReport(rows=[bad]))
        with pytest.raises(ClientError, match="proposed by the nodes themselves"):
            c.call(c.slots.Propose, nb.ProposeRequest(slot="schema/3", value=encode({})))
        with pytest.raises(ClientError, match="not by clients"):
            _put(c, "flow_state", [DP1, "f3"], state="installed")
