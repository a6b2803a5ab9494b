"""The Vagrant provisioning rehearsed in network namespaces: the SAME vagrant/synod-site.sh.

One namespace per "VM" with its own ovsdb-server and ovs-vswitchd (userspace datapath),
an `eth1` on a shared "VM network" (a Linux bridge in a namespace of its own), and the
script's own steps, called as the Vagrantfile calls them: a bridge, VXLAN tunnels to the
other sites, `found` + `publish` at the cloud, `join` at each edge, `synod up`, a demo
host. It proves that those steps form a 4-node cluster and that a host at one edge pings
hosts at the cloud and at another edge through the tunnels, that running them again is
harmless, and that a wrong bootstrap secret is one line naming the site and the step.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "vagrant" / "synod-site.sh"
BIN = Path(sys.executable).parent
SITES = ["cloud", "edge1", "edge2", "edge3"]
NET = "192.168.56"  # inside these namespaces only, as in the Vagrantfile
WAN_NS = "synt-wan"
SECRET = "rehearsal-secret-" + "ab" * 8
STEP_TIMEOUT_S = 120
PING_WAIT_S = 120


@dataclass
class Vm:
    site: str
    index: int
    root: Path

    ns = property(lambda self: f"synt-vm-{self.site}")
    ip = property(lambda self: f"{NET}.{10 + self.index}")
    rundir = property(lambda self: self.root / "ovs")
    data_root = property(lambda self: self.root / "data")
    host_ns = property(lambda self: f"synod-{self.site}-h1")
    host_ip = property(lambda self: f"10.0.{self.index}.1")
    dpid = property(lambda self: "0x1" if self.index == 0 else hex(0x100 * self.index + 1))

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ, OVS_RUNDIR=str(self.rundir), OVS_DBDIR=str(self.rundir),
                   OVS_LOGDIR=str(self.rundir), SYNOD_REPO=str(REPO), SYNOD_BIN=str(BIN),
                   SYNOD_DATA_ROOT=str(self.data_root), SYNOD_SECRET=SECRET,
                   SYNOD_NO_SYSTEMD="1", SYNOD_FETCH_TRIES="10")
        env.update(extra)
        return env

    def run(self, *argv: str, check: bool = True, env: dict | None = None,
            timeout_s: float = STEP_TIMEOUT_S) -> subprocess.CompletedProcess:
        # nsenter, not `ip netns exec`: the latter's private mount namespace would hide
        # the namespaces the host step makes (`ip netns add`) from everyone else.
        done = subprocess.run(["nsenter", f"--net=/run/netns/{self.ns}", "--", *argv],
                              env=env or self.env(),
                              capture_output=True, text=True, timeout=timeout_s, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"{self.site}: {' '.join(argv[:3])}… exited "
                                 f"{done.returncode}: {done.stderr.strip()[-600:]}")
        return done

    def step(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run("bash", str(SCRIPT), *args, **kw)

    def synod(self, *args: str) -> str:
        data = self.data_root / self.site
        return self.run(str(BIN / "synod"), *args, "--server", "127.0.0.1:7000",
                        "--token", f"@{data / 'admin.token'}", "--ca", str(data / "ca.crt"),
                        timeout_s=30).stdout


def _sh(*argv: str, timeout_s: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s,
                          check=False)


def _namespaces() -> list[str]:
    return [ln.split()[0] for ln in _sh("ip", "netns", "list").stdout.splitlines() if ln]


def _kill_namespace(ns: str) -> None:
    """Kill whatever runs in ns (bounded), then delete it."""
    for _ in range(20):
        pids = [int(p) for p in _sh("ip", "netns", "pids", ns).stdout.split()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    _sh("ip", "netns", "del", ns)


def _cleanup(vms: list[Vm]) -> None:
    for vm in vms:  # a clean stop first: synod down, the bundle server, OVS
        if vm.ns in _namespaces() and (vm.data_root / vm.site / "site.toml").exists():
            vm.run(str(BIN / "synod"), "down", "--config",
                   str(vm.data_root / vm.site / "site.toml"), check=False, timeout_s=60)
    ours = {vm.ns for vm in vms} | {vm.host_ns for vm in vms} | {WAN_NS}
    for ns in _namespaces():
        if ns in ours or ns.startswith("synt-vm-"):
            _kill_namespace(ns)
    for vm in vms:
        _sh("ip", "link", "del", f"synt-e-{vm.site}")


def _start_ovs(vm: Vm) -> None:
    vm.rundir.mkdir(parents=True)
    db = vm.rundir / "conf.db"
    subprocess.run(["ovsdb-tool", "create", str(db),
                    "/usr/share/openvswitch/vswitch.ovsschema"], check=True, timeout=30)
    vm.run("ovsdb-server", str(db), f"--remote=punix:{vm.rundir}/db.sock",
           f"--pidfile={vm.rundir}/ovsdb-server.pid", "--detach",
           f"--log-file={vm.rundir}/ovsdb-server.log")
    vm.run("ovs-vsctl", "--no-wait", "init")
    vm.run("ovs-vswitchd", f"unix:{vm.rundir}/db.sock", f"--pidfile={vm.rundir}/ovs-vswitchd.pid",
           "--detach", f"--log-file={vm.rundir}/ovs-vswitchd.log")


@pytest.fixture
def testbed(tmp_path):
    for tool in ("ovsdb-server", "ovs-vswitchd", "ovsdb-tool", "openssl", "ethtool"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run ./synod.sh (it installs openvswitch-switch)")
    root = Path(tmp_path)
    vms = [Vm(site, i, root / site) for i, site in enumerate(SITES)]
    _cleanup(vms)  # what a killed earlier run left
    try:
        _sh("ip", "netns", "add", WAN_NS)
        _sh("ip", "-n", WAN_NS, "link", "add", "wan0", "type", "bridge")
        _sh("ip", "-n", WAN_NS, "link", "set", "wan0", "up")
        for vm in vms:
            _sh("ip", "netns", "add", vm.ns)
            vm.run("ip", "link", "set", "lo", "up")
            outer, inner = f"synt-w-{vm.site}", f"synt-e-{vm.site}"
            assert _sh("ip", "link", "add", inner, "type", "veth", "peer", "name",
                       outer).returncode == 0
            _sh("ip", "link", "set", outer, "netns", WAN_NS)
            _sh("ip", "-n", WAN_NS, "link", "set", outer, "master", "wan0", "up")
            _sh("ip", "link", "set", inner, "netns", vm.ns)
            vm.run("ip", "link", "set", inner, "name", "eth1")
            vm.run("ip", "addr", "add", f"{vm.ip}/24", "dev", "eth1")
            vm.run("ip", "link", "set", "eth1", "up")
            _start_ovs(vm)
        yield vms
    finally:
        _cleanup(vms)
        left = [ns for ns in _namespaces() if ns.startswith("synt-") or ns.startswith("synod-")]
        assert not left, f"namespaces left behind: {left}"


def provision(vms: list[Vm]) -> dict[str, float]:
    """The Vagrantfile's provisioning of every VM (install aside: it is this checkout)."""
    ip = {vm.site: vm.ip for vm in vms}
    controllers = ",".join(f"{vm.site}={vm.ip}:6653" for vm in vms)
    timings = {}
    for vm in vms:
        t0 = time.monotonic()
        others = [s for s in SITES if s != vm.site] if vm.site == "cloud" else ["cloud"]
        backup = ip["edge1"] if vm.site == "cloud" else ip["cloud"]
        vm.step("check", "--site", vm.site, "--memory-mb-min", "64")
        vm.step("bridge", "--site", vm.site, "--dpid", vm.dpid, "--datapath", "netdev",
                "--underlay", "eth1", "--controller", "tcp:127.0.0.1:6653",
                "--controller", f"tcp:{backup}:6653")
        vm.step("tunnel", "--site", vm.site, "--local", vm.ip, "--kind", "vxlan",
                *[a for o in others for a in ("--peer", f"{o}={ip[o]}")])
        if vm.site == "cloud":
            vm.step("found", "--site", "cloud", "--ip", vm.ip, "--controllers", controllers,
                    "--bootstrap", str(vm.data_root / "bootstrap"))
            vm.step("publish", "--site", "cloud", "--bootstrap", str(vm.data_root / "bootstrap"),
                    "--listen", f"{vm.ip}:7180")
        else:
            vm.step("join", "--site", vm.site, "--ip", vm.ip, "--index", str(vm.index + 1),
                    "--controllers", controllers, "--cloud", ip["cloud"],
                    "--bootstrap-url", f"http://{ip['cloud']}:7180/bundle.enc")
        vm.step("host", "--site", vm.site, "--name", "h1", "--ip", f"{vm.host_ip}/16")
        timings[vm.site] = time.monotonic() - t0
    return timings


def _ping(vm: Vm, target: str) -> bool:
    return _sh("ip", "netns", "exec", vm.host_ns, "ping", "-c", "1", "-W", "1",
               target).returncode == 0


def _tunnel_tx(vm: Vm, port: str) -> int:
    """Packets sent out of a tunnel port, as OVS counts them now (the database's copy of
    the counters lags by up to 5 s)."""
    out = vm.run("ovs-ofctl", "-O", "OpenFlow13", "dump-ports", "br-synod", port).stdout
    return int(out.split("tx pkts=")[1].split(",")[0])


def _wait(what: str, pred, timeout_s: float) -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout_s:
            pytest.fail(f"{what}: not within {timeout_s} s")
        time.sleep(0.3)
    return time.monotonic() - t0


def _flows(vm: Vm) -> str:
    return vm.run("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-synod").stdout


def _diagnosis(vms: list[Vm]) -> str:
    """What a failed wait shows: each switch's flows, each controller's last lines, and each
    node's replicated topology (also written to diagnosis.txt beside the logs, which
    --basetemp keeps)."""
    out = []
    for vm in vms:
        log = vm.data_root / vm.site / "logs" / "controller.log"
        tail = log.read_text(errors="replace").splitlines()[-6:] if log.exists() else []
        out.append(f"\n--- {vm.site} flows:\n{_flows(vm)[-700:]}\n--- {vm.site} controller:\n"
                   + "\n".join(tail))
    full = []
    for vm in vms:
        full.append(f"=== {vm.site} flows\n{_flows(vm)}")
        for what in (("hosts",), ("links",), ("list", "switches"), ("list", "ports"),
                     ("flows", "list")):
            try:
                full.append(f"=== {vm.site} synod {' '.join(what)}\n{vm.synod(*what)}")
            except (AssertionError, subprocess.TimeoutExpired) as e:
                full.append(f"=== {vm.site} synod {' '.join(what)}: {e}")
    (vms[0].root.parent / "diagnosis.txt").write_text("\n".join(full))
    return "".join(out)


def _all_reach(vms: list[Vm], pairs: list[tuple[Vm, Vm]], timeout_s: float) -> float:
    """Ping every pair until all answer (each host speaks, so the controllers learn where
    it is: they answer ARP for addresses they have seen)."""
    t0 = time.monotonic()
    while True:
        failed = [f"{a.site}->{b.site}" for a, b in pairs if not _ping(a, b.host_ip)]
        if not failed:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            pytest.fail(f"no answer after {timeout_s} s: {failed}{_diagnosis(vms)}")
        time.sleep(0.5)


E1 = "0000000000000101"  # edge1's switch (synod-site.sh bridge --dpid 0x101)


def test_the_provisioning_steps_form_a_cluster_joined_by_tunnels(testbed):
    vms = testbed
    cloud, edge1, edge2, edge3 = vms
    t0 = time.monotonic()
    timings = provision(vms)
    print("provisioned: " + ", ".join(f"{s} {t:.1f} s" for s, t in timings.items())
          + f"; total {time.monotonic() - t0:.1f} s")

    # four members, each up as seen from the cloud, and one replicated state
    def four_up() -> bool:
        members = json.loads(cloud.synod("members", "--json"))
        return len(members) == 4 and all(m["up"] for m in members)

    took = _wait("4 members up at the cloud", four_up, 60)
    print(f"4 members up {took:.1f} s after provisioning")
    edge3.synod("put", "kv", "rehearsal", "value=0xc0ffee")
    took = _wait("edge3's write read at edge1", lambda: "c0ffee" in edge1.synod(
        "get", "kv", "rehearsal"), 30)
    print(f"edge3's write read at edge1 after {took:.1f} s")

    # the underlay: userspace VXLAN leaves through br-wan, per OVS's own route table
    routes = edge1.run("ovs-appctl", "ovs/route/show").stdout
    assert f"{NET}.0/24 dev br-wan" in routes, routes

    # a host at edge1 reaches the cloud's host and edge2's host through the tunnels
    tx0 = _tunnel_tx(edge1, "t-cloud")
    pairs = [(edge1, cloud), (edge1, edge2), (cloud, edge1), (edge2, edge1)]
    took = _all_reach(vms, pairs, PING_WAIT_S)
    print(f"edge1 h1 <-> cloud h1 and edge2 h1: answered after {took:.1f} s")
    assert _tunnel_tx(edge1, "t-cloud") > tx0  # the pings left edge1 through its tunnel

    # the tour (vagrant/README.md): a flow added at the cloud reaches edge1's switch
    cloud.synod("flows", "add", E1, "from-cloud", "--priority", "300",
                "--match", "eth_type=0x0800,ipv4_dst=10.250.0.1", "--actions", "drop")
    took = _wait("the cloud's flow on edge1's switch",
                 lambda: "nw_dst=10.250.0.1" in _flows(edge1), 30)
    print(f"tour: a flow from the cloud on edge1's switch after {took:.1f} s")

    # provisioning again is harmless: every step passes, the cluster is the same (the
    # hosts' reachability afterwards is in the --long test below)
    provision(vms)
    assert len(json.loads(cloud.synod("members", "--json"))) == 4
    assert "t-cloud" in edge1.run("ovs-vsctl", "list-ports", "br-synod").stdout.split()

    # a wrong bootstrap secret: one line naming the site and the step
    wrong = edge2.step("join", "--site", "edge9", "--ip", edge2.ip, "--index", "9",
                       "--controllers", "cloud=1.2.3.4:6653", "--cloud", cloud.ip,
                       "--bootstrap-url", f"http://{cloud.ip}:7180/bundle.enc", check=False,
                       env=edge2.env(SYNOD_SECRET="not-the-secret",
                                     SYNOD_DATA_ROOT=str(edge2.root / "other")))
    assert wrong.returncode == 1
    last = wrong.stderr.strip().splitlines()[-1]
    assert last.startswith("synod-site: edge9: step join: cannot decrypt the bundle"), wrong.stderr


@pytest.mark.slow
def test_reachability_after_provisioning_again_and_the_tours_cut_and_heal(testbed):
    """Hosts still reach each other after provisioning again; the tour's second half: cut
    edge1's WAN, it still programs its switch; heal, its flow reaches the cloud and its
    host is reachable again. Opt-in (--long) for its length."""
    vms = testbed
    cloud, edge1, edge2, _ = vms
    provision(vms)
    pairs = [(edge1, cloud), (edge1, edge2), (cloud, edge1), (edge2, edge1)]
    took = _all_reach(vms, pairs, PING_WAIT_S)
    print(f"provisioned; the hosts answer after {took:.1f} s")
    provision(vms)
    took = _all_reach(vms, pairs, PING_WAIT_S)
    print(f"provisioned again; the hosts answer after {took:.1f} s")
    edge1.run("ip", "link", "set", "eth1", "down")
    edge1.synod("flows", "add", E1, "while-cut", "--priority", "300",
                "--match", "eth_type=0x0800,ipv4_dst=10.250.0.2", "--actions", "drop")
    took = _wait("edge1's own flow while cut off",
                 lambda: "nw_dst=10.250.0.2" in _flows(edge1), 30)
    print(f"tour: cut off, edge1 programs its switch in {took:.1f} s")
    assert not _ping(edge2, edge1.host_ip)
    edge1.run("ip", "link", "set", "eth1", "up")
    took = _wait("edge1's flow at the cloud after the heal",
                 lambda: "while-cut" in cloud.synod("flows", "list"), 60)
    print(f"tour: healed, the cloud has edge1's flow after {took:.1f} s")
    took = _all_reach(vms, pairs, PING_WAIT_S)
    print(f"tour: healed, the hosts answer again after {took:.1f} s")
