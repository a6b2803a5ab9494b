"""Seeded simulation: faults everywhere, then heal, then every replica must agree exactly."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from controller.replication import Reason
from controller.sim import Cluster, SimConfig, SimFailure, run_seed
from controller.sim.harness import replay_command
from controller.store import SqliteStore


def test_seed(sim_seed: int) -> None:
    """One seed; on failure the message carries the seed and the exact replay command."""
    result = run_seed(sim_seed)
    assert result.converged_at_ms > 0
    assert result.ops > 0


def test_runs_replay_exactly() -> None:
    first, second = run_seed(12345), run_seed(12345)
    assert dataclasses.asdict(first) == dataclasses.asdict(second)


def test_faults_are_really_injected() -> None:
    """Guard against a harness that silently stops injecting faults."""
    totals: dict[str, int] = {}
    restarts = 0
    for seed in range(20):
        result = run_seed(seed, noise=10, crashes=2, drop=0.2, duplicate=0.2)
        restarts += result.restarts
        for key, value in result.counters.items():
            totals[key] = totals.get(key, 0) + value
    assert restarts > 10
    assert totals.get(Reason.DUPLICATE, 0) > 100
    assert totals.get(Reason.MALFORMED, 0) + totals.get(Reason.BAD_SIGNATURE, 0) > 5
    assert totals.get("buffered", 0) > 0


def test_vector_deltas_with_loss_and_an_older_node(monkeypatch) -> None:
    """Vectors travel as deltas (decision 0101): lost ones are rebuilt by a resync, and a
    node running older code gets whole vectors; a harness that sent it deltas fails."""
    resyncs = 0
    for seed in range(6):
        result = run_seed(seed, legacy=1, drop=0.2, crashes=1)
        resyncs += result.counters.get("vector_resync", 0)
    assert resyncs > 0
    real_start = Cluster._start

    def everyone_takes_deltas(self, node) -> None:
        real_start(self, node)
        node.replica.delta_peers = None

    monkeypatch.setattr(Cluster, "_start", everyone_takes_deltas)
    with pytest.raises(SimFailure, match="older code"):
        run_seed(1, legacy=1)


def test_failure_message_names_seed_and_replay_command() -> None:
    config = SimConfig.from_seed(77, nodes=3)
    cluster = Cluster(config)
    failure = cluster.fail("digests differ")
    assert isinstance(failure, SimFailure)
    text = str(failure)
    assert "seed 77" in text
    assert replay_command(config) in text
    assert replay_command(config).endswith("--seed 77 --set nodes=3") or "nodes=3" in text


def test_no_convergence_is_reported() -> None:
    # A cluster that never syncs cannot converge: the checker must say so, not pass.
    config = SimConfig.from_seed(
        3, nodes=3, writes=10, quiet_ms_max=1_000, sync_interval_ms=10**9, push_fanout=0
    )
    with pytest.raises(SimFailure, match="no convergence"):
        Cluster(config).run()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_seed_on_sqlite(tmp_path: Path, seed: int) -> None:
    """The same checks with the real SQLite adapter under every node."""
    config = SimConfig.from_seed(seed, writes=30)
    cluster = Cluster(config, store_factory=lambda name: SqliteStore(tmp_path / f"{name}.db"))
    result = cluster.run()
    assert result.converged_at_ms > 0
