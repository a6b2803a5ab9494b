"""Issue 11 item 4: a node removed by a decided membership change loses access at once."""

from __future__ import annotations

import grpc
import pytest
from synod.v1 import northbound_pb2 as nb
from synod.v1 import peer_pb2, peer_pb2_grpc

from controller.agreement import Membership
from controller.node.codec import value_pb
from controller.node.datadir import DataDir
from controller.replication import encode

from .harness import wait_for

pytestmark = pytest.mark.cluster


def _has(cluster, i: int, key: str) -> bool:
    with cluster.client(i) as c:
        got = c.call(c.rows.Get, nb.GetRequest(table="kv", key=[value_pb(key)]))
        return got.found


def _put(cluster, i: int, key: str) -> None:
    with cluster.client(i) as c:
        row = nb.Row(table="kv", key=[value_pb(key)], values={"value": value_pb(b"v")})
        c.call(c.rows.Put, nb.PutRequest(rows=[row], ack=nb.ACK_QUORUM))


def test_a_removed_node_can_no_longer_sync(make_cluster):
    cluster = make_cluster(3)
    _put(cluster, 0, "before")
    assert wait_for(lambda: _has(cluster, 2, "before"), 15)

    gone = DataDir(cluster.dirs[2])
    removal = Membership.from_genesis(gone.genesis()).left(gone.identity().node_id)
    with cluster.client(0, timeout_s=20) as c:
        r = c.call(c.slots.Propose, nb.ProposeRequest(
            slot="membership/1", value=encode(removal.to_value()), timeout_ms=10_000))
        assert r.decided

    # Its certificate is still CA-signed, but the peers refuse it from the decision on.
    ca, key, cert = gone.tls()
    for i in (0, 1):
        address = f"127.0.0.1:{cluster.nodes[i].peer_port}"
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(ca, key, cert),
                                      options=[("grpc.ssl_target_name_override", "node.synod")])
        with channel:
            stub = peer_pb2_grpc.PeerServiceStub(channel)

            def refused(stub=stub) -> bool:
                try:
                    stub.Hello(peer_pb2.HelloRequest(), timeout=5)
                except grpc.RpcError as exc:
                    return exc.code() == grpc.StatusCode.PERMISSION_DENIED
                return False

            assert wait_for(refused, 10), f"node {i} still answers the removed node"

    # Writes made after the removal reach the remaining members, never the removed one.
    _put(cluster, 0, "after")
    assert wait_for(lambda: _has(cluster, 1, "after"), 15)
    assert not wait_for(lambda: _has(cluster, 2, "after"), 4)
