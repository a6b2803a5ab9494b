"""The agent's reconciler: desired services for this node and the VMs that actually run, in;
the actions that bring one to the other, out. Pure: time is a parameter, no I/O.

    plan = reconcile(desired, actual, tracks, now_ms, image_ready, limits)

The driver (edge_agent/driver.py) applies `plan.actions` in order, then keeps `plan.tracks`
for the next call (the back-off and what was last reported per service); an action that
fails is fed back with `failed(tracks, name, reason, now_ms, limits)`. Rules, per service:

- desired running, nothing runs: `Build` the image if it is not ready (report `building`),
  else `Start` it (report `starting`) unless a back-off after a failure is still running
  (report stays `failed: ...`);
- it runs with another hash than desired (drift: a new spec or image): `Restart`;
- it runs but has not said it is ready within `boot_ms_max`: `Stop`, `failed: ...`;
- its health check fails: `unhealthy`, restarted after `unhealthy_ms_max`;
- its process is gone (a kernel panic makes QEMU exit, -no-reboot): `Stop` (tidy its taps
  and files), `failed: ...`, started again after the back-off;
- desired stopped: `Stop` if it runs, report `stopped`;
- a VM runs that is not desired here (removed, placed elsewhere, or an orphan of ours):
  `Stop`, nothing reported (the service is not this node's to report);
- a spec this node cannot run (invalid, or a MAC/IP another service here has): `failed: ...`;
  one waiting for its placement decision: `pending: ...` (the error given as it is).
Reports are emitted only when the text changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from edge_agent.spec import ServiceSpec

__all__ = [
    "Actual",
    "Build",
    "Desired",
    "Limits",
    "Plan",
    "Report",
    "Restart",
    "Start",
    "Stop",
    "Track",
    "failed",
    "reconcile",
    "state_text",
]


@dataclass(frozen=True)
class Limits:
    boot_ms_max: int = 30_000  # launch to the guest's ready line
    unhealthy_ms_max: int = 30_000  # failing health checks before a restart
    backoff_ms_min: int = 1_000  # first retry after a failure, doubled per failure
    backoff_ms_max: int = 60_000
    stable_ms: int = 60_000  # healthy this long: the failure count starts again


@dataclass(frozen=True)
class Desired:
    """A service placed on this node: its spec and hash, or why it cannot run here."""

    name: str
    spec: ServiceSpec | None
    hash: str = ""  # spec + image: what a VM for it must run
    error: str = ""  # set when spec is None
    generation: int = 0


@dataclass(frozen=True)
class Actual:
    """A VM this agent owns, as found (pidfile, /proc, QMP, console log)."""

    name: str
    hash: str
    alive: bool  # its QEMU process runs
    ready: bool  # the guest said it is up
    healthy: bool | None  # last health result from the guest (None: none yet)
    started_ms: int
    exit_reason: str = ""  # why it stopped (from its console log), when not alive


@dataclass(frozen=True)
class Track:
    """What the reconciler remembers about a service between calls."""

    failures: int = 0
    retry_at_ms: int = 0
    last_error: str = ""
    reported: str = ""  # the state text last reported
    healthy_since_ms: int = -1
    unhealthy_since_ms: int = -1


@dataclass(frozen=True)
class Build:
    pass


@dataclass(frozen=True)
class Start:
    name: str
    spec: ServiceSpec
    hash: str


@dataclass(frozen=True)
class Stop:
    name: str
    reason: str
    urgent: bool = False  # no graceful powerdown (a lost lease: the time is bounded)


@dataclass(frozen=True)
class Restart:
    name: str
    spec: ServiceSpec
    hash: str
    reason: str


@dataclass(frozen=True)
class Report:
    name: str
    state: str  # the full state text (state_text)
    generation: int = 0


Action = Build | Start | Stop | Restart | Report


@dataclass(frozen=True)
class Plan:
    actions: list[Action] = field(default_factory=list)
    tracks: dict[str, Track] = field(default_factory=dict)


def state_text(state: str, reason: str = "", image_hash: str = "") -> str:
    """`running image 0123456789abcdef`, `failed: reason`: what placements.state holds."""
    text = f"{state}: {reason}" if reason else state
    return f"{text} image {image_hash[:16]}" if image_hash else text


def failed(tracks: Mapping[str, Track], name: str, reason: str, now_ms: int,
           limits: Limits = Limits()) -> dict[str, Track]:
    """tracks with a failure of name recorded: the next start waits for the back-off."""
    t = tracks.get(name, Track())
    backoff = min(limits.backoff_ms_min << min(t.failures, 30), limits.backoff_ms_max)
    out = dict(tracks)
    out[name] = replace(t, failures=t.failures + 1, retry_at_ms=now_ms + backoff,
                        last_error=reason, healthy_since_ms=-1, unhealthy_since_ms=-1)
    return out


def _clashes(desired: Mapping[str, Desired]) -> dict[str, str]:
    """Services here whose MAC or IPv4 address an earlier one (by name) has: not started."""
    seen: dict[str, str] = {}
    bad: dict[str, str] = {}
    for name in sorted(desired):
        spec = desired[name].spec
        if spec is None or spec.state != "running":
            continue
        mine = [v for n in spec.nics for v in (n.mac, n.address)]
        holder = next((seen[v] for v in mine if v in seen), None)
        if holder is not None:
            bad[name] = f"a NIC address is also used by service {holder!r} on this node"
            continue
        for v in mine:
            seen[v] = name
    return bad


def reconcile(desired: Mapping[str, Desired], actual: Mapping[str, Actual],
              tracks: Mapping[str, Track], now_ms: int, image_ready: bool,
              limits: Limits = Limits()) -> Plan:
    """The actions for one round (order: builds, stops, restarts, starts, reports)."""
    builds: list[Action] = []
    stops: list[Action] = []
    starts: list[Action] = []
    reports: list[Action] = []
    new: dict[str, Track] = {}
    clashes = _clashes(desired)

    def report(name: str, text: str, generation: int) -> None:
        t = new.get(name, Track())
        if t.reported != text:
            reports.append(Report(name, text, generation))
            new[name] = replace(t, reported=text)

    for name in sorted(set(actual) - set(desired)):
        stops.append(Stop(name, "not placed on this node"))

    for name in sorted(desired):
        d = desired[name]
        a = actual.get(name)
        t = tracks.get(name, Track())
        new[name] = t
        if d.spec is None or name in clashes:
            if a is not None:
                lost = d.error.startswith("lease lost")
                stops.append(Stop(name, d.error if lost else "cannot run here", lost))
            why = d.error or clashes[name]
            report(name, why if why.startswith("pending") else state_text("failed", why),
                   d.generation)
            continue
        if d.spec.state == "stopped":
            if a is not None:
                stops.append(Stop(name, "desired stopped"))
            report(name, "stopped", d.generation)
            continue
        if a is not None and not a.alive:
            reason = a.exit_reason or "the VM exited"
            stops.append(Stop(name, reason))  # tidies taps and files
            new = {**new, **failed(new, name, reason, now_ms, limits)}
            report(name, state_text("failed", reason), d.generation)
            continue
        if a is not None and a.hash != d.hash:
            if not image_ready:
                builds.append(Build())
                report(name, state_text("building", image_hash=a.hash), d.generation)
                continue
            starts.append(Restart(name, d.spec, d.hash, "desired state changed"))
            new[name] = replace(t, healthy_since_ms=-1, unhealthy_since_ms=-1)
            report(name, "starting", d.generation)
            continue
        if a is not None:
            if not a.ready:
                if now_ms - a.started_ms > limits.boot_ms_max:
                    reason = f"not ready {limits.boot_ms_max // 1000} s after launch " \
                             "(see its console log)"
                    stops.append(Stop(name, reason))
                    new = {**new, **failed(new, name, reason, now_ms, limits)}
                    report(name, state_text("failed", reason), d.generation)
                else:
                    report(name, "starting", d.generation)
                continue
            if a.healthy is False:
                since = t.unhealthy_since_ms if t.unhealthy_since_ms >= 0 else now_ms
                new[name] = replace(t, unhealthy_since_ms=since, healthy_since_ms=-1)
                if now_ms - since > limits.unhealthy_ms_max:
                    reason = f"health check failing for {limits.unhealthy_ms_max // 1000} s"
                    starts.append(Restart(name, d.spec, d.hash, reason))
                    new = {**new, **failed(new, name, reason, now_ms, limits)}
                    report(name, "starting", d.generation)
                else:
                    report(name, state_text("unhealthy", image_hash=a.hash), d.generation)
                continue
            since = t.healthy_since_ms if t.healthy_since_ms >= 0 else now_ms
            stable = now_ms - since >= limits.stable_ms
            new[name] = replace(t, healthy_since_ms=since, unhealthy_since_ms=-1,
                                failures=0 if stable else t.failures)
            report(name, state_text("running", image_hash=a.hash), d.generation)
            continue
        # nothing runs
        if not image_ready:
            builds.append(Build())
            report(name, "building", d.generation)
            continue
        if t.failures and now_ms < t.retry_at_ms:
            report(name, state_text("failed", t.last_error), d.generation)
            continue
        starts.append(Start(name, d.spec, d.hash))
        report(name, "starting", d.generation)
    return Plan(builds[:1] + stops + starts + reports, new)
