"""bench/controller.py's pieces that run without OVS: the codec figures, profile summaries."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

PATH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "controller.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_controller", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_codec_figures_are_measured_and_rendered(bench):
    got = bench.codec_figures(700, reps=1)  # more than one ~64 KB reply
    for key in ("encode_fresh_s", "encode_cached_s", "prepare_s", "read_osken_s",
                "read_raw_s"):
        assert got[key] > 0, key
    machine = {"cpu": "x", "cores": 2, "python": "3", "ovs": "3", "os_ken": "4",
               "kernel": "k", "loadavg_start": (1.0, 1.0, 1.0), "loadavg_end": (2.0, 2.0, 2.0)}
    table = bench.render(machine, {"codec": got})
    assert "700 bundle adds: encoded fresh / from the cache" in table
    assert "target" in table


def test_profile_summary_counts_self_and_inclusive_samples(bench, tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("thread;main (m.py:1);work (w.py:2) 3\n"
                    "thread;main (m.py:1);idle (i.py:9) 1\n")
    text = bench.profile_summary(path)
    assert "4 samples" in text
    lines = text.splitlines()
    by_self = lines[lines.index("  by self:") + 1]
    assert by_self.split() == ["75.0%", "work", "(w.py:2)"]
    assert any(line.split() == ["100.0%", "main", "(m.py:1)"] for line in lines)
    assert bench.profile_summary(tmp_path / "missing.txt").endswith("no samples")
