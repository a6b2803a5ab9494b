"""Membership that grows by invitation ops in the causal past (InvitePolicy), set_peers,
the observe hook and op_count."""

from __future__ import annotations

import random

import pytest

from controller.replication import (
    INVITE,
    Identity,
    InvitePolicy,
    Reason,
    Replica,
    RowMutation,
    RowsBody,
    Upsert,
    UsageError,
    invitation_data,
    make_genesis,
    parse_invitation,
    sign_op,
)
from controller.store import MemoryStore, open_replica, persist


def kv(key: str) -> Upsert:
    return Upsert("kv", (key,), {"value": b"v"})


class Cluster:
    """Three founders and a fourth identity, all with InvitePolicy; messages by hand."""

    def __init__(self) -> None:
        self.ids = [Identity.from_seed(bytes([i + 1]) * 32) for i in range(4)]
        self.genesis = make_genesis(self.ids[0], "t", [i.public_key for i in self.ids[:3]], 0)
        self.replicas = [self.make(i) for i in self.ids]
        self.by_id = {r.node_id: r for r in self.replicas}
        self.now_ms = 1_000_000

    def make(self, identity: Identity, **kw) -> Replica:
        policy = InvitePolicy.from_genesis(self.genesis)
        return Replica(identity, self.genesis, random.Random(7), policy=policy, **kw)

    def pump(self, rounds: int = 100) -> None:
        for _ in range(rounds):
            self.now_ms += 50
            for r in self.replicas:
                r.tick(self.now_ms)
                while r.has_ready():
                    rd = r.ready()
                    r.advance(rd)
                    for out in rd.messages:
                        target = self.by_id.get(out.to)
                        if target is not None:
                            target.receive(out.message, self.now_ms)


def test_a_node_writes_only_after_its_invitation_is_in_its_past() -> None:
    c = Cluster()
    a, b, _, d = c.replicas
    assert not d.is_member_now()
    assert not a.is_member_now(d.node_id)
    # d refuses to sign before it holds its invitation (every peer would refuse it) ...
    with pytest.raises(UsageError, match="not_member"):
        d.write([kv("early")], c.now_ms)
    assert d.op_count() == 0
    # ... and an op signed anyway (by other code) is refused everywhere.
    body = RowsBody((RowMutation("kv", ("early",), 1, {"value": b"v"}),))
    early = sign_op(d.identity, d.cluster_id, 1, c.now_ms, (), body)
    assert a.receive_op(early.raw, c.now_ms) is Reason.UNKNOWN_AUTHOR

    invite = a.emit(INVITE, invitation_data(d.identity.public_key, "127.0.0.1:9", "t1"), c.now_ms)
    inv = parse_invitation(invite)
    assert inv is not None and inv.node_id == d.node_id and inv.address == "127.0.0.1:9"
    assert a.policy.members()[d.node_id] == d.identity.public_key  # type: ignore[attr-defined]
    # b knows d's key once it applied the invite, but d's early op has no invite in its past.
    b.receive_op(invite.raw, c.now_ms)
    assert b.receive_op(early.raw, c.now_ms) is Reason.NOT_MEMBER

    fresh = c.make(d.identity)  # d starts over with an empty log, as a joining node does
    c.replicas[3] = fresh
    c.by_id[d.node_id] = fresh
    for r in c.replicas[:3]:
        r.set_peers([*r.peers, d.node_id])
    c.pump()
    assert fresh.op_count() == a.op_count() >= 1
    assert fresh.is_member_now() and a.is_member_now(fresh.node_id)
    fresh.write([kv("from-d")], c.now_ms)
    fresh.write([kv("from-d-2")], c.now_ms + 1)
    c.pump()
    for r in c.replicas:
        assert r.rows("kv").keys() >= {("from-d",), ("from-d-2",)}
        assert r.state_digest() == a.state_digest()
        assert r.counters[Reason.NOT_MEMBER] == 0 or r is b


def test_membership_is_rebuilt_from_the_log_on_recovery() -> None:
    c = Cluster()
    a, d = c.replicas[0], c.replicas[3]
    store = MemoryStore()
    store.init(c.genesis)
    a.emit(INVITE, invitation_data(d.identity.public_key, "", "t1"), c.now_ms)
    persist(store, a)
    d.receive_op(a.log()[0].raw, c.now_ms)
    op = d.write([kv("x")], c.now_ms)
    a.receive_op(op.raw, c.now_ms)
    persist(store, a)
    assert a.row("kv", ("x",)) is not None
    again = open_replica(
        store, c.ids[0], random.Random(1), policy=InvitePolicy.from_genesis(c.genesis)
    )
    assert again.op_count() == 2
    assert again.policy.members().keys() == a.policy.members().keys()  # type: ignore[attr-defined]
    assert again.state_digest() == a.state_digest()


def test_set_peers_drops_self_and_duplicates() -> None:
    c = Cluster()
    a = c.replicas[0]
    a.set_peers([a.node_id, c.ids[3].node_id, c.ids[3].node_id])
    assert a.peers == [c.ids[3].node_id]


def test_malformed_invitations_admit_nobody() -> None:
    c = Cluster()
    a, d = c.replicas[0], c.replicas[3]
    a.emit(INVITE, {"key": b"short", "address": "", "by": ""}, c.now_ms)
    a.emit(INVITE, {"key": d.identity.public_key}, c.now_ms)
    assert d.node_id not in a.policy.members()  # type: ignore[attr-defined]
    assert a.policy.public_key(d.node_id) is None
