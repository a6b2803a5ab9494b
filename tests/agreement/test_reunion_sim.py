"""Seeded secession-then-reunion runs: agreement, validity and certificates on both sides of the
split and after the merge, equal digests after the merge, and exactly the expected conflicts.

Default: 60 seeds (~6 s). More: SYNOD_REUNION_SEEDS=2000 (first seed: SYNOD_REUNION_FIRST_SEED).
A failure prints its seed and the one command that replays it.
"""

from __future__ import annotations

import os

import pytest

from controller.replication import Upsert
from controller.sim import reunion
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
    """Carrying every seceded row over (fork copy included) must be caught by the oracle."""

    def naive(kept, other):
        rows, _ = other
        return [Upsert(t, k, {c: v.value for c, v in r.cols.items()}) for (t, k), r in rows.items()]

    monkeypatch.setattr(reunion, "merge_mutations", naive)
    failures = 0
    for seed in range(20):
        try:
            run_reunion_seed(seed)
        except ReunionSimFailure as exc:
            failures += 1
            assert "merged rows" in str(exc)
    assert failures


def test_a_failure_names_its_replay_command():
    sim = ReunionSim(ReunionSimConfig.from_seed(11, crashes=3))
    msg = str(sim.fail("example"))
    assert msg.startswith("seed 11: example")
    assert "python -m controller.sim.reunion --seed 11 --set crashes=3" in msg
