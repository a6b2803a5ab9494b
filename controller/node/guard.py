"""Limits before authentication: connections per source address, a failed-login budget per
source, and security log lines that cannot flood the log.

gRPC core enforces the total connection cap and the handshake and idle timeouts (channel
arguments set in server.py), but it cannot count connections per source address and Python
gets no hook at accept time. So a Guard looks at its server's sockets from beside gRPC,
every SWEEP_S, through this process's descriptors (/proc/self/fd; each new socket once):
a source over its limit has its newest connections shut down (through a duplicate of
gRPC's descriptor, checked to be the same socket; gRPC then closes its own), and new
connections from a source at its limit are dropped by a classic-BPF socket filter on the
listening socket, in the kernel, before gRPC accepts them (no privileges needed). Between
two sweeps gRPC's total cap holds. (Relaying every connection through a socket of our own
would count exactly at accept, but copies every byte through Python.)

A source whose calls fail authentication faster than its budget (a token bucket) is banned
the same way for ban_ms (doubled on each repeat, up to ban_ms_max): its calls are refused
without a token lookup, its connections shut down and its new ones dropped. Failed logins
are logged with the source address and the token id, never the secret, at most
security_log_lines per interval; the rest are summed up in one "suppressed" line.

Linux only: elsewhere (or without /proc) the per-source connection limit is off, which is
logged once; the total cap, the timeouts and the failed-login budget still hold."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import ipaddress
import logging
import os
import re
import resource
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from .auth import TokenBucket
from .loglimit import RateLimitedLog
from .metrics import Metrics
from .tokens import TokenError, parse_token

__all__ = ["Guard", "fit_fd_limit", "source_of"]

log = logging.getLogger("synod.guard")

SWEEP_S = 0.25  # how often a guard looks at the sockets (~0.1 ms with a few dozen)
SOURCES_MAX = 10_000  # source addresses remembered for failed logins (oldest forgotten)
FDS_RESERVED = 256  # descriptors kept for the store, peer links, logs beside the caps
_FILTER_INSNS_MAX = 4_000  # BPF_MAXINSNS is 4096


def source_of(peer: str) -> str:
    """The address of a gRPC peer string ('ipv4:1.2.3.4:5', 'ipv6:[::1]:5', URL-quoted
    brackets too); '' when there is none (unix sockets)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        host = rest.replace("%5B", "[").replace("%5D", "]").rpartition(":")[0].strip("[]")
        return _plain(host)
    return ""


def _plain(host: str) -> str:
    """An IPv4-mapped IPv6 address as IPv4; others unchanged."""
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


_TOKEN_ID = re.compile(r"[0-9a-f]{16}")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def _token_id(header: str | None) -> str:
    """The token id of an authorization header, for logs: 16 hex digits or '-'."""
    _, _, token = (header or "").partition(" ")
    try:
        token_id, _ = parse_token(token.strip())
    except TokenError:
        return "-"
    return token_id if _TOKEN_ID.fullmatch(token_id) else "-"


@dataclass
class _Source:
    bucket: TokenBucket
    banned_until: float = 0.0
    strikes: int = 0
    last_failure: float = 0.0


@dataclass(frozen=True)
class Limits:
    """What a guard enforces; from ApiConfig or PeerConfig (peers have no failed logins)."""

    connections_per_source_max: int  # 0: no per-source limit
    failed_logins_per_s: float = 1.0
    failed_logins_burst: int = 0  # 0: no failed-login budget
    ban_ms: int = 10_000
    ban_ms_max: int = 600_000
    log_lines: int = 20
    log_interval_ms: int = 60_000

    @classmethod
    def of(cls, cfg) -> Limits:
        return cls(**{f: getattr(cfg, f) for f in (
            "connections_per_source_max", "failed_logins_per_s", "failed_logins_burst",
            "ban_ms", "ban_ms_max") if hasattr(cfg, f)},
            log_lines=getattr(cfg, "security_log_lines", 20),
            log_interval_ms=getattr(cfg, "security_log_interval_ms", 60_000))


class Guard:
    """Per-source limits of one gRPC server (name 'api' or 'peer') listening on port."""

    def __init__(self, name: str, port: int, limits: Limits, metrics: Metrics,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name, self.port, self.limits, self.metrics, self.clock = (
            name, port, limits, metrics, clock)
        self.logs = RateLimitedLog(log, f"{name} security log", limits.log_lines,
                                   limits.log_interval_ms / 1000, clock)
        self.sources: dict[str, _Source] = {}
        self.bans = 0  # sources banned now (callers skip the lookup when 0)
        self.connections = 0  # at the last sweep
        self.filtered: frozenset[str] = frozenset()  # sources whose new connections drop
        self.wake = asyncio.Event()
        self.off = ""  # why the per-source connection limit is off ('' = on)
        self._trim_at = 0  # connections at the last malloc_trim
        self._shut: set[int] = set()  # sockets shut down by the last sweep (gRPC closing them)
        self._sockets = _Sockets()

    # -- failed logins ---------------------------------------------------------------

    def admits(self, source: str) -> bool:
        """False while source is banned (its calls are refused without a token lookup)."""
        s = self.sources.get(source)
        return s is None or s.banned_until <= self.clock()

    def failed_login(self, source: str, header: str | None, reason: str, method: str) -> None:
        """Log one failed login (rate-limited; the token id, never the secret) and count it
        against the source's budget; over the budget the source is banned."""
        self.metrics.inc(f"{self.name}_failed_logins")
        self.logs.log(logging.WARNING, "%s: failed login from %s (token %s, %s): %s",
                      self.name, source or "?", _token_id(header), method,
                      _UNPRINTABLE.sub("?", reason)[:200])
        lim = self.limits
        if not source or lim.failed_logins_burst <= 0:
            return
        now = self.clock()
        s = self.sources.get(source)
        if s is None:
            if len(self.sources) >= SOURCES_MAX:
                self._forget(now)
            s = self.sources[source] = _Source(
                TokenBucket(lim.failed_logins_per_s, lim.failed_logins_burst, self.clock))
        if now - max(s.last_failure, s.banned_until) > lim.ban_ms_max / 1000:
            s.strikes = 0  # quiet for long enough: the next ban is short again
        s.last_failure = now
        if s.banned_until > now or s.bucket.take():
            return
        ban_ms = min(lim.ban_ms * 2 ** min(s.strikes, 30), lim.ban_ms_max)
        s.banned_until = now + ban_ms / 1000
        s.strikes += 1
        self.bans += 1
        self.metrics.inc(f"{self.name}_bans")
        self.logs.log(logging.WARNING, "%s: %s failed to log in more than %d times at %g/s: "
                      "banned for %.0f s (calls refused, connections closed)", self.name,
                      source, lim.failed_logins_burst, lim.failed_logins_per_s, ban_ms / 1000)
        self.wake.set()

    def _forget(self, now: float) -> None:
        for src in list(self.sources)[: SOURCES_MAX // 10]:
            if self.sources[src].banned_until <= now:
                del self.sources[src]

    def _banned(self, now: float) -> set[str]:
        banned = {src for src, s in self.sources.items() if s.banned_until > now}
        self.bans = len(banned)
        return banned

    # -- connections -----------------------------------------------------------------

    async def run(self) -> None:
        """Sweep until cancelled."""
        while True:
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - the guard must not take the node down
                log.exception("%s guard: sweep failed", self.name)
            self.logs.flush()
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), SWEEP_S)

    def sweep(self) -> None:
        """Count connections per source; shut down what is over a limit or banned; drop new
        connections of sources at their limit or banned."""
        banned = self._banned(self.clock())
        if self.off:
            return
        try:
            conns, listeners = self._sockets.scan(self.port)
        except OSError as exc:
            self._turn_off(f"cannot list this process's sockets: {exc}")
            return
        self.connections = len(conns)
        per: dict[str, list[int]] = {}
        for inode, (_, src) in conns.items():
            if src:
                per.setdefault(src, []).append(inode)
        limit = self.limits.connections_per_source_max
        close: list[int] = []
        full: set[str] = set()
        for src, inodes in per.items():
            if src in banned:
                close += inodes
            elif limit and len(inodes) >= limit:
                full.add(src)
                if len(inodes) > limit:
                    inodes.sort()  # inode numbers grow: the newest connections go
                    close += inodes[limit:]
                    self.logs.log(logging.WARNING, "%s: %s holds %d connections (limit %d): "
                                  "closed the %d newest, new ones dropped until below",
                                  self.name, src, len(inodes), limit, len(inodes) - limit)
        fresh = {inode: conns[inode][0] for inode in close if inode not in self._shut}
        self._shut = {inode for inode in self._shut if inode in conns} | set(fresh)
        if fresh:
            self.metrics.inc(f"{self.name}_connections_closed", _shut_down(fresh))
        drop = frozenset(banned | full)
        if drop != self.filtered:
            try:
                _filter(listeners, drop)
                self.filtered = drop
            except OSError as exc:
                self._turn_off(f"cannot filter the listening socket: {exc}")
        self._trim(len(conns))

    def _turn_off(self, why: str) -> None:
        self.off = why
        log.warning("%s: per-source connection limit off: %s", self.name, why)

    def _trim(self, connections: int) -> None:
        """Give memory freed by many closed connections back to the system (glibc keeps it
        otherwise: RSS stayed at the flood's high-water mark)."""
        if connections > self._trim_at:
            self._trim_at = connections
        elif self._trim_at - connections >= 64:
            self._trim_at = connections
            trim = getattr(_libc(), "malloc_trim", None)
            if trim is not None:
                trim(0)


def fit_fd_limit(wanted: int) -> int:
    """Raise this process's soft descriptor limit to hold `wanted` connections plus
    FDS_RESERVED (up to the hard limit); return how many connections fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FDS_RESERVED
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(hard, need)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(0, min(wanted, soft - FDS_RESERVED))


# -- this process's sockets, their shutdown and the listening socket's filter (Linux) -----

class _Sockets:
    """This process's TCP sockets, from /proc/self/fd: each new socket is looked at once
    (local port, peer address) through a duplicate descriptor, then known by its inode."""

    def __init__(self) -> None:
        self.known: dict[int, tuple[int, str | None]] = {}  # inode -> (port, peer or None)

    def scan(self, port: int) -> tuple[dict[int, tuple[int, str]], dict[int, int]]:
        """{inode: (fd, source)} of the connections to port, {inode: fd} of its listeners."""
        conns: dict[int, tuple[int, str]] = {}
        listeners: dict[int, int] = {}
        seen: dict[int, tuple[int, str | None]] = {}
        for name in os.listdir("/proc/self/fd"):
            try:
                link = os.readlink(f"/proc/self/fd/{name}")
            except OSError:
                continue  # closed meanwhile
            if not link.startswith("socket:["):
                continue
            inode, fd = int(link[8:-1]), int(name)
            info = self.known.get(inode) or _describe(fd, inode)
            if info is None:
                continue
            seen[inode] = info
            if info[0] == port:
                if info[1] is None:
                    listeners[inode] = fd
                else:
                    conns[inode] = (fd, info[1])
        self.known = seen
        return conns, listeners


def _describe(fd: int, inode: int) -> tuple[int, str | None] | None:
    """(local port, peer address, or None for a listening socket) of a TCP socket, (0, None)
    for other sockets; None when fd is no longer that socket or is not connected (yet)."""
    try:
        dup = os.dup(fd)
    except OSError:
        return None
    try:
        if os.fstat(dup).st_ino != inode:
            os.close(dup)
            return None
        sock = socket.socket(fileno=dup)  # owns dup from here
    except OSError:
        os.close(dup)
        return None
    with sock:
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
            return (0, None)
        try:
            port = sock.getsockname()[1]
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                return (port, None)
            return (port, _plain(sock.getpeername()[0]))
        except OSError:  # not connected (yet, or any more): looked at again next time
            return None


_libc_calls = None


def _libc():
    global _libc_calls
    if _libc_calls is None:
        _libc_calls = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc_calls


def _shut_down(sockets: dict[int, int]) -> int:
    """Shut down these sockets ({inode: fd}; gRPC sees the end and closes its descriptor);
    the count. Each goes through a duplicate checked to be that socket, so a descriptor gRPC
    closed and reused meanwhile is never touched."""
    done = 0
    for inode, fd in sockets.items():
        try:
            dup = os.dup(fd)
        except OSError:
            continue
        try:
            if os.fstat(dup).st_ino == inode and _libc().shutdown(dup, socket.SHUT_RDWR) == 0:
                done += 1
        finally:
            os.close(dup)
    return done


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


_SO_ATTACH_FILTER, _SO_DETACH_FILTER = 26, 27
_NET = -0x100000  # SKF_NET_OFF: offsets from the network header
_LD_W, _LD_B, _RSH, _JEQ, _JA, _RET = 0x20, 0x30, 0x74, 0x15, 0x05, 0x06
_ACCEPT, _DROP = 0xFFFFFFFF, 0


def _program(sources: frozenset[str]) -> list[tuple[int, int, int, int]]:
    """A classic BPF socket filter that drops packets from these addresses (on a listening
    socket: the SYNs of new connections) and accepts everything else."""
    v4, v6 = [], []
    for src in sorted(sources):
        try:
            a = ipaddress.ip_address(src)
        except ValueError:
            continue
        (v4 if a.version == 4 else v6).append(a)
    while len(v4) * 2 + len(v6) * 9 + 10 > _FILTER_INSNS_MAX:  # keep what fits
        (v6 or v4).pop()
    p4 = [(_LD_W, 0, 0, _NET + 12)]
    for a in v4:
        p4 += [(_JEQ, 0, 1, int(a)), (_RET, 0, 0, _DROP)]
    p4.append((_RET, 0, 0, _ACCEPT))
    p6 = [(_JEQ, 1, 0, 6), (_RET, 0, 0, _ACCEPT)]
    for a in v6:
        words = struct.unpack("!4I", a.packed)
        for i, w in enumerate(words):
            p6 += [(_LD_W, 0, 0, _NET + 8 + 4 * i), (_JEQ, 0, 7 - 2 * i, w)]
        p6.append((_RET, 0, 0, _DROP))
    p6.append((_RET, 0, 0, _ACCEPT))
    head = [(_LD_B, 0, 0, _NET), (_RSH, 0, 0, 4), (_JEQ, 1, 0, 4), (_JA, 0, 0, len(p4))]
    return head + p4 + p6


def _filter(listeners: dict[int, int], sources: frozenset[str]) -> None:
    """Attach the filter for sources to the listening sockets ({inode: fd}; detach it when
    sources is empty)."""
    prog = _program(sources) if sources else []
    insns = (_SockFilter * max(1, len(prog)))(
        *[(code, jt, jf, k & 0xFFFFFFFF) for code, jt, jf, k in prog])
    fprog = _SockFprog(len(prog), ctypes.cast(insns, ctypes.POINTER(_SockFilter)))
    libc = _libc()
    for inode, fd in listeners.items():
        dup = os.dup(fd)
        try:
            if os.fstat(dup).st_ino != inode:
                continue
            if prog:
                rc = libc.setsockopt(dup, socket.SOL_SOCKET, _SO_ATTACH_FILTER,
                                     ctypes.byref(fprog), ctypes.sizeof(fprog))
            else:
                zero = ctypes.c_int(0)
                rc = libc.setsockopt(dup, socket.SOL_SOCKET, _SO_DETACH_FILTER,
                                     ctypes.byref(zero), ctypes.sizeof(zero))
                if rc != 0 and ctypes.get_errno() == 2:  # ENOENT: none was attached
                    rc = 0
            if rc != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
        finally:
            os.close(dup)
