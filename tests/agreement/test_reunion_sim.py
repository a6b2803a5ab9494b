"""Seeded secession-then-reunion runs: agreement, validity and certificates on both sides of the
split and after the merge, equal op-set and state digests after the merge (both DAGs joined on
every node), and exactly the expected conflicts.

Default: 60 seeds (~6 s). More: SYNOD_REUNION_SEEDS=2000 (first seed: SYNOD_REUNION_FIRST_SEED).
A failure prints its seed and the one command that replays it.
"""

from __future__ import annotations

import os

import pytest

from controller.replication import Replica
from controller.sim.reunion import ReunionSim, ReunionSimConfig, ReunionSimFailure, run_reunion_seed

SEEDS = int(os.environ.get("SYNOD_REUNION_SEEDS", 60))
FIRST = int(os.environ.get("SYNOD_REUNION_FIRST_SEED", 0))


@pytest.mark.parametrize("seed", range(FIRST, FIRST + SEEDS))
def test_seed(seed):
    try:
        result = run_reunion_seed(seed)
    except ReunionSimFailure as exc:
        pytest.fail(str(exc), pytrace=False)
    assert result.slot_conflicts >= 1  # the final contested slot decides on both sides


def test_both_ways_of_deciding_merge():
    assert run_reunion_seed(5, auto_merge=True).auto_merged
    assert not run_reunion_seed(5, auto_merge=False).auto_merged


def test_a_3_2_split_with_colliding_writes():
    result = run_reunion_seed(1, nodes=5, seceders=2, keys=2, writes=8, contested=3)
    assert result.slot_conflicts == 4 and result.row_conflicts >= 1


def test_the_checks_bite(monkeypatch):
    """A join that takes the other lineage's ops but not their rows must be caught."""

    def ops_only(self, source, op):
        self._opset_pending.append(op.id)

    monkeypatch.setattr(Replica, "_absorb", ops_only)
    failures = 0
    for seed in range(10):
        try:
            run_reunion_seed(seed)
        except ReunionSimFailure as exc:
            failures += 1
            assert "merged cluster not settled" in str(exc) or "merged rows" in str(exc)
    assert failures


def test_a_merge_joins_the_dags_not_a_copy():
    """Every node ends with both lineages' ops: its own and the other one joined."""
    sim = ReunionSim(ReunionSimConfig.from_seed(3))
    sim.run()
    digests = {sim.nodes[n].replica.op_digest() for n in sim.everyone}
    assert len(digests) == 1
    for n in sim.everyone:
        r = sim.nodes[n].replica
        assert {r.cluster_id, *r.lineages()} == {sim.lin_a.cluster_id, sim.lin_b.cluster_id}


def test_a_failure_names_its_replay_command():
    sim = ReunionSim(ReunionSimConfig.from_seed(11, crashes=3))
    msg = str(sim.fail("example"))
    assert msg.startswith("seed 11: example")
    assert "python -m controller.sim.reunion --seed 11 --set crashes=3" in msg
