"""Test-suite options and guards shared by every layer of tests.

Layers (run one alone with -m): unit tests (no marker), `netns` and `mininet`
tests (root, Open vSwitch; run in the full suite), `slow` checks (opt-in: --long).
"""

from __future__ import annotations

import logging
import os

import pytest

# The simulator's --seeds option (tests/sim/plugin.py).
pytest_plugins = ["tests.sim.plugin"]


def pytest_configure(config: pytest.Config) -> None:
    """The `synod` CLI reads SYNOD_* variables, ~/.config/synod/client.toml and keeps a
    schema cache in ~/.cache/synod (docs/operations.md): tests see none of the
    developer's, and leave nothing in their home."""
    import shutil
    import tempfile

    for var in ("SYNOD_SERVER", "SYNOD_TOKEN", "SYNOD_CA", "SYNOD_INSECURE", "SYNOD_TIMEOUT",
                "SYNOD_CONFIG"):
        os.environ.pop(var, None)
    home = tempfile.mkdtemp(prefix="synod-test-home-")
    os.environ["XDG_CONFIG_HOME"] = os.path.join(home, "config")
    os.environ["XDG_CACHE_HOME"] = os.path.join(home, "cache")
    config.add_cleanup(lambda: shutil.rmtree(home, ignore_errors=True))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="also run the long checks marked `slow`")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--long"):
        skip = pytest.mark.skip(reason="long check: run with --long")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Mininet's log module makes every logger created after its import a MininetLogger,
    with a handler and a level of its own (WARNING): test modules that import Mininet at
    collection would silence the INFO lines of every logger a later test creates (an
    os-ken app's, say). Loggers made from here on are plain ones again."""
    logging.setLoggerClass(logging.Logger)


def pytest_runtest_setup(item: pytest.Item) -> None:
    needs_root = {"mininet", "netns"} & set(item.keywords)
    if needs_root and os.geteuid() != 0:
        pytest.fail(f"{item.nodeid} needs root (marker {', '.join(sorted(needs_root))}); "
                    "run the suite as root or deselect with -m 'not mininet and not netns'",
                    pytrace=False)
