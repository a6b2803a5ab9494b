"""Cloud-edge emulation end to end: real OVS (userspace), Mininet, synod-controller."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from topologies.cloud_edge import CloudEdgeTopo, cut_wan, heal_wan, sites
from topologies.emulate import (
    controller_process,
    converge,
    ensure_ovs,
    ping_pairs,
    running_network,
)

pytestmark = pytest.mark.mininet
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYNOD = [sys.executable, "-c", "from controller.cli import main; main()"]
RUN_TIMEOUT_S = 240
CONVERGE_S = 20  # bound on re-convergence after a change (LLDP, path reprogramming)


def _bridges() -> set[str]:
    out = subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True,
                         text=True, timeout=10, check=True).stdout
    return set(out.split())


def _relays_running() -> bool:
    return subprocess.run(["pgrep", "-f", "wanrelay.py"], capture_output=True,
                          timeout=10, check=False).returncode == 0


def _assert_nothing_left(names: set[str]) -> None:
    assert not (names & _bridges()), f"bridges left behind: {sorted(names & _bridges())}"
    assert not _relays_running(), "WAN relay processes left behind"


@pytest.fixture(scope="module")
def ovs():
    ensure_ovs(lambda _msg: None)


@pytest.fixture
def cloud_edge(ovs, tmp_path):
    """Two edge sites + cloud, 2 hosts each, 5 ms WAN links, a real synod-controller."""
    from topologies.emulate import free_port as _free_port  # test-only reach into the helper

    topo = CloudEdgeTopo(sites=2, hosts_per_site=2, wan_delay_ms=5)
    port = _free_port("127.0.0.1")
    with controller_process(port, str(tmp_path / "controller.log")), \
            running_network(topo, port, lambda _msg: None) as net:
        yield net
    _assert_nothing_left(set(topo.switches()))


def _pairs(hosts_a, hosts_b):
    return [(a, b) for a in hosts_a for b in hosts_b if a != b]


def test_partition_keeps_site_working_and_heal_restores_everything(cloud_edge):
    net = cloud_edge
    by_site = sites(net)
    everyone = [h.name for h in net.hosts]
    all_pairs = _pairs(everyone, everyone)

    assert converge(net, all_pairs, CONVERGE_S) is not None, "never fully reachable"
    before = ping_pairs(net, all_pairs)
    assert all(before.values()), f"loss before the cut: {[p for p, ok in before.items() if not ok]}"

    cut_wan(net, "edge1")
    edge1, cloud = by_site["edge1"].hosts, by_site["cloud"].hosts
    assert converge(net, _pairs(edge1, edge1), CONVERGE_S) is not None
    inside = ping_pairs(net, _pairs(edge1, edge1))
    across = ping_pairs(net, _pairs(cloud, edge1) + _pairs(edge1, cloud))
    assert all(inside.values()), "edge1 hosts must still reach each other while cut off"
    assert not any(across.values()), "the cloud must not reach edge1 while its WAN is cut"

    heal_wan(net, "edge1")
    assert converge(net, all_pairs, CONVERGE_S) is not None, "no full reachability after heal"
    after = ping_pairs(net, all_pairs)
    assert all(after.values()), f"loss after heal: {[p for p, ok in after.items() if not ok]}"


def test_synod_emulate_prints_report_and_leaves_nothing(ovs, tmp_path):
    done = subprocess.run(SYNOD + ["emulate", "--sites", "2", "--wan-delay-ms", "5",
                                   "--log-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "result: PASS" in done.stdout
    assert "during (edge1 WAN cut)" in done.stdout
    assert "waiting for 3 switches to connect" in done.stderr  # progress is shown
    assert "a flow added at the cloud reached e1s1" in done.stdout
    assert "heal: every node holds the same state (equal digests)" in done.stdout
    # Mastership as the switches report it (OVS roles), matching the replicated table.
    assert "switch 0000000000000101 (e1s1): master edge1 (OVS and table)" in done.stdout
    assert "[ok] OVS and the cloud node's switches table agree on every switch's master" \
        in done.stdout
    assert "[ok] during: edge1's controller is still master of e1s1 (OVS, and edge1's " \
        "table agrees)" in done.stdout
    _assert_nothing_left(set(CloudEdgeTopo(sites=2).switches()))
    for log in tmp_path.glob("controller-*.log"):
        assert "Traceback" not in log.read_text(), log
    assert subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True,
                          check=False).returncode != 0, "node or controller left running"


def test_synod_emulate_single_controller_mode(ovs, tmp_path):
    done = subprocess.run(SYNOD + ["emulate", "--sites", "2", "--wan-delay-ms", "5",
                                   "--controllers", "single", "--log-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "result: PASS" in done.stdout
    assert "Traceback" not in (tmp_path / "synod-controller.log").read_text()


def test_ctrl_c_during_emulation_tears_everything_down(ovs, tmp_path):
    proc = subprocess.Popen(SYNOD + ["emulate", "--sites", "2", "--log-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "waiting for" in line:
                break
            assert time.monotonic() < deadline
        assert proc.poll() is None, "".join(seen)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    _assert_nothing_left(set(CloudEdgeTopo(sites=2).switches()))
    assert subprocess.run(["pgrep", "-f", f"synod-emulate|{tmp_path}"], capture_output=True,
                          check=False).returncode != 0


MN_DECODE_FLAKE = "UnicodeDecodeError"  # Mininet's telnet check vs os-ken's HELLO


@pytest.mark.skipif(shutil.which("mn") is None, reason="Debian's mn command is not installed")
@pytest.mark.parametrize("kind", ["remote", "synod"])
def test_mn_custom_loads_the_topology_the_mininet_way(ovs, tmp_path, kind):
    from topologies.emulate import free_port as _free_port

    port = _free_port("127.0.0.1")
    with controller_process(port, str(tmp_path / "controller.log")):
        # `remote` runs Mininet's telnet check, which decodes os-ken's binary HELLO as UTF-8
        # and sometimes crashes (docs/emulation.md); retry only that known failure.
        for _attempt in range(3 if kind == "remote" else 1):
            done = subprocess.run(
                ["mn", "--custom", os.path.join(ROOT, "topologies", "cloud_edge.py"),
                 "--topo", "cloudedge,2", "--controller", f"{kind},ip=127.0.0.1,port={port}",
                 "--switch", "ovs,datapath=user,protocols=OpenFlow13", "--wait",
                 "--test", "pingall"],
                capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
            output = done.stdout + done.stderr
            if MN_DECODE_FLAKE not in output:
                break
    assert done.returncode == 0, output
    assert "Results: 0% dropped" in output
    _assert_nothing_left(set(CloudEdgeTopo(sites=2).switches()))


def test_cleanup_removes_what_a_killed_emulation_left(ovs):
    subprocess.run(["ovs-vsctl", "add-br", "e97s1", "--", "set", "bridge", "e97s1",
                    "datapath_type=netdev"], check=True, timeout=30)
    subprocess.run(["ip", "link", "add", "e97s1-eth1", "type", "veth", "peer", "name",
                    "w97-eth1"], check=True, timeout=30)
    try:
        done = subprocess.run(SYNOD + ["emulate", "--cleanup"], capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert "e97s1" not in _bridges()
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                               timeout=10, check=True).stdout
        assert "e97s1-eth1" not in links and "w97-eth1" not in links
    finally:
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", "e97s1"], timeout=30, check=False)
        subprocess.run(["ip", "link", "del", "e97s1-eth1"], capture_output=True, timeout=30,
                       check=False)


def test_cleanup_spares_a_live_runs_bridge_and_processes_it_did_not_start(ovs, tmp_path):
    """--cleanup touches only what a dead Synod run left: not a live run's bridge, not a
    process that merely looks like ours by name (it used to `pkill -f wanrelay.py`)."""
    from topologies.emulate import OWNER_ENV

    dead = subprocess.Popen(["true"])
    dead.wait(timeout=10)
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    orphan = subprocess.Popen(sleeper, env=dict(os.environ, **{OWNER_ENV: str(dead.pid)}))
    lookalike = subprocess.Popen(sleeper + ["topologies/wanrelay.py"])
    subprocess.run(["ovs-vsctl", "add-br", "e96s1", "--", "set", "bridge", "e96s1",
                    "datapath_type=netdev", f"external-ids:synod-owner={os.getpid()}"],
                   check=True, timeout=30)
    try:
        done = subprocess.run(SYNOD + ["emulate", "--cleanup"], capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert orphan.wait(timeout=10) is not None, "the orphaned emulation process lives on"
        assert lookalike.poll() is None, "a process was killed for its name"
        assert "e96s1" in _bridges(), "a live run's bridge was deleted"
    finally:
        for proc in (orphan, lookalike):
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", "e96s1"], timeout=30, check=False)


def test_fabric_app_on_a_ring_has_no_storm_and_survives_a_link_cut(ovs, tmp_path):
    from topologies.classic import make_topo
    from topologies.emulate import free_port as _free_port

    topo = make_topo("ring", 4)
    port = _free_port("127.0.0.1")
    with controller_process(port, str(tmp_path / "controller.log"),
                            apps=("controller.openflow.fabric_app",)), \
            running_network(topo, port, lambda _msg: None) as net:
        names = [h.name for h in net.hosts]
        pairs = _pairs(names, names)
        assert converge(net, pairs, CONVERGE_S) is not None, "ring never fully reachable"
        net.configLinkStatus("s1", "s2", "down")
        assert converge(net, pairs, CONVERGE_S) is not None, "no detour after the cut"
        after_cut = ping_pairs(net, pairs)
        assert all(after_cut.values()), [p for p, ok in after_cut.items() if not ok]
        flows = net["s1"].cmd("ovs-ofctl -O OpenFlow13 dump-flows s1")
        # Far fewer packets than a storm would push: every flow counter stays small.
        counts = [int(x.split("=")[1].rstrip(",")) for x in flows.split() if
                  x.startswith("n_packets=")]
        assert counts and max(counts) < 1_000, flows
        net.configLinkStatus("s1", "s2", "up")
        assert converge(net, pairs, CONVERGE_S) is not None, "no reachability after heal"
    _assert_nothing_left(set(topo.switches()))
