"""Fixtures for real-process cluster tests: a seeded cluster, always torn down."""

from __future__ import annotations

import os

import pytest

from .harness import Cluster


def _seed() -> int:
    return int(os.environ.get("SYNOD_CLUSTER_SEED", "0")) or int.from_bytes(os.urandom(2), "big")


@pytest.fixture
def make_cluster(tmp_path):
    made: list[Cluster] = []

    def make(n: int, seed: int | None = None, extra_args: list[str] | None = None) -> Cluster:
        """seed: a fixed schedule (CI); None: SYNOD_CLUSTER_SEED or a random one.
        extra_args: more `synod node run` flags for every node (e.g. --config FILE)."""
        seed = _seed() if seed is None or os.environ.get("SYNOD_CLUSTER_SEED") else seed
        print(f"cluster seed {seed} (replay: SYNOD_CLUSTER_SEED={seed})")
        c = Cluster(tmp_path / f"c{len(made)}", n, seed)
        for node in c.nodes:
            node.extra_args = list(extra_args or [])
        made.append(c)
        c.start()
        return c

    yield make
    for c in made:
        leaked = c.stop()
        assert not leaked, f"processes left running: {leaked}"
