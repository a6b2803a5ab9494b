"""When to echo which host pair, and how long a wait for all of them may take; no I/O.

The prober (topologies/reach.py) sends what `Schedule.sends` returns and reports replies
to `Schedule.answered`; times are seconds on one monotonic clock, passed in.

The rules, in order of precedence:

1. At most `in_flight_max` echoes sent in the last `try_s` await an answer (over all
   pairs), so that a round does not put every host's ARP request and every unknown
   destination's packet-in on the controllers in the same instant.
2. A pair is echoed again once `try_s` passed since its last echo without an answer.
3. Pairs take turns: the pair echoed longest ago goes first, never-echoed pairs (in the
   order given) before all others under one deadline, after the due ones when each pair
   has its own window (whose time is already running).

Rule 3 is what bounds a pair's wait: while nothing answers, the window of rule 1 admits
`in_flight_max` echoes per `try_s`, so under one deadline every pair still unanswered is
echoed at least once per `round_s(pairs)`. Before, the pending pairs were scanned from
the start of their list on every turn: the first `in_flight_max` took every freed slot
again each `try_s`, and the others were not echoed at all until those answered, so while
the network converged most pairs were never asked (and their first ARP was left for
after). A network that is ready after `network_s` is seen within `network_s +
round_s(pairs)`: that is `Deadline`, a budget for the network plus a stated budget per
pair (`try_s / in_flight_max`, 3.9 ms), instead of one figure for 56 pairs and 1,722.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["IN_FLIGHT_MAX", "TRY_S", "Deadline", "Pair", "Schedule", "round_s"]

TRY_S = 1.0  # a pair unanswered this long is sent another echo
IN_FLIGHT_MAX = 256  # echoes awaiting an answer at once, over all pairs

Pair = tuple[str, str]


def round_s(pairs: int, try_s: float = TRY_S, in_flight_max: int = IN_FLIGHT_MAX) -> float:
    """The longest an unanswered pair waits between two echoes of `Schedule` (rule 3)."""
    assert pairs >= 0 and try_s > 0 and in_flight_max > 0
    return math.ceil(pairs / in_flight_max) * try_s


@dataclass(frozen=True)
class Deadline:
    """How long a wait for every pair to answer may take: `network_s` for the network to
    converge, plus one round of echoes over all `pairs` at the prober's bounded rate."""

    network_s: float
    pairs: int
    try_s: float = TRY_S
    in_flight_max: int = IN_FLIGHT_MAX

    @property
    def round_s(self) -> float:
        return round_s(self.pairs, self.try_s, self.in_flight_max)

    @property
    def total_s(self) -> float:
        return self.network_s + self.round_s

    def describe(self) -> str:
        per_pair_ms = 1000 * self.try_s / self.in_flight_max
        return (f"{self.total_s:g} s: {self.network_s:g} s for the network and {self.round_s:g} s "
                f"for one round of echoes over {self.pairs:,} host pairs ({per_pair_ms:.1f} ms "
                f"a pair: {self.in_flight_max} awaiting an answer at once, an echo every "
                f"{self.try_s:g} s while unanswered)")


class Schedule:
    """The echoes of one wait or one measurement, by the rules in the module's docstring.

    per_pair False: one deadline, timeout_s from `now` at construction (a wait for the
    network to converge). True: each pair gets timeout_s from its own first echo, so a
    pair that waited its turn is judged as fairly as the first (a measurement of every
    pair at one moment).
    """

    def __init__(self, order: Iterable[Pair], timeout_s: float, now: float, *,
                 try_s: float = TRY_S, in_flight_max: int = IN_FLIGHT_MAX,
                 per_pair: bool = False) -> None:
        assert timeout_s >= 0 and try_s > 0 and in_flight_max > 0
        self.timeout_s, self.try_s, self.in_flight_max = timeout_s, try_s, in_flight_max
        self.per_pair = per_pair
        self.started = now
        self.answered_s: dict[Pair, float | None] = dict.fromkeys(order)
        self.echoes: dict[Pair, int] = dict.fromkeys(self.answered_s, 0)
        self._fresh: deque[Pair] = deque(self.answered_s)  # never echoed, in order
        self._echoed: deque[Pair] = deque()  # echoed, by last echo, oldest first
        self._last: dict[Pair, float] = {}  # pair -> its last echo
        self._first: dict[Pair, float] = {}  # pair -> its first echo
        self._flight: deque[tuple[float, Pair]] = deque()  # echoes by time sent
        self._awaited: set[Pair] = set()  # pairs whose last echo is in the window
        self._firsts: deque[tuple[float, Pair]] = deque()  # first echoes, by time
        self._unanswered = len(self._fresh)
        # Under one deadline the wait ends at timeout_s. Per pair, the rules end it once
        # every pair had its window: each pair holds a place in the window at most
        # ceil(timeout_s / try_s) times for try_s, so all have started within that many
        # rounds. That is also a hard stop here, so no fault of the rules' can make the
        # measurement endless (a pair never echoed by then is reported with 0 echoes).
        self.limit_s = timeout_s if not per_pair else (
            math.ceil(timeout_s / try_s) * round_s(len(self._fresh), try_s, in_flight_max)
            + timeout_s + try_s)

    def sends(self, now: float) -> list[Pair]:
        """The pairs to echo now, each counted as echoed at `now`."""
        if self.finished(now):
            return []
        self._expire(now)
        # One deadline: never-echoed pairs first, then by last echo (rule 3). Per pair:
        # a due pair's own time is running, so its next echo goes before a first one.
        queues = (self._echoed, self._fresh) if self.per_pair else (self._fresh, self._echoed)
        out: list[Pair] = []
        for queue in queues:
            while queue and len(self._awaited) < self.in_flight_max:
                pair = queue[0]
                if self.answered_s[pair] is not None or self._timed_out(pair, now):
                    queue.popleft()  # done with: leaves the rotation
                    continue
                last = self._last.get(pair)
                if last is not None and now - last < self.try_s:
                    break  # ordered by last echo: no pair behind this one is due either
                queue.popleft()
                self._echo(pair, now)
                out.append(pair)
        assert len(self._awaited) <= self.in_flight_max
        return out

    def _echo(self, pair: Pair, now: float) -> None:
        if pair not in self._first:
            self._first[pair] = now
            self._firsts.append((now, pair))
        self._echoed.append(pair)
        self._last[pair] = now
        self._flight.append((now, pair))
        self._awaited.add(pair)
        self.echoes[pair] += 1

    def answered(self, pair: Pair, now: float) -> bool:
        """A reply for `pair` came: True the first time (its time is kept)."""
        if self.answered_s.get(pair, 0.0) is not None:
            return False  # answered before, or not a pair of ours
        assert pair in self._last, "an answer for a pair never echoed"
        self.answered_s[pair] = now - self.started
        self._unanswered -= 1
        self._awaited.discard(pair)
        return True

    def finished(self, now: float) -> bool:
        """Every pair answered, or (one deadline) its time is up, or (per pair) every
        unanswered pair's time is up."""
        if self._unanswered == 0 or now - self.started >= self.limit_s:
            return True
        if not self.per_pair:
            return False
        while self._firsts and (self.answered_s[self._firsts[0][1]] is not None
                                or now - self._firsts[0][0] >= self.timeout_s):
            self._firsts.popleft()
        return not self._firsts and not self._fresh  # a fresh pair's time has not begun

    def _timed_out(self, pair: Pair, now: float) -> bool:
        if not self.per_pair:
            return now - self.started >= self.timeout_s
        first = self._first.get(pair)
        return first is not None and now - first >= self.timeout_s

    def _expire(self, now: float) -> None:
        """Echoes older than try_s no longer hold a place in the window (rule 1)."""
        while self._flight and now - self._flight[0][0] >= self.try_s:
            sent, pair = self._flight.popleft()
            if self._last.get(pair) == sent:
                self._awaited.discard(pair)
