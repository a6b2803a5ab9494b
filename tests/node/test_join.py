"""Joining, in process: a decided membership (agreement on) or an invitation (off), the
Propose answer, refused requests, a node admitted but not caught up refuses writes."""

from __future__ import annotations

import asyncio
import random
import time

import grpc
import pytest
from synod.v1 import northbound_pb2 as nb

from controller.node.client import ClientError
from controller.node.codec import value_pb
from controller.node.datadir import DataDir, init_data_dirs
from controller.node.engine import Engine, NotMember
from controller.node.join import (
    JOIN_SLOT,
    READS_MAX,
    JoinError,
    check_join_request,
    check_reads,
    join_cluster,
    make_join_request,
    read_bundle,
)
from controller.node.metrics import Metrics
from controller.replication import Identity, InvitePolicy, Replica, Upsert, decode, encode
from controller.replication.schema import SCHEMA_VERSION
from controller.store import SqliteStore

from .conftest import InProcessNode


def _propose(client, value: bytes):
    return client.call(client.slots.Propose, nb.ProposeRequest(slot=JOIN_SLOT, value=value))


def _cluster_id(client) -> bytes:
    return bytes.fromhex(client.call(client.cluster.GetStatus, nb.GetStatusRequest()).cluster_id)


def test_an_admin_join_request_is_answered_with_an_invitation(solo):
    newcomer = Identity.generate()
    with solo.client() as c:
        cid = _cluster_id(c)
        slot = _propose(c, make_join_request(newcomer, cid, "127.0.0.1:7999"))
        bundle = read_bundle(slot.value)
        assert slot.decided and bundle.genesis.cluster_id == cid and len(bundle.invite_id) == 32
        again = read_bundle(_propose(c, make_join_request(newcomer, cid, "127.0.0.1:7999")).value)
        assert again.invite_id == bundle.invite_id  # idempotent: no second invitation
        members = c.call(c.cluster.ListMembers, nb.ListMembersRequest()).members
        assert newcomer.node_id in {m.node_id for m in members}


def test_without_agreement_a_join_is_an_invitation_op(tmp_path):
    d = tmp_path / "inv"
    init_data_dirs([d], "inv")
    node = InProcessNode(d, agreement={"enabled": False}).start()
    try:
        newcomer = Identity.generate()
        with node.client() as c:
            cid = _cluster_id(c)
            request = make_join_request(newcomer, cid, "127.0.0.1:7999")
            bundle = read_bundle(_propose(c, request).value)
            assert len(bundle.invite_id) == 32
            members = c.call(c.cluster.ListMembers, nb.ListMembersRequest()).members
            assert newcomer.node_id in {m.node_id for m in members}
            rows = c.call(c.rows.Query, nb.QueryRequest(sql="SELECT key FROM kv")).rows
            assert not any(r.values[0].text_value.startswith("peer/") for r in rows)
    finally:
        node.stop()


def test_with_agreement_a_join_is_a_decided_membership(solo):
    newcomer = Identity.generate()
    with solo.client() as c:
        cid = _cluster_id(c)
        _propose(c, make_join_request(newcomer, cid, "127.0.0.1:7999"))
        s = c.call(c.slots.GetSlot, nb.GetSlotRequest(slot="membership/1"))
        assert s.decided and newcomer.node_id in decode(s.value)["voters"]
        key = [value_pb(f"peer/{newcomer.node_id}")]
        got = c.call(c.rows.Get, nb.GetRequest(table="internal", key=key))
        assert got.found and got.row.values["value"].blob_value == b"127.0.0.1:7999"


@pytest.mark.parametrize("why", ["garbage", "wrong cluster", "bad address"])
def test_bad_join_requests_are_refused(solo, why):
    newcomer = Identity.generate()
    with solo.client() as c:
        cid = _cluster_id(c)
        value = {
            "garbage": b"\x00junk",
            "wrong cluster": make_join_request(newcomer, b"\x01" * 32, "127.0.0.1:7999"),
            "bad address": make_join_request(newcomer, cid, "no-port"),
        }[why]
        with pytest.raises(ClientError, match="invalid_argument"):
            _propose(c, value)


def test_join_needs_admin(solo):
    with solo.client() as c:
        viewer = c.call(c.admin.CreateToken, nb.CreateTokenRequest(role="operator")).token
    with solo.client(viewer) as c, pytest.raises(ClientError, match="permission_denied"):
        _propose(c, make_join_request(Identity.generate(), _cluster_id(c), "127.0.0.1:1"))


def test_an_invited_node_refuses_writes_until_its_invitation_arrives(tmp_path, solo):
    """An invited node that has not received its invitation must not sign ops: every
    member would refuse them, and every later op of its chain with them."""
    d = tmp_path / "joiner"
    init_data_dirs([d], None)
    joiner = DataDir(d)
    with solo.client() as c:
        genesis = read_bundle(
            _propose(c, make_join_request(joiner.identity(), _cluster_id(c), "127.0.0.1:9")).value
        ).genesis
    replica = Replica(
        joiner.identity(), genesis, random.Random(1), policy=InvitePolicy.from_genesis(genesis)
    )
    store = SqliteStore(tmp_path / "joiner.db")

    async def go():
        engine = Engine(replica, store, Metrics())
        engine.start()
        try:
            with pytest.raises(NotMember, match="not a member yet"):
                await engine.write([Upsert("kv", ("k",), {"value": b"v"})], "local", 1000)
        finally:
            await engine.stop()

    try:
        asyncio.run(go())
    finally:
        store.close()
    assert replica.op_count() == 0


def test_a_prepared_node_without_invitation_does_not_start(tmp_path):
    d = tmp_path / "lonely"
    init_data_dirs([d], None)
    (tmp_path / "other").mkdir()
    init_data_dirs([tmp_path / "other" / "a"], "other")
    DataDir(d).genesis_file.write_bytes(DataDir(tmp_path / "other" / "a").genesis_file.read_bytes())
    with pytest.raises(Exception, match="not a member"):
        InProcessNode(d).start()


# ---------------------------------------------------------------- schema versions (0037)
DP1 = "0000000000000001"


def _decide_schema_2(client) -> None:
    """A flow_state report asks the voters for schema/2 (decision 0037); a sole member
    decides it at once."""
    from synod.v1 import local_pb2

    row = nb.Row(table="flow_state", key=[value_pb(DP1), value_pb("f1")],
                 values={"state": value_pb("installed")})
    with pytest.raises(ClientError, match="schema/2"):
        client.call(client.local.ReportTopology, local_pb2.TopologyReport(rows=[row]))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if client.call(client.slots.GetSlot, nb.GetSlotRequest(slot="schema/2")).decided:
            return
        time.sleep(0.05)
    raise AssertionError("schema/2 was not decided")


@pytest.mark.parametrize("reads", [None, 1, 2, READS_MAX])
def test_a_join_request_says_what_schema_it_reads(reads):
    newcomer, cid = Identity.generate(), b"\x07" * 32
    req = check_join_request(make_join_request(newcomer, cid, "127.0.0.1:7999", reads), cid)
    assert req.key == newcomer.public_key and req.reads == (1 if reads is None else reads)


@pytest.mark.parametrize("why", ["zero", "text", "too big", "altered"])
def test_a_join_request_with_a_bad_or_unsigned_reads_is_refused(why):
    newcomer, cid = Identity.generate(), b"\x07" * 32
    value = decode(make_join_request(newcomer, cid, "127.0.0.1:7999", 1))
    value["reads"] = {"zero": 0, "text": "2", "too big": READS_MAX + 1, "altered": 2}[why]
    match = "proof" if why == "altered" else "reads: 1.."
    with pytest.raises(JoinError, match=match):
        check_join_request(encode(value), cid)


def test_check_reads_says_both_versions_in_one_line():
    check_reads(2, 2)
    check_reads(2, 0)  # a member of older code did not say
    with pytest.raises(JoinError) as exc:
        check_reads(1, 2)
    assert str(exc.value) == (
        "this node reads schema up to 1; the cluster decided schema/2: "
        "upgrade Synod on this node first"
    )


def test_a_joiner_reading_an_older_schema_is_not_admitted(tmp_path, solo):
    """Once schema/2 is decided, the member refuses a join that reads 1 (said, or not said:
    older code) and proposes nothing; `synod join` from a node reading 1 refuses before it
    asks, and writes no genesis (the node cannot start); one reading 2 is admitted and its
    bundle names the decided version."""
    d = tmp_path / "joiner"
    init_data_dirs([d], None)
    joiner = DataDir(d)
    with solo.client() as c:
        cid = _cluster_id(c)
        status = c.call(c.cluster.GetStatus, nb.GetStatusRequest())
        assert (status.schema_reads, status.schema_decided) == (SCHEMA_VERSION, 1)
        _decide_schema_2(c)
        assert c.call(c.cluster.GetStatus, nb.GetStatusRequest()).schema_decided == 2
        for reads in (None, 1):
            with pytest.raises(ClientError) as exc:
                _propose(c, make_join_request(joiner.identity(), cid, "127.0.0.1:7999", reads))
            assert exc.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert (f"node {joiner.identity().node_id} reads schema up to 1; the cluster "
                    "decided schema/2: upgrade Synod on that node first") in str(exc.value)
        assert not c.call(c.slots.GetSlot, nb.GetSlotRequest(slot="membership/1")).decided
    with pytest.raises(JoinError, match="^this node reads schema up to 1; the cluster decided "
                                        "schema/2: upgrade Synod on this node first$"):
        join_cluster(d, solo.api, solo.admin_token, "127.0.0.1:7999", insecure=True, reads=1)
    assert joiner.genesis() is None and joiner.join_bundle() is None
    summary = join_cluster(d, solo.api, solo.admin_token, "127.0.0.1:7999", insecure=True,
                           reads=2)
    assert summary["node_id"] == joiner.identity().node_id
    assert read_bundle(joiner.join_bundle()).schema == 2
    with solo.client() as c:
        s = c.call(c.slots.GetSlot, nb.GetSlotRequest(slot="membership/1"))
        assert s.decided and joiner.identity().node_id in decode(s.value)["voters"]


def test_a_bundle_of_older_code_reads_as_schema_0(solo):
    with solo.client() as c:
        raw = _propose(c, make_join_request(Identity.generate(), _cluster_id(c), "127.0.0.1:9"))
    value = decode(raw.value)
    assert value["schema"] == 1
    del value["schema"]
    assert read_bundle(encode(value)).schema == 0
