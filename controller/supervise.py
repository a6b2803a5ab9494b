"""The supervisor of a site's daemons as a pure state machine: events in, effects out.

`synod up` (controller/up.py) owns the processes; this module only decides. The driver
feeds it what happened — a daemon spawned, became ready, exited; a stop was asked; time
passed — each with `now_ms`, and carries out the effects it returns, in order:

    Spawn(name)     start the daemon (report `spawn_failed` if it cannot be started)
    Terminate(name) send it SIGTERM
    Kill(name)      send it SIGKILL
    Ready()         every daemon is ready for the first time (announce it once)
    Exit(code, why) stop supervising: every daemon has exited; leave with code

Policy, stated once:
- Start in the given order; a daemon is spawned only once the ones before it are ready
  (the controller needs the node's API).
- Starting up, a daemon that exits or is not ready within `ready_timeout_ms` fails the
  whole start: the others are stopped and Exit(1, why) names the daemon and the step.
- Once everything was ready, a daemon that exits is restarted after a back-off of
  `backoff_ms_min * 2**(crashes - 1)`, capped at `backoff_ms_max`; a daemon ready for
  `stable_ms` has its crash count reset; `restarts_max` crashes in a row (0: no limit)
  stop the site with Exit(1, why).
- A stop: SIGTERM to every running daemon in reverse order, SIGKILL to those still
  running `stop_timeout_ms` later, Exit(0) when all have exited.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Exit",
    "Kill",
    "Policy",
    "Ready",
    "Spawn",
    "State",
    "Supervisor",
    "SupervisorError",
    "Terminate",
    "backoff_ms",
]


class SupervisorError(Exception):
    """The driver misused the supervisor (an event for a daemon in the wrong state)."""


@dataclass(frozen=True)
class Policy:
    ready_timeout_ms: int = 60_000
    backoff_ms_min: int = 500
    backoff_ms_max: int = 30_000
    stable_ms: int = 60_000
    restarts_max: int = 10  # 0: never give up
    stop_timeout_ms: int = 10_000

    def __post_init__(self) -> None:
        assert 0 < self.backoff_ms_min <= self.backoff_ms_max, self
        assert self.ready_timeout_ms > 0 and self.stop_timeout_ms > 0, self


@dataclass(frozen=True)
class Spawn:
    name: str


@dataclass(frozen=True)
class Terminate:
    name: str


@dataclass(frozen=True)
class Kill:
    name: str


@dataclass(frozen=True)
class Ready:
    pass


@dataclass(frozen=True)
class Exit:
    code: int
    reason: str


Effect = Spawn | Terminate | Kill | Ready | Exit


class State(enum.Enum):
    WAITING = "waiting"  # not spawned yet (start-up order, or back-off before a restart)
    STARTING = "starting"  # spawned, not ready yet
    RUNNING = "running"  # ready
    STOPPING = "stopping"  # SIGTERM sent
    EXITED = "exited"


def backoff_ms(crashes: int, policy: Policy) -> int:
    """Delay before restarting a daemon after its `crashes`-th crash in a row (>= 1)."""
    assert crashes >= 1, crashes
    return min(policy.backoff_ms_max, policy.backoff_ms_min << min(crashes - 1, 40))


@dataclass
class _Daemon:
    name: str
    state: State = State.WAITING
    since_ms: int = 0  # when it entered `state`
    crashes: int = 0  # in a row, since it was last stable
    restart_at_ms: int | None = None  # set while waiting out a back-off
    restarts: int = 0  # in total, for status
    killed: bool = False  # SIGKILL sent since it was last spawned


class Supervisor:
    """Decides starts, restarts and stops of the named daemons (see the module docstring)."""

    def __init__(self, names: Sequence[str], policy: Policy) -> None:
        assert names and len(set(names)) == len(names), names
        self.policy = policy
        self.daemons = {n: _Daemon(n) for n in names}
        self.order = list(names)
        self.started = False  # start() was called
        self.all_ready = False  # every daemon was ready at once (start-up is over)
        self.stopping: tuple[int, str] | None = None  # (since_ms, reason)
        self.exit_code = 0
        self.finished = False  # Exit was returned

    # ------------------------------------------------------------------ events
    def start(self, now_ms: int) -> list[Effect]:
        if self.started:
            raise SupervisorError("start() called twice")
        self.started = True
        return self._advance(now_ms)

    def spawn_failed(self, name: str, why: str, now_ms: int) -> list[Effect]:
        """The driver could not even start the process (no such program, ...)."""
        d = self._get(name)
        if d.state is not State.STARTING:
            raise SupervisorError(f"{name}: spawn failed while {d.state.value}")
        self._enter(d, State.EXITED, now_ms)
        return self._failed(d, f"{name}: cannot start: {why}", now_ms)

    def ready(self, name: str, now_ms: int) -> list[Effect]:
        d = self._get(name)
        if d.state is not State.STARTING:
            return []  # a late ready line after a stop: nothing to do
        self._enter(d, State.RUNNING, now_ms)
        return self._advance(now_ms)

    def exited(self, name: str, code: int, now_ms: int) -> list[Effect]:
        d = self._get(name)
        if d.state is State.EXITED or d.state is State.WAITING:
            raise SupervisorError(f"{name}: exited while {d.state.value}")
        was = d.state
        self._enter(d, State.EXITED, now_ms)
        if self.stopping or was is State.STOPPING:
            return self._advance(now_ms)
        if not self.all_ready:
            step = "before it was ready" if was is State.STARTING else "while the site started"
            return self._failed(d, f"{name} exited with code {code} {step}", now_ms)
        return self._crashed(d, f"{name} exited with code {code}", now_ms)

    def stop(self, now_ms: int, reason: str = "asked to stop") -> list[Effect]:
        if self.stopping:
            return []
        self.stopping = (now_ms, reason)
        effects: list[Effect] = []
        for name in reversed(self.order):
            d = self.daemons[name]
            if d.state in (State.STARTING, State.RUNNING):
                self._enter(d, State.STOPPING, now_ms)
                effects.append(Terminate(name))
            elif d.state is State.WAITING:
                self._enter(d, State.EXITED, now_ms)
        return effects + self._advance(now_ms)

    def tick(self, now_ms: int) -> list[Effect]:
        """Time passed: ready timeouts, back-offs that ran out, stop timeouts."""
        effects: list[Effect] = []
        for name in reversed(self.order):
            d = self.daemons[name]
            if d.state is State.STOPPING and not d.killed \
                    and now_ms - d.since_ms >= self.policy.stop_timeout_ms:
                d.killed = True  # once; the driver reports the exit
                effects.append(Kill(name))
        if self.stopping:
            return effects
        for d in self.daemons.values():
            if d.state is State.STARTING and now_ms - d.since_ms >= self.policy.ready_timeout_ms:
                self._enter(d, State.STOPPING, now_ms)
                effects.append(Terminate(d.name))
                why = f"{d.name} was not ready within {self.policy.ready_timeout_ms} ms"
                effects += (self._failed(d, why, now_ms) if not self.all_ready
                            else self._crashed(d, why, now_ms, running=True))
                if self.stopping:
                    return effects
        return effects + self._advance(now_ms)

    # ------------------------------------------------------------------ queries
    def next_deadline_ms(self) -> int | None:
        """The earliest time tick() could have something to do (None: only events)."""
        times = []
        times += [d.since_ms + self.policy.stop_timeout_ms for d in self.daemons.values()
                  if d.state is State.STOPPING and not d.killed]
        if not self.stopping:
            for d in self.daemons.values():
                if d.state is State.STARTING:
                    times.append(d.since_ms + self.policy.ready_timeout_ms)
                if d.restart_at_ms is not None:
                    times.append(d.restart_at_ms)
                if d.state is State.RUNNING and d.crashes:
                    times.append(d.since_ms + self.policy.stable_ms)
        return min(times) if times else None

    def states(self) -> dict[str, str]:
        return {n: d.state.value for n, d in self.daemons.items()}

    # ------------------------------------------------------------------ internals
    def _get(self, name: str) -> _Daemon:
        if name not in self.daemons:
            raise SupervisorError(f"unknown daemon {name!r}")
        return self.daemons[name]

    @staticmethod
    def _enter(d: _Daemon, state: State, now_ms: int) -> None:
        d.state, d.since_ms = state, now_ms

    def _failed(self, d: _Daemon, why: str, now_ms: int) -> list[Effect]:
        self.exit_code = 1
        return self.stop(now_ms, why)

    def _crashed(self, d: _Daemon, why: str, now_ms: int, running: bool = False) -> list[Effect]:
        d.crashes += 1
        if self.policy.restarts_max and d.crashes > self.policy.restarts_max:
            self.exit_code = 1
            return self.stop(now_ms, f"{why}; gave up after {d.crashes - 1} restart(s) in a row")
        delay = backoff_ms(d.crashes, self.policy)
        d.restart_at_ms = now_ms + delay
        if not running:
            self._enter(d, State.WAITING, now_ms)
        return []

    def _advance(self, now_ms: int) -> list[Effect]:
        """Spawns due now, stable-time resets, Ready, Exit: what follows from the state."""
        effects: list[Effect] = []
        if self.stopping:
            if not self.finished and all(d.state in (State.EXITED, State.WAITING)
                                       for d in self.daemons.values()):
                self.finished = True
                effects.append(Exit(self.exit_code, self.stopping[1]))
            return effects
        if not self.started:
            return effects
        for d in self.daemons.values():
            if d.state is State.RUNNING and d.crashes and \
                    now_ms - d.since_ms >= self.policy.stable_ms:
                d.crashes = 0
        if not self.all_ready:
            for name in self.order:
                d = self.daemons[name]
                if d.state is State.WAITING:
                    effects.append(self._spawn(d, now_ms))
                    break
                if d.state is not State.RUNNING:
                    break
            else:
                self.all_ready = True
                effects.append(Ready())
            return effects
        for name in self.order:
            d = self.daemons[name]
            if d.state is State.EXITED and d.restart_at_ms is not None:
                self._enter(d, State.WAITING, now_ms)
            if d.state is State.WAITING and d.restart_at_ms is not None \
                    and now_ms >= d.restart_at_ms:
                d.restarts += 1
                effects.append(self._spawn(d, now_ms))
        return effects

    def _spawn(self, d: _Daemon, now_ms: int) -> Spawn:
        self._enter(d, State.STARTING, now_ms)
        d.restart_at_ms, d.killed = None, False
        return Spawn(d.name)
