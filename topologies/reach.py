"""Reachability between Mininet hosts: ICMP echoes sent from this process, no `ping`s.

Each source host gets a raw ICMP socket opened inside its network namespace (setns from
a short-lived thread: the socket stays in the namespace it was made in, the rest of the
process never leaves its own). One loop then sends an echo request per pair, waits for
the reply on the source's socket, and sends again after `try_s` while none came, until
every pair has answered or the deadline passes. What an answer proves is what `ping`
proves: the source host's kernel sent an echo request to the destination's address
(ARP included) and the destination's kernel answered it.

Why not one `ping` per pair, as before: at 20 sites (42 hosts, 1,722 pairs) starting
them through Mininet (mnexec, a fork of this large process each) took 87 s on 2 cores
at a load of ~50, so the start check's 30 s went on spawning processes, not on the
network (decision 0097). Here a round of 1,722 echoes costs milliseconds of CPU.

Which pair is echoed when, and how long a wait may take, is topologies/reach_plan.py
(bounded echoes in flight, pairs taking turns, a deadline that grows with the pairs);
this module is its I/O: sockets in namespaces, the sends, the replies. Pairs start in an
order that interleaves sources and destinations.
"""

from __future__ import annotations

import ctypes
import errno
import os
import random
import selectors
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from topologies.reach_plan import IN_FLIGHT_MAX, TRY_S, Deadline, Schedule

__all__ = ["IN_FLIGHT_MAX", "TRY_S", "Deadline", "Reach", "describe_pairs", "probe"]

CLONE_NEWNET = 0x40000000
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
POLL_S = 0.05
PAYLOAD = b"synod-reach-0097"

Pair = tuple[str, str]


@dataclass
class Reach:
    """What a probe found: when each pair first answered (s from the start, None if
    never), how many echoes went out (in all, and to each pair), and how long it ran."""

    answered_s: dict[Pair, float | None]
    sent: int = 0
    elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)  # sockets that could not be opened
    echoes: dict[Pair, int] = field(default_factory=dict)  # pair -> echoes sent to it
    send_errors: Counter[str] = field(default_factory=Counter)  # errno name -> sends

    @property
    def missing(self) -> list[Pair]:
        return [p for p, t in self.answered_s.items() if t is None]

    @property
    def took(self) -> float | None:
        """Seconds until the last pair answered; None if one never did."""
        if self.missing:
            return None
        return max(self.answered_s.values(), default=0.0)  # type: ignore[type-var]

    def results(self) -> dict[Pair, bool]:
        return {p: t is not None for p, t in self.answered_s.items()}

    def check(self, what: str, deadline: Deadline, site_of: dict[str, str]) -> tuple[str, bool]:
        """A report's check for a wait: its time, or what it waited for and every pair
        that never answered (and how often each was asked)."""
        if self.took is not None:
            return f"{what} in {self.took:.2f} s", True
        missing = self.missing
        asked = [self.echoes.get(p, 0) for p in missing]
        text = (f"{what}: not within {deadline.describe()}; {self.sent:,} echoes sent: "
                f"{len(missing)} never answered (echoed {min(asked)}"
                f"{'' if min(asked) == max(asked) else f'-{max(asked)}'} times each): "
                f"{describe_pairs(missing, site_of, self.answered_s)}")
        if self.send_errors:
            text += "; sends refused: " + ", ".join(
                f"{name} x{n}" for name, n in self.send_errors.most_common())
        if self.errors:
            text += f"; could not probe from {'; '.join(self.errors)}"
        return text, False


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int) -> bytes:
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, _checksum(header + PAYLOAD), ident,
                       seq) + PAYLOAD


def parse_reply(packet: bytes) -> tuple[str, int, int] | None:
    """(source address, identifier, sequence) of an IPv4 packet carrying an echo reply."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    icmp = packet[ihl:ihl + 8]
    if len(icmp) < 8 or icmp[0] != ICMP_ECHO_REPLY:
        return None
    _, _, _, ident, seq = struct.unpack("!BBHHH", icmp)
    return socket.inet_ntoa(packet[12:16]), ident, seq


def _open_in_namespaces(pids: dict[str, int]) -> tuple[dict[str, socket.socket], list[str]]:
    """A raw ICMP socket inside each host's network namespace (host -> its shell's pid)."""
    socks: dict[str, socket.socket] = {}
    errors: list[str] = []

    def run() -> None:  # this thread moves between namespaces, then ends
        libc = ctypes.CDLL(None, use_errno=True)
        for host, pid in pids.items():
            try:
                fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
            except OSError as e:
                errors.append(f"{host}: its namespace: {e}")
                continue
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    errors.append(f"{host}: setns: {os.strerror(ctypes.get_errno())}")
                    continue
                s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
                s.setblocking(False)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                socks[host] = s
            except OSError as e:
                errors.append(f"{host}: raw socket: {e}")
            finally:
                os.close(fd)

    thread = threading.Thread(target=run, name="reach-netns", daemon=True)
    thread.start()
    thread.join()
    return socks, errors


def _interleaved(pairs: list[Pair]) -> list[Pair]:
    """Pairs in an order where consecutive ones have other sources and destinations
    (pair i of every source, then pair i+1 of every source, ...)."""
    by_src: dict[str, list[Pair]] = {}
    for p in pairs:
        by_src.setdefault(p[0], []).append(p)
    out: list[Pair] = []
    lists = list(by_src.values())
    for i in range(max((len(v) for v in lists), default=0)):
        out += [v[(i + k) % len(v)] for k, v in enumerate(lists) if i < len(v)]
    return out


def probe(hosts: dict[str, tuple[int, str]], pairs: Iterable[Pair], timeout_s: float,
          try_s: float = TRY_S, in_flight_max: int = IN_FLIGHT_MAX,
          per_pair: bool = False,
          between: Callable[[], None] | None = None) -> Reach:
    """Echo each (src, dst) pair until it answers or its time is up (reach_plan.Schedule).

    hosts: name -> (pid of a process in its network namespace, its IPv4 address).
    per_pair: False, one deadline for all, timeout_s from the start (a wait for the
    network to converge; give it a reach_plan.Deadline's total_s); True, each pair gets
    timeout_s from its own first echo (a measurement of every pair at one moment).
    between: called on every turn of the loop (e.g. a Ctrl-C checkpoint); may raise.
    """
    order = _interleaved(list(dict.fromkeys(pairs)))
    reach = Reach(dict.fromkeys(order))
    if not order:
        return reach
    socks, reach.errors = _open_in_namespaces({h: hosts[h][0] for h in
                                               sorted({s for s, _ in order})})
    started = time.monotonic()
    plan = Schedule([p for p in order if p[0] in socks], timeout_s, started, try_s=try_s,
                    in_flight_max=in_flight_max, per_pair=per_pair)
    ident = random.getrandbits(16)
    waiting: dict[tuple[str, int], Pair] = {}  # (source host, seq) -> pair
    seq = dict.fromkeys(socks, 0)
    ip_of = {h: hosts[h][1] for h in hosts}
    selector = selectors.DefaultSelector()  # epoll: no limit on descriptor numbers
    try:
        for host, s in socks.items():
            selector.register(s, selectors.EVENT_READ, host)
        while True:
            if between is not None:
                between()
            now = time.monotonic()
            if plan.finished(now):
                break
            for src, dst in plan.sends(now):
                seq[src] = (seq[src] + 1) & 0xFFFF
                waiting[(src, seq[src])] = (src, dst)
                reach.sent += 1
                try:
                    socks[src].sendto(echo_request(ident, seq[src]), (ip_of[dst], 0))
                except OSError as e:  # e.g. no route or a full buffer: tried again later
                    reach.send_errors[errno.errorcode.get(e.errno or 0, str(e))] += 1
            for key, _ in selector.select(POLL_S):
                host, sock = key.data, key.fileobj
                while True:
                    try:
                        packet = sock.recv(4096)  # type: ignore[union-attr]
                    except OSError:  # nothing more queued (or the socket is gone)
                        break
                    parsed = parse_reply(packet)
                    if parsed is None or parsed[1] != ident:
                        continue
                    answered = waiting.get((host, parsed[2]))
                    if answered is None or ip_of[answered[1]] != parsed[0]:
                        continue  # a reply from another address leaves the echo waiting
                    del waiting[(host, parsed[2])]
                    plan.answered(answered, time.monotonic())
    finally:
        selector.close()
        for s in socks.values():
            s.close()
    reach.answered_s.update(plan.answered_s)
    reach.echoes = {p: plan.echoes.get(p, 0) for p in order}  # 0: its source had no socket
    reach.elapsed_s = time.monotonic() - started
    return reach


def describe_pairs(pairs: Iterable[Pair], site_of: dict[str, str],
                   all_pairs: Iterable[Pair]) -> str:
    """Name every pair, compactly: a site-to-site block whose pairs all failed is named
    as the block ("edge3 -> cloud: all 4"), the others pair by pair ("ch1 -> e3h2")."""
    failed = set(pairs)
    blocks: dict[tuple[str, str], list[Pair]] = {}
    for p in all_pairs:
        blocks.setdefault((site_of.get(p[0], "?"), site_of.get(p[1], "?")), []).append(p)
    parts = []
    for (a, b), members in blocks.items():
        bad = [p for p in members if p in failed]
        if not bad:
            continue
        if len(bad) == len(members) and len(members) > 1:
            parts.append(f"{a} -> {b}: all {len(members)}")
        else:
            parts += [f"{s} -> {d}" for s, d in bad]
    return ", ".join(parts)
