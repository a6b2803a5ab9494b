"""`synod emulate --service`: an edge agent per edge site, one service deployed on edge1,
and a host of another edge site fetching its HTTP page through the controllers' paths.

Runs inside a running sdn emulation (SdnCluster and its Mininet network), after the
scenario's checks: agents are `synod agent run` processes talking to their site's node,
the service a QEMU microVM whose NIC is a port of edge1's bridge (docs/edge-agent.md).
Everything it starts is stopped again, also on failure: the service is removed (its agent
stops the VM and its tap), the agents get SIGTERM, and a QEMU or tap left over is killed
or deleted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from topologies.netctl import OWNER_ENV, EmulationError, Progress, stop_process

__all__ = ["SERVICE", "check_service"]

SERVICE = "web"
VM_MAC, VM_IP = "52:54:00:00:01:32", "10.1.0.50"  # in the hosts' 10.0.0.0/8
AGENT_READY_TIMEOUT_S = 60
RUNNING_TIMEOUT_S = 90  # image build (first time), KVM probe, TCG boot
FETCH_TIMEOUT_S = 60  # the VM's MAC learned at edge1, reported, replicated to edge2
STOP_TIMEOUT_S = 20
SPEC = f"""\
name: {SERVICE}
image: microvm
memory_mb: 128
nics:
  - {{switch: svc, mac: "{VM_MAC}", ipv4: {VM_IP}/8}}
restart: local-only
placement: {{site: edge1}}
"""


def _synod_agent(cluster, site: str, bridge: str, state: Path) -> list[str]:
    from topologies.sdn import _synod

    return [*_synod(), "agent", "run", "--site", site,
            "--node", f"127.0.0.1:{cluster.api[site]}",
            "--node-token-file", str(cluster.token_file), "--node-ca", str(cluster.ca),
            "--state-dir", str(state), "--bridge", f"svc={bridge}",
            "--interval-ms", "500", "--log-format", "text"]


def _start_agent(cluster, site: str, bridge: str, root: Path) -> tuple[subprocess.Popen, dict]:
    root.mkdir(parents=True, exist_ok=True)
    log = open(root / "agent.log", "ab")  # noqa: SIM115 - closed once handed over
    proc = subprocess.Popen(_synod_agent(cluster, site, bridge, root / "state"),
                            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                            start_new_session=True,  # marked for `synod emulate --cleanup`,
                            env=dict(os.environ, **{OWNER_ENV: str(os.getpid())}))  # QEMU too
    log.close()
    line: list[bytes] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(AGENT_READY_TIMEOUT_S)
    if not line or not line[0].startswith(b"{"):
        stop_process(proc)
        tail = (root / "agent.log").read_text(errors="replace").strip().splitlines()[-1:]
        raise EmulationError(f"the agent of {site} did not start in {AGENT_READY_TIMEOUT_S} s:"
                             f" {tail[0] if tail else ''} (log {root / 'agent.log'})")
    return proc, json.loads(line[0])


def _host_pid(name: str) -> int:
    """The pid of Mininet host `name`'s shell (`bash ... mininet:<name>`): its namespace."""
    want = f"mininet:{name}".encode()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            args = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if want in args:
            return int(p.name)
    raise EmulationError(f"no Mininet host {name} running")


def _fetch(host: str, url: str) -> str:
    """GET url from inside a Mininet host's network namespace ("" when not answered)."""
    try:
        done = subprocess.run(["nsenter", "-t", str(_host_pid(host)), "-n", "--",
                               "timeout", "3", "wget", "-q", "-O", "-", url],
                              capture_output=True, text=True, timeout=10, check=False)
    except subprocess.TimeoutExpired:
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _in_host(host: str, *cmd: str) -> str:
    try:
        done = subprocess.run(["nsenter", "-t", str(_host_pid(host)), "-n", "--", *cmd],
                              capture_output=True, text=True, timeout=10, check=False)
    except (subprocess.TimeoutExpired, EmulationError) as e:
        return str(e)
    return (done.stdout + done.stderr).strip()


def _diagnose(reader: str) -> list[str]:
    """What the path looks like, for a failed fetch (notes in the report)."""
    def run(*cmd: str) -> str:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip()

    flows = [f for f in run("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "e1s1").splitlines()
             if VM_MAC in f]
    def ping(host: str) -> str:
        return " ".join(_in_host(host, "ping", "-c1", "-W1", VM_IP).splitlines()[-2:])

    return [f"  {reader} ping {VM_IP}: {ping(reader)}",
            f"  e1h1 ping {VM_IP}: {ping('e1h1')}",
            f"  e1h1 arp: {_in_host('e1h1', 'ip', 'neigh')}",
            f"  ports of e1s1: {run('ovs-vsctl', 'list-ports', 'e1s1').split()}",
            f"  flows on e1s1 for {VM_MAC}: {flows or 'none'}"]


def _state(cluster) -> str:
    rows = json.loads(cluster.synod("edge1", "services", "list", "--json"))
    return next((str(r.get("state")) for r in rows if r.get("name") == SERVICE), "")


def check_service(cluster, report, progress: Progress, sites: list[str]) -> None:
    """Agents on the edge sites, the service on edge1, fetched from a host of the next
    edge site; the outcome is a check (and notes) in report. Needs two edge sites."""
    edges = [s for s in sites if s.startswith("edge")]
    if len(edges) < 2:
        report.checks.append(("service: needs two edge sites (--sites 2 or more)", False))
        return
    root = cluster.workdir / "agents"
    agents: dict[str, subprocess.Popen] = {}
    nodes: dict[str, str] = {}
    states = [root / site / "state" for site in edges]
    deployed = False
    try:
        for site in edges:
            index = int(site[4:])
            proc, ready = _start_agent(cluster, site, f"e{index}s1", root / site)
            agents[site], nodes[site] = proc, str(ready.get("node_id", ""))
            progress(f"edge agent of {site} ready (node {nodes[site][:16]}, bridge e{index}s1)")
        spec = root / f"{SERVICE}.yaml"
        spec.write_text(SPEC)
        deploy_at = time.monotonic()
        deployed = True  # from here on, removed again whatever happens
        # Retried until both agents' capacity rows (kv agent/<node id>) reached edge1's node.
        if cluster.wait(lambda: cluster.synod("edge1", "services", "deploy", str(spec)),
                        AGENT_READY_TIMEOUT_S, interval_s=1) is None:
            cluster.synod("edge1", "services", "deploy", str(spec))  # its error, said
        progress(f"service {SERVICE} deployed on edge1; waiting for its microVM")
        running_s = cluster.wait(lambda: _state(cluster).startswith("running"),
                                 RUNNING_TIMEOUT_S)
        state = _state(cluster)
        report.checks.append((f"service: {SERVICE} deployed on edge1 is running in "
                              f"{running_s:.1f} s" if running_s is not None else
                              f"service: {SERVICE} not running in {RUNNING_TIMEOUT_S} s "
                              f"({state or 'no state'})", running_s is not None))
        if running_s is None:
            return
        reader = f"e{int(edges[1][4:])}h1"
        # A veth with tx offload hands OVS's userspace datapath frames whose TCP checksum
        # is left to the NIC; the tap passes them on and the guest drops them (ping works,
        # TCP does not): the reader computes its checksums itself (FIELD-NOTES).
        _in_host(reader, "ethtool", "-K", f"{reader}-eth0", "tx", "off")
        answer: list[str] = []
        fetched_s = cluster.wait(
            lambda: answer.append(_fetch(reader, f"http://{VM_IP}/")) or SERVICE in answer[-1],
            FETCH_TIMEOUT_S, interval_s=0.5)
        total = time.monotonic() - deploy_at
        report.checks.append(
            (f"service: {reader} ({edges[1]}) fetched {SERVICE}'s page from its microVM on "
             f"edge1 ({total:.1f} s after deploy)" if fetched_s is not None else
             f"service: {reader} ({edges[1]}) got no answer from http://{VM_IP}/ in "
             f"{FETCH_TIMEOUT_S} s", fetched_s is not None))
        report.notes.append(f"service {SERVICE}: {state}, at http://{VM_IP}/ (agents' logs in "
                            f"{root})")
        if fetched_s is None:
            report.notes += _diagnose(reader)
    except EmulationError as e:
        report.checks.append((f"service: {e}", False))
    finally:
        _tear_down(cluster, agents, nodes, states, deployed, progress)


def _tear_down(cluster, agents, nodes, states, deployed: bool, progress: Progress) -> None:
    """Remove the service (its agent stops the VM and its tap), stop the agents; kill a
    QEMU and delete a tap still there (an agent that failed)."""
    from edge_agent.qemu import qemu_pids, tap_name

    taps = {site: tap_name(SERVICE, 0, node) for site, node in nodes.items()}
    if deployed:
        try:
            cluster.synod("edge1", "services", "rm", SERVICE)
            cluster.wait(lambda: not qemu_pids(*states) and not any(
                Path(f"/sys/class/net/{t}").exists() for t in taps.values()), STOP_TIMEOUT_S)
        except EmulationError as e:
            progress(f"service {SERVICE}: removing it failed: {e}")
    for proc in agents.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in agents.values():
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    for pid in qemu_pids(*states):
        progress(f"service {SERVICE}: killing QEMU {pid} left running")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for site, tap in taps.items():
        if Path(f"/sys/class/net/{tap}").exists():
            subprocess.run(["ovs-vsctl", "--if-exists", "del-port", tap], check=False,
                           capture_output=True, timeout=10)
            subprocess.run(["ip", "link", "del", tap], check=False, capture_output=True,
                           timeout=10)
            progress(f"service {SERVICE}: removed tap {tap} left on {site}")
