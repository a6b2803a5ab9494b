"""Leases of failover services as tables: the owner's deadline, the taker's wait, and the
order they give (the old VM gone before the new one may start)."""

from __future__ import annotations

import pytest

from edge_agent.lease import (
    RHO,
    ROUND_MS_MAX,
    STOP_MS_MAX,
    Contact,
    lease_until_ms,
    may_take_over,
    owner_deadline_ms,
)

ME = Contact("a", 0, True)


@pytest.mark.parametrize(("others", "until"), [
    # 3 members: itself and the fresher of the two others make a majority
    ([Contact("b", 100), Contact("c", 9_000)], 10_000 - 100 + owner_deadline_ms(20)),
    ([Contact("b", 4_000), Contact("c", 9_000)], 10_000 - 4_000 + owner_deadline_ms(20)),
    ([Contact("b", -1), Contact("c", 2_000)], 10_000 - 2_000 + owner_deadline_ms(20)),
    ([Contact("b", -1), Contact("c", -1)], 9_999),  # no majority ever heard: over
    ([], 10_000 + owner_deadline_ms(20)),  # alone: itself is the majority
])
def test_lease_runs_from_the_last_majority_contact(others, until):
    assert lease_until_ms([ME, *others], 10_000, 20) == until


def test_the_owner_is_gone_before_a_taker_may_start():
    for s in (15, 20, 60, 600):
        # the owner's clock may run slow by RHO: its deadline, its stop and a late round
        # must all fit in S as the taker's clock counts it
        owner_gone_ms = (owner_deadline_ms(s) + STOP_MS_MAX + ROUND_MS_MAX) * (1 + RHO)
        assert owner_gone_ms <= s * 1000 + 1
        assert owner_deadline_ms(s) > 0
        assert not may_take_over(s * 1000 - 1, s) and may_take_over(s * 1000, s)
    assert not may_take_over(-1, 15)  # never heard from: no age to trust
