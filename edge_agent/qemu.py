"""The agent's runtime: QEMU VMs with tap NICs on the site's OVS bridge, found again after a
restart of the agent, stopped cleanly. The I/O half of the agent (the reconciler decides).

Every VM has a folder `<state_dir>/vms/<service>/`:

    owner.json   written before anything is created: owner (this agent), service, hash,
                 taps and bridges — what lets a restarted agent adopt the VM, and remove
                 the taps of one that died, and nothing that is not its own
    qemu.pid     QEMU's -pidfile (-daemonize: QEMU outlives the agent)
    qmp.sock     the QMP socket: status, system_powerdown, quit
    console.log  the serial console (the guest's ready and health lines, panics)

A process is taken to be the VM only if /proc/<pid>/cmdline is QEMU's with this folder's
pidfile, so a reused pid is never mistaken for it. Taps are named and addressed from the
service name and NIC index (tap_name, tap_mac), and carry external_ids:synod-agent=<owner>
on their OVS port. KVM is used only if a probe boot under KVM says it is ready in time
(probe_accel); otherwise TCG (KVM hangs on these machines although /dev/kvm exists).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edge_agent.microvm import Image, kernel_cmdline
from edge_agent.spec import ServiceSpec

__all__ = [
    "QmpError",
    "Runtime",
    "RuntimeError_",
    "VmState",
    "probe_accel",
    "tap_mac",
    "tap_name",
]

QEMU = "qemu-system-x86_64"
READY_LINE = "synod-microvm: ready"
HEALTH_RE = re.compile(r"synod-microvm: health (ok|fail)")
PANIC_RE = re.compile(r"Kernel panic - not syncing: ([^\r\n]*)")
CONSOLE_TAIL_BYTES = 64 << 10
CMD_TIMEOUT_S = 20
QMP_TIMEOUT_S = 2.0


class RuntimeError_(Exception):  # noqa: N801 - not the builtin
    """A VM could not be started or stopped; the message says which step and why."""


class QmpError(RuntimeError_):
    """The QMP socket did not answer as expected."""


def _digest(*parts: str) -> bytes:
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=8).digest()


def tap_name(service: str, index: int, owner: str = "") -> str:
    """`sv` + 8 hex digits of a hash of the owner (the agent's node id) and the service
    name + the NIC index: 11-12 characters (an interface name has at most 15), the same on
    every start, and different for two agents on one host (an emulation) running it."""
    return f"sv{_digest(owner, service).hex()[:8]}n{index}"


def tap_mac(service: str, index: int, owner: str = "") -> str:
    """The host side's MAC: locally administered, unicast, from owner, service and index."""
    b = bytearray(_digest(owner, service, str(index))[:6])
    b[0] = (b[0] & 0xFC) | 0x02
    return ":".join(f"{x:02x}" for x in b)


def _run(cmd: list[str], what: str) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=CMD_TIMEOUT_S,
                              check=False)
    except FileNotFoundError:
        raise RuntimeError_(f"{what}: {cmd[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise RuntimeError_(f"{what}: {cmd[0]} gave no answer in {CMD_TIMEOUT_S} s") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["(no output)"]
        raise RuntimeError_(f"{what}: {lines[-1][:300]}")
    return done.stdout


class Qmp:
    """A QMP session on a unix socket (one command at a time, every read bounded)."""

    def __init__(self, path: Path, timeout_s: float = QMP_TIMEOUT_S) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout_s)
        self.buf = b""
        try:
            self.sock.connect(str(path))
            self._read()  # greeting
            self.execute("qmp_capabilities")
        except (OSError, ValueError) as e:
            self.sock.close()
            raise QmpError(f"QMP {path}: {e}") from None

    def _read(self) -> dict:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise QmpError("QMP: connection closed")
            self.buf += chunk
            if len(self.buf) > 1 << 20:
                raise QmpError("QMP: answer too long")
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, command: str) -> dict:
        try:
            self.sock.sendall(json.dumps({"execute": command}).encode() + b"\n")
            while True:
                msg = self._read()
                if "return" in msg:
                    return msg["return"]
                if "error" in msg:
                    raise QmpError(f"QMP {command}: {msg['error'].get('desc', msg['error'])}")
                # an asynchronous event (SHUTDOWN, POWERDOWN, ...): not our answer
        except OSError as e:
            raise QmpError(f"QMP {command}: {e}") from None

    def close(self) -> None:
        self.sock.close()


@dataclass(frozen=True)
class VmState:
    """What the runtime found of one VM (the reconciler's Actual, plus where it is)."""

    name: str
    hash: str
    pid: int | None
    alive: bool
    ready: bool
    healthy: bool | None
    started_ms: int  # wall clock, from the marker
    exit_reason: str
    owned: bool  # a marker of this owner (False: only a QEMU process of our folder)


def _pid_is_ours(pid: int, pidfile: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return False
    return b"-pidfile" in cmdline and str(pidfile).encode() in cmdline and \
        any(b"qemu-system" in c for c in cmdline[:1])


def qemu_pids(*folders: Path | str) -> list[int]:
    """The QEMU processes whose command line names one of these folders (an agent's state
    folder, an emulation's run folder): what tests and teardown look for, by /proc."""
    marks = [str(f).encode() for f in folders]
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes()
        except OSError:
            continue
        if cmd.startswith(b"qemu-system") and any(m in cmd for m in marks):
            out.append(int(p.name))
    return sorted(out)


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def console_facts(text: str) -> tuple[bool, bool | None, str]:
    """(ready, healthy, panic reason) from the tail of a console log."""
    ready = READY_LINE in text
    results = HEALTH_RE.findall(text)
    healthy = None if not results else results[-1] == "ok"
    panic = PANIC_RE.search(text)
    return ready, healthy, f"kernel panic: {panic.group(1).strip()[:200]}" if panic else ""


def probe_accel(image: Image, timeout_s: float = 8.0, qemu: str = QEMU) -> tuple[str, str]:
    """("kvm" | "tcg", why): KVM only if /dev/kvm opens and a probe VM under KVM prints its
    ready line within timeout_s. The answer is kept beside the image (once per image)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
        os.close(fd)
    except OSError as e:
        return "tcg", f"/dev/kvm: {e.strerror}"
    version = _run([qemu, "--version"], "qemu --version").splitlines()[0]
    cached = image.kernel.parent / "accel-probe.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        d = json.loads(cached.read_text())
        if d["qemu"] == version:
            return d["accel"], d["why"] + " (probed before)"
    with tempfile.TemporaryDirectory(prefix="synod-kvm-probe-") as tmp:
        console = Path(tmp) / "console.log"
        proc = subprocess.Popen(
            [qemu, "-accel", "kvm", "-m", "128", "-nodefaults", "-display", "none",
             "-no-reboot", "-kernel", str(image.kernel), "-initrd", str(image.initrd),
             "-append", kernel_cmdline("probe", [], 80, 8080), "-serial", f"file:{console}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        accel, why = "tcg", f"a probe VM under KVM was not ready in {timeout_s:g} s"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = (proc.stderr.read() or b"").decode().strip().splitlines()  # type: ignore[union-attr]
                why = f"QEMU with KVM exited: {(err or ['?'])[-1][:200]}"
                break
            with contextlib.suppress(OSError):
                if READY_LINE in console.read_text(errors="replace"):
                    accel, why = "kvm", "a probe VM under KVM was ready"
                    break
            time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    with contextlib.suppress(OSError):
        cached.write_text(json.dumps({"qemu": version, "accel": accel, "why": why}))
    return accel, why


class Runtime:
    """Starts, finds and stops this agent's VMs. Not thread-safe: one driver calls it."""

    def __init__(self, state_dir: Path, owner: str, accel: str = "tcg", qemu: str = QEMU,
                 stop_grace_s: float = 2.0, bridges: dict[str, str] | None = None) -> None:
        self.root = state_dir / "vms"
        self.root.mkdir(parents=True, exist_ok=True)
        self.owner, self.accel, self.qemu = owner, accel, qemu
        self.stop_grace_s = stop_grace_s
        self.bridges = dict(bridges or {})  # a spec's switch name -> this host's bridge

    def folder(self, name: str) -> Path:
        return self.root / name

    def _marker(self, name: str) -> dict | None:
        try:
            d = json.loads((self.folder(name) / "owner.json").read_text())
        except (OSError, ValueError):
            return None
        return d if isinstance(d, dict) and d.get("owner") == self.owner else None

    # --------------------------------------------------------------------- find
    def scan(self) -> dict[str, VmState]:
        """Every VM this agent owns: a folder with our marker, or a QEMU process using a
        folder of ours (an orphan: the agent died between launch and marker, or the
        marker was lost)."""
        out: dict[str, VmState] = {}
        for d in sorted(p for p in self.root.iterdir() if p.is_dir()):
            state = self._state(d.name)
            if state is not None:
                out[d.name] = state
        return out

    def _state(self, name: str) -> VmState | None:
        d = self.folder(name)
        marker = self._marker(name)
        pidfile = d / "qemu.pid"
        pid = _read_pid(pidfile)
        alive = pid is not None and _pid_is_ours(pid, pidfile)
        if marker is None and not alive:
            return None  # not ours, or nothing left of it
        try:
            with (d / "console.log").open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - CONSOLE_TAIL_BYTES))
                text = f.read().decode(errors="replace")
        except OSError:
            text = ""
        ready, healthy, panic = console_facts(text)
        exit_reason = ""
        if alive:
            status = self.status(name)
            if status in ("shutdown", "guest-panicked", "internal-error"):
                alive, exit_reason = False, panic or f"QEMU status {status}"
        else:
            exit_reason = panic or "the VM exited (see its console log)"
        return VmState(name, (marker or {}).get("hash", ""), pid if alive else None, alive,
                       ready, healthy, int((marker or {}).get("started_ms", 0)), exit_reason,
                       marker is not None)

    def status(self, name: str) -> str:
        """QEMU's run state from QMP (`running`, `paused`, ...), or `unknown: why`."""
        try:
            q = Qmp(self.folder(name) / "qmp.sock")
        except QmpError as e:
            return f"unknown: {e}"
        try:
            return str(q.execute("query-status").get("status", "unknown"))
        except QmpError as e:
            return f"unknown: {e}"
        finally:
            q.close()

    # -------------------------------------------------------------------- start
    def start(self, spec: ServiceSpec, image: Image, desired_hash: str, now_ms: int) -> int:
        """Launch the VM (taps first, then QEMU -daemonize); its pid. On any failure what
        was created is removed again and RuntimeError_ names the step."""
        name = spec.name
        d = self.folder(name)
        existing = self._state(name)
        if existing is not None and existing.alive:
            raise RuntimeError_(f"{name}: a VM of it already runs (pid {existing.pid})")
        if existing is not None:
            self._teardown(name)
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RuntimeError_(f"{name}: cannot create {d}: {e.strerror}") from None
        taps: list[tuple[str, str]] = []
        marker = {"owner": self.owner, "service": name, "hash": desired_hash,
                  "taps": taps, "started_ms": now_ms}
        for f in ("qemu.pid", "qmp.sock", "console.log"):
            with contextlib.suppress(FileNotFoundError):
                (d / f).unlink()
        try:
            self._write_marker(name, marker)
            for i, nic in enumerate(spec.nics):
                tap = tap_name(name, i, self.owner)
                bridge = self.bridges.get(nic.switch, nic.switch)
                self._check_tap(name, i, tap, bridge)
                # In the marker before it exists: a crash in between still finds it, and
                # a tap another program holds (refused above) is never in it.
                taps.append((tap, bridge))
                self._write_marker(name, marker)
                self._add_tap(name, i, tap, bridge)
            _run(self._command(spec, image), f"{name}: QEMU")
        except RuntimeError_:
            self._teardown(name)
            raise
        pid = _read_pid(d / "qemu.pid")
        if pid is None:
            self._teardown(name)
            raise RuntimeError_(f"{name}: QEMU wrote no pidfile")
        return pid

    def _write_marker(self, name: str, marker: dict) -> None:
        d = self.folder(name)
        try:
            (d / "owner.json.tmp").write_text(json.dumps(marker))
            os.replace(d / "owner.json.tmp", d / "owner.json")
        except OSError as e:  # a full disk, a read-only state dir
            raise RuntimeError_(f"{name}: cannot write {d / 'owner.json'}: {e.strerror}") \
                from None

    def _check_tap(self, name: str, index: int, tap: str, bridge: str) -> None:
        if subprocess.run(["ovs-vsctl", "--timeout=5", "br-exists", bridge],
                          capture_output=True, timeout=CMD_TIMEOUT_S,
                          check=False).returncode != 0:
            raise RuntimeError_(f"{name}: nics[{index}]: bridge {bridge!r} does not exist "
                                "on this node")
        if Path(f"/sys/class/net/{tap}").exists():
            raise RuntimeError_(f"{name}: nics[{index}]: tap {tap} exists and is not this "
                                "VM's (another program's interface?)")

    def _add_tap(self, name: str, index: int, tap: str, bridge: str) -> None:
        _run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"], f"{name}: tap {tap}")
        _run(["ip", "link", "set", tap, "address", tap_mac(name, index, self.owner), "up"],
             f"{name}: tap {tap} up")
        _run(["ovs-vsctl", "--timeout=5", "--may-exist", "add-port", bridge, tap, "--", "set",
              "interface", tap, f"external_ids:synod-agent={self.owner}"],
             f"{name}: add {tap} to {bridge}")

    def _command(self, spec: ServiceSpec, image: Image) -> list[str]:
        d = self.folder(spec.name)
        nics = [(n.mac, n.ipv4, n.vlan) for n in spec.nics]
        cmd = [self.qemu, "-accel", self.accel, "-m", str(spec.memory_mb),
               "-smp", str(spec.vcpus), "-nodefaults", "-display", "none", "-no-reboot",
               "-name", f"synod-{spec.name}",
               "-kernel", str(image.kernel), "-initrd", str(image.initrd),
               "-append", kernel_cmdline(spec.name, nics, spec.http_port, spec.health.port,
                                         spec.health.path),
               "-serial", f"file:{d / 'console.log'}",
               "-qmp", f"unix:{d / 'qmp.sock'},server=on,wait=off",
               "-daemonize", "-pidfile", str(d / "qemu.pid")]
        for i, _nic in enumerate(spec.nics):
            cmd += ["-netdev", f"tap,id=n{i},ifname={tap_name(spec.name, i, self.owner)},"
                    "script=no,"
                    "downscript=no",
                    "-device", f"virtio-net-pci,netdev=n{i},mac={spec.nics[i].mac},"
                    "csum=off,guest_csum=off,romfile="]
        return cmd

    # --------------------------------------------------------------------- stop
    def stop(self, name: str, urgent: bool = False) -> str:
        """Stop the VM (system_powerdown, then quit, then SIGKILL, each bounded; urgent:
        no powerdown, as for a lost lease) and remove its taps and folder; how it ended."""
        d = self.folder(name)
        pidfile = d / "qemu.pid"
        pid = _read_pid(pidfile)
        how = "not running"
        if pid is not None and _pid_is_ours(pid, pidfile):
            how = "killed"
            steps = [("quit", 3.0)]
            if not urgent:
                steps.insert(0, ("system_powerdown", self.stop_grace_s))
            for command, grace_s in steps:
                try:
                    q = Qmp(d / "qmp.sock")
                    try:
                        q.execute(command)
                    finally:
                        q.close()
                except QmpError:
                    continue
                if _wait_gone(pid, pidfile, grace_s):
                    how = "powered down" if command == "system_powerdown" else "quit"
                    break
            if how == "killed":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, pidfile, 5.0)
        self._teardown(name)
        return how

    def _teardown(self, name: str) -> None:
        """Remove the VM's taps (only those its marker names, or its own deterministic
        names) and its folder."""
        marker = self._marker(name) or {}
        taps = {tuple(t) for t in marker.get("taps", [])} | self._owned_ports(name)
        for tap, bridge in taps:
            subprocess.run(["ovs-vsctl", "--timeout=5", "--if-exists", "del-port", bridge, tap],
                           capture_output=True, timeout=CMD_TIMEOUT_S, check=False)
            if Path(f"/sys/class/net/{tap}").exists():
                subprocess.run(["ip", "link", "del", tap], capture_output=True,
                               timeout=CMD_TIMEOUT_S, check=False)
        shutil.rmtree(self.folder(name), ignore_errors=True)

    def _owned_ports(self, name: str) -> set[tuple[str, str]]:
        """(tap, bridge) of OVS ports tagged with this owner and named for this service:
        the taps of a VM whose marker was lost."""
        prefix = tap_name(name, 0, self.owner)[:-1]
        try:
            out = _run(["ovs-vsctl", "--timeout=5", "--format=json", "--columns=name", "find",
                        "interface", f"external_ids:synod-agent={self.owner}"], "ovs-vsctl find")
            names = [row[0] for row in json.loads(out)["data"]]
        except (RuntimeError_, ValueError, KeyError, IndexError):
            return set()
        found = set()
        for tap in names:
            if isinstance(tap, str) and tap.startswith(prefix):
                with contextlib.suppress(RuntimeError_):
                    bridge = _run(["ovs-vsctl", "--timeout=5", "port-to-br", tap],
                                  "ovs-vsctl port-to-br").strip()
                    found.add((tap, bridge))
        return found


def _wait_gone(pid: int, pidfile: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _pid_is_ours(pid, pidfile):
            return True
        time.sleep(0.05)
    return not _pid_is_ours(pid, pidfile)
