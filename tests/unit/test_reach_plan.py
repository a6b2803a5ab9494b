"""topologies/reach_plan.py: which pair is echoed when, and the deadline that grows with
the pairs. Driven with a fake clock and a fake network (pairs answer after a round trip
once the network is ready)."""

from __future__ import annotations

import pytest

from topologies.reach_plan import Deadline, Schedule, round_s

TICK_S = 0.05  # the prober's turn (reach.POLL_S)


def _pairs(hosts: int) -> list[tuple[str, str]]:
    names = [f"h{i}" for i in range(hosts)]
    return [(a, b) for a in names for b in names if a != b]


def _run(plan: Schedule, ready_s: float = float("inf"), rtt_s: float = 0.2,
         until_s: float = 1000.0) -> dict[tuple[str, str], list[float]]:
    """Drive the schedule on a fake clock: an echo sent at or after ready_s is answered
    rtt_s later. Returns each pair's echo times; checks the window on every turn."""
    sent: dict[tuple[str, str], list[float]] = {p: [] for p in plan.answered_s}
    replies: list[tuple[float, tuple[str, str]]] = []
    now = plan.started
    while not plan.finished(now) and now < until_s:
        for at, pair in [r for r in replies if r[0] <= now]:
            plan.answered(pair, at)
        replies = [r for r in replies if r[0] > now]
        for pair in plan.sends(now):
            assert plan.answered_s[pair] is None, "an answered pair was echoed again"
            assert not sent[pair] or now - sent[pair][-1] >= plan.try_s - 1e-9
            sent[pair].append(now)
            if now >= ready_s:
                replies.append((now + rtt_s, pair))
        awaiting = sum(1 for p, times in sent.items() if times and
                       now - times[-1] < plan.try_s and plan.answered_s[p] is None)
        assert awaiting <= plan.in_flight_max
        now = round(now + TICK_S, 6)
    return sent


def test_the_deadline_is_the_networks_budget_plus_a_round_over_the_pairs():
    assert round_s(1722) == 7.0 and round_s(56) == 1.0 and round_s(0) == 0.0
    assert round_s(512, try_s=1.0, in_flight_max=256) == 2.0
    twenty_sites = Deadline(30, 1722)
    assert twenty_sites.total_s == 37.0
    assert twenty_sites.describe() == (
        "37 s: 30 s for the network and 7 s for one round of echoes over 1,722 host pairs "
        "(3.9 ms a pair: 256 awaiting an answer at once, an echo every 1 s while "
        "unanswered)")
    assert Deadline(30, 56).total_s == 31.0  # 3 sites: the same as before, give or take 1 s


def test_while_nothing_answers_every_pair_is_echoed_once_a_round():
    # The old order re-echoed the first in_flight_max pairs forever and never the rest.
    pairs = _pairs(12)  # 132 pairs, a window of 10: a round is 14 s
    plan = Schedule(pairs, 60.0, 0.0, try_s=1.0, in_flight_max=10)
    sent = _run(plan)
    bound = round_s(len(pairs), 1.0, 10) + TICK_S
    for times in sent.values():
        assert times and times[0] <= bound
        assert all(b - a <= bound for a, b in zip(times, times[1:], strict=False))
    assert all(t is None for t in plan.answered_s.values()) and plan.finished(60.0)


def test_a_network_ready_late_is_seen_within_one_round_of_it():
    pairs = _pairs(12)
    plan = Schedule(pairs, 60.0, 0.0, try_s=1.0, in_flight_max=10)
    _run(plan, ready_s=20.0, rtt_s=0.3)
    took = max(plan.answered_s.values())
    assert took is not None and took <= 20.0 + round_s(len(pairs), 1.0, 10) + 0.3 + TICK_S


def test_answered_pairs_are_not_echoed_again_and_the_wait_ends_when_all_answered():
    pairs = _pairs(6)
    plan = Schedule(pairs, 30.0, 0.0, try_s=1.0, in_flight_max=8)
    sent = _run(plan, ready_s=0.0, rtt_s=0.1)
    assert all(len(times) == 1 for times in sent.values())
    assert plan.finished(3.0) and max(plan.answered_s.values()) < 3.0
    assert plan.echoes == {p: 1 for p in pairs}


def test_one_deadline_ends_the_wait_and_names_the_pairs_that_never_answered():
    pairs = _pairs(4)
    plan = Schedule(pairs, 5.0, 100.0, try_s=1.0, in_flight_max=4)
    dead = {("h0", "h1"), ("h2", "h3")}
    now = 100.0
    while not plan.finished(now):
        for pair in plan.sends(now):
            if pair not in dead:
                plan.answered(pair, now + 0.1)
        now += TICK_S
    assert now == pytest.approx(105.0, abs=TICK_S)
    assert {p for p, t in plan.answered_s.items() if t is None} == dead
    assert all(plan.echoes[p] >= 4 for p in dead)  # asked again every try_s, not once
    assert plan.sends(now) == []


def test_per_pair_each_pair_gets_its_window_from_its_own_first_echo():
    pairs = _pairs(5)  # 20 pairs, 2 at a time: the last are first echoed seconds late
    plan = Schedule(pairs, 3.0, 0.0, try_s=1.0, in_flight_max=2, per_pair=True)
    sent = _run(plan)  # nothing answers
    for times in sent.values():
        assert times, "a pair was never echoed"
        assert times[-1] - times[0] < 3.0  # nothing after its window
    firsts = sorted(times[0] for times in sent.values())
    assert firsts[-1] > 3.0  # some started after the first pairs' windows ended
    last = max(times[-1] for times in sent.values())
    assert plan.finished(last + 3.0) and last + 3.0 < plan.limit_s  # ended by the rules


def test_per_pair_a_due_echo_goes_before_a_first_one():
    pairs = _pairs(4)  # 12 pairs, 3 at a time, nothing answers
    plan = Schedule(pairs, 3.0, 0.0, try_s=1.0, in_flight_max=3, per_pair=True)
    first = plan.sends(0.0)
    assert len(first) == 3
    assert plan.sends(1.0) == first  # their retries, not three fresh pairs


def test_an_answer_for_a_pair_not_asked_is_ignored_and_a_second_answer_too():
    plan = Schedule([("a", "b")], 5.0, 0.0)
    assert plan.sends(0.0) == [("a", "b")]
    assert plan.answered(("x", "y"), 0.1) is False
    assert plan.answered(("a", "b"), 0.2) is True
    assert plan.answered(("a", "b"), 0.3) is False
    assert plan.answered_s[("a", "b")] == 0.2
