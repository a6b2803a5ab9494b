"""The voters' check of `placement/<service>/<generation>` slots: values, order, the lease.

A service that may move gets its node from `placement/<service>/<g>` (decision 0081). The
value is `{node, spec_hash, lease_ms}`: the owner, the spec it was placed for, and how long
the owner keeps running it without hearing a majority (`lease_ms`; 0 = no lease: a
`local-only` service, never moved to another node). Generation 1 is any valid value; `g > 1`
follows the decided `g - 1` and either keeps its node (the owner takes its own service back
after a heal) or moves it only once this voter has not heard from the old owner for
`lease_ms * (1 + RHO) + MARGIN_MS` on its own clock (decision 0081 §3). Proposers run the
same check on themselves, so one confused proposer, or an operator's token, cannot start a
second copy while the owner still runs the first.

Sans-I/O: the node tells the engine how long it has not heard from each member
(`Agreement.heard`); nothing here reads a clock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import Reason, Refused

__all__ = [
    "MARGIN_MS",
    "PLACEMENT",
    "RHO",
    "ROUND_MS_MAX",
    "STOP_MS_MAX",
    "PlacementValue",
    "check_placement",
    "placement_of",
    "placement_slot",
    "silence_needed_ms",
]

PLACEMENT = "placement"  # the slot kind
RHO = 0.01  # assumed bound on two nodes' monotonic clock-rate difference (decision 0081)
STOP_MS_MAX = 8_000  # the owner's urgent stop: quit 3 s, then SIGKILL 5 s
ROUND_MS_MAX = 2_000  # an owner's agent notices a lost lease at most one round late
# The owner's clock may run slow by RHO over the stop and the late round too.
MARGIN_MS = int((STOP_MS_MAX + ROUND_MS_MAX) * (1 + RHO))
_SERVICE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")  # edge_agent.spec's service names
_GENERATION = re.compile(r"^[1-9][0-9]{0,17}$")
_HASH = re.compile(r"^[0-9a-f]{64}$")
_KEYS = frozenset({"node", "spec_hash", "lease_ms"})
LEASE_MS_MAX = 86_400_000  # a day: longer is a typo, and would pin a service for good


def placement_slot(service: str, generation: int) -> str:
    return f"{PLACEMENT}/{service}/{generation}"


def placement_of(slot: str) -> tuple[str, int] | None:
    """(service, generation) of 'placement/<service>/<generation>', else None."""
    parts = slot.split("/")
    if len(parts) != 3 or parts[0] != PLACEMENT:
        return None
    if not _SERVICE.match(parts[1]) or not _GENERATION.match(parts[2]):
        return None
    return parts[1], int(parts[2])


def silence_needed_ms(lease_ms: int) -> int:
    """How long a voter must not have heard from an owner with this lease before another
    node may own its service: its lease on a clock up to RHO slower, plus the margin."""
    return int(lease_ms * (1 + RHO)) + MARGIN_MS


@dataclass(frozen=True)
class PlacementValue:
    """The value decided in `placement/<service>/<generation>`."""

    node: str
    spec_hash: str
    lease_ms: int

    def to_value(self) -> dict[str, Any]:
        return {"node": self.node, "spec_hash": self.spec_hash, "lease_ms": self.lease_ms}

    @classmethod
    def from_value(cls, value: Any, slot: str) -> PlacementValue:
        """Validated: exactly the three keys with their types; BAD_PLACEMENT otherwise."""
        if not isinstance(value, dict):
            raise Refused(Reason.BAD_PLACEMENT, f"{slot}: the value must be a map "
                          f"{{node, spec_hash, lease_ms}}, not {type(value).__name__}")
        unknown, missing = sorted(set(value) - _KEYS, key=str), sorted(_KEYS - set(value))
        if unknown:
            raise Refused(Reason.BAD_PLACEMENT, f"{slot}.{unknown[0]}: unknown key")
        if missing:
            raise Refused(Reason.BAD_PLACEMENT, f"{slot}.{missing[0]}: missing")
        node, spec_hash, lease_ms = value["node"], value["spec_hash"], value["lease_ms"]
        if not isinstance(node, str) or not node:
            raise Refused(Reason.BAD_PLACEMENT, f"{slot}.node: a node id (a string)")
        if not isinstance(spec_hash, str) or not _HASH.match(spec_hash):
            raise Refused(Reason.BAD_PLACEMENT,
                          f"{slot}.spec_hash: 64 lower-case hex digits (BLAKE2b-256 of the spec)")
        if type(lease_ms) is not int or not 0 <= lease_ms <= LEASE_MS_MAX:
            raise Refused(Reason.BAD_PLACEMENT,
                          f"{slot}.lease_ms: an int of milliseconds in [0, {LEASE_MS_MAX}]")
        return cls(node, spec_hash, lease_ms)


def check_placement(
    slot: str,
    value: Any,
    previous: Any,
    members: frozenset[str],
    silence_ms: Mapping[str, int],
    me: str,
) -> PlacementValue:
    """Refused unless this voter may accept value in slot (decision 0081 §3).

    previous: the value decided here for generation g - 1 (None: not decided here; ignored
    for g = 1); members: the voters in force; silence_ms: how long this node has not heard
    from each member (a member missing counts as just heard); me: this node (heard now).
    """
    where = placement_of(slot)
    if where is None:
        raise Refused(Reason.BAD_PLACEMENT,
                      f"{slot}: not placement/<service>/<generation> (generation >= 1)")
    service, generation = where
    new = PlacementValue.from_value(value, slot)
    if new.node not in members:
        raise Refused(Reason.BAD_PLACEMENT, f"{slot}.node: {new.node[:16]!r} is not a member")
    if generation == 1:
        return new
    before = placement_slot(service, generation - 1)
    if previous is None:
        raise Refused(Reason.PLACEMENT_AHEAD, f"{slot}: {before} is not decided here "
                      "(generations follow one another)")
    try:
        old = PlacementValue.from_value(previous, before)
    except Refused:
        old = None  # decided before this check existed: its lease is unknown
    if old is not None and old.node == new.node:
        return new  # the owner keeps (or takes back) its own service: one copy either way
    if old is None:
        owner = previous.get("node") if isinstance(previous, dict) else None
        if not isinstance(owner, str):
            raise Refused(Reason.BAD_PLACEMENT, f"{before} names no node: the owner is unknown")
        if owner == new.node:
            return new
        lease_ms = LEASE_MS_MAX  # no lease recorded: the longest wait
    else:
        owner, lease_ms = old.node, old.lease_ms
        if lease_ms == 0:
            raise Refused(Reason.LEASE_HELD,
                          f"{slot}: {before} has no lease (lease_ms 0, a local-only service): "
                          f"its node {owner[:16]} keeps it; remove the service to move it")
    need = silence_needed_ms(lease_ms)
    silent = 0 if owner == me else silence_ms.get(owner, 0)
    if silent < need:
        raise Refused(Reason.LEASE_HELD,
                      f"{slot}: this voter heard from {owner[:16]}, the owner of {before}, "
                      f"{silent} ms ago; another node may own it after {need} ms without "
                      f"(lease {lease_ms} ms * (1 + {RHO}) + {MARGIN_MS} ms)")
    return new
