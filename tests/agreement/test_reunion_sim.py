"""Seeded secession-then-reunion runs: a split in the middle of traffic, agreement, validity and
certificates (under each lineage's membership chain) on every side and after the merge, equal
op-set and state digests after the merge (both DAGs joined on every node), and exactly the
conflicts the oracle predicts — for a parent and its seceded side, with membership changes
while apart, and for two seceded siblings.

Strict: a finding (a fault diagnosed in another layer) fails a seed like any other check.
Default: 60 seeds of the parent story and 20 of the sibling one (~25 s on 2 cores).
More: SYNOD_REUNION_SEEDS=N (sibling seeds: a third of it; first seed:
SYNOD_REUNION_FIRST_SEED), or --long for the wide ranges after them (2,000 parent and 500
sibling seeds by default, ~8 min; SYNOD_REUNION_LONG_SEEDS=N).
A failure prints its seed and the one command that replays it.
"""

from __future__ import annotations

import os

import pytest

from controller.agreement import Agreement, Membership, coordinator
from controller.agreement.lineage import MERGE
from controller.replication import Replica
from controller.sim import reunion_oracle as oracle
from controller.sim.reunion import (
    ReunionSim,
    ReunionSimConfig,
    ReunionSimFailure,
    main,
    run_reunion_seed,
)

SEEDS = int(os.environ.get("SYNOD_REUNION_SEEDS", 60))
SIBLING_SEEDS = max(1, SEEDS // 3)
FIRST = int(os.environ.get("SYNOD_REUNION_FIRST_SEED", 0))
LONG_SEEDS = int(os.environ.get("SYNOD_REUNION_LONG_SEEDS", 2_000))


@pytest.mark.parametrize("seed", range(FIRST, FIRST + SEEDS))
def test_seed(seed):
    try:
        result = run_reunion_seed(seed)
    except ReunionSimFailure as exc:
        pytest.fail(str(exc), pytrace=False)
    assert not result.findings
    assert result.slot_conflicts >= 1  # the final contested slot decides on both sides
    assert result.relation == "b_seceded_from_a"


@pytest.mark.parametrize("seed", range(FIRST, FIRST + SIBLING_SEEDS))
def test_sibling_seed(seed):
    try:
        result = run_reunion_seed(seed, siblings=1)
    except ReunionSimFailure as exc:
        pytest.fail(str(exc), pytrace=False)
    assert not result.findings
    assert result.slot_conflicts >= 1 and result.relation == "siblings"


@pytest.mark.slow
@pytest.mark.parametrize(
    "story_name, overrides, count",
    [("parent", {}, LONG_SEEDS), ("siblings", {"siblings": 1}, max(1, LONG_SEEDS // 4))],
)
def test_wide_seed_range(story_name, overrides, count):
    """--long: the seeds after the CI ones, every failure and finding listed at the end."""
    first = FIRST + (SEEDS if not overrides else SIBLING_SEEDS)
    found = failures(range(first, first + count), **overrides)
    assert not found, f"{len(found)} of {count} {story_name} seeds failed:\n" + "\n".join(found)


def failures(seeds, **overrides) -> list[str]:
    out = []
    for seed in seeds:
        try:
            run_reunion_seed(seed, **overrides)
        except ReunionSimFailure as exc:
            out.append(str(exc))
    return out


def test_both_ways_of_deciding_merge():
    assert run_reunion_seed(5, auto_merge=True, siblings=0).auto_merged
    assert not run_reunion_seed(5, auto_merge=False, siblings=0).auto_merged


def test_a_3_2_split_with_colliding_writes():
    result = run_reunion_seed(
        1, nodes=5, seceders=2, siblings=0, keys=2, writes=8, contested=3, one_sided=0
    )
    assert result.slot_conflicts >= 4 and result.row_conflicts >= 1  # + retried master/*


def test_the_split_comes_in_the_middle_of_traffic():
    """Writes made before the split that only one side held at the fork are common."""
    results = [run_reunion_seed(seed) for seed in (1, 3)]
    assert all(r.split_one_side for r in results)


@pytest.mark.parametrize("siblings", [0, 1])
def test_reunions_with_vector_deltas(siblings):
    """Vectors as deltas (decision 0101) through secession, lineage moves, crashes and the
    join: a node's replica is recreated on each move, so its peers' bases go stale and
    resyncs happen; every check still holds."""
    seeds = range(1, 7) if siblings == 0 else range(1, 4)
    for seed in seeds:
        result = run_reunion_seed(seed, siblings=siblings, vector_deltas=True)
        assert not result.findings


def test_the_oracle_goes_by_the_fork_vector_not_by_wall_time(monkeypatch):
    """A parent write made before the split that the seceding founder never received is
    'after the fork': an oracle that goes by wall time disagrees with the report."""

    def by_wall_time(self):
        pre = (w.fork or w.value.startswith(b"pre") for w in self.latest.values())
        return {k: w for (k, w), p in zip(self.latest.items(), pre, strict=True) if not p}

    monkeypatch.setattr(oracle.SideRecord, "since_fork", by_wall_time)
    (found,) = failures([2])
    assert "conflict report" in found


def test_a_fork_copy_written_now_loses_parent_writes_silently():
    """Decision 0016's fork copy (the parent's rows re-signed at the secession) beats every
    parent write made after the fork point but before the secession: the merge discards it
    with no report entry. The simulator's copy is older than every parent version."""
    (found,) = failures([10], fork_copy="now")
    assert "silently lost" in found and "fork copy" in found
    assert "--set fork_copy=now" in found


def test_the_parent_changes_its_membership_while_apart(monkeypatch):
    """A spare joins and a seceded voter leaves on the parent's side while one of its voters
    is cut off (it lags, then catches up); every certificate is verified under the
    membership chain in force (membership 0 alone refuses later ones)."""
    result = run_reunion_seed(2, siblings=0, joins=1, leaves=1, lagging=True)
    assert result.membership_version == 2 and result.relation == "b_seceded_from_a"

    def genesis_only(decisions, genesis):
        return {0: Membership.from_genesis(genesis)}

    monkeypatch.setattr(oracle, "verified_chain", genesis_only)
    (found,) = failures([2], siblings=0, joins=1, leaves=1, lagging=True)
    assert "membership 1 unknown" in found


@pytest.mark.parametrize("nodes,seceders,siblings", [(5, 2, 1), (3, 1, 1)])
def test_siblings_reunite_by_an_operator_vote(nodes, seceders, siblings):
    """Two sides secede from one parent; they reunite without it. Automatic merge does not
    cover siblings; the winner has more voters, then the smaller cluster id."""
    sim = ReunionSim(
        ReunionSimConfig.from_seed(
            4, nodes=nodes, seceders=seceders, siblings=siblings, auto_merge=True
        )
    )
    result = sim.run()
    assert result.relation == "siblings" and not result.auto_merged
    assert result.membership_version == 0  # the parent, apart, changed nothing
    b, c = sim.pair
    if len(b.nodes) != len(c.nodes):
        assert sim.kept is max((b, c), key=lambda s: len(s.nodes))
    else:
        assert sim.kept is min((b, c), key=lambda s: s.cluster)
    for n in b.nodes + c.nodes:
        r = sim.net.nodes[n].replica
        assert {r.cluster_id, *r.lineages()} == {b.cluster, c.cluster}
    for n in sim.sides["A"].nodes:  # the parent stays apart
        assert not sim.net.nodes[n].replica.lineages()


def test_the_winner_is_checked(monkeypatch):
    """An oracle that picks the other sibling must disagree with the rule (decision 0014)."""
    rule = oracle.expected_winner

    def the_other(x, y, x_voters, y_voters):
        return y if rule(x, y, x_voters, y_voters) is x else x

    monkeypatch.setattr(oracle, "expected_winner", the_other)
    (found,) = failures([4], nodes=3, seceders=1, siblings=1)
    assert "resolution" in found


def test_siblings_never_merge_by_policy(monkeypatch):
    # The decision the node's coordinator makes, and the simulator now asks it for.
    monkeypatch.setattr(coordinator, "auto_reunion_value", lambda policy, relation: MERGE)
    (found,) = failures([4], siblings=1, auto_merge=True)
    assert "auto-merge" in found and "siblings" in found


# The simulator drives each node's lineage coordinator (the object the node's Keeper
# drives): a fault put into the coordinator must fail seeds.
def test_the_coordinators_write_the_report(monkeypatch):
    monkeypatch.setattr(coordinator.LineageCoordinator, "_report", lambda self, cid, view: [])
    found = failures([2, 3])
    assert len(found) == 2 and all("merged cluster not settled" in f for f in found)


def test_only_the_kept_side_writes_the_report(monkeypatch):
    original = coordinator.LineageCoordinator._report

    def either_side(self, cid, view):
        report = view.reports.get(cid)
        if report is not None and cid not in view.reported and view.member_now:
            return [coordinator.WriteReport(cid, report)]  # the kept check left out
        return original(self, cid, view)

    monkeypatch.setattr(coordinator.LineageCoordinator, "_report", either_side)
    found = failures([2, 3, 4])
    assert found and all("report writers" in f for f in found)


def test_a_restarted_node_joins_again(monkeypatch):
    """Seed 2 crashes a node after the merge. On start its coordinator joins again from
    the decisions (restart) or, failing that, from the lineages announced in kv rows (met,
    then joined at the next tick); without both the node stays apart."""
    from controller.sim import reunion_net

    assert ReunionSimConfig.from_seed(2).crashes
    monkeypatch.setattr(coordinator.LineageCoordinator, "restart", lambda self, decided: [])
    assert not failures([2])
    monkeypatch.setattr(reunion_net, "held_announcements", lambda replica: [])
    (found,) = failures([2])
    assert "not settled" in found


def test_the_fork_copy_is_written_once_by_the_founder(monkeypatch):
    monkeypatch.setattr(coordinator, "fork_copy_due", lambda genesis, me, own_seq: None)
    from controller.sim import reunion_story

    monkeypatch.setattr(reunion_story, "fork_copy_due", coordinator.fork_copy_due)
    (found,) = failures([2])
    assert "fork copy" in found


def test_the_move_home_is_the_coordinators(monkeypatch):
    monkeypatch.setattr(coordinator.LineageCoordinator, "_return", lambda self, cid, view: [])
    (found,) = failures([322])
    assert "home:" in found


def test_the_checks_bite(monkeypatch):
    """A join that takes the other lineage's ops but not their rows must be caught."""

    def ops_only(self, source, op):
        self._opset_pending.append(op.id)

    monkeypatch.setattr(Replica, "_absorb", ops_only)
    found = failures([2, 3, 9])
    assert len(found) == 3
    assert all("merged cluster not settled" in f or "merged rows" in f for f in found)


def test_a_merge_joins_the_dags_not_a_copy():
    """Every node ends with both lineages' ops: its own and the other one joined."""
    sim = ReunionSim(ReunionSimConfig.from_seed(3))
    sim.run()
    x, y = sim.pair
    both = x.nodes + y.nodes
    assert len({sim.net.nodes[n].replica.op_digest() for n in both}) == 1
    for n in both:
        r = sim.net.nodes[n].replica
        assert {r.cluster_id, *r.lineages()} == {x.cluster, y.cluster}


@pytest.mark.parametrize("seed, siblings", [(1001, 0), (3061, 0), (233, 1), (462, 1)])
def test_a_decision_is_learned_only_once_durable(seed, siblings):
    """A decision counting this node's own accepted vote surfaces (watch, proposal outcome,
    decided()) only once that vote is durable: a crash before would lose both."""
    result = run_reunion_seed(seed, siblings=siblings)
    assert not result.findings


@pytest.mark.parametrize("seed", [322, 462, 482])
def test_a_decision_completed_after_the_report_gets_a_late_entry(seed):
    """After the join a parent acceptor votes on a pre-split ballot of a seceded proposer
    it receives only then, completing a parent decision after the report; the kept side's
    coordinators add its entry then (WriteLateEntries), so no decision is overridden
    silently."""
    result = run_reunion_seed(seed)
    assert not result.findings
    assert result.late_entries >= 1


def test_late_entries_are_written_by_the_coordinators(monkeypatch):
    original = coordinator.LineageCoordinator._report

    def no_late_entries(self, cid, view):
        return [] if cid in view.reported else original(self, cid, view)

    monkeypatch.setattr(coordinator.LineageCoordinator, "_report", no_late_entries)
    found = failures([322, 462, 482])
    assert len(found) == 3 and all("conflicts table" in f for f in found)


@pytest.mark.parametrize(
    ("seed", "siblings"), [(1734, 0), (1835, 0), (1612, 0), (150, 1), (197, 1)]
)
def test_the_oracle_reads_what_a_side_held_at_its_cut(seed, siblings):
    """Found by the wide sweep once the sides meet before they decide: a seceded node that
    joined the parent's DAG relays its pre-split ops to the parent, whose cut then holds a
    pre-fork write that supersedes the parent's own write apart (1734, 1835). The node's
    report rightly lists no entry; the oracle had read what the parent held before they
    met. Reading the cut alone was wrong too: a write a crash lost (its seq then reused)
    is inside the cut by number but not held (1612, 150, 197)."""
    result = run_reunion_seed(seed, siblings=siblings)
    assert not result.findings


def test_seceded_voters_move_home_once_reported():
    """Seed 322: the parent is kept; the seceded side's voters (still the parent's) move
    home into it (ReturnHome), and can write there (checked in the run)."""
    result = run_reunion_seed(322)
    assert result.returned == 2


@pytest.mark.parametrize("seed", [3355, 5410, 5783])
def test_the_report_lists_only_values_a_side_held(seed):
    """A parent write made after the fork point that the parent had itself superseded (a
    concurrent pre-fork write with a later hlc) is no value the parent held: no entry."""
    result = run_reunion_seed(seed)
    assert not result.findings


def test_an_overridden_decision_must_be_reported():
    """A slot both lineages decided differently is lost by one side: only with an entry."""
    entry = ("slot", "master/late", (), "", b"A", b"B")
    reported = oracle.Report(frozenset({entry}), {})
    a, b = {"master/late": b"A", "alloc/x": b"1"}, {"master/late": b"B", "alloc/x": b"1"}
    assert oracle.silent_overrides(a, b, reported) == []
    assert oracle.silent_overrides(a, b, oracle.Report(frozenset(), {})) == [
        "master/late: b'A' / b'B'"
    ]


def test_a_failure_names_its_replay_command():
    sim = ReunionSim(ReunionSimConfig.from_seed(11, crashes=3))
    msg = str(sim.net.fail("example"))
    assert msg.startswith("seed 11: example")
    assert "python -m controller.sim.reunion --seed 11 --set crashes=3" in msg


def test_strict_is_the_default():
    assert ReunionSimConfig(seed=0).strict and ReunionSimConfig.from_seed(0).strict


def _hand_out_undurable_decisions(monkeypatch):
    """The fault fixed in the engine (a decision handed out before this node's vote in it
    is durable), put back: seed 1001's crash then loses a vote a side had learned."""
    monkeypatch.setattr(Agreement, "_durable", lambda self, d: True)


def test_a_finding_fails_the_seed(monkeypatch):
    _hand_out_undurable_decisions(monkeypatch)
    (found,) = failures([1001])
    assert "then a crash lost the deciding vote" in found
    assert "replay: .venv/bin/python -m controller.sim.reunion --seed 1001" in found


def test_not_strict_lists_the_findings(monkeypatch):
    _hand_out_undurable_decisions(monkeypatch)
    result = run_reunion_seed(1001, strict=False)
    (finding,) = result.findings
    assert "then a crash lost the deciding vote" in finding
    # The replay command is the strict one: it fails on the finding.
    assert finding.endswith("replay: .venv/bin/python -m controller.sim.reunion --seed 1001")


def test_the_command_line_prints_findings_and_fails(monkeypatch, capsys):
    """A range of seeds: each failure or finding is printed with its replay command, and
    the exit status is 1 if there was any (strict or not)."""
    assert main(["--seed", "3", "--count", "2"]) == 0
    assert "2 passed, 0 failed, 0 with findings" in capsys.readouterr().out
    _hand_out_undurable_decisions(monkeypatch)
    for extra in ([], ["--set", "strict=False"]):
        assert main(["--seed", "1000", "--count", "2", *extra]) == 1
        out, err = capsys.readouterr()
        assert "seed 1001: B learned" in err and "crash lost the deciding vote" in err
        assert "replay: .venv/bin/python -m controller.sim.reunion --seed 1001" in err
        assert ("1 failed, 0 with findings" if not extra else "0 failed, 1 with findings") in out
