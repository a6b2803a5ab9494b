"""Cost against the number of sites: `synod emulate`'s own scenario at 3, 6, 10 (20) edges.

For each size it runs the whole scenario (a node and a controller per site, Mininet,
the WAN cut and heal), then, with everything still running and idle, measures for
--idle-s seconds: each daemon's CPU (utime + stime from /proc, % of one core), the
bytes the node-to-node WAN relays carried, and each node's counters (API calls by
method, peer messages dropped, ops stored) from its /metrics. Prints one row per size
with the heal times from the scenario's own checks, the machine's cores and load.

    flock /tmp/synod-net.lock .venv/bin/python bench/sites.py --sites 3 6 10 [--idle-s 10]
        [--profile DIR]   (py-spy: the cloud node, edge1's node and controller, idle)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLK_TCK = os.sysconf("SC_CLK_TCK")
PY_SPY = str(Path(sys.executable).parent / "py-spy")
SETTLE_S = 3.0  # after the last check, before measuring: the heal's tail has passed
COUNTERS = ("synod_api_calls_total", "synod_peer_dropped_total", "synod_ops_stored_total",
            "synod_sync_sent_bytes_total", "synod_replica_events_total")


def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime


def scrape(port: int) -> dict[str, float]:
    """The node's counters we look at, one key per series (name{labels})."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith(COUNTERS):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def sample(cluster, idle_s: float, profile_dir: str | None) -> dict:
    time.sleep(SETTLE_S)
    pids = cluster.pids()
    profilers = []
    if profile_dir:
        for name in ("node-cloud", "node-edge1", "controller-edge1", "controller-cloud"):
            if name in pids:
                out = Path(profile_dir) / f"{len(cluster.sites) - 1}-{name}.txt"
                profilers.append(subprocess.Popen(
                    [PY_SPY, "record", "-p", str(pids[name]), "-d", str(int(idle_s)),
                     "-r", "50", "-f", "raw", "-o", str(out), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    t0, wan0 = time.monotonic(), cluster.wan_bytes()
    ticks0 = {n: cpu_ticks(p) for n, p in pids.items()}
    m0 = {s: scrape(cluster.metrics[s]) for s in cluster.sites}
    time.sleep(idle_s)
    elapsed = time.monotonic() - t0
    ticks1 = {n: cpu_ticks(p) for n, p in pids.items()}
    m1 = {s: scrape(cluster.metrics[s]) for s in cluster.sites}
    wan1 = cluster.wan_bytes()
    for p in profilers:
        try:
            p.wait(timeout=idle_s + 30)
        except subprocess.TimeoutExpired:
            p.kill()
    cpu = {n: 100.0 * (ticks1[n] - ticks0[n]) / CLK_TCK / elapsed for n in pids}
    rates = {s: {k: (v - m0[s].get(k, 0.0)) / elapsed for k, v in m1[s].items()
                 if v != m0[s].get(k, 0.0)} for s in cluster.sites}
    return {"cpu": cpu, "wan_bps": (wan1 - wan0) / elapsed, "rates": rates,
            "elapsed_s": elapsed}


def run(sites: int, idle_s: float, profile_dir: str | None, log_root: str) -> dict:
    from topologies.emulate import EmulationError, ScenarioOptions, run_scenario

    started = time.monotonic()
    result: dict = {"sites": sites}

    def progress(message: str) -> None:
        print(f"  [{sites:2d} sites {time.monotonic() - started:6.1f}s] {message}",
              file=sys.stderr)

    def on_healed(cluster, report) -> None:
        result.update(sample(cluster, idle_s, profile_dir))

    log_dir = tempfile.mkdtemp(prefix=f"sites{sites}-", dir=log_root)
    try:
        report = run_scenario(ScenarioOptions(sites=sites), progress, log_dir,
                              on_healed=on_healed)
    except EmulationError as e:
        result["error"] = str(e)
        return result
    if not report.passed:
        print(report.render(), file=sys.stderr)
    result["passed"] = report.passed
    result["failed"] = [text for text, ok in report.checks if not ok]
    result["timings"] = dict(report.timings_s)
    result["log_dir"] = log_dir
    return result


def summary(r: dict) -> str:
    if "error" in r:
        return f"{r['sites']:>5}  error: {r['error']}"
    cpu = r.get("cpu", {})
    nodes = {n: v for n, v in cpu.items() if n.startswith("node-")}
    ctls = {n: v for n, v in cpu.items() if n.startswith("controller-")}
    edges = [v for n, v in nodes.items() if n != "node-cloud"]
    ectl = [v for n, v in ctls.items() if n != "controller-cloud"]
    t = r.get("timings", {})

    def fmt(x):
        return "-" if x is None else f"{x:.2f}"

    lists = sum(v for s in r.get("rates", {}).values() for k, v in s.items()
                if 'method="List"' in k)
    dropped = sum(v for s in r.get("rates", {}).values() for k, v in s.items()
                  if k.startswith("synod_peer_dropped_total"))
    ops = sum(v for s in r.get("rates", {}).values() for k, v in s.items()
              if k.startswith("synod_ops_stored_total"))
    return (f"{r['sites']:>5} {fmt(t.get('start')):>8} {fmt(t.get('heal_digests')):>8}"
            f" {fmt(t.get('heal_reachability')):>8}"
            f" {nodes.get('node-cloud', 0):>8.1f} {_mean(edges):>8.1f} {max(edges or [0]):>8.1f}"
            f" {ctls.get('controller-cloud', 0):>8.1f} {_mean(ectl):>8.1f}"
            f" {sum(cpu.values()):>8.1f} {r.get('wan_bps', 0):>10.0f}"
            f" {r.get('wan_bps', 0) / max(1, r['sites']):>9.0f} {lists:>7.1f} {dropped:>7.1f}"
            f" {ops:>7.1f}  {'PASS' if r.get('passed') else 'FAIL'}")


def _mean(xs):
    return sum(xs) / len(xs) if xs else 0.0


HEADER = ("sites     start heal_dig heal_rch cloud_nd edge_nd  edge_max cloud_ct edge_ct "
          " cpu_sum    wan_B/s wan/edge   List/s  drop/s  ops/s  result")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, nargs="+", default=[3, 6, 10])
    ap.add_argument("--idle-s", type=float, default=10.0)
    ap.add_argument("--profile", metavar="DIR", default=None,
                    help="py-spy raw stacks of the cloud node, edge1's node and controller")
    ap.add_argument("--details", action="store_true", help="per-process and per-node rates")
    args = ap.parse_args()
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    log_root = tempfile.mkdtemp(prefix="synod-bench-sites-")
    rows = []
    for n in args.sites:
        load0 = os.getloadavg()
        r = run(n, args.idle_s, args.profile, log_root)
        r["load"] = (load0, os.getloadavg())
        rows.append(r)
        print(f"  {n} sites done: {summary(r)}", file=sys.stderr)
    cores = os.cpu_count()
    print(f"bench/sites.py: synod emulate's scenario per size; idle figures over "
          f"{args.idle_s:g} s after the heal; CPU in % of one core; this machine: {cores} "
          f"cores, shared")
    print("start: every host reached every other, s; heal_dig: heal to equal digests, s; "
          "heal_rch: to full reachability, s; "
          "*_nd: node CPU; *_ct: controller CPU; wan: node-to-node WAN relays; "
          "List/s: node API List calls (all nodes); drop/s: peer messages dropped (no link)")
    print(HEADER)
    for r in rows:
        print(summary(r))
    for r in rows:
        (a1, a5, _), (b1, b5, _) = r["load"]
        print(f"  {r['sites']} sites: load average {a1:.2f} / {a5:.2f} before, "
              f"{b1:.2f} / {b5:.2f} after (1 / 5 min); logs {r.get('log_dir', '-')}")
        for text in r.get("failed", []):
            print(f"    FAIL {text}")
    if args.details:
        for r in rows:
            print(f"\n{r['sites']} sites, per process (% of a core):")
            for name, v in sorted(r.get("cpu", {}).items()):
                print(f"  {name:<20} {v:6.1f}")
            for site, rates in sorted(r.get("rates", {}).items()):
                shown = ", ".join(f"{re.sub(r'^synod_', '', k)} {v:.1f}"
                                  for k, v in sorted(rates.items()))
                print(f"  {site}: {shown}")


if __name__ == "__main__":
    main()
