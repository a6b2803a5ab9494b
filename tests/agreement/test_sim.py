"""Seeded simulation of agreement: agreement, validity, certificates, termination, lag, restarts.

Default: 300 seeds. More: SYNOD_AGREEMENT_SEEDS=5000 (first seed: SYNOD_AGREEMENT_FIRST_SEED).
With an equivocating founder that is then expelled: 40 seeds, SYNOD_EQUIVOCATION_SEEDS=N.
A failure prints its seed and the one command that replays it.
"""

from __future__ import annotations

import os

import pytest

from controller.sim.agreement import AgreementSimFailure, run_agreement_seed

SEEDS = int(os.environ.get("SYNOD_AGREEMENT_SEEDS", 300))
FIRST = int(os.environ.get("SYNOD_AGREEMENT_FIRST_SEED", 0))
EQUIVOCATION_SEEDS = int(os.environ.get("SYNOD_EQUIVOCATION_SEEDS", 40))


@pytest.mark.parametrize("seed", range(FIRST, FIRST + SEEDS))
def test_seed(seed):
    try:
        result = run_agreement_seed(seed)
    except AgreementSimFailure as exc:
        pytest.fail(str(exc), pytrace=False)
    assert result.final_decided_ms >= 0


@pytest.mark.parametrize("seed", range(FIRST, FIRST + EQUIVOCATION_SEEDS))
def test_equivocator_is_expelled(seed):
    """A founder forks its chain and goes offline; once quiet it must no longer be a voter
    (the leave its peers proposed by themselves, citing the two ops, is the only value
    decided that nobody proposed by hand). No crashes: see the test below."""
    try:
        run_agreement_seed(seed, equivocators=1, crashes=0)
    except AgreementSimFailure as exc:
        pytest.fail(str(exc), pytrace=False)


def test_equivocator_is_expelled_with_crashes():
    run_agreement_seed(10, equivocators=1)


@pytest.mark.parametrize("seed", range(FIRST, FIRST + EQUIVOCATION_SEEDS))
def test_an_equivocator_that_keeps_voting_is_expelled_and_learners_agree(seed):
    """As above, but the equivocator stays online and votes on one branch: every voter
    must still learn every decision (votes kept as evidence count too)."""
    try:
        run_agreement_seed(seed, equivocators=1, equivocator_online=True)
    except AgreementSimFailure as exc:
        pytest.fail(str(exc), pytrace=False)


def test_seed_806_a_vector_through_a_gap_is_not_kept():
    """Found at seed 806 (equivocator online): a node memoised a causal-past vector computed
    while an evidence op's parent was missing, refused a new voter's ops as not_member and
    stayed a membership behind."""
    run_agreement_seed(806, equivocators=1, equivocator_online=True)


def test_seed_1042_a_decision_in_an_ops_past_does_not_depend_on_the_ballot_learned():
    """Found at seed 1042 (equivocator online): one node learned membership/1 through
    another ballot than the rest, so for a new voter's first op it found no decided
    membership in the op's past, refused its ops as not_member and stayed behind."""
    run_agreement_seed(1042, equivocators=1, equivocator_online=True)


def test_termination_is_measured_in_virtual_time():
    result = run_agreement_seed(7, drop=0.0, partitions=0, crashes=0, lagging=False)
    # once quiet, a dueled slot decides within a few retry periods of virtual time
    assert 0 <= result.final_decided_ms < 5_000


def test_lagging_node_several_memberships_behind():
    result = run_agreement_seed(3, nodes=5, spares=2, joins=2, leaves=1, lagging=True)
    assert result.membership_version >= 2


def test_a_failure_names_its_replay_command():
    from controller.sim.agreement import AgreementSim, AgreementSimConfig

    sim = AgreementSim(AgreementSimConfig.from_seed(11))
    msg = str(sim.fail("example"))
    assert msg.startswith("seed 11: example")
    assert "python -m controller.sim.agreement --seed 11" in msg


@pytest.mark.parametrize("seed", range(1, 9))
def test_checkpoints_decided_under_faults_hold_the_state_at_their_cut(seed):
    """Voters propose checkpoints by themselves every 12 ops through partitions, crashes
    and duels; each one learned is checked against the state computed afresh from the
    learner's ops inside its cut (AgreementSim._check_checkpoint)."""
    result = run_agreement_seed(seed, checkpoint_ops=12)
    assert result.checkpoints > 0


def test_a_wrong_checkpoint_that_gets_decided_is_caught(monkeypatch):
    """If acceptors did not check the digests and a proposer's were wrong, the simulator's
    own computation must catch the decided checkpoint."""
    from dataclasses import replace

    from controller.agreement.checkpoint import Checkpoints

    right = Checkpoints.next
    monkeypatch.setattr(Checkpoints, "check", lambda self, n, value: None)
    monkeypatch.setattr(
        Checkpoints, "next",
        lambda self, ops_max=0: (cp := right(self, ops_max)) and replace(cp, count=cp.count + 1),
    )
    with pytest.raises(AgreementSimFailure, match="not the state at its cut"):
        run_agreement_seed(1, checkpoint_ops=12)


def test_a_store_reopened_after_compactions_keeps_the_ops_the_tail_names():
    """Seed 15: an equivocator's op above every cut names an op pruned two compactions
    ago; the later compaction (whose cut no longer lists that author) must keep it, or
    the node cannot reopen its store."""
    result = run_agreement_seed(
        15, checkpoint_ops=12, compact=True, equivocators=1, equivocator_online=True
    )
    assert result.counters.get("ops_pruned", 0) > 0 and result.restarts > 0


@pytest.mark.parametrize("seed", range(1, 13))
def test_compaction_under_faults(seed):
    """As above, and each node prunes its log below the latest checkpoint once stable
    (decision 0070): agreement, validity, termination and every checkpoint's state hold
    with pruned logs, a fork proven below a pruned cut included. No voter leaves here: a
    voter removed without a reason for good pins compaction (the next test)."""
    for extra in ({}, {"equivocators": 1, "equivocator_online": True}):
        result = run_agreement_seed(seed, checkpoint_ops=12, compact=True, leaves=0, **extra)
        assert result.checkpoints > 0
        assert result.counters.get("ops_pruned", 0) > 0


@pytest.mark.parametrize("seed", range(1, 9))
def test_compaction_never_passes_a_departed_voters_last_op(seed):
    """With a voter leaving (for good or not, by its id), the simulator's check holds: no
    node compacts past what a voter removed without a reason last acknowledged."""
    result = run_agreement_seed(seed, checkpoint_ops=12, compact=True, leaves=1)
    assert result.checkpoints > 0
