"""Seed count for the simulation tests: --seeds N (if the plugin is registered) or env."""

from __future__ import annotations

import os

import pytest

DEFAULT_SEEDS = 300


def seed_count(config: pytest.Config) -> int:
    try:
        option = config.getoption("--seeds")
    except ValueError:  # the plugin is not registered
        option = None
    if option is not None:
        return int(option)
    return int(os.environ.get("SYNOD_SIM_SEEDS", DEFAULT_SEEDS))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sim_seed" in metafunc.fixturenames:
        first = int(os.environ.get("SYNOD_SIM_FIRST_SEED", 0))
        metafunc.parametrize("sim_seed", range(first, first + seed_count(metafunc.config)))
