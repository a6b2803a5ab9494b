"""Replicated flows on the switches we master: desired set in, flow-mods and audits out.

`FlowReconciler` holds every switch's desired replicated flows (rows of the `flows`
table, as FlowSpec values keyed by cookie) and makes each switch this controller
masters hold exactly them:

- a change of the desired set goes out at once (an ADD replaces a flow in place; a
  deleted row's flow is removed by its exact cookie);
- a new master re-sends every desired flow (no wipe, no gap) and audits shortly after;
- every `audit_interval_ms` (counted from the end of the last audit) it reads back the
  flows in the replicated cookie space and repairs the difference (audit.py); a reply
  not complete within `audit_timeout_ms` is given up and asked for again;
- a flow the switch refuses becomes a flow error (reported to the node, shown by
  `synod flows list`); audits do not re-send it; a change of its row does, and the
  error is cleared once the switch is seen holding the flow.

Inputs are method calls, each given `now_ms` where time matters. Each returns a list,
to be carried out in order: FlowAdd / FlowDelete / FlowStatsRequest intents for the
switch, and FlowRefused / Audited notes for the log. The caller sends intents only to
switches that confirmed it as MASTER and says so with became_master / lost_master. No
audit runs before the whole desired set is known (`flows_loaded`, or
`desired_known=True`): an empty desired set would make every replicated flow look
stale, and the audit would wipe the switch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from controller.forwarding.audit import ALL_BITS, InstalledFlow, audit
from controller.forwarding.flowspec import FLOW_COOKIE_MASK, FLOW_COOKIE_SPACE, FlowSpec
from controller.forwarding.intents import FlowAdd, FlowDelete, FlowStatsRequest, Match

__all__ = [
    "AUDIT_GRACE_MS",
    "AUDIT_TIMEOUT_MS",
    "Audited",
    "FlowReconciler",
    "FlowRefused",
    "Output",
    "ReconcilerConfig",
]

AUDIT_TIMEOUT_MS = 30_000  # a stats reply not complete by then is given up
AUDIT_GRACE_MS = 500  # flows sent this long before a stats request may still be in flight


@dataclass(frozen=True)
class ReconcilerConfig:
    audit_interval_ms: int = 2_000  # from the end of one audit to the next request
    audit_timeout_ms: int = AUDIT_TIMEOUT_MS
    audit_grace_ms: int = AUDIT_GRACE_MS
    first_audit_delay_ms: int = 200  # after becoming master: the re-sent flows land first

    def __post_init__(self) -> None:
        if self.audit_interval_ms <= 0 or self.audit_timeout_ms <= 0:
            raise ValueError("audit interval and timeout must be positive")
        if self.audit_grace_ms < 0 or self.first_audit_delay_ms < 0:
            raise ValueError("audit grace and first delay cannot be negative")


@dataclass(frozen=True)
class FlowRefused:
    """The switch refused a replicated flow: report it; audits will not re-send it."""

    dpid: int
    flow_id: str
    cookie: int
    error: str  # "type T code C", as reported in the flow_errors table


@dataclass(frozen=True)
class FlowState:
    """One desired flow as the last audit saw it (the flow_state table's row)."""

    state: str  # installed, missing, pending, or "failed: <the switch's error>"
    packets: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class Audited:
    """An audit of `dpid` finished; its repairs, if any, follow in the same list."""

    dpid: int
    installed: int  # replicated flows the switch reported
    missing: tuple[str, ...] = ()  # flow ids re-added
    changed: tuple[str, ...] = ()  # flow ids replaced
    unexpected: tuple[int, ...] = ()  # cookies deleted

    @property
    def clean(self) -> bool:
        return not (self.missing or self.changed or self.unexpected)


Output = FlowAdd | FlowDelete | FlowStatsRequest | FlowRefused | Audited


@dataclass
class _Mastered:
    """Audit state of one switch we master; dropped when we lose it."""

    next_audit_ms: int
    requested_ms: int | None = None  # when the outstanding stats request went out
    collected: list[InstalledFlow] = field(default_factory=list)  # its reply so far
    sent_ms: dict[int, int] = field(default_factory=dict)  # cookie -> when last sent


class FlowReconciler:
    """Desired replicated flows of every switch, kept installed on the ones we master."""

    def __init__(self, config: ReconcilerConfig | None = None,
                 desired_known: bool = False) -> None:
        self.config = config or ReconcilerConfig()
        self.desired_known = desired_known
        self._desired: dict[int, dict[int, FlowSpec]] = {}  # dpid -> cookie -> spec
        self._mastered: dict[int, _Mastered] = {}
        self._errors: dict[tuple[int, str], str] = {}  # (dpid, flow id) -> switch's error
        self._audits: dict[int, Audited] = {}
        # Per switch we master, what the last audit saw of each desired flow (flow_state).
        self._states: dict[int, dict[str, FlowState]] = {}

    # --- queries -----------------------------------------------------------------------

    def desired(self, dpid: int) -> dict[int, FlowSpec]:
        return dict(self._desired.get(dpid, {}))

    def is_master(self, dpid: int) -> bool:
        return dpid in self._mastered

    def flow_errors(self) -> dict[tuple[int, str], str]:
        """The rows to report: (dpid, flow id) -> the switch's error."""
        return dict(self._errors)

    def last_audit(self, dpid: int) -> Audited | None:
        return self._audits.get(dpid)

    def flow_states(self) -> dict[int, dict[str, FlowState]]:
        """dpid -> flow id -> what the last audit of that switch (one we master) saw."""
        return {d: dict(s) for d, s in self._states.items() if d in self._mastered}

    # --- the desired set ---------------------------------------------------------------

    def flows_loaded(self, by_dpid: Mapping[int, Mapping[int, FlowSpec]],
                     now_ms: int) -> list[Output]:
        """The whole desired set was read (dpid -> cookie -> spec); audits may start."""
        self.desired_known = True
        out: list[Output] = []
        for dpid in sorted(set(self._desired) | set(by_dpid)):
            want = by_dpid.get(dpid, {})
            if self._desired.get(dpid, {}) != want:
                out += self.set_desired(dpid, want, now_ms)
        return out

    def set_desired(self, dpid: int, specs: Mapping[int, FlowSpec],
                    now_ms: int) -> list[Output]:
        """Replace the desired flows of one switch; a master sends the difference (deletes
        first, then adds). Checked whole before anything changes."""
        for cookie, spec in specs.items():
            _check(dpid, cookie, spec)
        gone = [(dpid, c, None) for c in self._desired.get(dpid, {}) if c not in specs]
        return self.flows_changed([*gone, *((dpid, c, s) for c, s in specs.items())], now_ms)

    def flows_changed(self, changes: Iterable[tuple[int, int, FlowSpec | None]],
                      now_ms: int) -> list[Output]:
        """Rows changed: (dpid, cookie, spec, or None for a deleted row), in order. An
        unchanged row is skipped; a changed or deleted one forgets its flow error (the
        switch is asked again, or the flow is gone).

        Only the last change of a flow in one call counts: a row deleted and given again
        in the same batch (the node link's watch re-delivers rows that way when it
        restarts) is one change, or none if it came back unchanged — the switch keeps the
        flow and its counters instead of a delete and an add of the same flow.
        """
        last: dict[tuple[int, int], FlowSpec | None] = {}
        for dpid, cookie, spec in changes:
            last.pop((dpid, cookie), None)  # ordered by each flow's last change
            last[(dpid, cookie)] = spec
        out: list[Output] = []
        for (dpid, cookie), spec in last.items():
            table = self._desired.setdefault(dpid, {})
            if spec is None:
                old = table.pop(cookie, None)
                if old is None:
                    continue
                self._errors.pop((dpid, old.flow_id), None)
                intent: FlowAdd | FlowDelete = FlowDelete(dpid, Match(), cookie, ALL_BITS)
            else:
                _check(dpid, cookie, spec)
                if table.get(cookie) == spec:
                    continue
                table[cookie] = spec
                self._errors.pop((dpid, spec.flow_id), None)
                intent = spec.to_intent()
            if dpid in self._mastered:
                out += self._emit(dpid, [intent], now_ms)
        return out

    # --- mastership --------------------------------------------------------------------

    def became_master(self, dpid: int, now_ms: int) -> list[Output]:
        """The switch confirmed us as MASTER: send every desired flow, audit soon.

        ADD replaces an identical flow without a gap, so nothing is wiped; the audit
        then removes what should not be there. (Called again without lost_master, it
        starts over the same way.)
        """
        self._mastered[dpid] = _Mastered(next_audit_ms=now_ms + self.config.first_audit_delay_ms)
        return self._emit(dpid, [s.to_intent() for s in self._desired.get(dpid, {}).values()],
                          now_ms)

    def lost_master(self, dpid: int) -> list[Output]:
        """We no longer master the switch. An audit in flight is forgotten: its reply
        (if any) is not waited for when we become master again."""
        self._mastered.pop(dpid, None)
        self._states.pop(dpid, None)
        return []

    # --- the switch --------------------------------------------------------------------

    def switch_error(self, dpid: int, cookie: int, error_type: int,
                     error_code: int) -> list[Output]:
        """The switch refused the flow-mod with this cookie. Ours: recorded and reported."""
        spec = self._desired.get(dpid, {}).get(cookie)
        if spec is None:
            return []  # not a desired replicated flow (a deleted one, or another app's)
        error = f"type {error_type} code {error_code}"
        self._errors[(dpid, spec.flow_id)] = error
        return [FlowRefused(dpid, spec.flow_id, cookie, error)]

    def flow_stats(self, dpid: int, flows: Iterable[InstalledFlow], more: bool,
                   now_ms: int) -> list[Output]:
        """Part of the reply to our stats request (`more`: further parts follow)."""
        state = self._mastered.get(dpid)
        if state is None or state.requested_ms is None:
            return []  # not ours to audit, or not asked for
        state.collected.extend(flows)
        if more:
            return []
        return self._audit(dpid, state, now_ms)

    def tick(self, now_ms: int) -> list[Output]:
        """Call often (every ~100 ms): asks mastered switches for their flows when due."""
        if not self.desired_known:
            return []
        out: list[Output] = []
        for dpid, state in sorted(self._mastered.items()):
            if now_ms < state.next_audit_ms:
                continue  # not due, or a request is outstanding and not yet timed out
            # The next request is scheduled when this one is answered (see _audit): with
            # many flows, reading a reply can take longer than the interval.
            state.next_audit_ms = now_ms + self.config.audit_timeout_ms
            state.requested_ms = now_ms
            state.collected = []
            out.append(FlowStatsRequest(dpid, FLOW_COOKIE_SPACE, FLOW_COOKIE_MASK))
        return out

    # --- internals ---------------------------------------------------------------------

    def _audit(self, dpid: int, state: _Mastered, now_ms: int) -> list[Output]:
        assert state.requested_ms is not None
        since = state.requested_ms
        collected, state.collected = state.collected, []
        state.requested_ms = None
        state.next_audit_ms = now_ms + self.config.audit_interval_ms
        desired = self._desired.get(dpid, {})
        # A refused flow is not re-sent every audit; a change of its row is (set_desired).
        refused = [c for c, s in desired.items() if (dpid, s.flow_id) in self._errors] \
            if self._errors else []
        # Flows sent shortly before (or since) the request may not be in the reply yet.
        floor = since - self.config.audit_grace_ms
        state.sent_ms = {c: at for c, at in state.sent_ms.items() if at >= floor}
        result = audit(dpid, desired, collected, in_flight=refused + list(state.sent_ms))
        if self._errors:
            installed = {f.cookie for f in collected}
            changed = set(result.changed)
            for cookie, spec in desired.items():
                if cookie in installed and spec.flow_id not in changed:
                    self._errors.pop((dpid, spec.flow_id), None)  # the switch holds it now
        self._states[dpid] = _states(dpid, desired, collected, result, state.sent_ms,
                                     self._errors)
        done = Audited(dpid, result.installed, tuple(result.missing), tuple(result.changed),
                       tuple(result.unexpected))
        self._audits[dpid] = done
        assert all(i.dpid == dpid for i in result.intents)
        return [done, *self._emit(dpid, result.intents, now_ms)]

    def _emit(self, dpid: int, intents: list[FlowAdd | FlowDelete],
              now_ms: int) -> list[Output]:
        state = self._mastered[dpid]
        for intent in intents:
            assert intent.dpid == dpid and \
                intent.cookie & FLOW_COOKIE_MASK == FLOW_COOKIE_SPACE, intent
            state.sent_ms[intent.cookie] = now_ms
        return list(intents)


def _states(dpid: int, desired: Mapping[int, FlowSpec], collected: list[InstalledFlow],
            result, sent_ms: Mapping[int, int],
            errors: Mapping[tuple[int, str], str]) -> dict[str, FlowState]:
    """What an audit saw of each desired flow: installed as desired (with its counters),
    refused by the switch, just sent (pending), or missing/different (re-sent now)."""
    seen = {f.cookie: f for f in collected}
    repaired = set(result.missing) | set(result.changed)
    out: dict[str, FlowState] = {}
    for cookie, spec in desired.items():
        error = errors.get((dpid, spec.flow_id))
        flow = seen.get(cookie)
        if error is not None:
            out[spec.flow_id] = FlowState(f"failed: {error}")
        elif spec.flow_id in repaired:
            out[spec.flow_id] = FlowState("missing")
        elif flow is not None:
            out[spec.flow_id] = FlowState("installed", flow.packets, flow.bytes)
        elif cookie in sent_ms:
            out[spec.flow_id] = FlowState("pending")
        else:  # expired (a flow with timeouts is installed once): not on the switch
            out[spec.flow_id] = FlowState("missing")
    return out


def _check(dpid: int, cookie: int, spec: FlowSpec) -> None:
    if spec.dpid != dpid or spec.cookie != cookie:
        raise ValueError(f"flow {spec.flow_id!r} of switch {spec.dpid:016x} (cookie "
                         f"{spec.cookie:#x}) given as {dpid:016x}/{cookie:#x}")
