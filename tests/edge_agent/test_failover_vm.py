"""Failover of a `failover-after` service, end to end (decision 0081): three real nodes,
Mininet with a controller, an agent on edge1 and one on edge2, real QEMU. Root; about a
minute. Edge1's node is cut off from the others (not killed): its agent stops the VM when
its lease runs out, edge2's agent takes the service over through a decided slot only after
that, the service answers again, and after the heal it runs exactly once; a local-only
service of edge1 keeps running and answering inside the site throughout. Then the new
owner's node is killed with SIGKILL, and the service comes back on edge1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from edge_agent.qemu import qemu_pids, tap_name
from tests.cluster.harness import Cluster, wait_for
from tests.edge_agent.test_agent_vm import AgentProcess, synod

pytestmark = [pytest.mark.mininet, pytest.mark.vm]
VM_IP = "10.1.0.60"
FAILOVER_S = 15
SPEC = f"""\
name: roam
nics: [{{switch: svc, mac: "52:54:00:00:01:3c", ipv4: {VM_IP}/8}}]
restart: {{failover-after: {FAILOVER_S}}}
placement: any
"""
LOCAL_IP = "10.1.0.61"
LOCAL = f"""\
name: local
nics: [{{switch: svc, mac: "52:54:00:00:01:3d", ipv4: {LOCAL_IP}/8}}]
restart: local-only
placement: {{site: edge1}}
"""


@pytest.fixture
def three_sites(tmp_path):
    from topologies.cloud_edge import CloudEdgeTopo
    from topologies.emulate import controller_process, ensure_ovs, running_network
    from topologies.emulate import free_port as _free_port

    ensure_ovs(lambda _msg: None)
    cluster = Cluster(tmp_path / "cluster", 3, seed=81)
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


def test_cut_off_owner_stops_before_the_takeover_and_it_runs_once_after_heal(three_sites,
                                                                             tmp_path):
    cluster, net = three_sites
    a = AgentProcess(cluster, 0, "edge1", "svc=e1s1", tmp_path / "a", "--memory-mb", "4096")
    b = AgentProcess(cluster, 1, "edge2", "svc=e2s1", tmp_path / "b", "--memory-mb", "2048")
    state_a, state_b = tmp_path / "a" / "state", tmp_path / "b" / "state"
    host = net.get("e2h1")
    host.cmd(f"ethtool -K {host.defaultIntf().name} tx off >/dev/null 2>&1")

    def fetch() -> str:
        return host.cmd(f"timeout 3 wget -q -O - http://{VM_IP}/").strip()

    try:
        a.start()
        b.start()
        assert wait_for(lambda: synod(cluster, "sql", "SELECT count(*) FROM kv WHERE key "
                                      "LIKE 'agent/%'").stdout.split()[-1] == "2", 30)
        spec = tmp_path / "roam.yaml"
        spec.write_text(SPEC)
        out = json.loads(synod(cluster, "services", "deploy", str(spec), "--json").stdout)
        assert out["node"] == a.ready["node_id"]  # the most free memory
        local = tmp_path / "local.yaml"
        local.write_text(LOCAL)
        synod(cluster, "services", "deploy", str(local))
        inside = net.get("e1h1")  # a host of the site that will be cut off
        inside.cmd(f"ethtool -K {inside.defaultIntf().name} tx off >/dev/null 2>&1")

        def fetch_local() -> str:
            return inside.cmd(f"timeout 3 wget -q -O - http://{LOCAL_IP}/").strip()

        assert wait_for(lambda: len(qemu_pids(state_a)) == 2 and fetch() == "roam"
                        and fetch_local() == "local", 60, 0.5), a.log()[-2000:]
        local_pid = [p for p in qemu_pids(state_a)
                     if b"synod-local" in open(f"/proc/{p}/cmdline", "rb").read()]

        cut = time.monotonic()
        cluster.isolate(0)  # edge1's node hears no other member (its agent still does)
        gone_at = started_at = None
        while time.monotonic() - cut < FAILOVER_S + 30:
            if gone_at is None and qemu_pids(state_a) == local_pid:
                gone_at = time.monotonic() - cut
            if started_at is None and qemu_pids(state_b):
                started_at = time.monotonic() - cut
                assert gone_at is not None, "edge2 started the service while edge1 still ran it"
            if started_at is not None and fetch() == "roam":
                break
            time.sleep(0.2)
        answered_at = time.monotonic() - cut
        print(f"after the cut: edge1's VM gone {gone_at} s, edge2's started {started_at} s, "
              f"answering {answered_at:.1f} s (failover-after {FAILOVER_S} s)")
        assert gone_at is not None and gone_at < FAILOVER_S, b.log()[-1500:]
        assert started_at is not None and started_at >= FAILOVER_S, b.log()[-3000:]
        assert answered_at <= FAILOVER_S + 15, "no answer from the new owner in time"
        # the local-only service on the cut-off site was left alone and answers inside it
        assert qemu_pids(state_a) == local_pid and fetch_local() == "local"

        cluster.heal()
        time.sleep(6)  # several rounds of both agents with the merged rows
        assert qemu_pids(state_a) == local_pid and len(qemu_pids(state_b)) == 1
        rows = json.loads(synod(cluster, "services", "list", "--json").stdout)  # at edge1
        row = next(r for r in rows if r["name"] == "roam")
        assert (row["node"], row["generation"]) == (b.ready["node_id"], 2), row
        assert str(row["state"]).startswith("running"), row
        assert fetch() == "roam"

        # kill -9 the new owner's node: its agent loses its member list, its lease runs
        # out and it stops the VM; edge1 takes the service back in generation 3
        killed = time.monotonic()
        cluster.nodes[1].kill()
        gone_at = started_at = None
        while time.monotonic() - killed < FAILOVER_S + 30:
            if gone_at is None and not qemu_pids(state_b):
                gone_at = time.monotonic() - killed
            if started_at is None and len(qemu_pids(state_a)) == 2:
                started_at = time.monotonic() - killed
                assert gone_at is not None, "edge1 started the service while edge2 ran it"
            if started_at is not None and fetch() == "roam":
                break
            time.sleep(0.2)
        print(f"after kill -9 of edge2's node: its VM gone {gone_at} s, edge1's started "
              f"{started_at} s, answering {time.monotonic() - killed:.1f} s")
        assert gone_at is not None and started_at is not None and started_at >= FAILOVER_S
        assert fetch() == "roam" and qemu_pids(state_b) == []
    finally:
        for agent, state in ((a, state_a), (b, state_b)):
            agent.kill()
            for pid in qemu_pids(state):
                os.kill(pid, signal.SIGKILL)
        for agent in (a, b):
            for service in ("roam", "local"):
                tap = tap_name(service, 0, agent.ready.get("node_id", ""))
                for cmd in (["ovs-vsctl", "--if-exists", "del-port", tap],
                            ["ip", "link", "del", tap]):
                    subprocess.run(cmd, capture_output=True, check=False)
                assert not os.path.exists(f"/sys/class/net/{tap}"), f"tap {tap} left"
