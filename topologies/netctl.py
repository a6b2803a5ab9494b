"""Emulation plumbing: Open vSwitch, controller processes, Mininet networks, cleanup.

Everything started here is stopped in `finally` blocks or context managers: OVS
bridges, Mininet hosts and links, WAN relays, controllers. Ctrl-C and SIGTERM are
turned into a stop request honoured between Mininet steps (see deferred_signals).
"""

from __future__ import annotations

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
from functools import partial

from mininet.net import Mininet

from controller.up import die_with_parent
from topologies import reach
from topologies.cloud_edge import OWNER_ENV, OWNER_KEY, SiteSwitch, SynodRemote, WanRelay

__all__ = [
    "CONVERGE_TIMEOUT_S",
    "OWNER_ENV",
    "EmulationError",
    "Progress",
    "checkpoint",
    "cleanup_leftovers",
    "controller_process",
    "converge",
    "deferred_signals",
    "ensure_ovs",
    "ensure_root",
    "free_port",
    "ping_pairs",
    "running_network",
    "start_controller",
    "stop_process",
    "wait_converged",
    "wait_reachable",
]

OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"
SWITCH_CONNECT_TIMEOUT_S = 60
CONTROLLER_READY_TIMEOUT_S = 20
PING_TIMEOUT_S = 3
CONVERGE_TIMEOUT_S = 30

Progress = Callable[[str], None]


class EmulationError(Exception):
    """The emulation cannot run; the message names the problem and the fix in one line."""


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


def free_port(host: str = "127.0.0.1") -> int:
    """A free TCP port on host (it may be taken again before use; callers bind soon)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# The launcher's commands (console scripts) and the entry point each runs.
_LAUNCHERS = {"synod-controller": "main", "ryu-manager": "ryu_manager",
              "osken-manager": "osken_manager"}


def _controller_command(command: str = "synod-controller") -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), command)
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-c",
            f"from controller.openflow.launcher import {_LAUNCHERS[command]}; "
            f"{_LAUNCHERS[command]}()"]


def start_controller(port: int, log_path: str, host: str = "127.0.0.1",
                     apps: tuple[str, ...] = (), extra_args: tuple[str, ...] = (),
                     command: str = "synod-controller") -> subprocess.Popen:
    """Start a controller (synod-controller, ryu-manager, osken-manager); wait until it listens."""
    if command not in _LAUNCHERS:
        raise ValueError(f"unknown controller command {command!r}")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            _controller_command(command) + ["--ofp-listen-host", host,
                                            "--ofp-tcp-listen-port", str(port), *extra_args,
                                            *apps],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,  # not outliving us
            # Marks it as ours, so --cleanup can find it without touching other controllers.
            env=dict(os.environ, **{OWNER_ENV: str(os.getpid())}),
        )
    deadline = time.monotonic() + CONTROLLER_READY_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise EmulationError(f"{command} exited with {proc.returncode}: "
                                 f"see {log_path}")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return proc
        except OSError:
            if time.monotonic() > deadline:
                stop_process(proc)
                raise EmulationError(f"{command} did not listen on {host}:{port} "
                                     f"within {CONTROLLER_READY_TIMEOUT_S}s: see "
                                     f"{log_path}") from None
            time.sleep(0.2)


@contextmanager
def controller_process(port: int, log_path: str, host: str = "127.0.0.1",
                       apps: tuple[str, ...] = (), extra_args: tuple[str, ...] = (),
                       command: str = "synod-controller") -> Iterator[subprocess.Popen]:
    """A controller subprocess listening on host:port, stopped on exit."""
    proc = start_controller(port, log_path, host, apps, extra_args, command)
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


def _hosts(net: Mininet) -> dict[str, tuple[int, str]]:
    return {h.name: (h.pid, h.IP()) for h in net.hosts}


def ping_pairs(net: Mininet, pairs: list[tuple[str, str]],
               timeout_s: float = PING_TIMEOUT_S) -> dict[tuple[str, str], bool]:
    """Echo each (src, dst) host pair, again every second while unanswered, for at most
    timeout_s from its first echo (topologies/reach.py: no process per ping); True where
    a reply came."""
    return reach.probe(_hosts(net), pairs, timeout_s, per_pair=True,
                       between=checkpoint).results()


def cleanup_leftovers(progress: Progress) -> list[str]:
    """Remove bridges and processes a crashed emulation may have left; return what went.

    Only what Synod started and whose run is gone: bridges named as Synod names them
    and not owned by a live process (external-ids:synod-owner), their links, and
    processes marked with OWNER_ENV whose owner is dead. Nothing is killed by name.
    """
    removed = []
    live = {b for b in _existing_bridges() if _owner_alive(_bridge_owner(b))}
    bridges = {b for b in _existing_bridges() if _looks_like_ours(b)} - live
    _delete_bridges(bridges)
    removed += [f"bridge {b}" for b in sorted(bridges)]
    ours = {name for name in _all_interface_nodes() if _looks_like_ours(name)
            or (name.startswith("w") and name[1:].isdigit())} - live
    leftover = _leftover_interfaces(ours)
    _delete_interfaces(leftover)
    removed += [f"interface {i}" for i in leftover]
    for pid in _orphaned_emulation_processes():
        try:
            os.kill(pid, signal.SIGTERM)
            removed.append(f"emulation process (node, controller or WAN relay) pid {pid}")
        except ProcessLookupError:
            pass
    for item in removed:
        progress(f"removed {item}")
    return removed


def _bridge_owner(bridge: str) -> int | None:
    done = subprocess.run(["ovs-vsctl", "--timeout=5", "--if-exists", "get", "bridge", bridge,
                           f"external-ids:{OWNER_KEY}"], capture_output=True, text=True,
                          timeout=10, check=False)
    owner = done.stdout.strip().strip('"')
    return int(owner) if owner.isdigit() else None


def _owner_alive(pid: int | None) -> bool:
    return pid is not None and os.path.exists(f"/proc/{pid}")


def _orphaned_emulation_processes() -> list[int]:
    """Nodes, controllers and WAN relays started by an emulation whose process is gone."""
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


def all_pairs(net: Mininet) -> list[tuple[str, str]]:
    names = [h.name for h in net.hosts]
    return [(a, b) for a in names for b in names if a != b]


def wait_reachable(net: Mininet, pairs: list[tuple[str, str]],
                   timeout_s: float) -> reach.Reach:
    """Echo every pair, each again every second while unanswered, until all answered or
    timeout_s passed; the Reach says when each answered and which never did. A stop
    request (Ctrl-C) is honoured between sends."""
    return reach.probe(_hosts(net), pairs, timeout_s, between=checkpoint)


def wait_converged(net: Mininet,
                   pairs: list[tuple[str, str]]) -> tuple[reach.Reach, reach.Deadline]:
    """wait_reachable within the network's budget (CONVERGE_TIMEOUT_S) plus one round of
    echoes over these pairs (reach_plan.Deadline: the bound grows with the pairs); the
    deadline too, for the report's check."""
    deadline = reach.Deadline(CONVERGE_TIMEOUT_S, len(pairs))
    return wait_reachable(net, pairs, deadline.total_s), deadline


def converge(net: Mininet, pairs: list[tuple[str, str]], timeout_s: float) -> float | None:
    """Seconds until every pair answered, or None if not within timeout_s."""
    return wait_reachable(net, pairs, timeout_s).took
