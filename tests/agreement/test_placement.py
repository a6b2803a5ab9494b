"""The voters' side of the lease rule (decision 0081 §3): placement values, their order,
and a new owner accepted only after the old one's lease plus the margin of silence."""

from __future__ import annotations

import pytest

from controller.agreement import Reason, Refused, Status
from controller.agreement.placement import (
    MARGIN_MS,
    check_placement,
    placement_of,
    silence_needed_ms,
)
from edge_agent.lease import owner_deadline_ms

from .conftest import Net

H = "ab" * 32
A, B, C = "a" * 16, "b" * 16, "c" * 16
MEMBERS = frozenset({A, B, C})


def v(node=A, spec_hash=H, lease_ms=5_000, **extra):
    return {"node": node, "spec_hash": spec_hash, "lease_ms": lease_ms, **extra}


NEED = silence_needed_ms(5_000)  # 5050 + 10100

CASES = [
    # (slot, value, previous decided, this voter's silence map, refused reason or None, says)
    ("placement/web/1", v(), None, {}, None, ""),
    ("placement/web/1", v(node=C), None, {}, None, ""),  # generation 1: any member
    ("placement/web/2", v(), v(), {}, None, ""),  # the same node keeps it
    ("placement/web/2", v(node=B), v(), {A: NEED}, None, ""),  # silent long enough
    ("placement/web/2", v(node=B), v(), {A: NEED - 1}, Reason.LEASE_HELD,
     f"heard from {A}, the owner of placement/web/1, {NEED - 1} ms ago"),
    ("placement/web/2", v(node=B), v(), {}, Reason.LEASE_HELD, "0 ms ago"),  # nothing known
    ("placement/web/2", v(node=B), v(node=B, lease_ms=0), {}, None, ""),  # same node, no lease
    ("placement/web/2", v(node=A), v(node=B, lease_ms=0), {B: 10**9}, Reason.LEASE_HELD,
     "has no lease (lease_ms 0, a local-only service)"),
    ("placement/web/2", v(node=B), None, {A: 10**9}, Reason.PLACEMENT_AHEAD,
     "placement/web/1 is not decided here"),  # a generation skipped
    ("placement/web/3", v(node=B), v(node=B), {}, None, ""),
    ("placement/web/2", v(node=B), {"node": A}, {A: NEED}, Reason.LEASE_HELD,
     "lease 86400000 ms"),  # decided before lease_ms existed: the longest wait
    ("placement/web/2", v(node=B), {"node": A}, {A: silence_needed_ms(86_400_000)}, None, ""),
    ("placement/web/2", v(node=A), {"node": A}, {}, None, ""),
    # the voter itself is the owner: it always hears itself
    ("placement/web/2", v(node=B), v(node="me"), {"me": 10**9}, Reason.LEASE_HELD, "0 ms ago"),
    # malformed values and slots
    ("placement/web/1", "b" * 16, None, {}, Reason.BAD_PLACEMENT, "must be a map"),
    ("placement/web/1", v(extra=1), None, {}, Reason.BAD_PLACEMENT, "placement/web/1.extra: "
     "unknown key"),
    ("placement/web/1", {"node": A, "lease_ms": 1}, None, {}, Reason.BAD_PLACEMENT,
     ".spec_hash: missing"),
    ("placement/web/1", v(node=7), None, {}, Reason.BAD_PLACEMENT, ".node: a node id"),
    ("placement/web/1", v(spec_hash="AB" * 32), None, {}, Reason.BAD_PLACEMENT,
     ".spec_hash: 64 lower-case hex"),
    ("placement/web/1", v(lease_ms=-1), None, {}, Reason.BAD_PLACEMENT, ".lease_ms: an int"),
    ("placement/web/1", v(lease_ms=True), None, {}, Reason.BAD_PLACEMENT, ".lease_ms: an int"),
    ("placement/web/1", v(lease_ms=1.5), None, {}, Reason.BAD_PLACEMENT, ".lease_ms: an int"),
    ("placement/web/1", v(node="d" * 16), None, {}, Reason.BAD_PLACEMENT, "is not a member"),
    ("placement/web", v(), None, {}, Reason.BAD_PLACEMENT, "not placement/<service>/<generation>"),
    ("placement/web/0", v(), None, {}, Reason.BAD_PLACEMENT, "not placement/<service>/"),
    ("placement/web/01", v(), None, {}, Reason.BAD_PLACEMENT, "not placement/<service>/"),
    ("placement/Web/1", v(), None, {}, Reason.BAD_PLACEMENT, "not placement/<service>/"),
    ("placement/web/1/x", v(), None, {}, Reason.BAD_PLACEMENT, "not placement/<service>/"),
]


@pytest.mark.parametrize("slot,value,previous,silence,reason,says", CASES)
def test_placement_check_table(slot, value, previous, silence, reason, says):
    members = MEMBERS | {"me"}
    if reason is None:
        assert check_placement(slot, value, previous, members, silence, "me").to_value() == value
        return
    with pytest.raises(Refused) as e:
        check_placement(slot, value, previous, members, silence, "me")
    assert e.value.reason is reason and says in e.value.detail, e.value.detail


def test_slot_names():
    assert placement_of("placement/web-1/12") == ("web-1", 12)
    assert placement_of("alloc/web/1") is None and placement_of("placement/web/") is None


@pytest.mark.parametrize("s", [15, 16, 20, 30, 60, 300, 3600])
def test_agents_wait_agrees_with_the_voters(s):
    """A taker proposes once its node has not heard the owner for S (lease.may_take_over);
    a voter needs lease * (1 + rho) + margin: never more than S, or takeovers are refused,
    and hardly less, or the owner's stop would not be covered."""
    need = silence_needed_ms(owner_deadline_ms(s))
    assert s * 1000 - 200 <= need <= s * 1000, (s, need)
    assert MARGIN_MS == 10_100


def _decide(net: Net, i: int, slot: str, value):
    p = net[i].agreement.propose(slot, value, net.now_ms)
    net.run(200, until=lambda: p.done)
    return p


def test_acceptors_refuse_an_early_new_owner_and_accept_it_after_the_lease(net3: Net):
    a, b, c = (n.id for n in net3.nodes)
    first = _decide(net3, 0, "placement/web/1", v(node=c))
    assert first.outcome.status is Status.DECIDED
    net3.run(50, until=lambda: all(n.agreement.decided("placement/web/1") for n in net3.nodes))

    # The proposer (b) says it has not heard c for long; a and c say they heard it: the
    # acceptors refuse, nothing is decided, and the proposer is told why.
    net3[1].agreement.heard({a: 0, c: NEED})
    net3[0].agreement.heard({b: 0, c: 1_000})
    net3[2].agreement.heard({a: 0, b: 0})
    p = net3[1].agreement.propose("placement/web/2", v(node=b), net3.now_ms, timeout_ms=3_000)
    net3.run(400, until=lambda: p.done)
    assert p.outcome.status is Status.NO_QUORUM, p.outcome
    assert "refused by 2 voters (lease_held)" in p.outcome.reason, p.outcome.reason
    assert net3[0].agreement.counters[Reason.LEASE_HELD] >= 1
    assert all(n.agreement.decided("placement/web/2") is None for n in net3.nodes)

    # The proposer's own check refuses at once when it too heard the owner.
    net3[1].agreement.heard({a: 0, c: 10})
    early = net3[1].agreement.propose("placement/web/2", v(node=b), net3.now_ms)
    assert early.outcome.status is Status.REFUSED and "lease_held" in early.outcome.reason

    # Past the lease at a majority (a and b; c, the owner, still says no): decided.
    net3[0].agreement.heard({b: 0, c: NEED})
    net3[1].agreement.heard({a: 0, c: NEED + 5})
    late = _decide(net3, 1, "placement/web/2", v(node=b))
    assert late.outcome.status is Status.DECIDED and late.outcome.value["node"] == b
    # Asking again for a decided slot answers its value, whatever this node hears now.
    net3[1].agreement.heard({a: 0, c: 0})
    again = _decide(net3, 1, "placement/web/2", v(node=b))
    assert again.outcome.status is Status.DECIDED
