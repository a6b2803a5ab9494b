"""Replica.set_reachable: pushes and anti-entropy go to the peers a node can reach, so a
star of sites (edges linked to the cloud only) syncs through its hub every round."""

from __future__ import annotations

from controller.replication import SyncRequest, Upsert


def _targets(replica, now_ms: int, rounds: int, write: bool = False) -> list:
    out = []
    for i in range(rounds):
        now_ms += 250  # past sync_interval_ms: one anti-entropy request per tick
        if write:
            replica.write([Upsert("kv", (f"k{i}",), {"value": b"v"})], now_ms)
        replica.tick(now_ms)
        while replica.has_ready():
            rd = replica.ready()
            replica.advance(rd)
            out += [(m.to, type(m.message).__name__) for m in rd.messages]
    return out


def test_an_edge_that_reaches_only_the_hub_syncs_and_pushes_only_there(net) -> None:
    n = net(5)
    edge, hub = n.replicas[1], n.replicas[0]
    before = _targets(edge, n.now_ms, 40, write=True)
    assert {to for to, _ in before} == {r.node_id for r in n.replicas if r is not edge}
    edge.set_reachable({hub.node_id})
    after = _targets(edge, n.now_ms + 20_000, 40, write=True)
    assert {to for to, _ in after} == {hub.node_id}
    assert sum(kind == SyncRequest.__name__ for _, kind in after) == 40  # every round


def test_no_reachable_peer_or_not_told_means_every_peer(net) -> None:
    n = net(4)
    r = n.replicas[0]
    everyone = {p.node_id for p in n.replicas[1:]}
    r.set_reachable(set())
    assert {to for to, _ in _targets(r, n.now_ms, 60)} == everyone
    r.set_reachable(None)
    assert {to for to, _ in _targets(r, n.now_ms + 60_000, 60)} == everyone


def test_a_star_converges_through_its_hub(net) -> None:
    n = net(6)
    hub = n.replicas[0]
    for r in n.replicas[1:]:
        r.set_reachable({hub.node_id})
    hub.set_reachable(r.node_id for r in n.replicas[1:])
    for k, r in enumerate(n.replicas[1:]):
        r.write([Upsert("kv", (f"edge{k}",), {"value": b"x"})], n.now_ms)
    n.pump(rounds=40)
    assert n.converged()
