"""Settled decisions leave memory for the store's archive (decision 0103): a compaction
moves every decided slot whose certificate lies inside its cut (not memberships or
policies) to the store, and the ledger answers them from there, after a restart too."""

from __future__ import annotations

import pytest

from controller.agreement.certificate import certificate_ops
from controller.agreement.ledger import ARCHIVE_KEY
from controller.agreement.messages import Accept, Accepted, Ballot
from controller.replication import decode

from .conftest import Net
from .test_checkpoint import churn, compacted, settled


def decide(net: Net, slots: list[str], proposer: int = 0) -> None:
    handles = [net[proposer].agreement.propose(s, {"v": s}, net.now_ms) for s in slots]
    net.run(rounds=400, until=lambda: all(p.done for p in handles))
    assert all(p.outcome.value == {"v": p.slot} for p in handles), [p.outcome for p in handles]


def record_bytes(node) -> int:
    stored = node.store.load()
    assert stored.compaction is not None
    return len(stored.compaction[0])


def grown(net: Net, slots: list[str], n: int) -> None:
    """Decide `slots`, then write until every node compacted to checkpoint n."""
    decide(net, slots)
    churn(net, 1, 1000 * n, 30)
    net.run(rounds=600, until=lambda: compacted(net, n))
    net.run(rounds=300, until=lambda: settled(net))


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_decided_slots_below_a_compaction_leave_memory_and_are_answered(kind, tmp_path):
    net = Net(3, checkpoint_ops=20, checkpoint_stagger_ms=50, compact=True,
              store_dir=tmp_path if kind == "sqlite" else None)
    first = [f"app/a{i}" for i in range(12)]
    grown(net, first, 1)
    grown(net, [], 2)  # the first slots' certificates are inside checkpoint 2's cut
    for node in net.nodes:
        ledger = node.agreement.ledger
        held = [s for s in first if s in ledger.slots]
        assert held == [], f"still in memory at {node.id[:8]}: {held}"
        assert ledger.archived_count >= len(first)
        assert "membership/0" not in ledger.slots  # (never a slot: genesis)
        for s in first:
            d = node.agreement.decided(s)
            assert d is not None and d.value == {"v": s}
        listed = [d.slot for d in node.agreement.decisions("app/")]
        assert listed == sorted(first)
        archived = dict(node.store.archived_items(ARCHIVE_KEY + "app/"))
        assert sorted(archived) == [ARCHIVE_KEY + s for s in sorted(first)]
        assert decode(archived[ARCHIVE_KEY + "app/a3"])[0] == "app/a3"  # a certificate
        if kind == "sqlite":  # an older Synod, which would not see the archive, refuses it
            assert node.store._get_meta("format") == 3
    # A restart answers them from the store, not from the log (which no longer has them).
    net.crash(1)
    if kind == "sqlite":
        net[1].store.close()
        net[1].store = net.make_store(net[1].id)
    net.restart(1)
    ledger = net[1].agreement.ledger
    assert not any(s in ledger.slots for s in first)
    assert [d.slot for d in net[1].agreement.decisions("app/")] == sorted(first)
    assert net[1].agreement.decided("app/a7").value == {"v": "app/a7"}
    # And agreement goes on: a new slot is decided by everyone, the old one is not reopened.
    decide(net, ["app/b0"], proposer=1)
    assert net[1].agreement.decided("app/a0").value == {"v": "app/a0"}


def test_the_compaction_record_does_not_grow_with_decided_slots():
    """Before 0103 every decided slot's certificate travelled in every compaction record
    (and every snapshot's): ~1.3 KB a slot, rewritten at each checkpoint."""
    net = Net(3, checkpoint_ops=20, checkpoint_stagger_ms=50, compact=True)
    grown(net, [f"app/a{i}" for i in range(4)], 1)
    grown(net, [], 2)
    small = record_bytes(net[0])
    grown(net, [f"app/b{i}" for i in range(40)], 3)
    grown(net, [], 4)
    big = record_bytes(net[0])
    assert big < small + 4000, (small, big)  # 40 certificates would add ~50 KB
    assert net[0].agreement.ledger.archived_count >= 44


def test_a_late_vote_for_an_archived_slot_does_not_bring_it_back():
    net = Net(3, checkpoint_ops=20, checkpoint_stagger_ms=50, compact=True)
    grown(net, ["app/x"], 1)
    grown(net, [], 2)
    a = net[2].agreement
    assert "app/x" not in a.ledger.slots
    decision = a.decided("app/x")
    assert decision is not None
    # A proposer that missed the decision runs a higher ballot for another value.
    late = Ballot(a.ledger.mv, decision.certificate.ballot.round + 5, net[0].id)
    net[0].agreement._emit(Accept("app/x", late, {"v": "other"}))
    net.run(rounds=100)
    for node in net.nodes:
        assert "app/x" not in node.agreement.ledger.slots
        assert node.agreement.decided("app/x").value == {"v": "app/x"}
    assert sum(n.agreement.ledger.counters["archived_slot_vote"] for n in net.nodes) >= 1


def test_without_an_archive_decisions_stay_in_memory():
    net = Net(3, checkpoint_ops=20, checkpoint_stagger_ms=50, compact=True)
    for node in net.nodes:
        node.agreement.ledger.archive = None
    grown(net, ["app/y"], 1)
    grown(net, [], 2)
    for node in net.nodes:
        assert node.agreement.ledger.slots["app/y"].decided is not None
        assert node.agreement.ledger.archived_count == 0


def test_a_late_vote_contradicting_an_archived_certificate_is_evidence():
    """Equivocation is still caught after the slot left memory: an `accepted` by a voter of
    the certificate, in its ballot, for another value."""
    net = Net(3, checkpoint_ops=20, checkpoint_stagger_ms=50, compact=True)
    grown(net, ["app/e"], 1)
    grown(net, [], 2)
    d = net[0].agreement.decided("app/e")
    assert "app/e" not in net[0].agreement.ledger.slots
    voter = next(i for i, n in enumerate(net.nodes)
                 if n.id in {op.author for op in certificate_ops(d.certificate)})
    net[voter].agreement._emit(Accepted("app/e", d.certificate.ballot, {"v": "forged"}))
    net.run(rounds=60)
    for node in net.nodes:
        found = [c for c in node.agreement.ledger.conflicts if c.slot == "app/e"]
        assert found and found[0].author == net[voter].id, node.id[:8]


def test_decisions_in_pages_and_the_newest_equal_the_whole_list():
    net = Net(3, checkpoint_ops=20, checkpoint_stagger_ms=50, compact=True)
    grown(net, [f"app/p{i:02}" for i in range(9)], 1)
    grown(net, [], 2)
    a = net[1].agreement
    whole = [d.slot for d in a.decisions("")]
    paged = [d.slot for page in a.decision_pages("", page=2) for d in page]
    assert sorted(paged) == whole and len(paged) == len(set(paged))
    assert [d.slot for page in a.decision_pages("app/", page=4) for d in page] == [
        f"app/p{i:02}" for i in range(9)]
    newest = {d.slot for d in a.decisions("", newest=3)}
    held = {d.slot for d in a.ledger.held_decisions("")}
    assert held <= newest and len(newest - held) == 3


def test_a_compaction_that_fails_leaves_the_decisions_held(monkeypatch):
    net = Net(3, checkpoint_ops=20, checkpoint_stagger_ms=50, compact=True)
    grown(net, [], 1)
    decide(net, ["app/f"])  # inside checkpoint 2's cut: the next compaction archives it
    node = net[2]

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(node.replica, "compact", broken)
    churn(net, 1, 5000, 30)
    with pytest.raises(OSError):
        net.run(rounds=600, until=lambda: node.agreement.checkpoints.final_n >= 2)
    ledger = node.agreement.ledger
    assert ledger.slots["app/f"].decided is not None
    assert "app/f" not in ledger._archiving and ledger.decided("app/f") is not None
