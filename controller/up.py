"""`synod up` and `synod down`: run a site's daemons from one TOML file, supervised.

The site file is the node's config file (controller/node/config.py) with three more
tables the node ignores: [controller], [agent] and [up]. `synod up` starts the node,
then the controller once the node is ready, then the agent if [agent] is enabled; the
decisions (order, restarts with back-off, timeouts, stop) are controller/supervise.py's,
this module only carries them out on processes. One log per daemon in [up].log_dir;
the supervisor's own lines are JSON on stderr; a JSON ready line on stdout once every
daemon is ready. A second `synod up` for the same data directory finds the lock held
and says the site is running (decision 0095).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from controller.supervise import Exit, Kill, Policy, Ready, Spawn, Supervisor, Terminate

if TYPE_CHECKING:  # the node's config module pulls in replication: not at CLI start-up
    from controller.node.config import NodeConfig

__all__ = ["Daemon", "UpError", "down", "down_command", "exec_daemon", "site_daemons", "up",
           "up_command", "up_detached"]

LOCK_FILE = "up.lock"
PID_FILE = "up.pid"
_PR_SET_PDEATHSIG = 1
_POLL_S = 0.2
_LOG_TAIL_BYTES = 4096


class UpError(Exception):
    """A site that cannot be brought up or down; one line naming the site, step and fix."""


@dataclass(frozen=True)
class Daemon:
    """How to run one of the site's daemons and how to tell it is ready."""

    name: str
    argv: tuple[str, ...]
    ready_tcp: tuple[str, int] | None = None  # ready once this port accepts; else a JSON
    # line {"event": "ready", ...} on stdout (the node's and the agent's convention)


def _bin(name: str) -> str:
    """A console script of this installation (beside the running interpreter)."""
    return os.path.join(os.path.dirname(sys.executable), name)


def _dial(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    return ("127.0.0.1" if host in ("0.0.0.0", "", "::") else host), int(port)


def data_dir(cfg: NodeConfig, config_path: Path) -> Path:
    """The data directory, a relative one read from the site file's directory."""
    if not cfg.data:
        raise UpError(f"{config_path}: data: not set (the node's data directory)")
    return (config_path.parent / cfg.data).resolve()


def site_daemons(cfg: NodeConfig, config_path: Path) -> list[Daemon]:
    """The site's daemons in start order, as the site file describes them."""
    data = data_dir(cfg, config_path)
    site = cfg.site or data.name
    api_host, api_port = _dial(cfg.api.listen)
    api = f"{api_host}:{api_port}"
    daemons = [Daemon("node", (_bin("synod"), "node", "run", "--config",
                               str(config_path.resolve()), "--data", str(data)))]
    c = cfg.controller
    if c.enabled:
        of_host, of_port = _dial(c.listen)
        listen_host = c.listen.rpartition(":")[0].strip("[]")
        controllers = c.controllers or (f"{site}={of_host}:{of_port}",)
        argv = [_bin("synod-controller"), "--ofp-listen-host", listen_host,
                "--ofp-tcp-listen-port", str(of_port), "--site", site,
                "--controller-index", str(c.index), "--controllers", ",".join(controllers),
                "--node", api, "--node-token-file", str(data / c.token_file),
                "--node-ca", str(data / "ca.crt")]
        if cfg.api.insecure_loopback:
            argv.append("--node-insecure")
        daemons.append(Daemon("controller", (*argv, *c.args, *c.apps), (of_host, of_port)))
    if cfg.agent.enabled:
        fill = {"site": site, "api": api, "data": str(data), "ca": str(data / "ca.crt"),
                "token_file": str(data / cfg.agent.token_file)}
        try:
            args = [a.format(**fill) for a in cfg.agent.args]
        except (KeyError, IndexError, ValueError) as exc:
            raise UpError(f"{config_path}: agent.args: unknown placeholder {exc} "
                          f"(known: {', '.join('{' + k + '}' for k in fill)})") from None
        if cfg.api.insecure_loopback:
            args.append("--node-insecure")
        daemons.append(Daemon("agent", (_bin("synod"), "agent", "run", *args)))
    return daemons


def _load(config_file: str) -> tuple[NodeConfig, Path, str]:
    from controller.node.config import ConfigError, load_config

    path = Path(config_file)
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        raise UpError(f"step config: {exc} (fix the file, then `synod config check "
                      f"{config_file}`)") from None
    data = data_dir(cfg, path)
    return cfg, path, cfg.site or data.name


def _preflight(cfg: NodeConfig, path: Path, site: str) -> None:
    """What the daemons would otherwise fail on one by one, named with the fix."""
    data = data_dir(cfg, path)
    if not (data / "node.key").exists():
        raise UpError(f"site {site}: step check: {data} has no node key: run "
                      f"`synod init --site {site} --data {data}` first")
    if not (data / "genesis.cbor").exists():
        raise UpError(f"site {site}: step check: {data} is in no cluster yet: found one "
                      "(`synod init --new-cluster`) or join one (`synod join`) first")
    for section in ("controller", "agent"):
        sub = getattr(cfg, section)
        if sub.enabled and not (data / sub.token_file).exists():
            raise UpError(f"site {site}: step check: {data / sub.token_file} (the {section}'s "
                          f"node token) is missing: `synod token create --role operator` and "
                          f"write it there")


# ------------------------------------------------------------------------ the lock
def _lock(data: Path) -> int | None:
    """The site's lock (held while `synod up` runs); None if another process holds it."""
    fd = os.open(data / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _running_pid(data: Path) -> int | None:
    fd = _lock(data)
    if fd is not None:
        os.close(fd)
        return None
    try:
        return int((data / PID_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return -1  # held, pid not written yet


# ------------------------------------------------------------------------ processes
# Loaded here, in the parent: dlopen in a child forked from a process with threads (gRPC,
# a test's own) can wait for ever on a loader lock another thread held at the fork, which
# hung a CI run in Popen. The child then only makes the call.
_PRCTL = ctypes.CDLL("libc.so.6", use_errno=True).prctl


def die_with_parent() -> None:
    """A Popen preexec_fn: the child gets SIGTERM when its parent dies, even by SIGKILL
    (`synod up`'s daemons, the emulation's controllers)."""
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _log(event: str, **fields: object) -> None:
    line = {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "logger": "synod.up",
            "event": event, **fields}
    print(json.dumps(line), file=sys.stderr, flush=True)


def _tail(path: Path) -> str:
    """The last non-empty line of a log (what a daemon said before it exited)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:300] if lines else ""


class _Runner:
    """Carries out the supervisor's effects on real processes; events go to one queue."""

    def __init__(self, daemons: list[Daemon], log_dir: Path) -> None:
        self.daemons = {d.name: d for d in daemons}
        self.log_dir = log_dir
        self.events: queue.Queue[tuple] = queue.Queue()
        self.procs: dict[str, subprocess.Popen] = {}
        self.generation: dict[str, int] = {}

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def spawn(self, name: str) -> None:
        d = self.daemons[name]
        gen = self.generation[name] = self.generation.get(name, 0) + 1
        with open(self.log_path(name), "ab") as log:
            log.write(f"--- synod up: starting {name} at "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                d.argv, stdin=subprocess.DEVNULL, stderr=log,
                stdout=log if d.ready_tcp else subprocess.PIPE,
                preexec_fn=die_with_parent)
        self.procs[name] = proc
        _log("spawned", daemon=name, pid=proc.pid, log=str(self.log_path(name)))
        threading.Thread(target=self._wait, args=(name, gen, proc), daemon=True).start()
        probe = self._probe_tcp if d.ready_tcp else self._read_ready
        threading.Thread(target=probe, args=(name, gen, proc), daemon=True).start()

    def _wait(self, name: str, gen: int, proc: subprocess.Popen) -> None:
        self.events.put(("exited", name, gen, proc.wait()))

    def _read_ready(self, name: str, gen: int, proc: subprocess.Popen) -> None:
        """The JSON ready line, then everything else the daemon prints, into its log."""
        assert proc.stdout is not None
        with open(self.log_path(name), "ab", buffering=0) as log:
            for raw in proc.stdout:
                try:
                    ready = json.loads(raw).get("event") == "ready"
                except (ValueError, AttributeError):
                    ready = False
                if ready:
                    self.events.put(("ready", name, gen, raw.decode().strip()))
                log.write(raw)

    def _probe_tcp(self, name: str, gen: int, proc: subprocess.Popen) -> None:
        address = self.daemons[name].ready_tcp
        assert address is not None
        while proc.poll() is None:
            try:
                socket.create_connection(address, timeout=0.5).close()
            except OSError:
                time.sleep(_POLL_S)
                continue
            self.events.put(("ready", name, gen, f"listening on {address[0]}:{address[1]}"))
            return

    def signal(self, name: str, sig: signal.Signals) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)


def _policy(cfg: NodeConfig) -> Policy:
    u = cfg.up
    return Policy(ready_timeout_ms=u.ready_timeout_ms, backoff_ms_min=max(1, u.backoff_ms_min),
                  backoff_ms_max=max(1, u.backoff_ms_min, u.backoff_ms_max),
                  stable_ms=u.stable_ms, restarts_max=u.restarts_max,
                  stop_timeout_ms=max(1, u.stop_timeout_ms))


def up(config_file: str, announce: Callable[[str], None] = print) -> int:
    """Run the site until SIGTERM/SIGINT or a failure; returns the exit code. Prints the
    JSON ready line through `announce`; UpError for what stops it before any daemon runs."""
    cfg, path, site = _load(config_file)
    data = data_dir(cfg, path)
    daemons = site_daemons(cfg, path)
    _preflight(cfg, path, site)
    fd = _lock(data)
    if fd is None:
        pid = _running_pid(data)
        announce(f"site {site} is already running (synod up pid {pid}, {data / PID_FILE})")
        return 0
    log_dir = data / cfg.up.log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    (data / PID_FILE).write_text(f"{os.getpid()} {path.resolve()}\n")
    runner = _Runner(daemons, log_dir)
    sup = Supervisor([d.name for d in daemons], _policy(cfg))
    previous = {s: signal.signal(s, lambda n, _f: runner.events.put(("stop", n)))
                for s in (signal.SIGTERM, signal.SIGINT)}
    clock = time.monotonic
    t0 = clock()

    def now_ms() -> int:
        return int((clock() - t0) * 1000)

    failed = ""
    try:
        pending = sup.start(now_ms())
        while True:
            for effect in pending:
                if isinstance(effect, Spawn):
                    try:
                        runner.spawn(effect.name)
                    except OSError as exc:
                        pending.extend(sup.spawn_failed(effect.name, exc.strerror or str(exc),
                                                        now_ms()))
                elif isinstance(effect, Terminate):
                    _log("terminate", daemon=effect.name)
                    runner.signal(effect.name, signal.SIGTERM)
                elif isinstance(effect, Kill):
                    _log("kill", daemon=effect.name, after_ms=cfg.up.stop_timeout_ms)
                    runner.signal(effect.name, signal.SIGKILL)
                elif isinstance(effect, Ready):
                    announce(json.dumps({
                        "event": "ready", "site": site, "data": str(data),
                        "daemons": {n: p.pid for n, p in runner.procs.items()},
                        "logs": str(log_dir)}))
                elif isinstance(effect, Exit):
                    _log("exit", code=effect.code, reason=effect.reason)
                    if effect.code:
                        return _fail(site, effect.reason, failed, runner)
                    return 0
            deadline = sup.next_deadline_ms()
            wait_s = _POLL_S if deadline is None else min(_POLL_S, max(0, deadline - now_ms())
                                                         / 1000)
            try:
                event = runner.events.get(timeout=wait_s)
            except queue.Empty:
                pending = sup.tick(now_ms())
                continue
            kind, *args = event
            if kind == "stop":
                _log("stop", signal=signal.Signals(args[0]).name)
                pending = sup.stop(now_ms(), f"{signal.Signals(args[0]).name}")
            elif args[1] != runner.generation.get(args[0]):
                pending = []  # from a process that was replaced already
            elif kind == "ready":
                _log("ready", daemon=args[0], detail=args[2])
                pending = sup.ready(args[0], now_ms())
            else:
                _log("exited", daemon=args[0], code=args[2])
                if not failed and not sup.stopping:
                    failed = args[0]
                pending = sup.exited(args[0], args[2], now_ms())
            pending += sup.tick(now_ms())
    finally:
        for name in runner.procs:
            runner.signal(name, signal.SIGKILL)  # only left running if we are failing
        for s, h in previous.items():
            signal.signal(s, h)
        with contextlib.suppress(OSError):
            (data / PID_FILE).unlink()
        os.close(fd)


def _fail(site: str, reason: str, daemon: str, runner: _Runner) -> int:
    daemon = daemon or reason.split()[0].rstrip(":")
    said = _tail(runner.log_path(daemon)) if daemon in runner.daemons else ""
    hint = f"; {daemon}.log ends: {said}" if said else ""
    where = f" (logs in {runner.log_dir})"
    print(f"synod up: error: site {site}: step run: {reason}{hint}{where}", file=sys.stderr,
          flush=True)
    return 1


def up_detached(config_file: str, timeout_s: float | None = None) -> str:
    """Start `synod up` in the background and wait for its ready line (or its failure).
    Returns what to print; UpError with the reason if the site did not come up."""
    cfg, path, site = _load(config_file)
    data = data_dir(cfg, path)
    _preflight(cfg, path, site)
    pid = _running_pid(data)
    if pid is not None:
        return f"site {site} is already running (synod up pid {pid}, {data / PID_FILE})"
    log_dir = data / cfg.up.log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    up_log = log_dir / "up.log"
    daemons = site_daemons(cfg, path)
    if timeout_s is None:
        timeout_s = len(daemons) * cfg.up.ready_timeout_ms / 1000 + 10
    with open(up_log, "ab") as log:
        proc = subprocess.Popen([_bin("synod"), "up", "--config", str(path.resolve())],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                start_new_session=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    line = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], _POLL_S)
        if ready:
            line = proc.stdout.readline()
            break
        if proc.poll() is not None:
            break
    proc.stdout.close()
    if not line:  # its stdout closed: it is exiting (or the deadline passed)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    if line.startswith(b"{"):
        pids = json.loads(line)["daemons"]
        return (f"site {site} up: " + ", ".join(f"{n} pid {p}" for n, p in pids.items())
                + f" (synod up pid {proc.pid}, logs in {log_dir})")
    if line:
        return line.decode().strip()  # already running (a race with another up)
    if proc.poll() is None:
        proc.terminate()
        raise UpError(f"site {site}: step start: not ready within {timeout_s:.0f} s; "
                      f"see {up_log}")
    raise UpError(_tail(up_log).removeprefix("synod up: error: ")
                  or f"site {site}: synod up exited with {proc.returncode}; see {up_log}")


def down(config_file: str, timeout_s: float | None = None) -> str:
    """SIGTERM the site's `synod up` and wait until it released the lock."""
    cfg, path, site = _load(config_file)
    data = data_dir(cfg, path)
    pid = _running_pid(data)
    if pid is None:
        return f"site {site} is not running"
    if pid < 0:
        raise UpError(f"site {site}: step stop: the lock is held but {data / PID_FILE} names "
                      "no process: try again in a moment")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if timeout_s is None:
        timeout_s = cfg.up.stop_timeout_ms / 1000 * 2 + 5
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _running_pid(data) is None:
            return f"site {site} stopped"
        time.sleep(_POLL_S)
    raise UpError(f"site {site}: step stop: synod up (pid {pid}) still runs after "
                  f"{timeout_s:.0f} s; see {data / cfg.up.log_dir}")


def exec_daemon(config_file: str, name: str) -> None:
    """Replace this process with one of the site's daemons (for one systemd unit each)."""
    cfg, path, site = _load(config_file)
    _preflight(cfg, path, site)
    by_name = {d.name: d for d in site_daemons(cfg, path)}
    if name not in by_name:
        raise UpError(f"site {site}: step start: {name} is not enabled in {path} "
                      f"(enabled: {', '.join(by_name)})")
    argv = by_name[name].argv
    os.execv(argv[0], list(argv))


# ------------------------------------------------------------------------ commands
_CONFIG = click.option("--config", "config_file", required=True,
                       type=click.Path(dir_okay=False), metavar="FILE",
                       help="the site file (from `synod init --site`)")


@click.command("up")
@_CONFIG
@click.option("--detach", is_flag=True,
              help="run in the background; return once every daemon is ready")
@click.option("--only", type=click.Choice(["node", "controller", "agent"]), default=None,
              help="run just this daemon in the foreground, unsupervised (a systemd unit "
                   "per daemon: deploy/systemd/)")
def up_command(config_file: str, detach: bool, only: str | None) -> None:
    """Start the site's daemons (node, controller, agent) and supervise them until SIGTERM.

    Restarts a daemon that crashes (back-off doubling to [up].backoff_ms_max), one log
    per daemon in [up].log_dir, a JSON ready line on stdout once all are ready. Running
    it again while the site runs says so and exits 0. See docs/deploy.md.
    """
    try:
        if only:
            exec_daemon(config_file, only)
        if detach:
            click.echo(up_detached(config_file))
            return
        code = up(config_file, _announce)
    except UpError as exc:
        raise click.ClickException(str(exc)) from None
    if code:
        sys.exit(code)


def _announce(line: str) -> None:
    click.echo(line)
    sys.stdout.flush()  # a pipe (--detach, the emulation) waits for this line


@click.command("down")
@_CONFIG
def down_command(config_file: str) -> None:
    """Stop the site's `synod up` (SIGTERM) and wait until its daemons have exited."""
    try:
        click.echo(down(config_file))
    except UpError as exc:
        raise click.ClickException(str(exc)) from None
