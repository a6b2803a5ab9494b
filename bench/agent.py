"""Edge agent benchmark (issue 13): deploy -> healthy, and the agent's idle cost.

Run (root; OVS and QEMU; about a minute with the defaults):

    .venv/bin/python bench/agent.py [--rounds 3] [--services 20] [--vms 4] [--idle-s 30]

One real `synod node` (TLS, loopback), a userspace OVS bridge with a client namespace on it,
and a real `synod agent run` (its own accelerator detection: TCG here). It measures

1. deploy -> healthy, --rounds times: `synod services deploy` of a microvm service until its
   placement says `running` (the guest's own health check passed) and until the client
   namespace gets its HTTP page; then `services rm` and the VM gone;
2. the agent with --services declared services, --vms of them running (the rest
   `state: stopped`; each VM takes about 230 MB of RSS): its CPU share over --idle-s seconds
   of idling, its RSS, and the QEMU processes' RSS.

Failover time is measured by tests/edge_agent/test_failover_vm.py (it prints it; three
nodes and Mininet). Figures and the machine are printed, never checked against targets;
JSON goes to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from controller.node.datadir import init_data_dirs  # noqa: E402

SYNOD = [sys.executable, "-c", "from controller.cli import main; main()"]
BRIDGE, NS = "synbench0", "synbench"
CLIENT_IP = "10.123.255.1/16"


def sh(*cmd: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=check)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ready_line(proc: subprocess.Popen, timeout_s: float, what: str) -> dict:
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    t.start()
    t.join(timeout_s)
    if not got or not got[0].startswith(b"{"):
        raise SystemExit(f"bench/agent.py: {what} not ready in {timeout_s} s")
    return json.loads(got[0])


def spec_text(i: int, state: str = "running") -> str:
    return (f"name: svc{i}\nimage: microvm\nmemory_mb: 128\nstate: {state}\n"
            f"nics: [{{switch: {BRIDGE}, mac: \"52:54:00:7b:{i // 256:02x}:{i % 256:02x}\", "
            f"ipv4: 10.123.{i // 256}.{i % 256 + 1}/16}}]\nplacement: any\n")


def ip_of(i: int) -> str:
    return f"10.123.{i // 256}.{i % 256 + 1}"


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def qemu_pids(state_dir: Path) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes()
            except OSError:
                continue
            if cmd.startswith(b"qemu-system") and str(state_dir).encode() in cmd:
                out.append(int(p.name))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="deploy -> healthy repetitions")
    parser.add_argument("--services", type=int, default=20, help="services declared")
    parser.add_argument("--vms", type=int, default=4, help="of them running (memory!)")
    parser.add_argument("--idle-s", type=float, default=30.0, help="idle measurement")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/agent.py: needs root (OVS bridge, namespace, taps)")
    from topologies.emulate import ensure_ovs

    ensure_ovs(lambda _m: None)
    tmp = Path(tempfile.mkdtemp(prefix="synod-bench-agent-"))
    node = agent = None
    state = tmp / "agent-state"
    results: dict = {"machine": {**describe("grpcio"), "qemu": sh(
        "qemu-system-x86_64", "--version").stdout.splitlines()[0]}, "args": vars(args)}
    try:
        sh("ovs-vsctl", "--may-exist", "add-br", BRIDGE, "--", "set", "bridge", BRIDGE,
           "datapath_type=netdev", check=True)
        sh("ip", "link", "set", BRIDGE, "up")
        sh("ip", "netns", "add", NS)
        sh("ip", "link", "add", "synbv0", "type", "veth", "peer", "name", "synbv1")
        sh("ip", "link", "set", "synbv1", "netns", NS)
        sh("ovs-vsctl", "add-port", BRIDGE, "synbv0")
        sh("ip", "link", "set", "synbv0", "up")
        sh("ethtool", "-K", "synbv0", "tx", "off")
        for cmd in (["ip", "addr", "add", CLIENT_IP, "dev", "synbv1"],
                    ["ip", "link", "set", "synbv1", "up"],
                    ["ethtool", "-K", "synbv1", "tx", "off"]):
            sh("ip", "netns", "exec", NS, *cmd)

        data = tmp / "node"
        init_data_dirs([data], "bench-agent")
        api = f"127.0.0.1:{free_port()}"
        node = subprocess.Popen([*SYNOD, "node", "run", "--data", str(data), "--api", api,
                                 "--peer-listen", f"127.0.0.1:{free_port()}"],
                                stdout=subprocess.PIPE, stderr=open(tmp / "node.log", "wb"),  # noqa: SIM115
                                start_new_session=True)
        ready_line(node, 30, "node")
        token = (data / "admin.token").read_text().strip()
        (tmp / "token").write_text(token)
        env = {**os.environ, "SYNOD_SERVER": api, "SYNOD_TOKEN": token,
               "SYNOD_CA": str(data / "ca.crt")}

        def synod(*a: str) -> str:
            done = subprocess.run([*SYNOD, *a], capture_output=True, text=True, timeout=60,
                                  env=env)
            if done.returncode != 0:
                raise SystemExit(f"bench/agent.py: synod {' '.join(a)}: {done.stderr}")
            return done.stdout

        def states() -> dict:
            return {r["name"]: str(r.get("state")) for r in
                    json.loads(synod("services", "list", "--json"))}

        agent = subprocess.Popen([*SYNOD, "agent", "run", "--site", "bench", "--node", api,
                                  "--node-token-file", str(tmp / "token"), "--node-ca",
                                  str(data / "ca.crt"), "--state-dir", str(state),
                                  "--bridge", BRIDGE, "--interval-ms", "1000",
                                  "--vcpus", "64"],  # idle TCG guests: overcommit
                                 stdout=subprocess.PIPE, stderr=open(tmp / "agent.log", "wb"),  # noqa: SIM115
                                 start_new_session=True)
        started = time.monotonic()
        ready_line(agent, 120, "agent")
        results["agent_start_s"] = round(time.monotonic() - started, 2)
        deadline = time.monotonic() + 60
        while "agent/" not in synod("sql", "SELECT key FROM kv") and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # the agent's first round builds (or finds) the image

        rounds = []
        for r in range(args.rounds):
            f = tmp / "one.yaml"
            f.write_text(spec_text(0))
            t0 = time.monotonic()
            synod("services", "deploy", str(f))
            running = answered = None
            while time.monotonic() - t0 < 120 and (answered is None or running is None):
                if running is None and states().get("svc0", "").startswith("running"):
                    running = time.monotonic() - t0
                got = "" if answered is not None else sh(
                    "ip", "netns", "exec", NS, "timeout", "1", "wget", "-q", "-O", "-",
                    f"http://{ip_of(0)}/").stdout.strip()
                if got == "svc0":
                    answered = time.monotonic() - t0
                time.sleep(0.1)
            if answered is None:
                print("  no HTTP answer: ping " + sh("ip", "netns", "exec", NS, "ping", "-c1",
                      "-W1", ip_of(0)).stdout.splitlines()[-2:][0] + "; console: " +
                      " | ".join((state / "vms" / "svc0" / "console.log").read_text(
                          errors="replace").splitlines()[-4:]), flush=True)
            rounds.append({"running_s": round(running or -1, 2),
                           "http_answered_s": round(answered or -1, 2)})
            print(f"round {r + 1}: deploy -> running {running or -1:.2f} s, -> HTTP answered "
                  f"{answered or -1:.2f} s", flush=True)
            synod("services", "rm", "svc0")
            deadline = time.monotonic() + 30
            while qemu_pids(state) and time.monotonic() < deadline:
                time.sleep(0.2)
        results["deploy_to_healthy"] = rounds

        t0 = time.monotonic()
        for i in range(args.services):
            f = tmp / f"s{i}.yaml"
            f.write_text(spec_text(i, "running" if i < args.vms else "stopped"))
            synod("services", "deploy", str(f))
        while time.monotonic() - t0 < 180:
            s = states()
            if sum(v.startswith("running") for v in s.values()) >= args.vms and \
                    sum(v == "stopped" for v in s.values()) >= args.services - args.vms:
                break
            time.sleep(0.5)
        results["all_up_s"] = round(time.monotonic() - t0, 2)
        print(f"  states: {sorted(states().items())}", flush=True)
        print(f"{args.services} declared, {args.vms} running: all up "
              f"{results['all_up_s']:.1f} s after the first deploy", flush=True)
        time.sleep(3)
        hz = os.sysconf("SC_CLK_TCK")
        c0, w0 = cpu_ticks(agent.pid), time.monotonic()
        time.sleep(args.idle_s)
        c1, w1 = cpu_ticks(agent.pid), time.monotonic()
        results["agent_idle_cpu_pct"] = round(100 * (c1 - c0) / hz / (w1 - w0), 2)
        results["agent_rss_mb"] = round(rss_mb(agent.pid), 1)
        q = qemu_pids(state)
        results["qemu_processes"] = len(q)
        results["qemu_rss_mb_each"] = round(sum(rss_mb(p) for p in q) / max(len(q), 1), 1)
        print(f"agent idle: {results['agent_idle_cpu_pct']:.2f} % of a core over "
              f"{args.idle_s:g} s, RSS {results['agent_rss_mb']:.0f} MB; {len(q)} QEMU "
              f"processes, {results['qemu_rss_mb_each']:.0f} MB RSS each", flush=True)
        results["failover_s"] = "see tests/edge_agent/test_failover_vm.py"
    finally:
        for p in (agent, node):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
        for pid in qemu_pids(state):
            os.kill(pid, signal.SIGKILL)
        out = sh("ovs-vsctl", "list-ports", BRIDGE).stdout.split()
        for port in out:
            if port.startswith("sv"):
                sh("ip", "link", "del", port)
        sh("ovs-vsctl", "--if-exists", "del-br", BRIDGE)
        sh("ip", "link", "del", "synbv0")
        sh("ip", "netns", "del", NS)
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results["machine"]))
    res = ROOT / "bench" / "results"
    res.mkdir(exist_ok=True)
    (res / f"agent-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(
        json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
