"""Secession on a minority side, then reunion with the parent: joined DAGs and a conflict report."""

from __future__ import annotations

import random

import pytest

from controller.agreement import (
    AccessPolicy,
    AgreementReplica,
    Lineage,
    Membership,
    Reason,
    Refused,
    Relation,
    ReunionVote,
    Status,
    auto_reunion_value,
    check_reunion,
    conflict_mutations,
    lineage_of,
    relate,
    reunion_slot,
    row_conflicts,
    secede,
    slot_conflicts,
    winner,
    with_conflicts_table,
)
from controller.agreement.errors import UsageError
from controller.replication import (
    DEFAULT_SCHEMA,
    Identity,
    OpBatch,
    RowState,
    SyncRequest,
    Upsert,
    decode,
)

from .conftest import Net

SCHEMA = with_conflicts_table(DEFAULT_SCHEMA)


def snapshot(replica) -> dict:
    """A copy of every row's merge state (RowState is mutable)."""
    return {(t, k): RowState.from_plain(row.to_plain()) for t, k, row in replica.tables.all_rows()}


def decide(net: Net, i: int, slot: str, value) -> None:
    p = net[i].agreement.propose(slot, value, net.now_ms)
    net.run(200, until=lambda: p.done)
    assert p.outcome.status is Status.DECIDED and p.outcome.value == value, p.outcome


def vote_of(net: Net, other: Lineage, value: str = "merge", proposer: int = 0) -> ReunionVote:
    decide(net, proposer, reunion_slot(other.cluster_id), value)
    d = net[0].agreement.decided(reunion_slot(other.cluster_id))
    policy = net[0].agreement.ledger.policy
    return ReunionVote(lineage_of(net.genesis), d, Membership.from_genesis(net.genesis), policy)


def test_reunion_with_an_unrelated_cluster_needs_a_decided_admin_vote_on_each_side():
    a = Net(3)
    others = [Identity.from_seed(bytes([40 + i]) * 32) for i in range(3)]
    b = Net(3, identities=others)
    la, lb = lineage_of(a.genesis), lineage_of(b.genesis)
    assert relate(la, lb) is Relation.UNRELATED
    with pytest.raises(Refused) as exc:
        check_reunion(la, lb)
    assert exc.value.reason is Reason.UNRELATED_CLUSTER
    va, vb = vote_of(a, lb), vote_of(b, la)
    assert check_reunion(la, lb, (va, vb)) is Relation.UNRELATED
    # A vote about another cluster, or 'stay-apart', or a forged certificate, does not count.
    c = Net(3, identities=[Identity.from_seed(bytes([60 + i]) * 32) for i in range(3)])
    about_c = vote_of(a, lineage_of(c.genesis))
    for bad in [
        (about_c, vb),
        (va, vote_of(Net(3, identities=others), la, "stay-apart")),
        (va, ReunionVote(lb, va.decision, vb.membership, vb.policy)),
    ]:
        with pytest.raises(Refused):
            check_reunion(la, lb, bad)


def test_unrelated_merge_voted_without_an_admin_is_refused():
    a = Net(3)
    others = [Identity.from_seed(bytes([40 + i]) * 32) for i in range(3)]
    b = Net(3, identities=others, access={"roles": {}})  # every member is a 'node'
    la, lb = lineage_of(a.genesis), lineage_of(b.genesis)
    vb = vote_of(b, la)
    with pytest.raises(Refused) as exc:
        check_reunion(la, lb, (vote_of(a, lb), vb))
    assert "no admin" in str(exc.value)


def test_auto_merge_policy_key():
    assert AccessPolicy().auto_merge == "never"
    related = AccessPolicy.from_value({"auto_merge": "related"})
    assert related.to_value()["auto_merge"] == "related"
    with pytest.raises(Refused) as exc:
        AccessPolicy.from_value({"auto_merge": "always"}, "genesis.policy.access")
    assert exc.value.reason is Reason.BAD_POLICY and "genesis.policy.access.auto_merge" in str(
        exc.value
    )
    for relation in Relation:
        want = "merge" if relation in (Relation.A_FROM_B, Relation.B_FROM_A) else None
        assert auto_reunion_value(related, relation) == want
        assert auto_reunion_value(AccessPolicy(), relation) is None


def test_winner_between_siblings_is_the_larger_then_the_smaller_id():
    root = b"\x00" * 32
    x = Lineage(b"\x02" * 32, root, (root,), {}, ())
    y = Lineage(b"\x03" * 32, root, (root,), {}, ())
    assert relate(x, y) is Relation.SIBLINGS
    assert winner(x, y, 2, 3) is y
    assert winner(x, y, 3, 3) is x


def _drain(node, sent: list) -> None:
    """Carry out a node's effects and its joined lineages' (no store needed here)."""
    node.agreement.step(node.net.now_ms)
    for r in [node.replica, *node.replica.lineages().values()]:
        while r.has_ready():
            rd = r.ready()
            if r is node.replica:
                node.store.commit(rd)
            sent.extend((out.to, out.message) for out in rd.messages)
            r.advance(rd)
    node.agreement.release()


def _exchange(nodes, now_ms: int, until, rounds: int = 300) -> None:
    """A perfect network across two lineages: deliver by node id, whatever the cluster."""
    by_id = {n.id: n for n in nodes}
    sent: list = []
    for _ in range(rounds):
        for n in nodes:
            _drain(n, sent)
        if until():
            return
        batch, sent = sent, []
        now_ms += 10
        for to, msg in batch:
            if to in by_id:
                by_id[to].replica.receive(msg, now_ms)
        for n in nodes:
            n.replica.tick(now_ms)
    raise AssertionError("not reached")


def test_a_decided_merge_joins_the_two_dags():
    """A 3 | 2 split: the minority cannot decide, the operator secedes it, both sides write
    the same row and decide one slot differently. After each side decided merge, every node
    holds both lineages' ops (each verified under its own cluster id), rows converge by the
    CRDT rules (same op set, same state) and the winner's conflict report reaches all five."""
    a = Net(5, schema=SCHEMA)
    a[0].replica.write([Upsert("kv", ("shared",), {"value": b"before"})], a.now_ms)
    a.run(20)
    # The WAN splits {0,1,2} | {3,4}: the minority can write rows but decide nothing.
    a.groups = [{n.id for n in a.nodes[:3]}, {n.id for n in a.nodes[3:]}]
    p = a[3].agreement.propose("alloc/ip/1", "minority", a.now_ms, timeout_ms=300)
    a.run(100, until=lambda: p.done)
    assert p.outcome.status is Status.NO_QUORUM
    # The operator on the minority side confirms a secession: a new lineage of {3, 4}.
    voters = a[3].agreement.membership().voters
    with pytest.raises(UsageError):
        secede(a[3].identity, a.genesis, voters, [a[3].id], {}, a.now_ms, confirmed_by="")
    access = {"roles": {a[3].id: "admin", a[4].id: "admin"}}
    genesis_b = secede(
        a[3].identity,
        a.genesis,
        voters,
        [a[3].id, a[4].id],
        a[3].replica.version_vector(),
        a.now_ms,
        confirmed_by="operator@edge-3",
        access=access,
    )
    a.crash(3)
    a.crash(4)
    b = Net(2, identities=[a[3].identity, a[4].identity], genesis=genesis_b, schema=SCHEMA)
    b.now_ms = a.now_ms
    rows = [Upsert(t, k, v) for t in SCHEMA.names for k, v in a[0].replica.rows(t).items()]
    b[0].replica.write(rows, b.now_ms)
    b.run(20)
    base_a, base_b = snapshot(a[0].replica), snapshot(b[0].replica)
    decide(a, 0, "alloc/ip/1", "majority")
    decide(b, 0, "alloc/ip/1", "seceded")
    a.now_ms += 5
    a[1].replica.write([Upsert("kv", ("shared",), {"value": b"A"})], a.now_ms)
    b.now_ms = a.now_ms + 10  # later: the CRDT keeps B's value
    b[1].replica.write([Upsert("kv", ("shared",), {"value": b"B"})], b.now_ms)
    b[1].replica.write([Upsert("kv", ("only-b",), {"value": b"b"})], b.now_ms)
    a.run(20)
    b.run(20)
    lin_a, lin_b = lineage_of(a.genesis), lineage_of(genesis_b)
    assert lin_b.parent == a.genesis.cluster_id and lin_b.confirmed_by == "operator@edge-3"
    assert sorted(lin_b.left) == sorted(n.id for n in a.nodes[:3])
    assert relate(lin_a, lin_b) is Relation.B_FROM_A
    assert check_reunion(lin_a, lin_b) is Relation.B_FROM_A
    assert winner(lin_a, lin_b, 5, 2) is lin_a  # the lineage the other seceded from wins
    ids = [n.identity.node_id for n in a.nodes]

    def shadow(node, genesis, log=()):
        rng = random.Random(node.id)
        return AgreementReplica.recover(node.identity, genesis, rng, log, schema=SCHEMA, peers=ids)

    # No decided merge yet: joining is refused, and B's messages are refused by cluster id.
    with pytest.raises(Refused) as exc:
        a[0].replica.join_lineage(shadow(a[0], genesis_b))
    assert exc.value.reason is Reason.NO_MERGE
    a[0].replica.receive(SyncRequest(genesis_b.cluster_id, b[0].id, {}), a.now_ms)
    assert a[0].replica.counters["wrong_cluster"] == 1
    # An unrelated cluster is refused too, even with a merge slot decided about it.
    c = Net(3, identities=[Identity.from_seed(bytes([70 + i]) * 32) for i in range(3)])
    decide(a, 0, reunion_slot(c.genesis.cluster_id), "merge")
    with pytest.raises(Refused) as exc:
        a[0].replica.join_lineage(shadow(a[0], c.genesis))
    assert exc.value.reason is Reason.UNRELATED_CLUSTER
    # Each side decides merge; the winner writes the report; every node joins the other DAG.
    decide(a, 0, reunion_slot(lin_b.cluster_id), "merge")
    decide(b, 0, reunion_slot(lin_a.cluster_id), "merge")
    decisions_a = {s: r.decided for s, r in a[0].agreement.ledger.slots.items() if r.decided}
    decisions_b = {s: r.decided for s, r in b[0].agreement.ledger.slots.items() if r.decided}
    conflicts = slot_conflicts((lin_a, decisions_a), (lin_b, decisions_b))
    conflicts += row_conflicts(
        (lin_a, snapshot(a[0].replica), base_a), (lin_b, snapshot(b[0].replica), base_b)
    )
    assert [(c.kind, c.name, c.kept, c.lost) for c in conflicts] == [
        ("slot", "alloc/ip/1", "majority", "seceded"),
        ("row", "kv", b"B", b"A"),
    ]
    a[0].replica.write(conflict_mutations(conflicts), a.now_ms)
    for n in a.nodes[:3]:
        n.replica.join_lineage(shadow(n, genesis_b))
    for i, n in enumerate(b.nodes):  # a seceded node's store of the parent: its ops to the split
        n.replica.join_lineage(shadow(n, a.genesis, a[3 + i].store.load().log))
    nodes = [*a.nodes[:3], *b.nodes]
    now = max(a.now_ms, b.now_ms)
    for n in nodes:
        n.net.now_ms = now

    def converged() -> bool:
        reps = [n.replica for n in nodes]
        return (
            len({r.op_digest() for r in reps}) == 1 and len({r.state_digest() for r in reps}) == 1
        )

    _exchange(nodes, now, converged)
    total = a[0].replica.op_count() + b[0].replica.op_count()
    for n in nodes:
        r = n.replica
        (joined,) = r.lineages().values()
        assert r.op_count() + joined.op_count() == total
        assert r.row("kv", ("shared",)) == {"value": b"B"}
        assert r.row("kv", ("only-b",)) == {"value": b"b"}
        report = {(v["kind"], v["name"]): v for v in r.rows("conflicts").values()}
        assert set(report) == {("slot", "alloc/ip/1"), ("row", "kv")}
        row = report[("row", "kv")]
        assert decode(row["kept"]) == b"B" and decode(row["lost"]) == b"A"
        assert row["kept_author"] == b[1].id and row["lost_author"] == a[1].id
        assert row["kept_hlc"] > 0 and row["lost_hlc"] > 0
        slot = report[("slot", "alloc/ip/1")]
        assert decode(slot["kept"]) == "majority" and decode(slot["lost"]) == "seceded"
        assert not r.counters["bad_signature"] and not r.counters["not_member"]
    for n in a.nodes[:3]:  # each lineage keeps its own decisions; the report names the winner's
        assert n.agreement.decided("alloc/ip/1").value == "majority"
    # A B op replayed under A's cluster id does not verify: ops are checked under their own.
    b_op = b[1].replica.log()[-1]
    before = a[0].replica.counters["bad_signature"]
    a[0].replica.receive(OpBatch(a.genesis.cluster_id, b[1].id, (b_op.raw,)), now)
    assert a[0].replica.counters["bad_signature"] == before + 1
