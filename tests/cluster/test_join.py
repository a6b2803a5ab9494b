"""A fourth real node joins a running 3-node cluster (`synod join`: a decided membership)."""

from __future__ import annotations

import pytest
from synod.v1 import northbound_pb2 as nb

from controller.node.client import ClientError
from controller.node.codec import value_pb
from controller.replication import decode, encode

from .harness import wait_for

pytestmark = pytest.mark.cluster


def _put(client, key: str, ack=nb.ACK_QUORUM):
    row = nb.Row(table="kv", key=[value_pb(key)], values={"value": value_pb(b"v")})
    return client.call(client.rows.Put, nb.PutRequest(rows=[row], ack=ack, timeout_ms=3000))


def _keys(cluster, i: int) -> set[str]:
    with cluster.client(i) as c:
        r = c.call(c.rows.Query, nb.QueryRequest(sql="SELECT key FROM kv", row_limit=10_000))
        return {row.values[0].text_value for row in r.rows}


def _digest(cluster, i: int) -> bytes:
    with cluster.client(i) as c:
        return c.call(c.cluster.GetDigest, nb.GetDigestRequest()).state_digest


def test_fourth_node_joins_catches_up_and_writes(make_cluster):
    cluster = make_cluster(3)
    with cluster.client(0) as c:
        for k in range(300):
            _put(c, f"before-{k}", nb.ACK_LOCAL)
    node = cluster.join_node(via=1)
    assert cluster.joined["invite"] and len(cluster.joined["peers"]) == 3
    four = range(4)
    assert wait_for(lambda: len(_keys(cluster, 3)) >= 300, 20), "the new node did not catch up"
    assert wait_for(lambda: len({_digest(cluster, i) for i in four}) == 1, 20)

    # It writes once its invitation is in its past; its writes reach every node, and a
    # quorum is now 3 of 4 members.
    with cluster.client(3) as c:
        assert wait_for(lambda: _put(c, "from-new-node").holders >= 3, 20)
        for k in range(20):
            assert _put(c, f"new-{k}").holders >= 3
        members = c.call(c.cluster.ListMembers, nb.ListMembersRequest()).members
        assert len(members) == 4
    want = {"from-new-node", *(f"new-{k}" for k in range(20))}
    assert wait_for(lambda: all(want <= _keys(cluster, i) for i in four), 20)
    assert wait_for(lambda: len({_digest(cluster, i) for i in four}) == 1, 20)

    # The join was a decided membership slot: membership/1 holds the 4 voters everywhere,
    # and the new node votes (a slot proposed there is decided under membership 1).
    new_id = node.info["node_id"]

    def joined_everywhere() -> bool:
        for i in four:
            with cluster.client(i) as c:
                s = c.call(c.slots.GetSlot, nb.GetSlotRequest(slot="membership/1"))
                if not (s.decided and new_id in decode(s.value)["voters"]):
                    return False
        return True

    assert wait_for(joined_everywhere, 20)
    with cluster.client(3, timeout_s=15) as c:
        req = nb.ProposeRequest(slot="alloc/join/1", value=encode("four"), timeout_ms=8000)
        s = c.call(c.slots.Propose, req)
        assert decode(s.value) == "four" and s.membership_version == 1 and len(s.voters) >= 3

    # Joining again (same key and address) re-uses the invitation; a restart keeps it.
    again = cluster.run_join(node.data, 2, node.peer_port)
    assert again["invite"] == cluster.joined["invite"]
    node.stop()
    node.start()
    with cluster.client(3) as c:
        assert wait_for(lambda: _put(c, "after-restart").holders >= 3, 20)
    with cluster.client(2) as c:
        assert c.call(c.cluster.GetStatus, nb.GetStatusRequest()).members == 4


def test_join_needs_an_admin_token(make_cluster, tmp_path):
    cluster = make_cluster(3)
    with cluster.client(0) as c:
        viewer = c.call(c.admin.CreateToken, nb.CreateTokenRequest(role="viewer")).token
    cluster.token = viewer
    with pytest.raises(RuntimeError, match="permission_denied"):
        cluster.join_node()
    with cluster.client(0) as c, pytest.raises(ClientError):
        c.call(c.slots.Propose, nb.ProposeRequest(slot="membership/join", value=b"junk"))
