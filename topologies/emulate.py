"""Run an emulated network with a real synod-controller and report reachability.

`synod emulate` is a thin CLI over `run_scenario`. Everything started here is torn
down in `finally` blocks: OVS bridges, Mininet hosts, WAN relays, the controller.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

from mininet.log import setLogLevel
from mininet.net import Mininet

from topologies.classic import make_topo
from topologies.cloud_edge import SiteSwitch, SynodRemote, WanRelay, cut_wan, heal_wan, sites

__all__ = [
    "EmulationError",
    "Phase",
    "Report",
    "ScenarioOptions",
    "checkpoint",
    "controller_process",
    "converge",
    "deferred_signals",
    "ensure_ovs",
    "ping_pairs",
    "run_scenario",
    "running_network",
    "start_controller",
    "stop_process",
]

OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"
SWITCH_CONNECT_TIMEOUT_S = 60
CONTROLLER_READY_TIMEOUT_S = 20
PING_TIMEOUT_S = 3
CONVERGE_TIMEOUT_S = 30
PR_SET_PDEATHSIG = 1
OWNER_ENV = "SYNOD_EMULATION_OWNER"

Progress = Callable[[str], None]


class EmulationError(Exception):
    """The emulation cannot run; the message names the problem and the fix in one line."""


@dataclass(frozen=True)
class ScenarioOptions:
    """What `synod emulate` was asked to do."""

    topo: str = "cloudedge"
    sites: int = 3
    hosts_per_site: int = 2
    switches_per_site: int = 1
    wan_delay_ms: float = 20.0
    wan_rate_mbit: float = 100.0
    wan_loss_pct: float = 0.0
    cut_site: str = "edge1"
    of_port: int = 0  # 0: pick a free port
    verbose: bool = False
    controllers: str = "sdn"  # sdn: a node and a controller per site; single: one controller


@dataclass
class Phase:
    """Reachability measured in one phase of the scenario."""

    name: str
    results: dict[tuple[str, str], bool]  # (src host, dst host) -> answered
    site_of_host: dict[str, str]

    @property
    def answered(self) -> int:
        return sum(self.results.values())

    @property
    def loss_pct(self) -> float:
        return 100.0 * (1 - self.answered / len(self.results)) if self.results else 0.0

    def between(self, src_site: str, dst_site: str) -> tuple[int, int]:
        """(answered, total) for pings from hosts of src_site to hosts of dst_site."""
        pairs = [ok for (s, d), ok in self.results.items()
                 if self.site_of_host[s] == src_site and self.site_of_host[d] == dst_site]
        return sum(pairs), len(pairs)


@dataclass
class Report:
    """What happened, printable for people and checkable by tests."""

    title: str
    site_names: list[str]
    phases: list[Phase] = field(default_factory=list)
    checks: list[tuple[str, bool]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(ok for _, ok in self.checks)

    def render(self) -> str:
        lines = [self.title, ""]
        width = max(len(s) for s in self.site_names) + 2
        for phase in self.phases:
            lines.append(f"{phase.name}: {phase.answered}/{len(phase.results)} pings answered, "
                         f"{phase.loss_pct:.0f}% loss")
            lines.append(" " * (width + 6) + "".join(s.rjust(width) for s in self.site_names))
            for src in self.site_names:
                cells = []
                for dst in self.site_names:
                    ok, total = phase.between(src, dst)
                    cells.append((f"{ok}/{total}" if total else "-").rjust(width))
                lines.append(f"  from {src.ljust(width)}" + "".join(cells))
            lines.append("")
        lines += [f"  {note}" for note in self.notes]
        if self.notes:
            lines.append("")
        for text, ok in self.checks:
            lines.append(f"  [{'ok' if ok else 'FAIL'}] {text}")
        lines.append("")
        lines.append("result: " + ("PASS" if self.passed else "FAIL"))
        return "\n".join(lines)


_STOP = threading.Event()


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Turn SIGINT/SIGTERM into a request honoured at the next checkpoint().

    Mininet talks to every node through a shell on a pty; an exception raised in the
    middle of one of those exchanges leaves the shell out of step and Mininet's own
    teardown then fails. So a signal only sets a flag, and the scenario stops between
    steps, where unwinding is safe.
    """
    def _request_stop(_signum: int, _frame: object) -> None:
        _STOP.set()

    _STOP.clear()
    previous = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def checkpoint() -> None:
    """Unwind (as Ctrl-C does) if a stop was requested; call only between Mininet steps."""
    if _STOP.is_set():
        raise KeyboardInterrupt


def ensure_root() -> None:
    if os.geteuid() != 0:
        raise EmulationError("emulation needs root (Mininet creates namespaces and OVS "
                             "bridges): run it as root")


def ensure_ovs(progress: Progress) -> None:
    """Make sure ovsdb-server and ovs-vswitchd answer; start them if they do not."""
    if shutil.which("ovs-vsctl") is None:
        raise EmulationError("Open vSwitch is not installed: run ./synod.sh demo, or "
                             "apt-get install -y openvswitch-switch")
    if _ovs_answers():
        return
    if not os.path.exists(OVS_CTL):
        raise EmulationError(f"Open vSwitch is not running and {OVS_CTL} is missing: "
                             "reinstall openvswitch-switch")
    progress("starting Open vSwitch (ovs-ctl start)")
    done = subprocess.run([OVS_CTL, "start", "--system-id=random"], capture_output=True,
                          text=True, timeout=60, check=False)
    if done.returncode != 0 or not _ovs_answers():
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise EmulationError(f"could not start Open vSwitch: {detail[0]}")


def _ovs_answers() -> bool:
    try:
        return subprocess.run(["ovs-vsctl", "--timeout=5", "show"], capture_output=True,
                              timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    # The controller must not outlive us even if we are killed with SIGKILL.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _controller_command() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "synod-controller")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-m", "controller.openflow.launcher"]


def start_controller(port: int, log_path: str, host: str = "127.0.0.1",
                     apps: tuple[str, ...] = (), extra_args: tuple[str, ...] = ()
                     ) -> subprocess.Popen:
    """Start a synod-controller subprocess and wait (bounded) until it listens."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            _controller_command() + ["--ofp-listen-host", host,
                                     "--ofp-tcp-listen-port", str(port), *extra_args, *apps],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            # Marks it as ours, so --cleanup can find it without touching other controllers.
            env=dict(os.environ, **{OWNER_ENV: str(os.getpid())}),
        )
    deadline = time.monotonic() + CONTROLLER_READY_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise EmulationError(f"synod-controller exited with {proc.returncode}: "
                                 f"see {log_path}")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return proc
        except OSError:
            if time.monotonic() > deadline:
                stop_process(proc)
                raise EmulationError(f"synod-controller did not listen on {host}:{port} "
                                     f"within {CONTROLLER_READY_TIMEOUT_S}s: see "
                                     f"{log_path}") from None
            time.sleep(0.2)


@contextmanager
def controller_process(port: int, log_path: str, host: str = "127.0.0.1",
                       apps: tuple[str, ...] = (), extra_args: tuple[str, ...] = ()
                       ) -> Iterator[subprocess.Popen]:
    """A synod-controller subprocess listening on host:port, stopped on exit."""
    proc = start_controller(port, log_path, host, apps, extra_args)
    try:
        yield proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM (and SIGCONT, in case it is paused), then SIGKILL after 10 s."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGCONT)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _existing_bridges() -> set[str]:
    done = subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True,
                          text=True, timeout=10, check=False)
    return set(done.stdout.split())


@contextmanager
def running_network(topo, of_port: int | list[int], progress: Progress,
                    targets_for: Callable[[str], list[str]] | None = None
                    ) -> Iterator[Mininet]:
    """Start `topo` on userspace OVS switches bound to the controller(s) at of_port.

    With `targets_for(switch site)`, each switch gets its own controller list instead
    (e.g. its site's controller, then a backup across the WAN), and of_port is unused.
    """
    clash = sorted(set(topo.switches()) & _existing_bridges())
    clash += _leftover_interfaces(set(topo.switches()))
    if clash:
        raise EmulationError(f"OVS bridges or links {', '.join(clash)} already exist (another "
                             "emulation running, or one that crashed): delete them with "
                             f"ovs-vsctl del-br, or run 'synod emulate --cleanup'")
    ports = [] if targets_for else [of_port] if isinstance(of_port, int) else list(of_port)
    net = Mininet(
        topo=topo,
        switch=partial(SiteSwitch, datapath="user", protocols="OpenFlow13"),
        controller=None,
        autoSetMacs=False,
        build=False,
    )
    for i, port in enumerate(ports):
        net.addController(f"c{i}", controller=SynodRemote, ip="127.0.0.1", port=port)
    try:
        progress(f"building {len(topo.hosts())} hosts, {len(topo.switches())} switches, "
                 f"{len(topo.links())} links")
        try:
            net.build()
            checkpoint()
            net.start()
            if targets_for is not None:
                for switch in net.switches:
                    if isinstance(switch, WanRelay):
                        continue
                    targets = targets_for(switch.params.get("site", ""))
                    switch.vsctl("set-controller", switch.name, *targets)
        except Exception as e:  # Mininet raises bare Exception with a useful message
            raise EmulationError(f"could not build the network: {str(e).strip()}") from None
        of_switches = [s for s in net.switches if not isinstance(s, WanRelay)]
        progress(f"waiting for {len(of_switches)} switches to connect to the controller")
        deadline = time.monotonic() + SWITCH_CONNECT_TIMEOUT_S
        while True:
            waiting = [s.name for s in of_switches if not s.connected()]
            if not waiting:
                break
            if time.monotonic() > deadline:
                raise EmulationError(f"switches {', '.join(waiting)} did not connect within "
                                     f"{SWITCH_CONNECT_TIMEOUT_S}s")
            checkpoint()
            time.sleep(0.5)
        yield net
    finally:
        progress("tearing down")
        try:
            net.stop()
        except Exception as e:
            progress(f"Mininet's teardown failed ({type(e).__name__}: {e}); sweeping by name")
            _kill_nodes(net)
        finally:
            # An interrupted build leaves what Mininet had not yet recorded: sweep by name.
            _delete_bridges(set(topo.switches()) & _existing_bridges())
            _delete_interfaces(_leftover_interfaces(set(topo.switches())))


def _kill_nodes(net: Mininet) -> None:
    for node in list(net.hosts) + list(net.switches):
        relay = getattr(node, "relay", None)
        if relay is not None and relay.poll() is None:
            relay.kill()
        shell = getattr(node, "shell", None)
        if shell is not None and shell.poll() is None:
            shell.kill()


def _delete_bridges(names: set[str]) -> None:
    for bridge in sorted(names):
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", bridge], capture_output=True,
                       timeout=10, check=False)


def _root_interfaces() -> list[str]:
    """Names of the interfaces in our (root) network namespace."""
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                         timeout=10, check=False).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(": ")
        if len(parts) > 1:
            names.append(parts[1].split("@")[0])
    return names


def _leftover_interfaces(node_names: set[str]) -> list[str]:
    """Root-namespace interfaces named like Mininet names them for these nodes (s1-eth2)."""
    found = []
    for ifname in _root_interfaces():
        node, sep, port = ifname.partition("-eth")
        if sep and port.isdigit() and node in node_names:
            found.append(ifname)
    return found


def _delete_interfaces(names: list[str]) -> None:
    for ifname in names:
        # Deleting one end of a veth removes its peer too; ignore "cannot find".
        subprocess.run(["ip", "link", "del", ifname], capture_output=True, timeout=10,
                       check=False)


def ping_pairs(net: Mininet, pairs: list[tuple[str, str]],
               timeout_s: int = PING_TIMEOUT_S) -> dict[tuple[str, str], bool]:
    """Ping each (src, dst) host pair once, all in parallel; True where a reply came."""
    procs = {}
    for src, dst in pairs:
        procs[(src, dst)] = net[src].popen(
            ["ping", "-n", "-q", "-c", "1", "-W", str(timeout_s), net[dst].IP()],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {}
    for pair, proc in procs.items():
        try:
            results[pair] = proc.wait(timeout=timeout_s + 5) == 0
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
            results[pair] = False
    return results


def cleanup_leftovers(progress: Progress) -> list[str]:
    """Remove bridges and processes a crashed emulation may have left; return what went."""
    removed = []
    bridges = {b for b in _existing_bridges() if _looks_like_ours(b)}
    _delete_bridges(bridges)
    removed += [f"bridge {b}" for b in sorted(bridges)]
    ours = {name for name in _all_interface_nodes() if _looks_like_ours(name)
            or (name.startswith("w") and name[1:].isdigit())}
    leftover = _leftover_interfaces(ours)
    _delete_interfaces(leftover)
    removed += [f"interface {i}" for i in leftover]
    done = subprocess.run(["pkill", "-TERM", "-f", "topologies/wanrelay.py"],
                          capture_output=True, timeout=10, check=False)
    if done.returncode == 0:
        removed.append("WAN relay processes")
    for pid in _orphaned_emulation_controllers():
        try:
            os.kill(pid, signal.SIGTERM)
            removed.append(f"emulation process (node or controller) pid {pid}")
        except ProcessLookupError:
            pass
    for item in removed:
        progress(f"removed {item}")
    return removed


def _orphaned_emulation_controllers() -> list[int]:
    """Nodes and controllers started by an emulation whose process is gone."""
    marker = OWNER_ENV.encode() + b"="
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        owners = [v[len(marker):] for v in env if v.startswith(marker)]
        if owners and owners[0].isdigit() and not os.path.exists(f"/proc/{int(owners[0])}"):
            found.append(int(entry))
    return found


def _all_interface_nodes() -> set[str]:
    return {name.partition("-eth")[0] for name in _root_interfaces() if "-eth" in name}


def _looks_like_ours(bridge: str) -> bool:
    from topologies.cloud_edge import site_of
    return site_of(bridge) is not None


def run_scenario(opts: ScenarioOptions, progress: Progress, log_dir: str) -> Report:
    """Bring the network up, ping, cut and heal one edge WAN link, tear down, report."""
    topo = _validated_topo(opts)
    if opts.controllers not in ("sdn", "single"):
        raise EmulationError(f"--controllers must be sdn or single, got {opts.controllers!r}")
    ensure_root()
    if shutil.which("ping") is None:
        raise EmulationError("ping is not installed (Mininet would report 100% loss): "
                             "apt-get install -y iputils-ping")
    setLogLevel("info" if opts.verbose else "error")
    ensure_ovs(progress)
    progress("Open vSwitch is running")
    if opts.topo == "cloudedge" and opts.controllers == "sdn":
        from topologies.sdn_scenario import run_sdn

        with deferred_signals():
            return run_sdn(topo, opts, progress, log_dir)
    port = opts.of_port or _free_port("127.0.0.1")
    log_path = os.path.join(log_dir, "synod-controller.log")
    progress(f"starting synod-controller on 127.0.0.1:{port} (log: {log_path})")
    with deferred_signals(), controller_process(port, log_path), \
            running_network(topo, port, progress) as net:
        checkpoint()
        if opts.topo == "cloudedge":
            return _partition_heal(net, opts, progress)
        return _pingall_only(net, opts, progress)


def _validated_topo(opts: ScenarioOptions):
    """Build the topology object (no network yet), so bad input fails before any I/O."""
    if opts.topo != "cloudedge":
        return make_topo(opts.topo, opts.sites)
    topo = make_topo(opts.topo, opts.sites, hosts_per_site=opts.hosts_per_site,
                     switches_per_site=opts.switches_per_site, wan_delay_ms=opts.wan_delay_ms,
                     wan_rate_mbit=opts.wan_rate_mbit, wan_loss_pct=opts.wan_loss_pct)
    edges = [f"edge{i}" for i in range(1, opts.sites + 1)]
    if opts.cut_site not in edges:
        raise EmulationError(f"cannot cut {opts.cut_site!r}: choose an edge site, edge1 to "
                             f"edge{opts.sites}")
    return topo


def _all_pairs(net: Mininet) -> list[tuple[str, str]]:
    names = [h.name for h in net.hosts]
    return [(a, b) for a in names for b in names if a != b]


def converge(net: Mininet, pairs: list[tuple[str, str]], timeout_s: float) -> float | None:
    """Ping until every pair answers; seconds it took, or None if not within timeout_s.

    Between rounds only the pairs still failing are pinged again. A stop request
    (Ctrl-C) is honoured between rounds.
    """
    started = time.monotonic()
    missing = list(pairs)
    while missing:
        checkpoint()
        results = ping_pairs(net, missing, timeout_s=1)
        missing = [pair for pair, ok in results.items() if not ok]
        if missing and time.monotonic() - started > timeout_s:
            return None
    return time.monotonic() - started


def _pingall_only(net: Mininet, opts: ScenarioOptions, progress: Progress) -> Report:
    site_of_host = {h.name: "all" for h in net.hosts}
    pairs = _all_pairs(net)
    progress("waiting for the network to converge (link discovery, host learning)")
    took = converge(net, pairs, CONVERGE_TIMEOUT_S)
    progress("pingall")
    phase = Phase("pingall", ping_pairs(net, pairs), site_of_host)
    report = Report(f"Synod emulation: {opts.topo} topology, size {opts.sites}", ["all"],
                    [phase])
    report.checks.append((_took("the network converged", took), took is not None))
    report.checks.append(("every host reaches every other host", phase.loss_pct == 0))
    return report


def _took(what: str, seconds: float | None) -> str:
    if seconds is None:
        return f"{what}: not within {CONVERGE_TIMEOUT_S:g} s"
    return f"{what} in {seconds:.1f} s"


def _partition_heal(net: Mininet, opts: ScenarioOptions, progress: Progress) -> Report:
    site_map = sites(net)
    site_of_host = {h: s.name for s in site_map.values() for h in s.hosts}
    pairs = _all_pairs(net)
    cut = opts.cut_site
    title = (f"Synod emulation: 1 cloud + {opts.sites} edge sites, {opts.hosts_per_site} "
             f"hosts per site, WAN {opts.wan_delay_ms:g} ms one-way, "
             f"{opts.wan_rate_mbit:g} Mbit/s, {opts.wan_loss_pct:g}% loss")
    report = Report(title, list(site_map))
    progress("waiting for the network to converge (link discovery, host learning)")
    start_s = converge(net, pairs, CONVERGE_TIMEOUT_S)
    progress(f"phase 1/3: pingall across {len(site_map)} sites ({len(pairs)} pings)")
    before = Phase("before (all WAN links up)", ping_pairs(net, pairs), site_of_host)
    report.phases.append(before)
    checkpoint()

    progress(f"phase 2/3: cutting the WAN link of {cut}")
    cut_wan(net, cut)
    try:
        still = [(a, b) for a, b in pairs
                 if (site_of_host[a] == cut) == (site_of_host[b] == cut)]
        cut_s = converge(net, still, CONVERGE_TIMEOUT_S)
        during = Phase(f"during ({cut} WAN cut)", ping_pairs(net, pairs), site_of_host)
    finally:
        progress(f"phase 3/3: healing the WAN link of {cut}")
        heal_wan(net, cut)
    report.phases.append(during)
    checkpoint()
    heal_s = converge(net, pairs, CONVERGE_TIMEOUT_S)
    after = Phase("after (healed)", ping_pairs(net, pairs), site_of_host)
    report.phases.append(after)

    inside_ok, inside_total = during.between(cut, cut)
    out_ok = sum(during.between(s, cut)[0] + during.between(cut, s)[0]
                 for s in site_map if s != cut)
    others = [s for s in site_map if s != cut]
    others_ok = all(during.between(a, b)[0] == during.between(a, b)[1]
                    for a in others for b in others)
    report.checks += [
        (_took("start: every host reached every other host", start_s), start_s is not None),
        ("before: every host reaches every other host", before.loss_pct == 0),
        (_took("cut: the paths that should survive did", cut_s), cut_s is not None),
        (f"during: {cut} hosts still reach each other ({inside_ok}/{inside_total})",
         inside_ok == inside_total),
        (f"during: no other site reaches {cut} ({out_ok} answered)", out_ok == 0),
        ("during: the other sites still reach each other", others_ok),
        (_took("heal: full reachability returned", heal_s), heal_s is not None),
        ("after: every host reaches every other host again", after.loss_pct == 0),
    ]
    return report
