"""The `synod` command line: help, usage errors in one line, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

SYNOD = [sys.executable, "-c", "from controller.cli import main; main()"]
EMULATE_FLAGS = ["--topo", "--sites", "--hosts-per-site", "--switches-per-site",
                 "--wan-delay-ms", "--wan-rate-mbit", "--wan-loss-pct", "--cut-site",
                 "--of-port", "--log-dir", "--cleanup", "--verbose", "--help"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(SYNOD + list(args), capture_output=True, text=True, timeout=60,
                          check=False)


def test_top_level_help_and_version():
    done = _run("--help")
    assert done.returncode == 0 and "emulate" in done.stdout
    done = _run("--version")
    assert done.returncode == 0 and "0." in done.stdout


def test_emulate_help_describes_every_flag():
    done = _run("emulate", "--help")
    assert done.returncode == 0
    for flag in EMULATE_FLAGS:
        assert flag in done.stdout, flag


@pytest.mark.parametrize("args, needle", [
    (["emulate", "--no-such-flag"], "No such option"),
    (["emulate", "--sites", "three"], "'three' is not a valid integer"),
    (["no-such-command"], "No such command"),
])
def test_usage_errors_exit_2_in_one_line(args, needle):
    done = _run(*args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and needle in done.stderr


@pytest.mark.parametrize("args, needle", [
    (["emulate", "--topo", "moebius"], "unknown topology 'moebius': choose one of"),
    (["emulate", "--sites", "-1"], "sites must be at least 1"),
    (["emulate", "--hosts-per-site", "0"], "hosts_per_site must be between 1"),
])
def test_bad_values_exit_1_in_one_line_before_touching_the_network(args, needle):
    done = _run(*args)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and needle in done.stderr, done.stderr


def test_cut_site_must_be_an_edge_site():
    done = _run("emulate", "--sites", "2", "--cut-site", "edge5")
    assert done.returncode == 1
    assert "cannot cut 'edge5': choose an edge site, edge1 to edge2" in done.stderr
