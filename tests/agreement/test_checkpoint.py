"""Agreed checkpoints (controller/agreement/checkpoint.py, decision 0070): the state at a
cut computed from the log, checked by every acceptor, decided in a chain."""

from __future__ import annotations

import pytest

from controller.agreement import Refused, Status
from controller.agreement.checkpoint import (
    NO_PREVIOUS,
    Checkpoint,
    CutState,
    checkpoint_number_of,
    checkpoint_slot,
)
from controller.agreement.errors import Reason
from controller.replication import Delete, Upsert

from .conftest import Net


def churn(net: Net, node: int, start: int, count: int, keys: int = 5) -> None:
    """Writes that overwrite and delete a few keys (so rows are rewritten and tombstoned)."""
    r = net[node].replica
    for i in range(start, start + count):
        key = (f"k{i % keys}",)
        if i % 7 == 3:
            r.write([Delete("kv", key)], net.now_ms)
        else:
            r.write([Upsert("kv", key, {"value": f"v{i}".encode()})], net.now_ms)


def settled(net: Net) -> bool:
    return len({n.replica.state_digest() for n in net.nodes}) == 1 and len(
        {tuple(sorted(n.replica.version_vector().items())) for n in net.nodes}
    ) == 1


def test_slot_names():
    assert checkpoint_slot(3) == "checkpoint/3"
    assert [checkpoint_number_of(s) for s in ("checkpoint/1", "checkpoint/12")] == [1, 12]
    for bad in ("checkpoint/0", "checkpoint/01", "checkpoint/x", "master/1", "checkpoint"):
        assert checkpoint_number_of(bad) is None


def test_the_state_at_everything_held_is_the_replicas_state(net3: Net):
    churn(net3, 0, 0, 30)
    churn(net3, 1, 30, 20)
    net3.run(until=lambda: settled(net3))
    r = net3[2].replica
    state = net3[2].agreement.checkpoints.at(r.version_vector())
    assert state is not None
    assert state.state.value == r.state_digest()
    assert state.opset.value == r.op_digest()
    assert state.count == len(r.log())


def test_extending_a_cut_equals_computing_it_at_once(net3: Net):
    churn(net3, 0, 0, 40)
    net3.run(until=lambda: settled(net3))
    r = net3[0].replica
    log = r.log()
    half = CutState().extend(log[:17], r.dag.excluded)
    whole = half.extend(log[17:], r.dag.excluded)
    once = CutState().extend(log, r.dag.excluded)
    assert (whole.state.value, whole.opset.value, whole.count) == (
        once.state.value,
        once.opset.value,
        once.count,
    )
    assert half.count == 17 and half.state.value != whole.state.value  # not changed by extend
    with pytest.raises(ValueError, match="does not extend"):
        half.extend(log[18:], r.dag.excluded)


def decide_next(net: Net, proposer: int = 0) -> Checkpoint:
    cp = net[proposer].agreement.checkpoints.next()
    assert cp is not None
    p = net[proposer].agreement.propose(checkpoint_slot(cp.n), cp.to_value(), net.now_ms)
    net.run(until=lambda: p.done)
    assert p.outcome is not None and p.outcome.status is Status.DECIDED, p.outcome
    return cp


def test_checkpoints_are_decided_in_a_chain(net3: Net):
    churn(net3, 0, 0, 20)
    net3.run(until=lambda: settled(net3))
    first = decide_next(net3)
    assert first.n == 1 and first.prev == NO_PREVIOUS
    churn(net3, 1, 20, 10)
    net3.run(until=lambda: settled(net3))
    second = decide_next(net3, proposer=2)
    assert second.n == 2 and second.prev == first.hash()
    for node in net3.nodes:
        cps = node.agreement.checkpoints
        assert cps.latest() == 2
        assert cps.decided(2) == second
    # Nothing new since: nothing to propose.
    net3.run(until=lambda: settled(net3))
    assert net3[1].agreement.checkpoints.next() is None


def refused(net: Net, slot: str, value) -> str:
    p = net[0].agreement.propose(slot, value, net.now_ms)
    net.run(until=lambda: p.done)
    assert p.outcome is not None and p.outcome.status is Status.REFUSED
    return p.outcome.reason


def test_a_wrong_checkpoint_is_refused_by_its_own_proposer(net3: Net):
    churn(net3, 0, 0, 10)
    net3.run(until=lambda: settled(net3))
    cp = net3[0].agreement.checkpoints.next()
    assert cp is not None
    value = cp.to_value()
    assert "bad_checkpoint" in refused(net3, "checkpoint/1", {**value, "state": bytes(32)})
    assert "bad_checkpoint" in refused(net3, "checkpoint/1", {**value, "count": cp.count + 1})
    assert "bad_checkpoint" in refused(net3, "checkpoint/1", {**value, "prev": b"x" * 32})
    assert "bad_checkpoint" in refused(net3, "checkpoint/1", {**value, "extra": 1})
    assert "checkpoint_ahead" in refused(net3, "checkpoint/2", value)  # 1 not decided
    ahead = {**value, "cut": {**cp.cut, net3[0].id: cp.cut[net3[0].id] + 5}}
    assert "checkpoint_ahead" in refused(net3, "checkpoint/1", ahead)  # ops not held
    assert "bad_checkpoint" in refused(net3, "checkpoint/x", value)


def test_acceptors_refuse_a_digest_that_is_not_theirs(net3: Net):
    """A proposer whose value the others compute differently decides nothing: the
    acceptors answer bad_checkpoint (a proposer skipping its own check stands for a node
    whose state is wrong)."""
    churn(net3, 0, 0, 10)
    net3.run(until=lambda: settled(net3))
    a = net3[0].agreement
    cp = a.checkpoints.next()
    assert cp is not None
    a.checkpoints.check = lambda n, value: None  # type: ignore[method-assign]
    p = a.propose("checkpoint/1", {**cp.to_value(), "state": bytes(32)}, net3.now_ms, 2_000)
    net3.run(rounds=400, until=lambda: p.done)
    assert p.outcome is not None and p.outcome.status is Status.NO_QUORUM
    for node in net3.nodes[1:]:
        assert node.agreement.counters[Reason.BAD_CHECKPOINT] >= 1
        assert node.agreement.checkpoints.latest() == 0


def test_an_acceptor_missing_ops_of_the_cut_votes_once_it_has_them():
    net = Net(3)
    net.cut = {net[2].id}
    churn(net, 0, 0, 10)
    net.run(rounds=20)
    cp = net[0].agreement.checkpoints.next()
    assert cp is not None
    # Node 2 holds none of it: it refuses while it lacks the cut.
    with pytest.raises(Refused) as exc:
        net[2].agreement.checkpoints.check(1, cp.to_value())
    assert exc.value.reason is Reason.CHECKPOINT_AHEAD
    net.cut = set()
    net.run(until=lambda: settled(net))
    assert net[2].agreement.checkpoints.check(1, cp.to_value()) == cp


def test_only_voters_propose_checkpoints_whatever_the_policy():
    """The slot kind is the voters' own: a policy that lets no role propose it does not
    stop them, and the API refuses it for every client (tests/node)."""
    net = Net(3, access={"roles": {}, "slots": {"node": ["master"]}})
    churn(net, 0, 0, 5)
    net.run(until=lambda: settled(net))
    decide_next(net, proposer=1)


def test_voters_propose_checkpoints_by_themselves():
    net = Net(3, checkpoint_ops=25, checkpoint_stagger_ms=50)
    churn(net, 0, 0, 30)
    net.run(rounds=200, until=lambda: all(n.agreement.checkpoints.latest() >= 1 for n in net.nodes))
    churn(net, 1, 30, 30)
    net.run(rounds=200, until=lambda: all(n.agreement.checkpoints.latest() >= 2 for n in net.nodes))
    proposals = sum(n.agreement.counters["checkpoint_proposals"] for n in net.nodes)
    assert proposals <= 4  # turns: usually one proposer per checkpoint
    for node in net.nodes:
        cps = node.agreement.checkpoints
        assert cps.base_n == 2  # the base follows the decided chain
        cp = cps.decided(2)
        assert cp is not None and cps.check(2, cp.to_value()) == cp


def test_a_restarted_node_checks_the_chain_from_its_log(net3: Net):
    churn(net3, 0, 0, 12)
    net3.run(until=lambda: settled(net3))
    cp = decide_next(net3)
    net3.crash(1)
    net3.restart(1)
    cps = net3[1].agreement.checkpoints
    assert cps.latest() == 1 and cps.decided(1) == cp
    assert cps.check(1, cp.to_value()) == cp


# ---------------------------------------------------------------------- compaction
def compacted(net: Net, n: int) -> bool:
    return all(node.agreement.checkpoints.final_n >= n for node in net.nodes)


def test_a_stable_checkpoint_prunes_the_log_and_writing_goes_on():
    net = Net(3, checkpoint_ops=20, checkpoint_stagger_ms=50, compact=True)
    churn(net, 0, 0, 30)
    churn(net, 1, 30, 10)
    net.run(rounds=300, until=lambda: compacted(net, 1))
    counts = {n.replica.op_count() for n in net.nodes}
    for node in net.nodes:
        r = node.replica
        assert r.dag.pruned > 0 and len(r.log()) < r.op_count()
        assert node.agreement.counters["ops_pruned"] == r.dag.pruned
    # Every node goes on writing from its frontier, and the cluster converges.
    for i in range(3):
        churn(net, i, 100 + 10 * i, 5)
    net.run(rounds=300, until=lambda: settled(net))
    assert len({n.replica.op_digest() for n in net.nodes}) == 1
    assert min(n.replica.op_count() for n in net.nodes) > max(counts)
    # The next checkpoint builds on the pruned one.
    churn(net, 2, 200, 25)
    net.run(rounds=400, until=lambda: compacted(net, 2))
    net.run(rounds=300, until=lambda: settled(net))


def test_compaction_waits_for_every_voter_to_hold_the_cut():
    net = Net(3, checkpoint_ops=20, checkpoint_stagger_ms=50, compact=True)
    churn(net, 0, 0, 25)
    net.run(until=lambda: settled(net))
    net.cut = {net[2].id}  # cut off before the checkpoint: it never votes on it
    churn(net, 0, 25, 25)
    net.run(rounds=300, until=lambda: net[0].agreement.checkpoints.latest() >= 1)
    net.run(rounds=50)
    latest = net[0].agreement.checkpoints.decided(net[0].agreement.checkpoints.latest())
    assert latest is not None and latest.count > 25  # a checkpoint node 2 does not hold
    # Nodes 0 and 1 decided it, but node 2 has not shown it holds the cut: no pruning.
    assert net[0].agreement.checkpoints.final_n < net[0].agreement.checkpoints.latest()
    net.cut = set()
    net.run(rounds=400, until=lambda: compacted(net, 1) and settled(net))


def test_a_voter_that_learns_a_checkpoint_decided_still_votes_for_it_once():
    """A voter that receives a checkpoint's proposal together with the votes that decided
    it (one sync answer) accepts it anyway: an idle voter that authored nothing above the
    cut would hold every other node's compaction back for ever (Checkpoints.stable)."""
    from controller.replication import OpBatch

    net = Net(3, checkpoint_ops=20, checkpoint_stagger_ms=50, compact=True)
    churn(net, 0, 0, 25)
    net.run(until=lambda: settled(net))
    net.cut = {net[2].id}
    churn(net, 0, 25, 25)
    net.run(rounds=300, until=lambda: net[0].agreement.checkpoints.latest() >= 1)
    net.run(rounds=50)
    n = net[0].agreement.checkpoints.latest()
    slot = checkpoint_slot(n)
    late = net[2]
    missing = net[0].replica.dag.missing_for(late.replica.version_vector())
    late.replica.receive(OpBatch(net.genesis.cluster_id, net[0].id,
                                 tuple(op.raw for op in missing)), net.now_ms)
    late.agreement.step(net.now_ms)
    assert late.agreement.ledger.decided(slot) is not None  # learnt decided, in one go
    net.run(rounds=3)  # still cut off: its vote stays here
    record = late.agreement.ledger.slots[slot]
    assert any(late.id in by for votes in record.accepted.values() for by in votes.values())
    before = late.replica.version_vector()[late.id]
    net.cut = set()
    net.run(rounds=400, until=lambda: all(
        net[i].agreement.checkpoints.final_n >= n for i in (0, 1)) and settled(net))
    assert net[0].replica.dag.pruned > 0
    assert late.replica.version_vector()[late.id] == before  # nothing else written by it


def test_an_op_from_below_the_pruned_checkpoint_is_not_applied_again():
    net = Net(3, checkpoint_ops=20, checkpoint_stagger_ms=50, compact=True)
    churn(net, 0, 0, 30)
    old = net[0].replica.log()[0]
    net.run(rounds=300, until=lambda: compacted(net, 1))
    r = net[1].replica
    assert r.op(old.id) is None
    before = r.state_digest()
    assert r.receive_op(old.raw, net.now_ms) is None
    assert r.counters["below_checkpoint"] == 1 and r.state_digest() == before


def test_by_time_a_checkpoint_waits_a_period_from_the_start():
    """checkpoint_ms counts from the node's start (or the latest checkpoint), not from 0:
    a node that just started does not checkpoint at once."""
    net = Net(3, checkpoint_ms=1_000, checkpoint_stagger_ms=50)
    churn(net, 0, 0, 5)
    net.run(rounds=50)  # 500 ms
    assert all(n.agreement.counters["checkpoint_proposals"] == 0 for n in net.nodes)
    net.run(rounds=300, until=lambda: all(n.agreement.checkpoints.latest() >= 1 for n in net.nodes))


# ---------------------------------------------------------------------- compacted stores
def _state(node) -> tuple:
    r = node.replica
    return (r.state_digest(), r.op_digest(), r.op_count(), sorted(r.version_vector().items()),
            r.rows("kv"), node.agreement.checkpoints.final_n)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_compacted_store_reopens_from_its_checkpoint_and_tail(kind, tmp_path):
    """The store prunes with the replica (one transaction); a restart reads the
    checkpoint's rows, the compaction record and the tail back, and the node is the same
    node: same state, op set, op count, acceptor state; it votes and compacts again."""
    net = Net(3, checkpoint_ops=20, checkpoint_stagger_ms=50, compact=True,
              store_dir=tmp_path if kind == "sqlite" else None)
    churn(net, 0, 0, 30)
    churn(net, 1, 30, 10)
    net.run(rounds=300, until=lambda: compacted(net, 1))
    net.run(rounds=300, until=lambda: settled(net))
    node = net[1]
    before = _state(node)
    stored = node.store.load()
    assert stored.compaction is not None
    assert len(stored.log) == len(node.replica.log()) < node.replica.op_count()
    net.crash(1)
    net.restart(1)
    assert _state(node) == before
    # It goes on: writes, votes on the next checkpoint, compacts again, converges.
    churn(net, 1, 100, 30)
    churn(net, 2, 200, 10)
    net.run(rounds=400, until=lambda: compacted(net, 2))
    net.run(rounds=300, until=lambda: settled(net))
    assert len({n.replica.op_digest() for n in net.nodes}) == 1
    net.crash(1)
    net.restart(1)
    net.run(rounds=300, until=lambda: settled(net))


def test_stored_checkpoint_rows_that_do_not_match_the_certificate_are_refused(tmp_path):
    """A row of the compacted checkpoint edited in the file: the node does not start on it
    (the certified state digest says what the rows must add up to)."""
    import sqlite3

    net = Net(3, checkpoint_ops=20, checkpoint_stagger_ms=50, compact=True, store_dir=tmp_path)
    churn(net, 0, 0, 30)
    net.run(rounds=300, until=lambda: compacted(net, 1))
    node = net[2]
    net.crash(2)
    node.store.close()
    path = tmp_path / f"{node.id[:8]}.db"
    with sqlite3.connect(path) as conn:
        (tbl, pk, meta), = conn.execute(
            "SELECT tbl, pk, meta FROM _synod_base ORDER BY tbl, pk LIMIT 1").fetchall()
        from controller.replication import decode, encode
        plain = decode(meta)
        plain[0] += 2  # a row's causal length changed: another row version
        conn.execute("UPDATE _synod_base SET meta = ? WHERE tbl = ? AND pk = ?",
                     (encode(plain), tbl, pk))
    node.store = net.make_store(node.id)
    with pytest.raises(Refused, match="do not add up to the certified digest"):
        net.restart(2)


def test_a_compaction_whose_commit_fails_leaves_the_store_whole():
    """A crash half-way through compacting (the commit fails: nothing of it is written):
    the store still holds the whole log, and the node restarts and compacts later."""
    net = Net(3, checkpoint_ops=20, checkpoint_stagger_ms=50, compact=True)
    churn(net, 0, 0, 30)
    node = net[2]
    original = node.store.commit

    def commit(ready):
        if ready.compaction is not None and node.up:
            raise RuntimeError("disk full")
        original(ready)

    node.store.commit = commit
    with pytest.raises(RuntimeError, match="disk full"):
        net.run(rounds=300, until=lambda: compacted(net, 1))
    net.crash(2)
    assert node.store.load().compaction is None
    node.store.commit = original
    net.restart(2)
    churn(net, 1, 100, 25)
    net.run(rounds=400, until=lambda: compacted(net, 2))
    net.run(rounds=300, until=lambda: settled(net))
    assert node.store.load().compaction is not None


# ---------------------------------------------------------------------- departed voters
def _remove(net: Net, node: int, reason: str = "") -> None:
    from controller.agreement.membership import membership_slot

    a = net[0].agreement
    m = a.ledger.membership
    p = a.propose(membership_slot(m.version + 1),
                  m.left(net[node].id, reason).to_value(), net.now_ms)
    net.run(rounds=200, until=lambda: p.done)
    assert p.outcome.status == Status.DECIDED, p.outcome
    stay = [n.id for i, n in enumerate(net.nodes) if i != node]
    for i, n in enumerate(net.nodes):  # as the node daemon does: members are its peers
        if i != node:
            n.replica.set_peers(stay)


def pinned_by_a_departed_voter(net: Net) -> tuple[int, dict]:
    """Node 2 writes, is compacted past once, crashes and is removed with no reason; the
    others write on and decide two more checkpoints. Returns the final checkpoint number
    before the removal and the causal past of node 2's last op."""
    churn(net, 0, 0, 25)
    churn(net, 2, 50, 5)
    net.run(rounds=400, until=lambda: compacted(net, 1) and settled(net))
    net.crash(2)
    cps = net[0].agreement.checkpoints
    before, tip = cps.final_n, net[0].replica.version_vector()[net[2].id]
    past = dict(net[0].agreement.ledger.vector(net[0].replica.dag.at(net[2].id, tip).id))
    _remove(net, 2)
    churn(net, 0, 100, 60)
    churn(net, 1, 200, 20)
    net.run(rounds=600, until=lambda: cps.latest() >= before + 2)
    net.run(rounds=50)
    return before, past


def test_a_voter_removed_without_a_reason_pins_compaction_at_its_last_op():
    """It may be a seceded side that comes back to reunite (decision 0070): the ops above
    what it last acknowledged stay, whatever checkpoints the others decide."""
    net = Net(3, checkpoint_ops=20, checkpoint_stagger_ms=50, compact=True)
    cps = net[0].agreement.checkpoints
    before, past = pinned_by_a_departed_voter(net)
    assert cps.departed() == {net[2].id}
    assert cps.final_n == before  # decided, not compacted: their cuts pass node 2's op
    assert all(s <= past.get(a, 0) for a, s in cps.final.cut.items())


def test_a_decommissioned_voter_does_not_pin_compaction():
    from controller.agreement.membership import DECOMMISSIONED

    net = Net(3, checkpoint_ops=20, checkpoint_stagger_ms=50, compact=True)
    churn(net, 0, 0, 10)
    net.run(rounds=100, until=lambda: settled(net))
    net.crash(2)
    _remove(net, 2, DECOMMISSIONED)
    churn(net, 0, 100, 60)
    churn(net, 1, 200, 20)
    cps = net[0].agreement.checkpoints
    net.run(rounds=600, until=lambda: cps.final_n >= 2)
    assert cps.departed() == set() and net[0].replica.dag.pruned > 40


def test_a_long_tail_is_checkpointed_in_bounded_steps_that_a_retry_repeats():
    """next(ops_max) names the first ops_max ops above the previous checkpoint in log
    order: each voter computes a bounded state (a 100k-op tail cost 20 s a proposal in
    issue 12's soak, longer than its timeout), and a retry names the same cut (a memo hit,
    not another full computation)."""
    net = Net(3)
    churn(net, 0, 0, 10)
    net.run(until=lambda: settled(net))
    first = decide_next(net)
    churn(net, 0, 10, 50)
    churn(net, 1, 60, 10)
    net.run(until=lambda: settled(net))
    cps = net[0].agreement.checkpoints
    cp = cps.next(ops_max=25)
    assert cp is not None and cp.n == first.n + 1 and cp.count == first.count + 25
    assert cps.next(ops_max=25) == cp  # the same cut while nothing more is decided
    p = net[0].agreement.propose(checkpoint_slot(cp.n), cp.to_value(), net.now_ms)
    net.run(until=lambda: p.done)
    assert p.outcome.status is Status.DECIDED
    after = cps.next(ops_max=25)
    assert after is not None and after.count == cp.count + 25
    whole = cps.next()
    assert whole is not None and dict(whole.cut) == net[0].replica.version_vector()


def test_the_first_checkpoint_is_bounded_too():
    """A history that never had a checkpoint (older code, or compaction off until now) is
    taken in steps from the empty cut, not computed whole in one proposal."""
    net = Net(3)
    churn(net, 0, 0, 30)
    churn(net, 1, 30, 20)
    net.run(until=lambda: settled(net))
    cps = net[0].agreement.checkpoints
    assert cps.latest() == 0
    cp = cps.next(ops_max=25)
    assert cp is not None and cp.n == 1 and cp.count == 25
    assert cps.next(ops_max=25) == cp
    p = net[0].agreement.propose(checkpoint_slot(cp.n), cp.to_value(), net.now_ms)
    net.run(until=lambda: p.done)
    assert p.outcome.status is Status.DECIDED
    assert cps.next(ops_max=25).count == 50


def test_the_voters_checkpoint_a_long_tail_in_steps_of_checkpoint_ops_max():
    """The engine proposes with the bound: after a burst, each decided checkpoint covers
    at most checkpoint_ops_max ops above the previous one, and they catch up in steps."""
    net = Net(3, checkpoint_ops=10, checkpoint_ops_max=10, checkpoint_stagger_ms=50)
    churn(net, 0, 0, 12)
    net.run(rounds=300, until=lambda: net[0].agreement.checkpoints.latest() >= 1)
    churn(net, 0, 12, 45)
    net.run(rounds=2_000, until=lambda: net[0].agreement.checkpoints.latest() >= 4)
    cps = net[0].agreement.checkpoints
    counts = [cps.decided(n).count for n in range(1, cps.latest() + 1)]
    assert all(0 < b - a <= 10 for a, b in zip(counts, counts[1:], strict=False)), counts
