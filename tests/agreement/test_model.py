"""The Promela model of the slot protocol, checked exhaustively with Spin (seconds, not minutes).

models/slot.pml (one membership) and models/membership.pml (two one-at-a-time changes)
must hold "no two values chosen" in every reachable state; the broken variants must fail,
so we know the check bites. Replay by hand: see docs/agreement.md, "The model".
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

MODELS = pathlib.Path(__file__).resolve().parents[2] / "models"
TOOLS = shutil.which("spin") and shutil.which("gcc")

pytestmark = pytest.mark.skipif(not TOOLS, reason="needs spin and gcc (apt-get install spin)")


def check(tmp_path: pathlib.Path, model: str, seed: int | None = None) -> str:
    """Exhaustive DFS; with a seed, DFS in a seeded random (still deterministic) order,
    which reaches the broken variants' counterexamples in well under a second."""
    for pml in MODELS.glob("*.pml"):
        shutil.copy(pml, tmp_path)
    subprocess.run(["spin", "-a", model], cwd=tmp_path, check=True, capture_output=True)
    flags = ["-DSAFETY"] + (["-DT_RAND", "-DP_RAND"] if seed is not None else [])
    subprocess.run(["gcc", "-O2", "-w", *flags, "-o", "pan", "pan.c"], cwd=tmp_path, check=True)
    args = ["./pan", "-m100000", "-w22"] + ([f"-RS{seed}"] if seed is not None else [])
    run = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    return run.stdout


@pytest.mark.parametrize("model", ["slot.pml", "membership.pml"])
def test_model_holds_in_every_reachable_state(tmp_path, model):
    out = check(tmp_path, model)
    assert "errors: 0" in out, out
    assert "Search not completed" not in out, out  # exhaustive: nothing cut off
    assert "states, stored" in out


@pytest.mark.parametrize("model", ["slot_broken_promise.pml", "membership_broken.pml"])
def test_broken_variant_is_caught(tmp_path, model):
    assert "broken" in model
    out = check(tmp_path, model, seed=6)
    assert "assertion violated" in out and "errors: 1" in out, out
    assert (tmp_path / f"{model}.trail").exists()  # replay: spin -t -p <model>
