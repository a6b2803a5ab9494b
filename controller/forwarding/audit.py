"""Flow audit: compare a switch's replicated flows with what it really holds, repair.

Only flows in the replicated-flow cookie space are considered, so the audit never
touches flows of other apps or of operators using ovs-ofctl with other cookies.
Nothing is wiped: a flow that matches is left alone, a missing one is added, a
changed one replaced, a stale one (its row is gone) deleted by its exact cookie.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from controller.forwarding.flowspec import FLOW_COOKIE_MASK, FLOW_COOKIE_SPACE, FlowSpec
from controller.forwarding.intents import FlowAdd, FlowDelete, Match, Output

__all__ = ["AuditResult", "InstalledFlow", "audit"]

ALL_BITS = 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True)
class InstalledFlow:
    """A flow as the switch reported it in a flow-stats reply."""

    cookie: int
    table_id: int
    priority: int
    match: Match
    actions: tuple[Output, ...]
    idle_timeout_s: int = 0
    hard_timeout_s: int = 0
    packets: int = 0  # the switch's counters for the flow
    bytes: int = 0


@dataclass
class AuditResult:
    """What one audit found and the intents that repair it."""

    installed: int = 0
    missing: list[str] = field(default_factory=list)  # flow ids re-added
    changed: list[str] = field(default_factory=list)  # flow ids replaced
    unexpected: list[int] = field(default_factory=list)  # cookies deleted
    intents: list[FlowAdd | FlowDelete] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.changed or self.unexpected)


def _same(spec: FlowSpec, flow: InstalledFlow) -> bool:
    return (spec.table_id == flow.table_id and spec.priority == flow.priority
            and spec.match == flow.match and spec.actions == flow.actions)


def audit(dpid: int, desired: Mapping[int, FlowSpec], actual: Iterable[InstalledFlow],
          in_flight: Iterable[int] = ()) -> AuditResult:
    """Repair plan for `dpid`. `desired` maps cookie -> spec for this switch.

    `in_flight` names cookies just (re)installed whose stats may not show them yet;
    they are not reported missing. Flows with timeouts are installed once and not
    re-added when they expire (expiring is what the operator asked for).
    """
    result = AuditResult()
    skip = set(in_flight)
    seen: set[int] = set()
    for flow in actual:
        if flow.cookie & FLOW_COOKIE_MASK != FLOW_COOKIE_SPACE:
            continue
        result.installed += 1
        seen.add(flow.cookie)
        spec = desired.get(flow.cookie)
        if spec is None:
            result.unexpected.append(flow.cookie)
            result.intents.append(FlowDelete(dpid, Match(), flow.cookie, ALL_BITS))
        elif not _same(spec, flow):
            result.changed.append(spec.flow_id)
            result.intents.append(FlowDelete(dpid, Match(), flow.cookie, ALL_BITS))
            result.intents.append(spec.to_intent())
    for cookie, spec in sorted(desired.items()):
        if cookie in seen or cookie in skip:
            continue
        if spec.idle_timeout_s or spec.hard_timeout_s:
            continue
        result.missing.append(spec.flow_id)
        result.intents.append(spec.to_intent())
    return result
