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

Sends are bounded: at most `in_flight_max` echoes wait for an answer at once, so the
first round does not put every host's ARP request on the controllers in the same
instant; pairs take turns in an order that interleaves sources and destinations.
"""

from __future__ import annotations

import ctypes
import os
import random
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = ["IN_FLIGHT_MAX", "TRY_S", "Reach", "describe_pairs", "probe"]

CLONE_NEWNET = 0x40000000
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
TRY_S = 1.0  # a pair unanswered this long is sent another echo
IN_FLIGHT_MAX = 256  # echoes awaiting an answer at once, over all pairs
POLL_S = 0.05
PAYLOAD = b"synod-reach-0097"

Pair = tuple[str, str]


@dataclass
class Reach:
    """What a probe found: when each pair first answered (s from the start, None if
    never), how many echoes went out, and how long it ran."""

    answered_s: dict[Pair, float | None]
    sent: int = 0
    elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)  # sockets that could not be opened

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

    def check(self, what: str, bound_s: float, site_of: dict[str, str]) -> tuple[str, bool]:
        """A report's check for a wait: its time, or what it waited for and every pair
        that never answered."""
        if self.took is not None:
            return f"{what} in {self.took:.2f} s", True
        missing = self.missing
        text = (f"{what}: not within {bound_s:g} s (waited for an echo reply on each of "
                f"{len(self.answered_s)} host pairs, an echo every {TRY_S:g} s while "
                f"unanswered; {self.sent} sent): {len(missing)} never answered: "
                f"{describe_pairs(missing, site_of, self.answered_s)}")
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
    """Echo each (src, dst) pair until it answers or its time is up.

    hosts: name -> (pid of a process in its network namespace, its IPv4 address).
    per_pair: False, one deadline for all, timeout_s from the start (a wait for the
    network to converge); True, each pair gets timeout_s from its own first echo, so
    a pair that waited its turn behind in_flight_max others is judged as fairly as the
    first (a measurement of every pair at one moment).
    between: called on every turn of the loop (e.g. a Ctrl-C checkpoint); may raise.
    """
    order = _interleaved(list(dict.fromkeys(pairs)))
    reach = Reach({p: None for p in order})
    if not order:
        return reach
    sources = {s for s, _ in order}
    socks, reach.errors = _open_in_namespaces({h: hosts[h][0] for h in sorted(sources)})
    ident = random.getrandbits(16)
    sent_at: dict[Pair, float] = {}
    waiting: dict[tuple[str, int], Pair] = {}  # (source host, seq) -> pair
    seq = {h: 0 for h in socks}
    fd_host = {s.fileno(): h for h, s in socks.items()}
    ip_of = {h: hosts[h][1] for h in hosts}
    started = time.monotonic()
    deadline = started + timeout_s
    first_sent: dict[Pair, float] = {}
    pending = [p for p in order if p[0] in socks]
    try:
        while True:
            now = time.monotonic()
            if between is not None:
                between()
            if per_pair:  # a pair whose own time is up is no longer waited for
                pending = [p for p in pending if now - first_sent.get(p, now) < timeout_s]
            elif now >= deadline:
                break
            if not pending:
                break
            in_flight = sum(1 for p in pending if now - sent_at.get(p, -1e9) < try_s)
            for pair in pending:
                if in_flight >= in_flight_max:
                    break
                if now - sent_at.get(pair, -1e9) < try_s:
                    continue
                first_sent.setdefault(pair, now)
                src, dst = pair
                seq[src] = (seq[src] + 1) & 0xFFFF
                waiting[(src, seq[src])] = pair
                sent_at[pair] = now
                in_flight += 1
                reach.sent += 1
                try:
                    socks[src].sendto(echo_request(ident, seq[src]), (ip_of[dst], 0))
                except OSError:
                    pass  # e.g. no route or a full buffer: tried again after try_s
            wait = POLL_S if per_pair else min(POLL_S, max(0.0, deadline - time.monotonic()))
            ready, _, _ = select.select(list(fd_host), [], [], wait)
            got = False
            for fd in ready:
                host = fd_host[fd]
                while True:
                    try:
                        packet = socks[host].recv(4096)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break
                    parsed = parse_reply(packet)
                    if parsed is None or parsed[1] != ident:
                        continue
                    answered = waiting.get((host, parsed[2]))
                    if answered is None or ip_of[answered[1]] != parsed[0]:
                        continue  # a reply from another address leaves the echo waiting
                    del waiting[(host, parsed[2])]
                    if reach.answered_s[answered] is None:
                        reach.answered_s[answered] = time.monotonic() - started
                        got = True
            if got:
                pending = [p for p in pending if reach.answered_s[p] is None]
    finally:
        for s in socks.values():
            s.close()
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
