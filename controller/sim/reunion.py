"""The reunion simulator: run one seed, or a range from the command line.

A seeded split mid-traffic, secession, work apart, reunion and merge. The world (config,
nodes, per-node checks) is in reunion_net.py, the acts in reunion_story.py and the oracle in
reunion_oracle.py. Strict by default: a finding (a fault diagnosed in another layer) fails
the run like any other check.

    .venv/bin/python -m controller.sim.reunion --seed 0 --count 200 [--set siblings=1]
"""

from __future__ import annotations

from typing import Any

from .agreement import main as run_seeds
from .reunion_net import ReunionSimConfig, ReunionSimFailure
from .reunion_story import ReunionSim, ReunionSimResult, Side

__all__ = [
    "ReunionSim",
    "ReunionSimConfig",
    "ReunionSimFailure",
    "ReunionSimResult",
    "Side",
    "main",
    "run_reunion_seed",
]


def run_reunion_seed(seed: int, **overrides: Any) -> ReunionSimResult:
    """One seeded run; raises ReunionSimFailure (with a replay command) on any failed
    check, and on any finding unless strict=False (then they are in result.findings)."""
    return ReunionSim(ReunionSimConfig.from_seed(seed, **overrides)).run()


def main(argv: list[str] | None = None) -> int:
    """Run seeds; print each failure and finding with its replay command; 1 if any."""
    return run_seeds(
        argv,
        run=run_reunion_seed,
        config_cls=ReunionSimConfig,
        failure=ReunionSimFailure,
        prog="python -m controller.sim.reunion",
    )


if __name__ == "__main__":
    raise SystemExit(main())
