"""A service's life decided in slots `service/<name>/<n>`: deploy, upgrade, stop, remove.

Every node agrees on the sequence of a service's desired states because each transition is
decided in the next slot (decision 0082). A value is `{action, desired, prev}`: the action,
the desired object's hash after it (the spec's hash with its state left out; "" after a
remove), and the desired hash before it ("" when the service is absent), so a transition
planned against a stale view is refused rather than applied on top of another. The state
after slot n depends on its value alone:

    action    legal from             prev must be   desired            state after
    deploy    absent, stopped(h)     "" / h         any hash h'        running(h')
    upgrade   running(h)             h              h' != h            running(h')
    stop      running(h)             h              h                  stopped(h)
    remove    running(h), stopped(h) h              ""                 absent

Observed states (`starting`, `running image …`, …) stay plain `placements` rows; only
these transitions are agreed. Pure: no clock, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import Reason, Refused

__all__ = [
    "ABSENT",
    "ACTIONS",
    "LIFECYCLE",
    "RUNNING",
    "STOPPED",
    "LifeState",
    "Transition",
    "check_lifecycle",
    "lifecycle_of",
    "lifecycle_slot",
    "plan_transitions",
    "state_after",
]

LIFECYCLE = "service"  # the slot kind
ABSENT, RUNNING, STOPPED = "absent", "running", "stopped"
ACTIONS = ("deploy", "upgrade", "stop", "remove")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")  # edge_agent.spec's service names
_NUMBER = re.compile(r"^[1-9][0-9]{0,17}$")
_HASH = re.compile(r"^[0-9a-f]{64}$")
_KEYS = frozenset({"action", "desired", "prev"})
# (phase before, action) -> phase after; anything else is illegal.
_LEGAL = {
    (ABSENT, "deploy"): RUNNING,
    (STOPPED, "deploy"): RUNNING,
    (RUNNING, "upgrade"): RUNNING,
    (RUNNING, "stop"): STOPPED,
    (RUNNING, "remove"): ABSENT,
    (STOPPED, "remove"): ABSENT,
}


def lifecycle_slot(name: str, n: int) -> str:
    return f"{LIFECYCLE}/{name}/{n}"


def lifecycle_of(slot: str) -> tuple[str, int] | None:
    """(name, n) of 'service/<name>/<n>' (n >= 1, canonical), else None."""
    parts = slot.split("/")
    if len(parts) != 3 or parts[0] != LIFECYCLE:
        return None
    if not _NAME.match(parts[1]) or not _NUMBER.match(parts[2]):
        return None
    return parts[1], int(parts[2])


@dataclass(frozen=True)
class Transition:
    """The value decided in `service/<name>/<n>`."""

    action: str
    desired: str
    prev: str

    def to_value(self) -> dict[str, str]:
        return {"action": self.action, "desired": self.desired, "prev": self.prev}

    @classmethod
    def from_value(cls, value: Any, slot: str) -> Transition:
        if not isinstance(value, dict):
            raise Refused(Reason.BAD_LIFECYCLE, f"{slot}: the value must be a map "
                          f"{{action, desired, prev}}, not {type(value).__name__}")
        unknown, missing = sorted(set(value) - _KEYS, key=str), sorted(_KEYS - set(value))
        if unknown:
            raise Refused(Reason.BAD_LIFECYCLE, f"{slot}.{unknown[0]}: unknown key")
        if missing:
            raise Refused(Reason.BAD_LIFECYCLE, f"{slot}.{missing[0]}: missing")
        action, desired, prev = value["action"], value["desired"], value["prev"]
        if action not in ACTIONS:
            raise Refused(Reason.BAD_LIFECYCLE, f"{slot}.action: one of {', '.join(ACTIONS)}")
        for key, h in (("desired", desired), ("prev", prev)):
            if not isinstance(h, str) or not (h == "" or _HASH.match(h)):
                raise Refused(Reason.BAD_LIFECYCLE,
                              f"{slot}.{key}: 64 lower-case hex digits, or \"\"")
        if (desired == "") != (action == "remove"):
            raise Refused(Reason.BAD_LIFECYCLE,
                          f"{slot}.desired: \"\" for remove and only for remove")
        return cls(action, desired, prev)


@dataclass(frozen=True)
class LifeState:
    """Where a service's decided life stands: after slot n (0: no slot decided)."""

    n: int = 0
    phase: str = ABSENT
    desired: str = ""


def state_after(n: int, value: Any) -> LifeState:
    """The state a decided `service/<name>/<n>` leaves (it depends on its value alone)."""
    t = Transition.from_value(value, lifecycle_slot("x", n))
    phase = {"deploy": RUNNING, "upgrade": RUNNING, "stop": STOPPED, "remove": ABSENT}
    return LifeState(n, phase[t.action], t.desired)


def check_lifecycle(slot: str, value: Any, previous: Any) -> Transition:
    """Refused unless value may be decided in slot after `previous`, the value decided
    here in slot n - 1 (None: not decided here; ignored for n = 1)."""
    where = lifecycle_of(slot)
    if where is None:
        raise Refused(Reason.BAD_LIFECYCLE, f"{slot}: not service/<name>/<n> (n >= 1)")
    name, n = where
    t = Transition.from_value(value, slot)
    if n == 1:
        before = LifeState()
    elif previous is None:
        raise Refused(Reason.LIFECYCLE_AHEAD, f"{slot}: {lifecycle_slot(name, n - 1)} is "
                      "not decided here (transitions follow one another)")
    else:
        before = state_after(n - 1, previous)
    after = _LEGAL.get((before.phase, t.action))
    if after is None:
        raise Refused(Reason.BAD_LIFECYCLE,
                      f"{slot}: {t.action} is not a transition from {before.phase}")
    if t.prev != before.desired:
        raise Refused(Reason.BAD_LIFECYCLE,
                      f"{slot}.prev: {t.prev[:16] or '(none)'} but the desired state after "
                      f"{lifecycle_slot(name, n - 1) if n > 1 else 'nothing'} is "
                      f"{before.desired[:16] or '(none)'}")
    if t.action == "upgrade" and t.desired == before.desired:
        raise Refused(Reason.BAD_LIFECYCLE, f"{slot}: upgrade to the object it already has")
    if t.action == "stop" and t.desired != before.desired:
        raise Refused(Reason.BAD_LIFECYCLE, f"{slot}: stop keeps the desired object "
                      f"({before.desired[:16]}); upgrade first")
    return t


def plan_transitions(state: LifeState, desired: str, phase: str) -> list[Transition]:
    """The transitions from state to (desired, phase), phase running or stopped: what a
    deploy proposes, one slot each, in order. [] when there is nothing to decide."""
    assert phase in (RUNNING, STOPPED) and _HASH.match(desired), "a spec's hash and phase"
    out: list[Transition] = []
    cur = state
    if cur.phase == ABSENT or (cur.phase == STOPPED and (phase == RUNNING or
                                                         cur.desired != desired)):
        out.append(Transition("deploy", desired, cur.desired))
    elif cur.phase == RUNNING and cur.desired != desired:
        out.append(Transition("upgrade", desired, cur.desired))
    elif cur.phase == phase:
        return []
    if phase == STOPPED:
        out.append(Transition("stop", desired, desired))
    return out
