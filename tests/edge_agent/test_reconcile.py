"""The reconciler as tables: (desired, actual, tracks, now) -> actions, and back-off runs."""

from __future__ import annotations

import pytest

from edge_agent.reconcile import (
    Actual,
    Build,
    Desired,
    Limits,
    Report,
    Restart,
    Start,
    Stop,
    Track,
    failed,
    reconcile,
    state_text,
)
from edge_agent.spec import parse_spec

L = Limits(boot_ms_max=10_000, unhealthy_ms_max=5_000, backoff_ms_min=1_000,
           backoff_ms_max=8_000, stable_ms=20_000)
WEB = parse_spec({"name": "web", "nics": [
    {"switch": "br", "mac": "52:54:00:00:00:01", "ipv4": "10.0.0.1/24"}]})
STOPPED = parse_spec({"name": "web", "state": "stopped"})


def want(spec=WEB, h="h1", error=""):
    return {"web": Desired("web", spec, h if spec else "", error, 2)}


def vm(h="h1", alive=True, ready=True, healthy=True, started_ms=0, exit_reason=""):
    return {"web": Actual("web", h, alive, ready, healthy, started_ms, exit_reason)}


RUN = state_text("running", image_hash="h1")
# (id, desired, actual, tracks, now_ms, image_ready, expected actions)
CASES = [
    ("not built yet", want(), {}, {}, 0, False, [Build(), Report("web", "building", 2)]),
    ("start", want(), {}, {}, 0, True, [Start("web", WEB, "h1"), Report("web", "starting", 2)]),
    ("booting", want(), vm(ready=False, healthy=None), {}, 5_000, True,
     [Report("web", "starting", 2)]),
    ("boot too slow", want(), vm(ready=False, healthy=None), {}, 10_001, True,
     [Stop("web", "not ready 10 s after launch (see its console log)"),
      Report("web", "failed: not ready 10 s after launch (see its console log)", 2)]),
    ("running", want(), vm(), {}, 1, True, [Report("web", RUN, 2)]),
    ("running, reported already", want(), vm(), {"web": Track(reported=RUN)}, 1, True, []),
    ("unhealthy", want(), vm(healthy=False), {}, 1, True,
     [Report("web", "unhealthy image h1", 2)]),
    ("unhealthy too long", want(), vm(healthy=False),
     {"web": Track(unhealthy_since_ms=0, reported="unhealthy image h1")}, 5_001, True,
     [Restart("web", WEB, "h1", "health check failing for 5 s"),
      Report("web", "starting", 2)]),
    ("drift", want(h="h2"), vm(), {"web": Track(reported=RUN)}, 1, True,
     [Restart("web", WEB, "h2", "desired state changed"), Report("web", "starting", 2)]),
    ("drift, new image not built", want(h="h2"), vm(), {"web": Track(reported=RUN)}, 1,
     False, [Build(), Report("web", "building image h1", 2)]),
    ("panicked", want(), vm(alive=False, exit_reason="kernel panic: VFS"), {}, 1, True,
     [Stop("web", "kernel panic: VFS"), Report("web", "failed: kernel panic: VFS", 2)]),
    ("desired stopped", want(STOPPED), vm(), {}, 1, True,
     [Stop("web", "desired stopped"), Report("web", "stopped", 2)]),
    ("not placed here any more", {}, vm(), {}, 1, True, [Stop("web", "not placed on this node")]),
    ("placement not decided", want(None, error="pending: placement/web/2 not decided yet"),
     vm(), {}, 1, True, [Stop("web", "cannot run here"),
                         Report("web", "pending: placement/web/2 not decided yet", 2)]),
    ("invalid spec", want(None, error="invalid spec: image: 'x'"), vm(), {}, 1, True,
     [Stop("web", "cannot run here"), Report("web", "failed: invalid spec: image: 'x'", 2)]),
]


@pytest.mark.parametrize(("desired", "actual", "tracks", "now", "ready", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_table(desired, actual, tracks, now, ready, expected):
    assert reconcile(desired, actual, tracks, now, ready, L).actions == expected


def test_back_off_doubles_up_to_the_cap_and_resets_once_stable():
    tracks: dict = {}
    waits = []
    now = 0
    for i in range(5):
        tracks = failed(tracks, "web", "boom", now, L)
        waits.append(tracks["web"].retry_at_ms - now)
        plan = reconcile(want(), {}, tracks, now + waits[-1] - 1, True, L)
        assert not any(isinstance(a, Start) for a in plan.actions)  # still waiting
        assert (Report("web", "failed: boom", 2) in plan.actions) == (i == 0)  # once
        tracks = plan.tracks
        plan = reconcile(want(), {}, tracks, now + waits[-1], True, L)
        assert Start("web", WEB, "h1") in plan.actions
        now += waits[-1]
    assert waits == [1_000, 2_000, 4_000, 8_000, 8_000]
    # healthy for stable_ms: failures forgotten
    tracks = reconcile(want(), vm(), tracks, now, True, L).tracks
    tracks = reconcile(want(), vm(), tracks, now + L.stable_ms, True, L).tracks
    assert tracks["web"].failures == 0


def test_two_services_with_one_address_on_a_node_only_the_first_starts():
    other = parse_spec({"name": "web2", "nics": [
        {"switch": "br", "mac": "52:54:00:00:00:09", "ipv4": "10.0.0.1/24"}]})
    desired = {**want(), "web2": Desired("web2", other, "h9", "", 1)}
    actions = reconcile(desired, {}, {}, 0, True, L).actions
    assert Start("web", WEB, "h1") in actions
    assert not any(isinstance(a, Start) and a.name == "web2" for a in actions)
    assert Report("web2", "failed: a NIC address is also used by service 'web' on this node",
                  1) in actions


def test_order_is_builds_stops_starts_reports():
    desired = {"a": Desired("a", parse_spec({"name": "a"}), "ha"),
               "b": Desired("b", parse_spec({"name": "b"}), "hb")}
    actual = {"b": Actual("b", "old", True, True, True, 0), "z": Actual("z", "x", True, True,
                                                                        True, 0)}
    kinds = [type(a).__name__ for a in reconcile(desired, actual, {}, 0, True, L).actions]
    assert kinds == ["Stop", "Start", "Restart", "Report", "Report"]
