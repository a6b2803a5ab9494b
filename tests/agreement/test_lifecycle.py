"""Lifecycle slots service/<name>/<n> (decision 0082): legal transitions as a table, the
plans a deploy proposes, and acceptors that refuse a skipped or stale transition."""

from __future__ import annotations

import pytest

from controller.agreement import Reason, Refused, Status
from controller.agreement.lifecycle import (
    ABSENT,
    RUNNING,
    STOPPED,
    LifeState,
    Transition,
    check_lifecycle,
    plan_transitions,
    state_after,
)

from .conftest import Net

H1, H2 = "1" * 64, "2" * 64


def t(action, desired, prev):
    return {"action": action, "desired": desired, "prev": prev}


DEPLOYED = t("deploy", H1, "")
STOPPED_H1 = t("stop", H1, H1)
REMOVED = t("remove", "", H1)

CASES = [
    # (slot, value, decided n - 1, refused reason or None, says)
    ("service/web/1", DEPLOYED, None, None, ""),
    ("service/web/2", t("upgrade", H2, H1), DEPLOYED, None, ""),
    ("service/web/2", t("stop", H1, H1), DEPLOYED, None, ""),
    ("service/web/2", t("remove", "", H1), DEPLOYED, None, ""),
    ("service/web/3", t("deploy", H2, H1), STOPPED_H1, None, ""),  # start again, new object
    ("service/web/3", t("remove", "", H1), STOPPED_H1, None, ""),
    ("service/web/4", t("deploy", H2, ""), REMOVED, None, ""),  # back after a remove
    # illegal transitions
    ("service/web/1", t("upgrade", H1, ""), None, Reason.BAD_LIFECYCLE,
     "upgrade is not a transition from absent"),
    ("service/web/1", t("remove", "", ""), None, Reason.BAD_LIFECYCLE,
     "remove is not a transition from absent"),
    ("service/web/2", t("deploy", H2, H1), DEPLOYED, Reason.BAD_LIFECYCLE,
     "deploy is not a transition from running"),
    ("service/web/3", t("stop", H1, H1), STOPPED_H1, Reason.BAD_LIFECYCLE,
     "stop is not a transition from stopped"),
    ("service/web/3", t("upgrade", H2, H1), STOPPED_H1, Reason.BAD_LIFECYCLE,
     "upgrade is not a transition from stopped"),
    ("service/web/2", t("upgrade", H1, H1), DEPLOYED, Reason.BAD_LIFECYCLE,
     "upgrade to the object it already has"),
    ("service/web/2", t("stop", H2, H1), DEPLOYED, Reason.BAD_LIFECYCLE, "stop keeps"),
    # planned against a stale view
    ("service/web/2", t("upgrade", H2, "3" * 64), DEPLOYED, Reason.BAD_LIFECYCLE,
     "service/web/2.prev: 3333333333333333 but the desired state after service/web/1 is "
     "1111111111111111"),
    ("service/web/1", t("deploy", H1, H2), None, Reason.BAD_LIFECYCLE, ".prev: 2222"),
    # order
    ("service/web/3", t("upgrade", H2, H1), None, Reason.LIFECYCLE_AHEAD,
     "service/web/2 is not decided here"),
    # malformed
    ("service/web", DEPLOYED, None, Reason.BAD_LIFECYCLE, "not service/<name>/<n>"),
    ("service/web/0", DEPLOYED, None, Reason.BAD_LIFECYCLE, "not service/<name>/<n>"),
    ("service/Web/1", DEPLOYED, None, Reason.BAD_LIFECYCLE, "not service/<name>/<n>"),
    ("service/web/1", "deploy", None, Reason.BAD_LIFECYCLE, "must be a map"),
    ("service/web/1", {**DEPLOYED, "at": 1}, None, Reason.BAD_LIFECYCLE,
     "service/web/1.at: unknown key"),
    ("service/web/1", {"action": "deploy", "desired": H1}, None, Reason.BAD_LIFECYCLE,
     ".prev: missing"),
    ("service/web/1", t("start", H1, ""), None, Reason.BAD_LIFECYCLE, ".action: one of"),
    ("service/web/1", t("deploy", "x", ""), None, Reason.BAD_LIFECYCLE, ".desired: 64"),
    ("service/web/1", t("deploy", "", ""), None, Reason.BAD_LIFECYCLE,
     "\"\" for remove and only for remove"),
    ("service/web/2", t("remove", H1, H1), DEPLOYED, Reason.BAD_LIFECYCLE, "only for remove"),
]


@pytest.mark.parametrize("slot,value,previous,reason,says", CASES)
def test_lifecycle_check_table(slot, value, previous, reason, says):
    if reason is None:
        assert check_lifecycle(slot, value, previous).to_value() == value
        return
    with pytest.raises(Refused) as e:
        check_lifecycle(slot, value, previous)
    assert e.value.reason is reason and says in e.value.detail, e.value.detail


PLANS = [
    # (state, desired, phase, actions proposed)
    (LifeState(), H1, RUNNING, [("deploy", H1, "")]),
    (LifeState(), H1, STOPPED, [("deploy", H1, ""), ("stop", H1, H1)]),
    (LifeState(1, RUNNING, H1), H1, RUNNING, []),
    (LifeState(1, RUNNING, H1), H2, RUNNING, [("upgrade", H2, H1)]),
    (LifeState(1, RUNNING, H1), H1, STOPPED, [("stop", H1, H1)]),
    (LifeState(1, RUNNING, H1), H2, STOPPED, [("upgrade", H2, H1), ("stop", H2, H2)]),
    (LifeState(2, STOPPED, H1), H1, STOPPED, []),
    (LifeState(2, STOPPED, H1), H1, RUNNING, [("deploy", H1, H1)]),
    (LifeState(2, STOPPED, H1), H2, STOPPED, [("deploy", H2, H1), ("stop", H2, H2)]),
    (LifeState(3, ABSENT, ""), H2, RUNNING, [("deploy", H2, "")]),
]


@pytest.mark.parametrize("state,desired,phase,want", PLANS)
def test_a_deploy_plans_legal_transitions(state, desired, phase, want):
    plan = plan_transitions(state, desired, phase)
    assert [(p.action, p.desired, p.prev) for p in plan] == want
    # every plan is accepted in order by the voters' check, and ends where it was asked
    previous = None if state.n == 0 else Transition(
        "deploy" if state.phase == RUNNING else "stop" if state.phase == STOPPED else "remove",
        state.desired, state.desired if state.phase != ABSENT else H1).to_value()
    cur = state
    for i, p in enumerate(plan, start=state.n + 1):
        check_lifecycle(f"service/web/{i}", p.to_value(), previous)
        previous, cur = p.to_value(), state_after(i, p.to_value())
    assert (cur.phase, cur.desired) == (phase, desired)


def _decide(net: Net, i: int, slot: str, value):
    p = net[i].agreement.propose(slot, value, net.now_ms)
    net.run(200, until=lambda: p.done)
    return p


def test_voters_agree_on_one_sequence_of_states(net3: Net):
    assert _decide(net3, 0, "service/web/1", DEPLOYED).outcome.status is Status.DECIDED
    # two operators at once: one upgrade to H2, one stop of H1; one slot, one decision
    a = net3[1].agreement.propose("service/web/2", t("upgrade", H2, H1), net3.now_ms)
    b = net3[2].agreement.propose("service/web/2", t("stop", H1, H1), net3.now_ms)
    net3.run(400, until=lambda: a.done and b.done)
    assert a.outcome.status is b.outcome.status is Status.DECIDED
    assert a.outcome.value == b.outcome.value
    won = a.outcome.value
    net3.run(100, until=lambda: all(n.agreement.decided("service/web/2") for n in net3.nodes))
    # the loser's plan is now stale: proposing it for slot 3 is refused at once
    lost = t("stop", H1, H1) if won["action"] == "upgrade" else t("upgrade", H2, H1)
    again = net3[0].agreement.propose("service/web/3", lost, net3.now_ms)
    assert again.outcome.status is Status.REFUSED and "bad_lifecycle" in again.outcome.reason
    # a skipped slot is refused by the proposer's own check too
    skip = net3[0].agreement.propose("service/web/5", REMOVED, net3.now_ms)
    assert skip.outcome.status is Status.REFUSED and "lifecycle_ahead" in skip.outcome.reason
    assert all(n.agreement.decided("service/web/2").value == won for n in net3.nodes)
