"""Switch mastership with generation-id fencing: who programs which switch, and when.

Every switch has a home controller (rank 0, the one at its site) and backups (rank
1, 2, ...). A controller claims MASTER when it is the best-ranked controller it
believes alive: the home controller always claims; a backup claims only when every
better-ranked controller is unreachable and it has not just been demoted (hold-down).

The switch is the arbiter (OpenFlow 1.3 section 6.3.7): a claim carries a generation
id larger than any the switch has seen, the switch demotes the previous master, and
rejects stale claims and a demoted master's flow-mods. Generation ids are
((high + 1) << 8) | controller_index, so two controllers never claim with the same
id, and ids only grow. A controller programs a switch only after the switch itself
confirmed it as MASTER; it keeps checking with NOCHANGE role reads, because in
OpenFlow 1.3 a demoted master is not told.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.forwarding.intents import (
    ROLE_EQUAL,
    ROLE_MASTER,
    ROLE_NOCHANGE,
    ROLE_SLAVE,
    RoleRequest,
)

__all__ = [
    "BecameMaster",
    "LostMaster",
    "Mastership",
    "MastershipConfig",
    "newer",
    "next_generation",
]

GENERATION_MASK = 0xFFFFFFFFFFFFFFFF
QUEUED_ROLE_REQUESTS_MAX = 4


@dataclass(frozen=True)
class MastershipConfig:
    query_interval_ms: int = 1_000  # NOCHANGE reads: how soon a silent demotion is noticed
    holddown_ms: int = 5_000  # a demoted backup waits this long before claiming again
    claim_timeout_ms: int = 2_000  # a claim unanswered this long is retried


@dataclass(frozen=True)
class BecameMaster:
    """The switch confirmed us as MASTER with this generation id: program it now."""

    dpid: int
    generation_id: int


@dataclass(frozen=True)
class LostMaster:
    """We are no longer MASTER of the switch: stop programming it."""

    dpid: int


Event = RoleRequest | BecameMaster | LostMaster


def next_generation(seen: int, controller_index: int) -> int:
    """A generation id above `seen`, unique to this controller (low 8 bits)."""
    if not 0 <= controller_index < 256:
        raise ValueError(f"controller index must be 0..255, got {controller_index}")
    return ((((seen >> 8) + 1) << 8) | controller_index) & GENERATION_MASK


UNDEFINED_GENERATION = 0xFFFFFFFFFFFFFFFF  # what OVS reports before any claim


def newer(a: int, b: int) -> bool:
    """Serial-number order of generation ids, as switches compare them (signed difference)."""
    diff = (a - b) & GENERATION_MASK
    return diff != 0 and diff < (1 << 63)


@dataclass
class _Switch:
    rank: int
    role: int = ROLE_EQUAL
    generation: int = 0  # the highest id the switch reported
    better_alive: bool = True  # until a probe says otherwise, assume the better ones live
    claim_sent_ms: int | None = None
    demoted_ms: int | None = None
    next_query_ms: int = 0
    # One role request in flight at a time, so each reply answers the request we think
    # it does, and a claim is always computed from the latest generation id.
    in_flight_ms: int | None = None
    queued: list[RoleRequest] | None = None


class Mastership:
    """Role state for every switch this controller is connected to. Events in, events out."""

    def __init__(self, controller_index: int, config: MastershipConfig | None = None) -> None:
        next_generation(0, controller_index)  # validates the index
        self.index = controller_index
        self.config = config or MastershipConfig()
        self._switches: dict[int, _Switch] = {}

    def is_master(self, dpid: int) -> bool:
        sw = self._switches.get(dpid)
        return sw is not None and sw.role == ROLE_MASTER

    def masters(self) -> list[int]:
        return sorted(d for d, sw in self._switches.items() if sw.role == ROLE_MASTER)

    def rank(self, dpid: int) -> int | None:
        sw = self._switches.get(dpid)
        return None if sw is None else sw.rank

    def generation(self, dpid: int) -> int:
        sw = self._switches.get(dpid)
        return 0 if sw is None else sw.generation

    # --- inputs ------------------------------------------------------------------------

    def switch_connected(self, dpid: int, rank: int, now_ms: int) -> list[Event]:
        """Start by reading the switch's role and generation id (never claim blind)."""
        sw = _Switch(rank=rank, better_alive=rank > 0,
                     next_query_ms=now_ms + self.config.query_interval_ms)
        self._switches[dpid] = sw
        return self._request(sw, RoleRequest(dpid, ROLE_NOCHANGE), now_ms)

    def switch_disconnected(self, dpid: int) -> list[Event]:
        sw = self._switches.pop(dpid, None)
        return [LostMaster(dpid)] if sw is not None and sw.role == ROLE_MASTER else []

    def better_alive(self, dpid: int, alive: bool, now_ms: int) -> list[Event]:
        """A probe of the better-ranked controllers for `dpid` says whether any lives."""
        sw = self._switches.get(dpid)
        if sw is None or sw.rank == 0 or sw.better_alive == alive:
            return []
        sw.better_alive = alive
        # A master does not step down when a better controller comes back: that one claims
        # (it always does, if it can reach the switch) and the switch demotes us. Stepping
        # down first would leave the switch masterless if the better one cannot reach it.
        return self._maybe_claim(dpid, sw, now_ms)

    def role_reply(self, dpid: int, role: int, generation_id: int, now_ms: int) -> list[Event]:
        """The switch told us our role and its current generation id."""
        sw = self._switches.get(dpid)
        if sw is None:
            return []
        events: list[Event] = []
        if generation_id != UNDEFINED_GENERATION and newer(generation_id, sw.generation):
            sw.generation = generation_id
        sw.claim_sent_ms = None
        was_master = sw.role == ROLE_MASTER
        sw.role = role
        if role == ROLE_MASTER and not was_master:
            events.append(BecameMaster(dpid, generation_id))
        elif role != ROLE_MASTER and was_master:
            sw.demoted_ms = now_ms
            events.append(LostMaster(dpid))
        return events + self._answered(sw, now_ms) + self._maybe_claim(dpid, sw, now_ms)

    def role_failed(self, dpid: int, now_ms: int) -> list[Event]:
        """The switch answered our role request with an error (STALE generation id)."""
        sw = self._switches.get(dpid)
        if sw is None:
            return []
        events = self._lose(dpid, sw, now_ms)
        return events + self._answered(sw, now_ms) + self._request(
            sw, RoleRequest(dpid, ROLE_NOCHANGE), now_ms)

    def demoted(self, dpid: int, now_ms: int) -> list[Event]:
        """The switch refused a flow-mod of ours (IS_SLAVE): someone else is master."""
        sw = self._switches.get(dpid)
        if sw is None:
            return []
        events = self._lose(dpid, sw, now_ms)
        return events + self._request(sw, RoleRequest(dpid, ROLE_NOCHANGE), now_ms)

    def _lose(self, dpid: int, sw: _Switch, now_ms: int) -> list[Event]:
        events: list[Event] = [LostMaster(dpid)] if sw.role == ROLE_MASTER else []
        sw.role = ROLE_SLAVE
        sw.claim_sent_ms = None
        sw.demoted_ms = now_ms
        return events

    def tick(self, now_ms: int) -> list[Event]:
        events: list[Event] = []
        for dpid, sw in sorted(self._switches.items()):
            if sw.in_flight_ms is not None and \
                    now_ms - sw.in_flight_ms > self.config.claim_timeout_ms:
                # Unanswered (lost in transit): forget it, and ask afresh.
                sw.in_flight_ms, sw.claim_sent_ms, sw.queued = None, None, None
                events += self._request(sw, RoleRequest(dpid, ROLE_NOCHANGE), now_ms)
            elif now_ms >= sw.next_query_ms:
                sw.next_query_ms = now_ms + self.config.query_interval_ms
                if sw.in_flight_ms is None:
                    events += self._request(sw, RoleRequest(dpid, ROLE_NOCHANGE), now_ms)
            events += self._maybe_claim(dpid, sw, now_ms)
        return events

    def _request(self, sw: _Switch, request: RoleRequest, now_ms: int) -> list[Event]:
        if sw.in_flight_ms is None:
            sw.in_flight_ms = now_ms
            return [request]
        if request.role == ROLE_NOCHANGE and sw.queued and \
                any(q.role == ROLE_NOCHANGE for q in sw.queued):
            return []  # one pending read answers them all (e.g. a burst of IS_SLAVE errors)
        if len(sw.queued or []) >= QUEUED_ROLE_REQUESTS_MAX:
            return []
        sw.queued = (sw.queued or []) + [request]
        return []

    def _answered(self, sw: _Switch, now_ms: int) -> list[Event]:
        sw.in_flight_ms = None
        if not sw.queued:
            return []
        request, *rest = sw.queued
        sw.queued = rest or None
        if request.role == ROLE_MASTER:
            # Claims are decided afresh against the latest generation id.
            sw.claim_sent_ms = None
            return []
        return self._request(sw, request, now_ms)

    # --- the rule ----------------------------------------------------------------------

    def should_claim(self, dpid: int, now_ms: int) -> bool:
        sw = self._switches.get(dpid)
        if sw is None:
            return False
        if sw.rank == 0:
            return True
        if sw.better_alive:
            return False
        return sw.demoted_ms is None or now_ms - sw.demoted_ms >= self.config.holddown_ms

    def _maybe_claim(self, dpid: int, sw: _Switch, now_ms: int) -> list[Event]:
        if sw.role == ROLE_MASTER or sw.claim_sent_ms is not None:
            return []
        if not self.should_claim(dpid, now_ms):
            if sw.role == ROLE_EQUAL and sw.in_flight_ms is None:
                # A backup asks to be SLAVE: no packet-ins, no way to change the switch by
                # mistake. (EQUAL, OpenFlow's default, may do both.)
                return self._request(sw, RoleRequest(dpid, ROLE_SLAVE, sw.generation), now_ms)
            return []
        if sw.in_flight_ms is not None:
            return []  # decide once the answer in flight is in: it may change the picture
        sw.claim_sent_ms = now_ms
        return self._request(
            sw, RoleRequest(dpid, ROLE_MASTER, next_generation(sw.generation, self.index)),
            now_ms)
