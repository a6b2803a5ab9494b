"""pytest plugin for the simulation tests: the --seeds option (register from a root conftest)."""

from __future__ import annotations

import pytest

__all__ = ["pytest_addoption"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--seeds",
        type=int,
        default=None,
        help="number of simulation seeds to run (default 300; env SYNOD_SIM_SEEDS too)",
    )
