"""The edge agent end to end: real nodes, Mininet (userspace OVS) with a real controller,
a real agent process and a real QEMU microVM (TCG here). Root only; about a minute.

A service deployed on edge1 from a spec file answers HTTP to a host of edge2; the agent
killed with SIGKILL and started again adopts the VM (the same QEMU process, and only one);
removing the service stops the VM and removes its tap.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from edge_agent.qemu import qemu_pids, tap_name
from tests.cluster.harness import Cluster, wait_for

pytestmark = [pytest.mark.mininet, pytest.mark.vm]

SYNOD = [sys.executable, "-c", "from controller.cli import main; main()"]
VM_IP, VM_MAC = "10.1.0.50", "52:54:00:00:01:32"
SPEC = f"""\
name: web
image: microvm
memory_mb: 128
nics:
  - {{switch: e1s1, mac: "{VM_MAC}", ipv4: {VM_IP}/8}}
health: {{http: /healthz, port: 8080}}
restart: local-only
placement: {{site: edge1}}
"""


class AgentProcess:
    def __init__(self, cluster: Cluster, node: int, site: str, bridge: str, root: Path,
                 *extra: str) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.token = root / "token"
        self.token.write_text(cluster.token)
        self.args = [*SYNOD, "agent", "run", "--site", site,
                     "--node", f"127.0.0.1:{cluster.nodes[node].api_port}",
                     "--node-token-file", str(self.token), "--node-ca", cluster.ca,
                     "--state-dir", str(root / "state"), "--bridge", bridge,
                     "--interval-ms", "500", "--log-format", "text",
                     "--metrics", "127.0.0.1:0", *extra]
        self.proc: subprocess.Popen | None = None
        self.ready: dict = {}

    def start(self, timeout_s: float = 60) -> dict:
        log = open(self.root / "agent.log", "ab")  # noqa: SIM115 - closed below
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=log,
                                     start_new_session=True)
        log.close()
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(timeout_s)
        if not line or not line[0].startswith(b"{"):
            self.kill()
            raise AssertionError(f"agent not ready in {timeout_s} s: {self.log()[-2000:]}")
        self.ready = json.loads(line[0])
        return self.ready

    def log(self) -> str:
        return (self.root / "agent.log").read_text(errors="replace")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()
            return None


def _diagnose(net, host) -> str:
    """What the path looks like, for a failed fetch's message."""
    e1h1 = net.get("e1h1")
    return "\n".join([
        "ping vm: " + host.cmd(f"ping -c1 -W1 {VM_IP} | tail -2"),
        "ping e1h1: " + host.cmd(f"ping -c1 -W1 {e1h1.IP()} | tail -2"),
        "e1h1 ping vm: " + e1h1.cmd(f"ping -c1 -W1 {VM_IP} | tail -2"),
        "e1h1 wget: " + e1h1.cmd(f"timeout 3 wget -q -O - http://{VM_IP}/"),
        subprocess.run(["ovs-vsctl", "list-ports", "e1s1"], capture_output=True,
                       text=True, check=False).stdout,
        subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "e1s1"],
                       capture_output=True, text=True, check=False).stdout[-3000:],
    ])


def synod(cluster: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "SYNOD_SERVER": f"127.0.0.1:{cluster.nodes[0].api_port}",
           "SYNOD_TOKEN": cluster.token, "SYNOD_CA": cluster.ca}
    done = subprocess.run([*SYNOD, *args], capture_output=True, text=True, timeout=60, env=env)
    if check and done.returncode != 0:
        raise AssertionError(f"synod {' '.join(args)}: {done.stderr}")
    return done


def placement_state(cluster: Cluster) -> str:
    rows = json.loads(synod(cluster, "services", "list", "--json").stdout)
    return next((str(r.get("state")) for r in rows if r.get("name") == "web"), "")


@pytest.fixture
def site_net(tmp_path):
    """Two real nodes (edge1, edge2) and Mininet's cloud + 2 edge sites with a controller."""
    from topologies.cloud_edge import CloudEdgeTopo
    from topologies.emulate import controller_process, ensure_ovs, running_network
    from topologies.emulate import free_port as _free_port

    ensure_ovs(lambda _msg: None)
    cluster = Cluster(tmp_path / "cluster", 2, seed=13)
    try:
        cluster.start()
        port = _free_port("127.0.0.1")
        topo = CloudEdgeTopo(sites=2, hosts_per_site=1, wan_delay_ms=1)
        with controller_process(port, str(tmp_path / "controller.log")), \
                running_network(topo, port, lambda _msg: None) as net:
            yield cluster, net
    finally:
        leaked = cluster.stop()
        assert not leaked, f"node processes left running: {leaked}"


def test_deploy_reach_from_another_site_adopt_after_kill_and_remove(site_net, tmp_path):
    cluster, net = site_net
    agent = AgentProcess(cluster, 0, "edge1", "e1s1", tmp_path / "agent")
    state = tmp_path / "agent" / "state"
    try:
        ready = agent.start()
        assert ready["event"] == "ready" and ready["vms_adopted"] == []
        # its capacity row, which deploy checks the placement against
        assert wait_for(lambda: "agent/" in synod(cluster, "sql",
                                                  "SELECT key FROM kv").stdout, 20)
        spec = tmp_path / "web.yaml"
        spec.write_text(SPEC)
        # bad input first: nothing written, a reason naming the key
        bad = tmp_path / "bad.yaml"
        bad.write_text(SPEC.replace(VM_MAC, "52:54:00:00:01"))
        refused = synod(cluster, "services", "deploy", str(bad), check=False)
        assert refused.returncode == 1
        assert "nics[0].mac: not a MAC address" in refused.stderr
        assert json.loads(synod(cluster, "services", "list", "--json").stdout) == []

        deployed_at = time.monotonic()
        synod(cluster, "services", "deploy", str(spec))
        assert wait_for(lambda: placement_state(cluster).startswith("running"), 90, 0.2), \
            f"not running: {placement_state(cluster)!r}\n{agent.log()[-3000:]}"
        running_s = time.monotonic() - deployed_at
        print(f"deploy -> running (health ok inside the guest): {running_s:.1f} s")

        host = net.get("e2h1")  # another site
        # OVS's userspace datapath forwards a veth's partial checksums as they are, and the
        # guest drops them: TCP from a host needs its tx offload off (FIELD-NOTES).
        for h in (host, net.get("e1h1")):
            h.cmd(f"ethtool -K {h.defaultIntf().name} tx off >/dev/null 2>&1")

        def fetch() -> str:
            return host.cmd(f"timeout 3 wget -q -O - http://{VM_IP}/").strip()

        assert wait_for(lambda: fetch() == "web", 30, 0.5), \
            f"e2h1 got {fetch()!r}; {_diagnose(net, host)}"
        print(f"deploy -> answered from edge2: {time.monotonic() - deployed_at:.1f} s")
        before = qemu_pids(state)
        assert len(before) == 1
        metrics = urllib.request.urlopen(
            f"http://127.0.0.1:{ready['metrics_port']}/metrics", timeout=5).read().decode()
        assert 'synod_agent_vms{state="running"} 1.0' in metrics
        assert 'synod_agent_actions_total{action="start",result="ok"} 1.0' in metrics

        # kill -9 the agent: the VM keeps running; a new agent adopts it, starts no other
        agent.kill()
        assert qemu_pids(state) == before
        ready = agent.start()
        assert ready["vms_adopted"] == ["web"]
        time.sleep(3)  # several rounds (--interval-ms 500)
        assert qemu_pids(state) == before, "a second QEMU process was started"
        assert placement_state(cluster).startswith("running")
        assert fetch() == "web"

        # the node away (paused): the VM is left as it is and keeps answering
        cluster.nodes[0].signal(signal.SIGSTOP)
        try:
            time.sleep(3)
            assert qemu_pids(state) == before and fetch() == "web"
        finally:
            cluster.nodes[0].signal(signal.SIGCONT)
        assert agent.proc is not None and agent.proc.poll() is None

        # drift: a new spec restarts the VM (a new QEMU process), still exactly one
        spec.write_text(SPEC.replace("memory_mb: 128", "memory_mb: 160"))
        synod(cluster, "services", "deploy", str(spec))
        assert wait_for(lambda: qemu_pids(state) not in ([], before), 30, 0.2)
        assert wait_for(lambda: fetch() == "web", 60, 0.5)
        assert len(qemu_pids(state)) == 1

        synod(cluster, "services", "rm", "web")
        tap = Path(f"/sys/class/net/{tap_name('web', 0, ready['node_id'])}")
        assert wait_for(lambda: not qemu_pids(state) and not tap.exists(), 30, 0.2), \
            "VM not stopped, or its tap left, after rm"
        assert not (state / "vms" / "web").exists()
        assert agent.stop() is not None  # a clean stop on SIGTERM
    finally:
        agent.kill()
        for pid in qemu_pids(state):
            os.kill(pid, signal.SIGKILL)
        tap = tap_name("web", 0, agent.ready.get("node_id", ""))
        subprocess.run(["ovs-vsctl", "--if-exists", "del-port", tap], capture_output=True,
                       check=False)
        subprocess.run(["ip", "link", "del", tap], capture_output=True, check=False)
