"""Issue 10, parts 1 and 2: no poison op from the API, no client-written node internals."""

from __future__ import annotations

import grpc
import pytest
from synod.v1 import local_pb2
from synod.v1 import northbound_pb2 as nb

from controller.node.client import ClientError
from controller.node.codec import value_pb
from controller.node.config import PeerConfig
from controller.node.engine import MembersChanged
from controller.node.metrics import Metrics
from controller.node.peers import PeerLinks

from .conftest import InProcessNode


def _rows(table: str, n: int, value: bytes = b"x") -> list:
    out = []
    for i in range(n):
        row = nb.Row(table=table, key=[value_pb(f"k{i}")])
        row.values["value"].CopyFrom(value_pb(value))
        out.append(row)
    return out


def _tokens(node) -> dict[str, str]:
    with node.client() as admin:
        return {
            role: admin.call(admin.admin.CreateToken, nb.CreateTokenRequest(role=role)).token
            for role in ("viewer", "operator")
        }


def _status(node) -> nb.GetStatusResponse:
    with node.client() as c:
        return c.call(c.cluster.GetStatus, nb.GetStatusRequest())


def test_an_over_large_put_is_refused_before_signing_and_the_node_restarts(tmp_path):
    from controller.node.datadir import init_data_dirs

    d = tmp_path / "n"
    init_data_dirs([d], "poison")
    node = InProcessNode(d).start()
    try:
        operator = _tokens(node)["operator"]
        ops_before = _status(node).ops
        with node.client(operator) as c:
            # 10,001 rows: one op beyond mutations_max, which every peer refuses.
            with pytest.raises(ClientError) as e:
                c.call(c.rows.Put, nb.PutRequest(rows=_rows("kv", 10_001)))
            assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "10001 rows in one write; at most 10000 (mutations_max" in str(e.value)
            # An op over op_bytes_max (20 rows of 60 kB): refused by the replica, unsigned.
            with pytest.raises(ClientError) as e:
                c.call(c.rows.Put, nb.PutRequest(rows=_rows("kv", 20, b"x" * 60_000)))
            assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "op_bytes_max" in str(e.value)
            c.call(c.rows.Put, nb.PutRequest(rows=_rows("kv", 10_000)))  # at the limit: fine
        assert _status(node).ops == ops_before + 1  # nothing was signed for the refusals
    finally:
        node.stop()
    again = InProcessNode(d).start()  # the log verifies: no poison op was stored
    try:
        with again.client() as c:
            listed = c.call(c.rows.List, nb.ListRequest(table="kv"))
            assert len(listed.rows) == 10_000
    finally:
        again.stop()


@pytest.mark.parametrize("role", ["operator", "admin"])
def test_no_client_writes_node_internals(solo, role):
    token = _tokens(solo)["operator"] if role == "operator" else None
    node_id = "ab" * 16
    with solo.client(token) as c:
        for table, key in [("internal", f"peer/{node_id}"), ("internal", "genesis/" + "cd" * 32),
                           ("internal", "token/0123456789abcdef"),
                           ("conflicts", "x")]:
            row = nb.Row(table=table, key=[value_pb(key)])
            with pytest.raises(ClientError) as e:
                c.call(c.rows.Put, nb.PutRequest(rows=[row]))
            assert e.value.code == grpc.StatusCode.PERMISSION_DENIED, (table, e.value)
            assert f"table '{table}'" in str(e.value)
            with pytest.raises(ClientError) as e:
                c.call(c.rows.Delete, nb.DeleteRequest(
                    table=table, keys=[nb.KeyList(key=[value_pb(key)])]))
            assert e.value.code == grpc.StatusCode.PERMISSION_DENIED
        row = nb.Row(table="flow_errors", key=[value_pb("0000000000000001"), value_pb("f")])
        with pytest.raises(ClientError) as e:
            c.call(c.rows.Put, nb.PutRequest(rows=[row]))
        assert e.value.code == grpc.StatusCode.PERMISSION_DENIED
        # The same keys in the user table kv are plain user data that steers nothing.
        c.call(c.rows.Put, nb.PutRequest(rows=[
            nb.Row(table="kv", key=[value_pb(f"peer/{node_id}")],
                   values={"value": value_pb(b"10.9.9.9:1")})]))


def test_flow_errors_come_from_the_controllers_report(solo):
    operator = _tokens(solo)["operator"]
    row = nb.Row(table="flow_errors", key=[value_pb("0000000000000001"), value_pb("f")])
    row.values["error"].CopyFrom(value_pb("OFPBAC_BAD_OUT_PORT"))
    with solo.client(operator) as c:
        c.call(c.local.ReportTopology, local_pb2.TopologyReport(rows=[row]))
        got = c.call(c.rows.List, nb.ListRequest(table="flow_errors"))
        assert [r.values["error"].text_value for r in got.rows] == ["OFPBAC_BAD_OUT_PORT"]


def test_only_admins_read_the_internal_table(solo):
    tokens = _tokens(solo)
    for role in ("viewer", "operator"):
        with solo.client(tokens[role]) as c:
            with pytest.raises(ClientError) as e:
                c.call(c.rows.List, nb.ListRequest(table="internal"))
            assert e.value.code == grpc.StatusCode.PERMISSION_DENIED
            assert "may not read table 'internal'" in str(e.value)
    with solo.client() as admin:
        listed = admin.call(admin.rows.List, nb.ListRequest(table="internal"))
        assert any(r.key[0].text_value.startswith("token/") for r in listed.rows)


class _Engine:
    node_id = "00" * 16

    def __init__(self) -> None:
        self.members: dict[str, bytes] = {self.node_id: b""}

    def peer_keys(self) -> dict[str, bytes]:
        return self.members

    def subscribe(self, handler) -> None:
        self.handler = handler


def test_links_never_dial_an_address_that_is_not_a_members():
    engine = _Engine()
    links = PeerLinks(engine, PeerConfig(), None, Metrics())  # type: ignore[arg-type]
    stranger = "ab" * 16
    links.add("127.0.0.1:1", stranger)
    assert links.links == [] and links.parked == {stranger: "127.0.0.1:1"}
    engine.members[stranger] = b"key"  # a decided membership admits it
    engine.handler(MembersChanged())
    assert [(lk.address, lk.node_id) for lk in links.links] == [("127.0.0.1:1", stranger)]
    assert links.parked == {}
