"""Per-call time of the `synod` CLI (`synod get`), and where it goes.

Run: .venv/bin/python bench/cli.py [--calls N] [--compare TREE]
Starts one node (TLS, a real process) in a temporary directory, writes a row, then runs
`synod get kv bench` as a fresh process N times, interleaved with `python -c pass` and
with the same call skipping nothing at exit (the teardown a client command now avoids).
A ladder of fresh processes (python, + click, + the CLI, + grpc, + the client) shows where
the time goes. --compare TREE also runs the CLI from another source tree (e.g. an older commit
extracted with `git archive C | tar -x -C TREE`), for before/after figures. Prints wall
and CPU (user+sys) medians and quartiles, the import time of the CLI and the client
(in fresh processes), the machine and its load; writes JSON to bench/results/.
Figures are measured; on a loaded machine the CPU column is the steadier one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.machine import describe  # noqa: E402
from controller.node.datadir import init_data_dirs  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CLI = "from controller.cli import main; main()"
NO_FAST_EXIT = "import controller.cli as c; c.client_done = lambda: False; c.main()"
STEPS = (
    ("python -c pass", "pass"),
    ("+ import click", "import click"),
    ("+ import controller.cli", "import controller.cli"),
    ("+ import grpc", "import controller.cli, grpc"),
    ("+ import client (pb2, stubs)", "import controller.cli, controller.node.client"),
)
IMPORTS = ("import time; t = time.perf_counter(); import controller.cli; "
           "import controller.node.client; print((time.perf_counter() - t) * 1000)")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _timed(argv: list[str], env: dict) -> tuple[float, float, str]:
    """Wall time and CPU time (user+sys, all threads) of one process, and its stdout."""
    with tempfile.TemporaryFile() as out:
        t = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.DEVNULL)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv}: exit {proc.returncode}")
        out.seek(0)
        return wall, usage.ru_utime + usage.ru_stime, out.read().decode()


def _summary(xs: list[float]) -> dict:
    s = sorted(xs)
    return {"median_ms": round(statistics.median(s) * 1000, 1),
            "p25_ms": round(s[len(s) // 4] * 1000, 1),
            "p75_ms": round(s[3 * len(s) // 4] * 1000, 1), "min_ms": round(s[0] * 1000, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=40, help="fresh processes per variant")
    ap.add_argument("--compare", metavar="TREE", default=None,
                    help="another source tree to run the CLI from (before/after)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="synod-bench-cli-"))
    data = tmp / "n0"
    init_data_dirs([data], "bench")
    api = f"127.0.0.1:{_free_port()}"
    node = subprocess.Popen(
        [sys.executable, "-c", CLI, "node", "run", "--data", str(data), "--api", api,
         "--peer-listen", f"127.0.0.1:{_free_port()}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert node.stdout is not None
        json.loads(node.stdout.readline())  # {"event": "ready", ...}
        env = {**os.environ, "SYNOD_SERVER": api, "SYNOD_CA": str(data / "ca.crt"),
               "SYNOD_TOKEN": f"@{data / 'admin.token'}", "XDG_CACHE_HOME": str(tmp / "cache"),
               "XDG_CONFIG_HOME": str(tmp / "config")}
        trees = {"after": ROOT} | ({"before": Path(args.compare)} if args.compare else {})
        variants: dict[str, tuple[list[str], dict]] = {}
        for name, tree in trees.items():
            tenv = {**env, "PYTHONPATH": f"{tree}:{tree / 'proto'}"}
            variants[f"synod get ({name})"] = ([sys.executable, "-c", CLI, "get", "kv", "bench"],
                                               tenv)
        variants["synod get (after, full teardown)"] = (
            [sys.executable, "-c", NO_FAST_EXIT, "get", "kv", "bench"], variants[
                "synod get (after)"][1])
        # Where the time goes: each step adds one thing to the one before (fresh processes).
        after_env = variants["synod get (after)"][1]
        for label, code in STEPS:
            variants[label] = ([sys.executable, "-c", code], after_env)
        _timed([sys.executable, "-c", CLI, "put", "kv", "bench", "value=00ff"],
               variants["synod get (after)"][1])
        for argv, venv in variants.values():  # warm the caches (schema, page cache)
            _timed(argv, venv)
        wall: dict[str, list[float]] = {k: [] for k in variants}
        cpu: dict[str, list[float]] = {k: [] for k in variants}
        imports: dict[str, list[float]] = {k: [] for k in trees}
        for _ in range(args.calls):
            for name, (argv, venv) in variants.items():
                w, c, _out = _timed(argv, venv)
                wall[name].append(w)
                cpu[name].append(c)
            for name, tree in trees.items():
                tenv = {**env, "PYTHONPATH": f"{tree}:{tree / 'proto'}"}
                imports[name].append(float(_timed([sys.executable, "-c", IMPORTS], tenv)[2]))
        report = {
            "machine": describe("grpcio", "protobuf", "click"),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "calls": args.calls,
            "wall": {k: _summary(v) for k, v in wall.items()},
            "cpu": {k: _summary(v) for k, v in cpu.items()},
            "import_cli_and_client_ms": {k: round(statistics.median(v), 1)
                                         for k, v in imports.items()},
        }
    finally:
        node.terminate()
        node.wait(15)
    print(f"{'variant':36s} {'wall median':>11s} {'p25':>6s} {'p75':>6s} | "
          f"{'cpu median':>10s} {'p25':>6s}")
    for k in wall:
        w, c = report["wall"][k], report["cpu"][k]
        print(f"{k:36s} {w['median_ms']:9.0f}ms {w['p25_ms']:5.0f} {w['p75_ms']:5.0f} | "
              f"{c['median_ms']:8.0f}ms {c['p25_ms']:5.0f}")
    for k, v in report["import_cli_and_client_ms"].items():
        print(f"import controller.cli + controller.node.client ({k}): {v:.0f} ms (median)")
    print(f"machine: {report['machine']}; load average {report['load_average_1m']}; "
          f"{args.calls} calls per variant")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"cli-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
