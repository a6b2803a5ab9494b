"""The supervisor's decisions (controller/supervise.py) as tables: events in, effects out."""

from __future__ import annotations

import pytest

from controller.supervise import (
    Exit,
    Kill,
    Policy,
    Ready,
    Spawn,
    Supervisor,
    SupervisorError,
    Terminate,
    backoff_ms,
)

POLICY = Policy(ready_timeout_ms=1_000, backoff_ms_min=100, backoff_ms_max=1_000,
                stable_ms=5_000, restarts_max=3, stop_timeout_ms=500)


@pytest.mark.parametrize("crashes, delay_ms", [
    (1, 100), (2, 200), (3, 400), (4, 800), (5, 1_000), (6, 1_000), (100, 1_000),
])
def test_backoff_doubles_up_to_the_cap(crashes, delay_ms):
    assert backoff_ms(crashes, POLICY) == delay_ms


def run(steps, names=("node", "controller"), policy=POLICY):
    """Feed (now_ms, event, args...) steps; return the effects of each step."""
    sup = Supervisor(names, policy)
    out = []
    for now, event, *args in steps:
        out.append(getattr(sup, event)(*args, now_ms=now) if args or event != "start"
                   else sup.start(now_ms=now))
    return sup, out


def test_start_in_order_each_after_the_previous_is_ready():
    sup, out = run([(0, "start"), (10, "ready", "node"), (20, "ready", "controller")])
    assert out == [[Spawn("node")], [Spawn("controller")], [Ready()]]
    assert sup.states() == {"node": "running", "controller": "running"}


# Each row: steps after a clean start-up (node ready at 10, controller at 20), the effects
# expected of the last step, and the exit code if the supervisor has exited.
STARTED = [(0, "start"), (10, "ready", "node"), (20, "ready", "controller")]
CASES = {
    "a crash is restarted after the first back-off": (
        [(100, "exited", "controller", 1), (150, "tick"), (200, "tick")],
        [Spawn("controller")], None),
    "nothing before the back-off ran out": (
        [(100, "exited", "controller", 1), (199, "tick")], [], None),
    "a second crash waits twice as long": (
        [(100, "exited", "node", 1), (200, "tick"), (210, "ready", "node"),
         (300, "exited", "node", 1), (499, "tick")], [], None),
    "... and is restarted then": (
        [(100, "exited", "node", 1), (200, "tick"), (210, "ready", "node"),
         (300, "exited", "node", 1), (500, "tick")], [Spawn("node")], None),
    "restarts_max crashes in a row stop the site": (
        [(100, "exited", "node", 1), (200, "tick"), (210, "ready", "node"),
         (300, "exited", "node", 1), (500, "tick"), (510, "ready", "node"),
         (600, "exited", "node", 1), (1000, "tick"), (1010, "ready", "node"),
         (1100, "exited", "node", 1)],
        [Terminate("controller")], None),
    "a daemon stable for stable_ms starts its crash count again": (
        [(100, "exited", "node", 1), (200, "tick"), (210, "ready", "node"),
         (300, "exited", "node", 1), (500, "tick"), (510, "ready", "node"),
         (5_510, "tick"), (5_600, "exited", "node", 1), (5_699, "tick")], [], None),
    "... so its next restart has the first back-off": (
        [(100, "exited", "node", 1), (200, "tick"), (210, "ready", "node"),
         (300, "exited", "node", 1), (500, "tick"), (510, "ready", "node"),
         (5_510, "tick"), (5_600, "exited", "node", 1), (5_700, "tick")],
        [Spawn("node")], None),
    "a restart that is never ready is terminated and counts as a crash": (
        [(100, "exited", "node", 1), (200, "tick"), (1_200, "tick")],
        [Terminate("node")], None),
    "stop: SIGTERM in reverse order": (
        [(100, "stop")], [Terminate("controller"), Terminate("node")], None),
    "stop: exit 0 once both exited": (
        [(100, "stop"), (110, "exited", "controller", 0), (120, "exited", "node", 0)],
        [Exit(0, "asked to stop")], 0),
    "stop: SIGKILL after stop_timeout_ms": (
        [(100, "stop"), (110, "exited", "controller", 0), (600, "tick")],
        [Kill("node")], None),
    "stop: SIGKILL once only": (
        [(100, "stop"), (600, "tick"), (700, "tick")], [], None),
    "stop during a back-off: nothing to wait for": (
        [(100, "exited", "controller", 1), (120, "stop"), (130, "exited", "node", 0)],
        [Exit(0, "asked to stop")], 0),
}


@pytest.mark.parametrize("name", list(CASES))
def test_after_start(name):
    steps, effects, code = CASES[name]
    sup, out = run(STARTED + steps)
    assert out[-1] == effects
    assert (sup.exit_code if sup.finished else None) == code


def test_gave_up_says_why_and_exits_1():
    steps = CASES["restarts_max crashes in a row stop the site"][0]
    sup, out = run(STARTED + steps + [(1200, "exited", "controller", 0)])
    assert out[-1] == [Exit(1, "node exited with code 1; gave up after 3 restart(s) in a row")]


@pytest.mark.parametrize("steps, last, reason", [
    ([(0, "start"), (50, "exited", "node", 1)],
     [Exit(1, "node exited with code 1 before it was ready")],
     "node exited with code 1 before it was ready"),
    ([(0, "start"), (10, "ready", "node"), (50, "exited", "controller", 2),
      (60, "exited", "node", 0)],
     [Exit(1, "controller exited with code 2 before it was ready")], None),
    ([(0, "start"), (1_000, "tick")],
     [Terminate("node")], None),
    ([(0, "start"), (1_000, "tick"), (1_010, "exited", "node", -15)],
     [Exit(1, "node was not ready within 1000 ms")], None),
    ([(0, "start"), (10, "spawn_failed", "node", "No such file: synod")],
     [Exit(1, "node: cannot start: No such file: synod")], None),
])
def test_a_failed_start_stops_the_site_with_the_reason(steps, last, reason):
    sup, out = run(steps)
    assert out[-1] == last


def test_a_failed_start_terminates_what_is_running():
    sup, out = run([(0, "start"), (10, "ready", "node"), (50, "exited", "controller", 2)])
    assert out[-1] == [Terminate("node")]
    assert not sup.finished


def test_next_deadline_is_the_earliest_timer():
    sup, _ = run([(0, "start")])
    assert sup.next_deadline_ms() == 1_000  # ready timeout
    sup, _ = run(STARTED + [(100, "exited", "node", 1)])
    assert sup.next_deadline_ms() == 200  # back-off
    sup, _ = run(STARTED + [(100, "stop")])
    assert sup.next_deadline_ms() == 600  # stop timeout
    sup, _ = run(STARTED)
    assert sup.next_deadline_ms() is None


def test_misuse_raises():
    sup = Supervisor(["node"], POLICY)
    sup.start(0)
    with pytest.raises(SupervisorError):
        sup.start(1)
    with pytest.raises(SupervisorError):
        sup.ready("agent", 1)
    sup.exited("node", 1, 2)
    with pytest.raises(SupervisorError):
        sup.exited("node", 1, 3)
