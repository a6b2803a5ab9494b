"""bench/soak.py runs end to end on a tiny churn and prints its figures (issue 12)."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

SOAK = pathlib.Path(__file__).resolve().parents[2] / "bench" / "soak.py"


def test_soak_smoke_run_prints_the_figures():
    done = subprocess.run(
        [sys.executable, str(SOAK), "--ops", "2000", "--checkpoint-ops", "300", "--compact",
         "--every", "50", "--open-verify", "sample"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert re.search(r"100%\s+2,000 ops \| RSS\s+[\d.]+ MB", out), out
    pruned = re.search(r"pruned (\d[\d,]*)/", out.split("100%", 1)[1])
    assert pruned and int(pruned.group(1).replace(",", "")) > 0, out
    assert "digests equal=True" in out
    for figure in ("disk (node 0): store.db", "open node 0 (verify=sample",
                   "checkpoint cost (incremental)", "checkpoint size: value of checkpoint/"):
        assert figure in out, out
