"""The Promela model of the slot protocol, checked exhaustively with Spin (seconds, not minutes).

models/slot.pml (one membership) and models/membership.pml (two one-at-a-time changes) must
hold "no two values chosen" in every reachable state, with gossip on: a promise may report
an accepted vote relayed from another author, as the ledger does. The broken variants must
fail, so we know the check bites; the relayed-vote mutation must fail with gossip and only
with it, so we know the gossip path is explored. membership_long.pml runs with --long.
What each model covers, and the figures: docs/agreement.md, "The model".
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

import pytest

MODELS = pathlib.Path(__file__).resolve().parents[2] / "models"
TOOLS = shutil.which("spin") and shutil.which("gcc")

pytestmark = pytest.mark.skipif(not TOOLS, reason="needs spin and gcc (apt-get install spin)")


def check(
    tmp_path: pathlib.Path,
    model: str,
    gossip: bool = True,
    memory_mb: int = 1024,
    hash_bits: int = 23,
    timeout_s: int = 120,
) -> str:
    """Exhaustive depth-first search for assertion violations; pan's report.

    Without gossip (-DNO_GOSSIP) a promise reports only the votes its acceptor holds by its
    own votes and certificates. pan stops at memory_mb (then "Search not completed")."""
    for pml in MODELS.glob("*.pml"):
        shutil.copy(pml, tmp_path)
    defines = [] if gossip else ["-DNO_GOSSIP"]
    subprocess.run(["spin", *defines, "-a", model], cwd=tmp_path, check=True, capture_output=True)
    flags = ["-DSAFETY", f"-DMEMLIM={memory_mb}"]
    subprocess.run(["gcc", "-O2", "-w", *flags, "-o", "pan", "pan.c"], cwd=tmp_path, check=True)
    args = ["./pan", "-m100000", f"-w{hash_bits}"]
    run = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=timeout_s)
    return run.stdout


def states(out: str) -> int:
    found = re.search(r"(\d+) states, stored", out)
    assert found, out
    return int(found.group(1))


def assert_holds(out: str) -> None:
    assert "errors: 0" in out, out
    assert "Search not completed" not in out, out  # exhaustive: nothing cut off
    assert states(out) > 0


def assert_caught(out: str, tmp_path: pathlib.Path, model: str) -> None:
    assert "assertion violated" in out and "errors: 1" in out, out
    assert (tmp_path / f"{model}.trail").exists()  # replay: spin -t -p <model>


@pytest.mark.parametrize("model", ["slot.pml", "membership.pml"])
def test_model_holds_in_every_reachable_state(tmp_path, model):
    assert_holds(check(tmp_path, model))


@pytest.mark.parametrize(
    "model",
    ["slot_broken_promise.pml", "membership_broken.pml", "membership_broken_causal_past.pml"],
)
def test_broken_variant_is_caught(tmp_path, model):
    assert "broken" in model
    assert_caught(check(tmp_path, model), tmp_path, model)


def test_gossip_path_is_explored(tmp_path):
    """Reporting the vote learned last instead of the highest is right while an acceptor
    holds only its own votes (they rise with its promise) and wrong once a relayed, older
    vote can arrive after them: Spin must catch it with gossip, and only with gossip."""
    model = "slot_broken_relayed.pml"
    assert_caught(check(tmp_path, model), tmp_path, model)
    quiet = tmp_path / "no_gossip"
    quiet.mkdir()
    assert_holds(check(quiet, model, gossip=False))


@pytest.mark.slow
def test_long_model_holds_in_every_reachable_state(tmp_path):
    """Both proposers free to start under any membership decided by then (v1 included):
    about 14 million states, 40 s and 1.7 GB on a 2-core VM."""
    out = check(tmp_path, "membership_long.pml", memory_mb=3500, hash_bits=25, timeout_s=900)
    assert_holds(out)
