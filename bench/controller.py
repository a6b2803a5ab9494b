"""Benchmark: Synod's site controllers against real Open vSwitch, beside a bare os-ken app.

Run as root: .venv/bin/python bench/controller.py [--flows 10000] [--failover-trials 5] ...

One run measures, on this machine, with the real components (OVS userspace datapath,
OpenFlow 1.3; two `synod node` processes; two `synod-controller` processes running
controller.openflow.synod_app, sites edge1 and cloud, every switch connected to both):

1. failover: SIGKILL the home controller -> the backup logs "<dpid>: MASTER with
   generation id" (the switch confirmed it) -> the first probe frame served by the
   backup. Probe: a network namespace on port 1 sends a broadcast frame (ethertype
   0x88b5, sequence number inside) every --probe-gap-ms; the switch has no flow for it,
   so it is a packet-in, and the master floods it by packet-out to port 2, where a
   second namespace timestamps it. Resolution: the probe gap.
2. flows: N distinct /32 flows written through the northbound API (RowService.Put,
   batches of 1,000 rows, ACK_LOCAL) to the cloud node, replicated to the edge node,
   installed by the edge controller, counted on the switch with `ovs-ofctl dump-flows`
   in the replicated-flow cookie space -> flows/s end to end. Beside it, the bare os-ken
   app bench/bare_flows_app.py pushes the same N flow-mods one send_msg each plus a
   barrier. The switch-programming stage alone: the controller is started with the N
   desired flows already in its node, then the switch is connected: time from its
   "MASTER with" log line (after which it sends every desired flow) to all N on the
   switch (polled, so the figure includes up to one poll interval).
3. audit repair: delete 100 and all N replicated flows out of band with ovs-ofctl ->
   all back, with the default audit interval and with --audit-interval-ms 500.
4. reading back N flows: os-ken's flow-stats request -> parsed replies (in the bare
   app), Synod's conversion of them for its audit, and `ovs-ofctl dump-flows`.

Prints the machine and a table of measured figures (targets only beside them, labelled);
writes JSON to bench/results/. Cleans up its bridges, namespaces, links and processes on
exit, error, Ctrl-C and SIGTERM; uses loopback only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from synod.v1 import northbound_pb2 as nb  # noqa: E402

from bench.machine import cpu_model  # noqa: E402
from controller.forwarding.flowspec import flow_cookie  # noqa: E402
from controller.node.client import Client  # noqa: E402
from tests.cluster.harness import Cluster, free_port  # noqa: E402
from topologies.emulate import ensure_ovs, start_controller, stop_process  # noqa: E402

BRIDGE = "sybench1"  # the Synod-controlled switch (home site edge1)
BARE_BRIDGE = "sybare1"  # the bare app's switch
DPID = 0x101
BARE_DPID = 0x102
NETNS = ("sybA", "sybB")  # probe sender (port 1) and receiver (port 2)
SF_COOKIE = "cookie=0x5346000000000000/0xffff000000000000"
OF13 = ("-O", "OpenFlow13")
APP = "controller.openflow.synod_app"
BARE_APP = str(ROOT / "bench" / "bare_flows_app.py")
PUT_BATCH_ROWS = 1000
POLL_S = 0.1
FAST_POLL_S = 0.005  # between flow counts where a figure depends on the poll
WAIT_S = 30.0  # bound for mastership, restarts, repairs
PROBE_ETHERTYPE = 0x88B5
PROBE_SRC = "02:00:00:0b:b0:01"

# Run inside the namespaces (python -c): raw frames on the namespace's end of a veth.
SENDER = r"""
import socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
gap, end = float(sys.argv[2]), time.monotonic() + float(sys.argv[3])
hdr = b"\xff" * 6 + bytes.fromhex(sys.argv[4].replace(":", "")) + b"\x88\xb5"
seq = 0
while time.monotonic() < end:
    s.send(hdr + struct.pack("!Qd", seq, time.time()) + bytes(30))
    seq += 1
    time.sleep(gap)
"""
RECEIVER = r"""
import socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
s.bind((sys.argv[1], 0x88b5))
s.settimeout(0.5)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        frame = s.recv(2048)
    except socket.timeout:
        continue
    now = time.time()
    seq, sent = struct.unpack("!Qd", frame[14:30])
    print(seq, f"{sent:.6f}", f"{now:.6f}", flush=True)
"""


class BenchError(Exception):
    """The benchmark could not measure something; the message says what."""


# ----------------------------------------------------------------------------- machine
def machine() -> dict:
    model = cpu_model()
    ovs = sh("ovs-vsctl", "--version").splitlines()[0].split()[-1]
    from importlib.metadata import version

    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "ovs": ovs, "os_ken": version("os-ken"), "grpcio": version("grpcio"),
            "kernel": platform.release(), "loadavg_start": os.getloadavg()}


# ----------------------------------------------------------------------------- helpers
def sh(*cmd: str, check: bool = True, timeout: float = 60, stdin: str | None = None) -> str:
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                          check=False, input=stdin)
    if check and done.returncode != 0:
        raise BenchError(f"{' '.join(cmd)}: {done.stderr.strip()}")
    return done.stdout


def wait_for(pred: Callable[[], object], timeout_s: float, interval_s: float = POLL_S):
    """pred()'s first truthy value within timeout_s, else None."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(interval_s)


def flow_count(bridge: str) -> int:
    """Replicated-flow-space (SF cookie) flows on the switch, from one flow-aggregate
    request (no per-flow text): cheap enough (about 20 ms) to poll every few ms, so the
    programming stage's figure is not mostly a poll interval."""
    out = sh("ovs-ofctl", *OF13, "dump-aggregate", bridge, SF_COOKIE)
    for word in out.split():
        if word.startswith("flow_count="):
            return int(word.split("=", 1)[1])
    raise BenchError(f"no flow_count in dump-aggregate's answer: {out.strip()!r}")


class Profiler:
    """py-spy sampling processes while a section runs; each writes collapsed stacks
    (`--format raw`) to DIR/<section>-<name>.txt, summarised by profile_summary()."""

    def __init__(self, out_dir: Path | None, rate_hz: int = 250) -> None:
        self.out_dir, self.rate_hz = out_dir, rate_hz
        self._running: list[tuple[subprocess.Popen, Path]] = []

    def start(self, section: str, pids: dict[str, int]) -> None:
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in pids.items():
            path = self.out_dir / f"{section}-{name}.txt"
            proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
                 "--rate", str(self.rate_hz), "--format", "raw", "--threads",
                 "--nonblocking", "-o", str(path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self._running.append((proc, path))
        time.sleep(0.5)  # py-spy attaches

    def stop(self) -> list[Path]:
        done = []
        for proc, path in self._running:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            done.append(path)
        self._running = []
        return done


def profile_summary(path: Path, top: int = 25) -> str:
    """Functions by self and by inclusive samples from py-spy's collapsed stacks."""
    self_n: dict[str, int] = {}
    incl_n: dict[str, int] = {}
    total = 0
    if not path.exists():
        return f"{path.name}: no samples"
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        for frame in set(frames):
            incl_n[frame] = incl_n.get(frame, 0) + n
        self_n[frames[-1]] = self_n.get(frames[-1], 0) + n
    if not total:
        return f"{path.name}: no samples"
    out = [f"{path.name}: {total} samples"]
    for title, table in (("self", self_n), ("inclusive", incl_n)):
        out.append(f"  by {title}:")
        for frame, n in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
            out.append(f"    {100 * n / total:5.1f}%  {frame}")
    return "\n".join(out)


def logged_times(log: Path, needle: str) -> list[float]:
    """Wall-clock times (ms resolution, from the log) of the lines containing needle."""
    times = []
    for line in log.read_text(errors="replace").splitlines():
        if needle in line:
            try:
                stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            except ValueError:
                continue
            times.append(stamp.timestamp())
    return times


def flow_address(i: int) -> str:
    """The i-th distinct /32 (same as bench/bare_flows_app.py)."""
    return f"10.{100 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"


def summary(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "median": statistics.median(xs), "min": min(xs), "max": max(xs),
            "all": xs}


# ----------------------------------------------------------------------------- resources
class Resources:
    """Everything this run creates, torn down in reverse on exit (also on errors)."""

    def __init__(self) -> None:
        self.bridges: list[str] = []
        self.netns: list[str] = []
        self.links: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.clusters: list[Cluster] = []

    def bridge(self, name: str, dpid: int, desc: str) -> None:
        self.bridges.append(name)
        sh("ovs-vsctl", "--may-exist", "add-br", name, "--", "set", "bridge", name,
           "datapath_type=netdev", "protocols=OpenFlow13", "fail_mode=secure",
           f"other-config:datapath-id={dpid:016x}", f'other-config:dp-desc="{desc}"')

    def probe_port(self, bridge: str, ns: str, ofport: int) -> str:
        """A namespace on a veth whose other end is port `ofport`; returns the ns's end."""
        outer, inner = f"{ns}0", f"{ns}1"
        self.netns.append(ns)
        sh("ip", "netns", "add", ns)
        self.links.append(outer)
        sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        sh("ip", "link", "set", inner, "netns", ns)
        for cmd in (("sysctl", "-qw", f"net.ipv6.conf.{inner}.disable_ipv6=1"),
                    ("ip", "link", "set", inner, "up")):
            sh("ip", "netns", "exec", ns, *cmd)
        sh("sysctl", "-qw", f"net.ipv6.conf.{outer}.disable_ipv6=1")
        sh("ip", "link", "set", outer, "up")
        sh("ovs-vsctl", "add-port", bridge, outer, "--", "set", "interface", outer,
           f"ofport_request={ofport}")
        return inner

    def popen(self, args: list[str], **kw) -> subprocess.Popen:
        proc = subprocess.Popen(args, **kw)
        self.procs.append(proc)
        return proc

    def close(self) -> list[str]:
        problems: list[str] = []
        for proc in reversed(self.procs):
            try:
                stop_process(proc)
            except Exception as e:  # noqa: BLE001 - keep tearing down the rest
                problems.append(f"process {proc.pid}: {e}")
        for cluster in self.clusters:
            leaked = cluster.stop()
            if leaked:
                problems.append(f"node processes still alive: {leaked}")
        for name in self.bridges:
            sh("ovs-vsctl", "--if-exists", "del-br", name, check=False)
        for ns in self.netns:
            sh("ip", "netns", "del", ns, check=False)
        for link in self.links:
            if Path(f"/sys/class/net/{link}").exists():
                sh("ip", "link", "del", link, check=False)
        return problems


def sweep_leftovers() -> None:
    """Remove what a killed earlier run of this benchmark left (only our own names)."""
    for name in (BRIDGE, BARE_BRIDGE):
        sh("ovs-vsctl", "--if-exists", "del-br", name, check=False)
    for ns in NETNS:
        if Path(f"/run/netns/{ns}").exists():
            sh("ip", "netns", "del", ns, check=False)
        if Path(f"/sys/class/net/{ns}0").exists():
            sh("ip", "link", "del", f"{ns}0", check=False)


# ----------------------------------------------------------------------------- probe
class Receiver:
    """Probe frames seen on port 2: (arrival wall time, sequence number)."""

    def __init__(self, res: Resources, iface: str, seconds: float) -> None:
        self.frames: list[tuple[float, int]] = []
        self._lock = threading.Lock()
        self.proc = res.popen(["ip", "netns", "exec", NETNS[1], sys.executable, "-c", RECEIVER,
                               iface, str(seconds)], stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            seq, _sent, got = line.split()
            with self._lock:
                self.frames.append((float(got), int(seq)))

    def first_after(self, t: float) -> float | None:
        with self._lock:
            return next((got for got, _ in self.frames if got >= t), None)


# ----------------------------------------------------------------------------- Synod setup
class Synod:
    """Two nodes (cloud = node 0, edge1 = node 1), a controller per site, one switch."""

    SITES = {"edge1": (1, 1), "cloud": (2, 0)}  # site -> (controller index, node)

    def __init__(self, res: Resources, tmp: Path, audit_ms: int | None = None) -> None:
        self.res, self.tmp = res, tmp
        self.cluster = Cluster(tmp / "nodes", 2, seed=7)
        res.clusters.append(self.cluster)
        self.cluster.start()
        self.ports = {site: free_port() for site in self.SITES}
        self.logs = {site: tmp / f"controller-{site}.log" for site in self.SITES}
        self.procs: dict[str, subprocess.Popen] = {}
        self.audit_ms = {site: audit_ms for site in self.SITES}

    def start(self, site: str) -> None:
        index, node = self.SITES[site]
        controllers = ",".join(f"{s}=127.0.0.1:{p}" for s, p in self.ports.items())
        extra = ["--site", site, "--controller-index", str(index),
                 "--controllers", controllers,
                 "--node", f"127.0.0.1:{self.cluster.nodes[node].api_port}",
                 "--node-token-file", str(self.cluster.dirs[0] / "admin.token"),
                 "--node-ca", self.cluster.ca]
        if self.audit_ms[site] is not None:
            extra += ["--audit-interval-ms", str(self.audit_ms[site])]
        proc = start_controller(self.ports[site], str(self.logs[site]), apps=(APP,),
                                extra_args=tuple(extra))
        self.res.procs.append(proc)
        self.procs[site] = proc

    def stop(self, site: str) -> None:
        stop_process(self.procs[site])

    def connect(self, bridge: str, *sites: str) -> None:
        sh("ovs-vsctl", "set-controller", bridge,
           *[f"tcp:127.0.0.1:{self.ports[s]}" for s in sites])

    def masters(self, site: str) -> list[float]:
        return logged_times(self.logs[site], f"{DPID:016x}: MASTER with generation id")

    def is_master(self, site: str) -> bool:
        """Does `site`'s log say it is MASTER now (confirmed, and not lost since)?"""
        got = self.masters(site)
        lost = logged_times(self.logs[site], f"{DPID:016x}: no longer MASTER")
        return bool(got) and (not lost or got[-1] >= lost[-1])

    def wait_settled(self) -> None:
        """edge1 (home) master and cloud not: a backup that started before it heard the
        home controller may claim first, until the home controller notices and reclaims."""
        if not wait_for(lambda: self.is_master("edge1") and not self.is_master("cloud"),
                        WAIT_S):
            raise BenchError(f"mastership did not settle on edge1 within {WAIT_S} s")

    def audit_lines(self, since: float = 0.0) -> list[float]:
        """Times of "audit: ... repairing" lines of running controllers, after `since`."""
        return [t for site in self.SITES for t in logged_times(self.logs[site], "audit:")
                if t >= since]

    def mastership_changes(self) -> dict[str, int]:
        return {site: len(self.masters(site)) for site in self.SITES}

    def client(self, site: str) -> Client:
        node = self.cluster.nodes[self.SITES[site][1]]
        return Client(f"127.0.0.1:{node.api_port}", self.cluster.token, self.cluster.ca,
                      timeout_s=120)

    def wait_master(self, site: str, before: int) -> float:
        """Time of the switch confirming `site` as MASTER (a new log line after `before`)."""
        found = wait_for(lambda: len(self.masters(site)) > before, WAIT_S)
        if not found:
            raise BenchError(f"{site} was not confirmed MASTER within {WAIT_S} s "
                             f"(see {self.logs[site]})")
        return self.masters(site)[-1]


# ----------------------------------------------------------------------------- measurements
def failover_trials(synod: Synod, rx: Receiver, trials: int, settle_s: float,
                    log) -> list[dict]:
    out = []
    for k in range(trials):
        edge_before, cloud_before = len(synod.masters("edge1")), len(synod.masters("cloud"))
        # Precondition: edge1 masters the switch and the probe flows through it.
        synod.wait_settled()
        # A backup demoted less than MastershipConfig.holddown_ms (5 s) ago does not claim:
        # wait that out, or the trial measures the hold-down instead of the failover.
        time.sleep(settle_s)
        t_ok = time.time()
        if not wait_for(lambda t=t_ok: rx.first_after(t), WAIT_S):
            raise BenchError("probe frames do not reach port 2 before the kill")
        t_kill = time.time()
        synod.procs["edge1"].send_signal(signal.SIGKILL)
        synod.procs["edge1"].wait(10)
        t_master = synod.wait_master("cloud", cloud_before)
        # The log has ms resolution: a frame the backup served cannot predate it by more.
        t_first = wait_for(lambda t=t_master: rx.first_after(t - 0.001), WAIT_S, 0.02)
        if t_first is None:
            raise BenchError("the backup served no probe frame within the bound")
        trial = {"kill_to_master_s": t_master - t_kill, "kill_to_first_served_s": t_first - t_kill}
        out.append(trial)
        log(f"  failover {k + 1}/{trials}: MASTER after {trial['kill_to_master_s']:.3f} s, "
            f"first packet-in served after {trial['kill_to_first_served_s']:.3f} s")
        # The home controller comes back and takes its switch back.
        synod.start("edge1")
        t_back = synod.wait_master("edge1", edge_before)
        if not wait_for(lambda t=t_back: rx.first_after(t + 0.5), WAIT_S):
            raise BenchError("probe frames did not flow again after edge1 came back")
    return out


def put_flows(client: Client, dpid: int, ids: range) -> None:
    rows = []
    for i in ids:
        rows.append(client.row("flows", [f"{dpid:016x}", f"b{i}"], {
            "priority": "300", "table_id": "0", "match": f"ipv4_dst={flow_address(i)}",
            "actions": "output:1", "cookie": "0"}))
        if len(rows) == PUT_BATCH_ROWS:
            client.call(client.rows.Put, nb.PutRequest(rows=rows, ack=nb.ACK_LOCAL))
            rows = []
    if rows:
        client.call(client.rows.Put, nb.PutRequest(rows=rows, ack=nb.ACK_LOCAL))


def pipeline(synod: Synod, flows: int, wait_s: float, log) -> dict:
    """Rows through the cloud node's API until all are on the edge switch."""
    with synod.client("cloud") as client:
        client.schema()
        t0 = time.time()
        put_flows(client, DPID, range(flows))
        t_acked = time.time()
    log(f"  {flows} rows acknowledged by the API after {t_acked - t0:.2f} s; "
        f"waiting (at most {wait_s:.0f} s) for them on the switch")
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        n = flow_count(BRIDGE)
        samples.append((time.time() - t0, n))
        if n >= flows:
            break
        time.sleep(FAST_POLL_S)
    t_last, n_last = samples[-1]
    result = {"flows": flows, "api_ack_s": t_acked - t0, "on_switch": n_last,
              "complete": n_last >= flows, "elapsed_s": t_last,
              "flows_per_s": n_last / t_last if t_last else 0.0,
              "samples": samples[:: max(1, len(samples) // 40)] + [samples[-1]]}
    first = next((t for t, n in samples if n > 0), None)
    result["first_on_switch_s"] = first
    return result


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int, timeout_s: float, window_s: float = 0.5,
              busy_max: float = 0.05) -> float | None:
    """Wait until the process uses under busy_max of a core over a window; seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        before = cpu_s(pid)
        time.sleep(window_s)
        if (cpu_s(pid) - before) / window_s < busy_max:
            return time.monotonic() - t0
    return None


def programming_stage(synod: Synod, flows: int, log,
                      before_connect: Callable[[], None] = lambda: None,
                      idle_first: bool = False) -> dict:
    """Controller already holds the desired set; connect the switch; time to all on it.

    idle_first: connect only once the restarted controller is idle (it has worked through
    its node link's start: the listing and the watch's snapshot of every row), so the
    figure is the programming alone rather than programming beside that work."""
    sh("ovs-vsctl", "del-controller", BRIDGE)
    # Restart both: they may still be working through the pipeline's watch events.
    synod.stop("edge1")
    synod.stop("cloud")
    sh("ovs-ofctl", *OF13, "del-flows", BRIDGE, SF_COOKIE)
    edge_before = len(synod.masters("edge1"))
    links_before = len(logged_times(synod.logs["edge1"], "node link up"))
    synod.start("edge1")
    if not wait_for(lambda: len(logged_times(synod.logs["edge1"], "node link up"))
                    > links_before, 120):
        raise BenchError("edge1's node link did not come up within 120 s")
    line = [ln for ln in synod.logs["edge1"].read_text().splitlines() if "node link up" in ln]
    log(f"  {line[-1].split(': ', 1)[-1]}")
    synod.start("cloud")
    idle_after_s = None
    if idle_first:
        idle_after_s = wait_idle(synod.procs["edge1"].pid, 60)
        if idle_after_s is None:
            raise BenchError("edge1's controller did not become idle within 60 s")
        log(f"  edge1's controller idle {idle_after_s:.1f} s after the node link came up")
    before_connect()
    synod.connect(BRIDGE, "edge1", "cloud")
    # Count from the moment the switch is connected (not from when we read the MASTER line
    # in the log, up to a poll later): (time the count returned, count).
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + 120
    n = 0
    while time.monotonic() < deadline:
        n = flow_count(BRIDGE)
        samples.append((time.time(), n))
        if n >= flows:
            break
        time.sleep(FAST_POLL_S)
    t_master = synod.wait_master("edge1", edge_before)
    t_full = samples[-1][0]
    t_all = t_full - t_master
    before_full = [t for t, c in samples if c < flows]
    connected = [t for t in logged_times(synod.logs["edge1"], f"{DPID:016x} connected")
                 if t <= t_master]
    # The switch's own word: the commit reply of the takeover's bundle (logged by the
    # controller for large bundles), exact where the count above is a poll.
    committed = wait_for(lambda: [t for t in logged_times(synod.logs["edge1"],
                                                          "committed a bundle of")
                                  if t >= t_master - 0.001], 10)
    return {"flows": flows, "on_switch": n, "master_to_all_s": t_all,
            "idle_first": idle_first, "idle_after_s": idle_after_s,
            "master_to_commit_s": committed[0] - t_master if committed else None,
            "connected_to_all_s": t_full - connected[-1] if connected else None,
            "flows_per_s": n / t_all if t_all > 0 else 0.0,
            # the count's resolution: all were there at t_full, not yet at the previous one
            "resolution_s": t_full - before_full[-1] if before_full else None,
            "first_seen_s": next((t - t_master for t, c in samples if c > 0), None)}


def audit_trials(synod: Synod, flows: int, delete: int, trials: int, log) -> list[dict]:
    out = []
    cookies = [flow_cookie(DPID, f"b{i}") for i in range(delete)]
    for k in range(trials):
        if not wait_for(lambda: flow_count(BRIDGE) >= flows, WAIT_S, 0.2):
            raise BenchError("the switch does not hold every desired flow before the trial")
        time.sleep(1.0)  # let a repair still in flight finish
        if delete >= flows:
            sh("ovs-ofctl", *OF13, "del-flows", BRIDGE, SF_COOKIE)
        else:
            sh("ovs-ofctl", *OF13, "del-flows", BRIDGE, "-",
               stdin="".join(f"cookie={c:#x}/-1\n" for c in cookies))
        t_del = time.time()
        left = flow_count(BRIDGE)
        t_back = wait_for(lambda: flow_count(BRIDGE) >= flows and time.time(), WAIT_S, POLL_S)
        audits = sorted(t for t in synod.audit_lines(since=t_del - 0.001))
        t_audit = audits[0] if audits else None
        trial = {"deleted": delete, "left_after_delete": left,
                 "repaired_s": (t_back - t_del) if t_back else None,
                 "detected_s": (t_audit - t_del) if t_audit else None}
        trial["repair_after_detect_s"] = (t_back - t_audit) if t_back and t_audit else None
        out.append(trial)
        log(f"  audit {k + 1}/{trials}: {delete} deleted ({left} left), all back after "
            f"{_fmt(trial['repaired_s'])} s (audit noticed after {_fmt(trial['detected_s'])} s)")
    return out


def bare_app(res: Resources, tmp: Path, flows: int, trials: int, log) -> list[dict]:
    res.bridge(BARE_BRIDGE, BARE_DPID, "bare")
    sh("ovs-vsctl", "add-port", BARE_BRIDGE, "sybareP", "--", "set", "interface", "sybareP",
       "type=internal", "ofport_request=1")  # the flows output to port 1, as Synod's do
    port = free_port()
    log_path = tmp / "controller-bare.log"
    os.environ.update(BENCH_FLOWS=str(flows), BENCH_WAIT_S="120")
    proc = start_controller(port, str(log_path), apps=(BARE_APP,))
    res.procs.append(proc)
    out = []
    for k in range(trials):
        sh("ovs-ofctl", *OF13, "del-flows", BARE_BRIDGE, SF_COOKIE)
        before = log_path.read_text().count("BENCH_RESULT")
        sh("ovs-vsctl", "set-controller", BARE_BRIDGE, f"tcp:127.0.0.1:{port}")
        if not wait_for(lambda n=before: log_path.read_text().count("BENCH_RESULT") > n, 180):
            raise BenchError(f"the bare app reported nothing within 180 s (see {log_path})")
        lines = [ln for ln in log_path.read_text().splitlines() if "BENCH_RESULT" in ln]
        result = json.loads(lines[-1].split("BENCH_RESULT ", 1)[1])
        if "error" in result:
            raise BenchError(f"bare app: {result['error']}")
        # Before del-controller: removing the bridge's last controller (after one had
        # connected) emptied its flow table here, fail_mode=secure notwithstanding.
        result["on_switch"] = flow_count(BARE_BRIDGE)
        result["ofctl_readback"] = ofctl_readback(BARE_BRIDGE, 3)
        sh("ovs-vsctl", "del-controller", BARE_BRIDGE)
        out.append(result)
        log(f"  bare {k + 1}/{trials}: {result['flows_per_s']:,.0f} flows/s to the barrier, "
            f"{result['on_switch']} on the switch; os-ken read-back "
            f"{result['readback_osken_s'] * 1000:.0f} ms")
    return out


def ofctl_readback(bridge: str, trials: int) -> list[dict]:
    out = []
    for _ in range(trials):
        t0 = time.perf_counter()
        text = sh("ovs-ofctl", *OF13, "dump-flows", bridge, SF_COOKIE)
        out.append({"s": time.perf_counter() - t0, "flows": text.count("cookie=0x5346")})
    return out


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


# ----------------------------------------------------------------------------- report
def render(m: dict, r: dict) -> str:
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, "
             f"OVS {m['ovs']} (userspace datapath), os-ken {m['os_ken']}, "
             f"kernel {m['kernel']}",
             f"load average at start {m['loadavg_start'][0]:.2f}, at end "
             f"{m.get('loadavg_end', [float('nan')])[0]:.2f} (the cores are shared)", ""]
    rows: list[tuple[str, str, str]] = []

    def add(what: str, value: str, target: str = "") -> None:
        rows.append((what, value, target))

    for key, label in (("failover", "failover, empty flow table"),
                       ("failover_10k", "failover, N desired flows")):
        f = r.get(key)
        if not f:
            continue
        ms = summary([t["kill_to_master_s"] for t in f])
        fs = summary([t["kill_to_first_served_s"] for t in f])
        add(f"{label}: kill -> MASTER (n={ms['n']})",
            f"median {ms['median']:.3f} s, max {ms['max']:.3f} s", "<= 0.3 s")
        add(f"{label}: kill -> 1st packet-in served",
            f"median {fs['median']:.3f} s, max {fs['max']:.3f} s", "<= 0.3 s")
    c = r.get("codec")
    if c:
        add(f"in-process CPU, {c['flows']} bundle adds: encoded fresh / from the cache",
            f"{c['encode_fresh_s'] * 1000:.0f} ms / {c['encode_cached_s'] * 1000:.0f} ms "
            f"(preparing the cache {c['prepare_s'] * 1000:.0f} ms)")
        add(f"in-process CPU, reading {c['flows']} flow-stats entries: os-ken + conversion "
            "/ readback", f"{c['read_osken_s'] * 1000:.0f} ms / {c['read_raw_s'] * 1000:.0f} ms")
    bare = r.get("bare") or []
    if bare:
        rates = summary([b["flows_per_s"] for b in bare])
        add(f"bare os-ken, {bare[0]['flows']} flow-mods + barrier (n={rates['n']})",
            f"median {rates['median']:,.0f} flows/s (min {rates['min']:,.0f})",
            "notes: ~10,700")
    p = r.get("pipeline")
    if p:
        state = "all on switch" if p["complete"] else f"only {p['on_switch']} on switch"
        add(f"pipeline, {p['flows']} flows API -> switch",
            f"{p['flows_per_s']:,.0f} flows/s ({state} after {p['elapsed_s']:.1f} s; "
            f"API ack {p['api_ack_s']:.2f} s)", ">= 1x bare")
        if p["complete"]:
            add("  API ack -> all on switch (replication, watch, controller)",
                f"{(p['elapsed_s'] - p['api_ack_s']) * 1000:.0f} ms")
        if bare:
            add("pipeline / bare", f"{p['flows_per_s'] / rates['median']:.3f}x", ">= 1x")
    for key, label in (("stage", "programming stage"),
                       ("stage_idle", "programming stage, controller idle first")):
        st = r.get(key)
        if not st:
            continue
        res_ms = "-" if st.get("resolution_s") is None else f"{st['resolution_s'] * 1000:.0f}"
        add(f"{label}, {st['flows']} flows (MASTER -> all on switch)",
            f"{st['flows_per_s']:,.0f} flows/s ({st['master_to_all_s'] * 1000:.0f} ms, "
            f"count resolution {res_ms} ms)", ">= 100,000 flows/s")
        if st.get("master_to_commit_s") is not None:
            commit = max(st["master_to_commit_s"], 0.001)  # the log has ms resolution
            add("  MASTER -> the bundle's commit reply (controller log)",
                f"{st['flows'] / commit:,.0f} flows/s ({commit * 1000:.0f} ms)",
                ">= 100,000 flows/s")
        if st.get("connected_to_all_s") is not None:
            add("  switch connected -> all on switch",
                f"{st['connected_to_all_s'] * 1000:.0f} ms")
    for key, label in (("audit_default_backup_up", "audit 2000 ms, backup up"),
                       ("audit_500_backup_up", "audit 500 ms, backup up"),
                       ("audit_default_backup_down", "audit 2000 ms, backup down"),
                       ("audit_500_backup_down", "audit 500 ms, backup down")):
        for deleted, trials in (r.get(key) or {}).items():
            s = summary([t["repaired_s"] for t in trials if t["repaired_s"] is not None])
            missing = sum(1 for t in trials if t["repaired_s"] is None)
            value = (f"median {s['median']:.2f} s, max {s['max']:.2f} s" if s["n"] else "-")
            if missing:
                value += f" ({missing} not repaired within {WAIT_S:.0f} s)"
            add(f"{label}: {deleted} deleted -> all back (n={len(trials)})", value, "<= 2 s")
    if bare:
        rb = summary([b["readback_osken_s"] for b in bare])
        conv = summary([b["readback_synod_convert_s"] for b in bare])
        add(f"read back {bare[0]['readback_flows']} flows: os-ken flow-stats",
            f"median {rb['median'] * 1000:.0f} ms", "<= 100 ms")
        add("  + Synod's conversion for its audit", f"median {conv['median'] * 1000:.0f} ms")
        both = summary([x for b in bare for x in b.get("readback_osken_more_s", [])])
        if both["n"]:
            add(f"  os-ken parse + conversion, request -> flows (n={both['n']})",
                f"median {both['median'] * 1000:.0f} ms, min {both['min'] * 1000:.0f} ms")
        raw = summary([x for b in bare for x in b.get("readback_raw_s", [])])
        if raw["n"]:
            flows_read = sorted({n for b in bare for n in b.get("readback_raw_flows", [])})
            add(f"read back {'/'.join(map(str, flows_read))} flows: Synod's reader "
                f"(rawstats), request -> flows (n={raw['n']})",
                f"median {raw['median'] * 1000:.0f} ms, min {raw['min'] * 1000:.0f} ms",
                "<= 100 ms")
    oc = r.get("ofctl_readback")
    if oc:
        s = summary([x["s"] for x in oc])
        add(f"read back {oc[0]['flows']} flows: ovs-ofctl dump-flows (n={s['n']})",
            f"median {s['median'] * 1000:.0f} ms", "<= 100 ms")
    w1 = max(len(a) for a, _, _ in rows)
    w2 = max(len(b) for _, b, _ in rows)
    lines.append(f"{'measured':<{w1}}  {'figure':<{w2}}  target (for comparison)")
    lines += [f"{a:<{w1}}  {b:<{w2}}  {c}" for a, b, c in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main
SECTIONS = ("codec", "bare", "failover", "pipeline", "stage", "audit")


def codec_figures(flows: int, reps: int = 5) -> dict:
    """In-process CPU (process_time, best of reps) for N Synod flows like the pipeline's:
    encoding their bundle adds fresh and from a prepared FlowModCache, and reading their
    flow-stats replies (split as OVS splits them, ~64 KB) with os-ken's parser plus the
    conversion the audit used, and with controller/forwarding/readback.py. No OVS."""
    import itertools

    from os_ken.ofproto import ofproto_v1_3 as ofp
    from os_ken.ofproto import ofproto_v1_3_parser as ofpp

    from controller.forwarding import wire
    from controller.forwarding.audit import InstalledFlow
    from controller.forwarding.flowspec import spec_from_row
    from controller.openflow.ofmsg import _ofp_match, match_from_ofp, outputs_from_instructions
    from tests.unit.ofbytes import flow_stats_entry, flow_stats_reply, osken_parse

    specs = [spec_from_row({"dpid": DPID, "flow_id": f"b{i}", "priority": 300,
                            "match": f"ipv4_dst={flow_address(i)}", "actions": "output:1"})
             for i in range(flows)]
    intents = [s.to_intent() for s in specs]
    out: dict = {"flows": flows}

    def best(fn) -> float:
        times = []
        for _ in range(reps):
            t0 = time.process_time()
            fn()
            times.append(time.process_time() - t0)
        return min(times)

    out["encode_fresh_s"] = best(lambda: b"".join(wire.bundled_flow_mods(
        itertools.count(1), 1, 1, intents)))
    cache = wire.FlowModCache()
    out["prepare_s"] = best(lambda: (cache._by_cookie.clear(), cache.prepare(intents)))
    out["encode_cached_s"] = best(lambda: b"".join(wire.bundled_flow_mods(
        itertools.count(1), 1, 1, intents, cache)))
    inst = [ofpp.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS,
                                       [ofpp.OFPActionOutput(1, ofp.OFPCML_NO_BUFFER)])]
    entries = [flow_stats_entry(s.cookie, 0, 300, _ofp_match(ofpp, s.match), inst,
                                packets=i, octets=100 * i) for i, s in enumerate(specs)]
    per = 600  # entries of this size per ~64 KB reply
    replies = [flow_stats_reply(1, entries[k:k + per], more=k + per < flows)
               for k in range(0, flows, per)]

    def osken() -> list:
        return [InstalledFlow(s.cookie, s.table_id, s.priority, match_from_ofp(s.match),
                              outputs_from_instructions(ofp, s.instructions), s.idle_timeout,
                              s.hard_timeout, s.packet_count, s.byte_count)
                for m in replies for s in osken_parse(m).body]

    def ours() -> list:
        return [f for m in replies for f in parse_flow_stats_reply(m)[0]]

    from controller.forwarding.readback import parse_flow_stats_reply
    if osken() != ours():
        raise BenchError("readback and os-ken disagree on the generated replies")
    out["read_osken_s"] = best(osken)
    out["read_raw_s"] = best(ours)
    return out


def run(args: argparse.Namespace, res: Resources, tmp: Path, log) -> dict:
    r: dict = {"args": vars(args)}
    want = set(args.sections.split(","))
    if want - set(SECTIONS):
        raise BenchError(f"unknown sections {sorted(want - set(SECTIONS))} (known: "
                         f"{', '.join(SECTIONS)})")
    prof = Profiler(Path(args.profile) if args.profile else None)
    if "codec" in want:
        log(f"codec: in-process CPU for {args.flows} flows")
        try:
            r["codec"] = codec_figures(args.flows)
        except (ImportError, AttributeError) as e:  # a tree from before decision 0098
            log(f"  codec: not measured ({type(e).__name__}: {e})")
    if want <= {"codec"}:
        return r
    if "bare" in want and not args.skip_bare:
        log(f"bare os-ken app: {args.flows} flow-mods one send_msg each, {args.trials} runs")
        r["bare"] = bare_app(res, tmp, args.flows, args.trials, log)
        r["ofctl_readback"] = [x for b in r["bare"] for x in b["ofctl_readback"]]

    log("Synod: 2 nodes, controllers edge1 (home) and cloud (backup), one switch")
    synod = Synod(res, tmp)
    res.bridge(BRIDGE, DPID, "bench,synod-site=edge1")
    sender_if = res.probe_port(BRIDGE, NETNS[0], 1)
    receiver_if = res.probe_port(BRIDGE, NETNS[1], 2)
    synod.start("edge1")
    synod.start("cloud")
    synod.connect(BRIDGE, "edge1", "cloud")
    synod.wait_master("edge1", 0)

    def probed_failover(trials: int) -> list[dict]:
        # The probe runs only here, so its packet-ins do not load the other measurements.
        rx = Receiver(res, receiver_if, 600)
        sender = res.popen(["ip", "netns", "exec", NETNS[0], sys.executable, "-c", SENDER,
                            sender_if, str(args.probe_gap_ms / 1000), "600", PROBE_SRC])
        try:
            return failover_trials(synod, rx, trials, args.settle_s, log)
        finally:
            stop_process(sender)
            stop_process(rx.proc)

    def pids(*names: str) -> dict[str, int]:
        out = {f"controller-{site}": synod.procs[site].pid for site in names}
        for site in names:
            node = synod.cluster.nodes[synod.SITES[site][1]]
            if node.proc is not None:
                out[f"node-{site}"] = node.proc.pid
        return out

    if "failover" in want:
        log(f"failover, empty flow table: {args.failover_trials} trials "
            f"(probe every {args.probe_gap_ms} ms)")
        r["failover"] = probed_failover(args.failover_trials)

    log(f"pipeline: {args.flows} flows through the cloud node's API")
    prof.start("pipeline", pids("edge1", "cloud"))
    r["pipeline"] = pipeline(synod, args.flows, args.pipeline_wait_s, log)
    r.setdefault("profiles", []).extend(str(p) for p in prof.stop())
    log(f"  {r['pipeline']['on_switch']} on the switch after "
        f"{r['pipeline']['elapsed_s']:.2f} s")
    if "stage" not in want and "failover" not in want and "audit" not in want:
        return r

    log("programming stage: controller restarted holding the desired set, switch connected")
    r["stage"] = programming_stage(synod, args.flows, log,
                                   lambda: prof.start("stage", pids("edge1")))
    r.setdefault("profiles", []).extend(str(p) for p in prof.stop())
    log(f"  all {r['stage']['on_switch']} on the switch "
        f"{r['stage']['master_to_all_s'] * 1000:.0f} ms after MASTER")
    log("programming stage again, the switch connected once the controller is idle")
    r["stage_idle"] = programming_stage(synod, args.flows, log,
                                        lambda: prof.start("stage_idle", pids("edge1")),
                                        idle_first=True)
    r.setdefault("profiles", []).extend(str(p) for p in prof.stop())
    log(f"  all {r['stage_idle']['on_switch']} on the switch "
        f"{r['stage_idle']['master_to_all_s'] * 1000:.0f} ms after MASTER")
    if "failover" not in want and "audit" not in want:
        return r
    changes: dict[str, dict[str, int]] = {}
    r["mastership_changes"] = changes

    def section(name: str, fn):
        before = synod.mastership_changes()
        value = fn()
        after = synod.mastership_changes()
        changes[name] = {site: after[site] - before[site] for site in after}
        if any(changes[name].values()):
            log(f"  MASTER confirmations during {name}: {changes[name]}")
        return value

    if "failover" in want:
        log(f"failover with {args.flows} desired flows: {args.trials} trials")
        r["failover_10k"] = section("failover_10k", lambda: probed_failover(args.trials))
    if "audit" not in want:
        return r

    # The audits run twice: with the backup controller running (as deployed), and with it
    # stopped, which isolates the audit from mastership changes (see the report).
    for backup in ("up", "down"):
        for interval in (None, 500):
            synod.audit_ms["edge1"] = interval
            before = len(synod.masters("edge1"))
            synod.stop("edge1")
            if backup == "down":
                synod.stop("cloud")
            synod.start("edge1")
            synod.wait_master("edge1", before)
            if backup == "up":
                synod.wait_settled()
            name = f"audit_{interval or 'default'}_backup_{backup}"
            r[name] = {}
            for delete in (100, args.flows):
                log(f"audit repair, interval {interval or 'default (2000)'} ms, backup "
                    f"{backup}: delete {delete}")
                prof.start(f"{name}_{delete}", pids("edge1"))
                r[name][str(delete)] = section(
                    f"{name}_{delete}",
                    lambda d=delete: audit_trials(synod, args.flows, d, args.trials, log))
                r.setdefault("profiles", []).extend(str(p) for p in prof.stop())
    return r


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--flows", type=int, default=10_000)
    p.add_argument("--failover-trials", type=int, default=5)
    p.add_argument("--trials", type=int, default=3, help="runs of the other measurements")
    p.add_argument("--probe-gap-ms", type=float, default=5.0)
    p.add_argument("--pipeline-wait-s", type=float, default=300.0,
                   help="bound on waiting for the pipeline's flows on the switch")
    p.add_argument("--settle-s", type=float, default=6.0,
                   help="pause before each failover trial (longer than the 5 s hold-down)")
    p.add_argument("--skip-bare", action="store_true")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help="comma-separated subset of: " + ", ".join(SECTIONS) + " (the pipeline "
                   "always runs: it loads the flows the later sections use)")
    p.add_argument("--profile", metavar="DIR",
                   help="sample the controller (and node) processes with py-spy during the "
                   "pipeline, the programming stage and the audits; collapsed stacks and a "
                   "function-level summary go to DIR")
    p.add_argument("--keep-logs", action="store_true", help="keep the temporary directory")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("bench/controller.py: error: run as root (OVS bridges, namespaces)",
              file=sys.stderr)
        return 2

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def on_term(_signum, _frame) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    ensure_ovs(log)
    sweep_leftovers()
    m = machine()
    tmp = Path(tempfile.mkdtemp(prefix="synod-bench-controller-"))
    res = Resources()
    r: dict = {}
    code = 0
    try:
        r = run(args, res, tmp, log)
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        code = 130
    except BenchError as e:
        log(f"error: {e}")
        r["error"] = str(e)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the teardown finish
        problems = res.close()
        for problem in problems:
            log(f"cleanup: {problem}")
        if args.keep_logs or code:
            log(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    m["loadavg_end"] = os.getloadavg()
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / f"controller-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"machine": m, "results": r}, indent=1))
    for path in r.get("profiles", []):
        summary_path = Path(path).with_suffix(".summary")
        summary_path.write_text(profile_summary(Path(path)) + "\n")
        log(f"profile: {summary_path}")
    if r:
        try:
            print(render(m, r))
        except (KeyError, ValueError, ZeroDivisionError) as e:
            log(f"partial results, no table ({type(e).__name__}: {e})")
    print(f"\nJSON: {out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
