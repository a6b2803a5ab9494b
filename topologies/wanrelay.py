"""WAN link emulator: relay Ethernet frames between two interfaces with delay, loss, rate.

Why it exists: these machines' kernels have no `sch_netem`, so Mininet's TCLink
cannot add delay or loss (tc answers "Specified qdisc kind is unknown"). This
relay runs inside a Mininet node's network namespace, reads every frame from
one interface with an AF_PACKET socket and writes it to the other after the
configured delay, dropping a seeded fraction and serialising at the configured
rate (tail drop when the queue would exceed `--queue-ms-max`).

Standard library only, so Debian's /usr/bin/mn can run it too. It exits when
an interface disappears or its parent process dies, so it cannot outlive the
emulation. See docs/decisions/0003-wan-emulation.md.
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import select
import signal
import socket
import sys
import time

__all__ = ["Schedule", "main"]

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
FRAME_BYTES_MAX = 65_536
SELECT_IDLE_S = 0.5


class Schedule:
    """When each frame of one direction leaves: pure, so it can be unit-tested.

    `offer(now_s, size_bytes)` returns the departure time or None for a drop.
    """

    def __init__(self, delay_ms: float, rate_mbit: float, loss_pct: float,
                 queue_ms_max: float, rng: random.Random) -> None:
        if delay_ms < 0 or rate_mbit < 0 or not 0 <= loss_pct <= 100 or queue_ms_max <= 0:
            raise ValueError("delay and rate must be >= 0, loss in 0..100, queue > 0")
        self.delay_s = delay_ms / 1000.0
        self.rate_bps = rate_mbit * 1_000_000.0
        self.loss = loss_pct / 100.0
        self.queue_s_max = queue_ms_max / 1000.0
        self.rng = rng
        self.link_free_s = 0.0  # when the emulated wire finishes its current frame
        self.dropped_loss = 0
        self.dropped_queue = 0

    def offer(self, now_s: float, size_bytes: int) -> float | None:
        if self.loss and self.rng.random() < self.loss:
            self.dropped_loss += 1
            return None
        start_s = max(now_s, self.link_free_s)
        if start_s - now_s > self.queue_s_max:
            self.dropped_queue += 1
            return None
        wire_s = size_bytes * 8 / self.rate_bps if self.rate_bps else 0.0
        self.link_free_s = start_s + wire_s
        return self.link_free_s + self.delay_s


def _open(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((ifname, 0))
    s.setblocking(False)
    return s


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="wanrelay", description=__doc__.splitlines()[0])
    p.add_argument("--a", required=True, help="first interface")
    p.add_argument("--b", required=True, help="second interface")
    p.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay")
    p.add_argument("--rate-mbit", type=float, default=0.0, help="rate limit, 0 = none")
    p.add_argument("--loss-pct", type=float, default=0.0, help="random loss per frame")
    p.add_argument("--queue-ms-max", type=float, default=200.0, help="queue bound in time")
    p.add_argument("--seed", type=int, default=1, help="seed for the loss process")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    sock_a, sock_b = _open(args.a), _open(args.b)
    peer = {sock_a: sock_b, sock_b: sock_a}
    schedules = {sock: Schedule(args.delay_ms, args.rate_mbit, args.loss_pct,
                                args.queue_ms_max, rng) for sock in (sock_a, sock_b)}
    pending: list[tuple[float, int, socket.socket, bytes]] = []  # (due, order, out, frame)
    order = 0
    parent = os.getppid()
    stopping = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print("ready", flush=True)  # both sockets are bound: frames from now on are relayed
    while not stopping:
        if os.getppid() != parent:
            return 0  # our emulation died: do not outlive it
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, _, out, frame = heapq.heappop(pending)
            try:
                out.send(frame)
            except OSError as e:
                if e.errno == 19:  # ENODEV: the interface is gone
                    return 0
                # ENETDOWN while the link is cut, or a full buffer: the frame is lost,
                # as it would be on a real WAN.
        timeout = SELECT_IDLE_S if not pending else max(0.0, pending[0][0] - now)
        try:
            readable, _, _ = select.select([sock_a, sock_b], [], [], timeout)
        except InterruptedError:
            continue
        for sock in readable:
            try:
                frame, addr = sock.recvfrom(FRAME_BYTES_MAX)
            except BlockingIOError:
                continue
            except OSError as e:
                if e.errno == 19:
                    return 0
                continue
            if addr[2] == PACKET_OUTGOING:
                continue  # our own transmission seen on the way out
            due = schedules[sock].offer(time.monotonic(), len(frame))
            if due is not None:
                order += 1
                heapq.heappush(pending, (due, order, peer[sock], frame))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except OSError as e:
        print(f"wanrelay: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
