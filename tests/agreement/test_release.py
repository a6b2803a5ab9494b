"""Releasing a departed voter's pin (decision 0070): a decided membership change that keeps
the voters and names former voters gone for good, checked by every acceptor; compaction
then goes past their last ops."""

from __future__ import annotations

import pytest

from controller.agreement import Refused, Status
from controller.agreement.membership import (
    DECOMMISSIONED,
    EQUIVOCATION,
    Membership,
    check_change,
    departed_after,
    membership_slot,
)
from controller.replication import Identity

from .conftest import Net
from .test_checkpoint import _remove, churn, compacted, pinned_by_a_departed_voter, settled

KEYS = [Identity.from_seed(bytes([i + 1]) * 32) for i in range(4)]
IDS = [k.node_id for k in KEYS]


def chain(*changes: Membership) -> Membership:
    """Each change after the one before, with `departed` derived as the ledger does."""
    m = changes[0]
    for new in changes[1:]:
        m = Membership(new.version, new.voters, new.roles, new.reason, new.evidence,
                       new.released, departed_after(m, new))
    return m


def base() -> Membership:
    return Membership(0, {k.node_id: k.public_key for k in KEYS[:3]}, {})


# ---------------------------------------------------------------------- the chain
def test_only_a_removal_with_no_reason_for_good_departs():
    m0 = base()
    plain = chain(m0, m0.left(IDS[2]))
    assert plain.departed == {IDS[2]}
    assert chain(m0, m0.left(IDS[2], DECOMMISSIONED)).departed == frozenset()
    assert chain(m0, m0.left(IDS[2], EQUIVOCATION, (b"x" * 32, b"y" * 32))).departed == set()


def test_a_release_ends_the_pin_and_a_later_plain_removal_pins_again():
    m0 = base()
    m1 = chain(m0, m0.left(IDS[2]))
    m2 = chain(m1, m1.releasing((IDS[2],)))
    assert m2.departed == frozenset() and m2.voters == m1.voters and m2.version == 2
    m3 = chain(m2, m2.joined(KEYS[2].public_key))  # back as a voter: not departed
    assert m3.departed == frozenset()
    assert chain(m3, m3.left(IDS[2])).departed == {IDS[2]}


def test_a_voter_that_joins_again_is_no_longer_departed():
    m0 = base()
    m1 = chain(m0, m0.left(IDS[2]))
    assert chain(m1, m1.joined(KEYS[2].public_key)).departed == frozenset()


def test_a_release_round_trips_and_is_checked():
    m0 = base()
    m1 = chain(m0, m0.left(IDS[2]), )
    value = m1.releasing((IDS[2],)).to_value()
    assert value["reason"] == DECOMMISSIONED and value["released"] == [IDS[2]]
    assert value["evidence"] == [] and value["voters"] == m1.to_value()["voters"]
    new = check_change(m1, value)
    assert new.released == (IDS[2],) and new.voters == m1.voters


def _bad(current: Membership, value: dict, match: str) -> None:
    with pytest.raises(Refused, match=match) as exc:
        check_change(current, value)
    assert exc.value.reason == "bad_membership"


def test_bad_releases_are_refused_naming_the_key():
    m0 = base()
    m1 = chain(m0, m0.left(IDS[2]))
    good = m1.releasing((IDS[2],)).to_value()
    _bad(m1, {**good, "reason": EQUIVOCATION, "evidence": [b"x" * 32]},
         "released: only with reason decommissioned")
    too_many = [f"n{i:02}" for i in range(17)]
    for released in ([], [IDS[2], IDS[2]], "x", [3], sorted(IDS)[::-1], too_many):
        _bad(m1, {**good, "released": released}, "released: 1 to 16 distinct node ids")
    _bad(m1, {**good, "released": [IDS[0]]}, f"released: {IDS[0][:16]} is a voter")
    _bad(m1, {**good, "released": [IDS[3]]}, "is not a departed voter")
    voters = dict(good["voters"])
    voters.pop(IDS[0])
    _bad(m1, {**good, "voters": voters}, "released: a release keeps the voters and roles")
    _bad(m1, {**good, "roles": {IDS[0]: "admin"}}, "keeps the voters and roles")
    _bad(m1, {**good, "version": 5}, "version 5 after 1")
    _bad(m1, {**good, "extra": 1}, r"\[, released\]")


def test_a_voter_removed_for_good_or_released_already_cannot_be_released():
    m0 = base()
    m1 = chain(m0, m0.left(IDS[2], DECOMMISSIONED))
    _bad(m1, m1.releasing((IDS[2],)).to_value(), "is not a departed voter")
    p1 = chain(m0, m0.left(IDS[2]))
    p2 = chain(p1, p1.releasing((IDS[2],)))
    _bad(p2, p2.releasing((IDS[2],)).to_value(), "is not a departed voter")


# ---------------------------------------------------------------------- decided, then compaction
def _release(net: Net, node: int, *names: str) -> Status:
    a = net[0].agreement
    m = a.ledger.membership
    p = a.propose(membership_slot(m.version + 1), m.releasing(names).to_value(), net.now_ms)
    net.run(rounds=200, until=lambda: p.done)
    assert p.outcome is not None
    return p.outcome


def test_a_decided_release_lets_compaction_pass_the_departed_voters_last_op():
    net = Net(3, checkpoint_ops=20, checkpoint_stagger_ms=50, compact=True)
    cps = net[0].agreement.checkpoints
    gone = net[2].id
    before, past = pinned_by_a_departed_voter(net)
    assert cps.departed() == {gone} and cps.final_n == before  # the pin holds

    outcome = _release(net, 2, gone)
    assert outcome.status is Status.DECIDED, outcome
    for i in (0, 1):  # every remaining voter learned it
        assert net[i].agreement.ledger.membership.released == (gone,)
        assert net[i].agreement.checkpoints.departed() == set()
    churn(net, 0, 300, 30)
    net.run(rounds=600, until=lambda: all(net[i].agreement.checkpoints.final_n > before
                                         for i in (0, 1)))
    for i in (0, 1):
        final = net[i].agreement.checkpoints.final.cut
        assert any(s > past.get(a, 0) for a, s in final.items())  # past its last op
    assert cps.final_n > before and net[0].replica.dag.pruned > 60


def test_a_release_of_a_voter_or_a_stranger_is_refused_by_its_proposer():
    net = Net(3, compact=True)
    churn(net, 0, 0, 3)
    net.run(rounds=50, until=lambda: settled(net))
    outcome = _release(net, 1, net[1].id)
    assert outcome.status is Status.REFUSED and "is a voter" in outcome.reason
    outcome = _release(net, 1, "f" * 64)
    assert outcome.status is Status.REFUSED and "not a departed voter" in outcome.reason


def test_acceptors_refuse_a_release_their_chain_does_not_allow():
    """A proposer that skips its own check (a bug, an older or a hostile node): every
    acceptor runs check_change against its chain and refuses, so nothing is decided."""
    net = Net(3, compact=True, timeout_ms=2_000)
    churn(net, 0, 0, 3)
    net.run(rounds=50, until=lambda: settled(net))
    a = net[0].agreement
    m = a.ledger.membership
    value = {**m.to_value(), "version": m.version + 1, "reason": DECOMMISSIONED,
             "evidence": [], "released": [net[2].id]}
    a._check_local = lambda *args: None  # the proposer's own check skipped
    p = a.propose(membership_slot(m.version + 1), value, net.now_ms)
    net.run(rounds=300, until=lambda: p.done)
    assert p.outcome is not None and p.outcome.status is Status.NO_QUORUM
    assert "bad_membership" in p.outcome.reason
    assert all(n.agreement.ledger.mv == 0 for n in net.nodes)


def test_a_restarted_node_still_knows_the_release():
    net = Net(3, compact=True)
    churn(net, 0, 0, 3)
    net.run(rounds=50, until=lambda: settled(net))
    net.crash(2)
    _remove(net, 2)
    assert _release(net, 2, net[2].id).status is Status.DECIDED
    net.crash(1)
    net.restart(1)
    net.run(rounds=50)
    ledger = net[1].agreement.ledger
    assert ledger.mv == 2 and ledger.membership.departed == frozenset()
    assert ledger.memberships[1].departed == {net[2].id}


# ---------------------------------------------------------------------- what the API builds
def test_plan_leave_and_plan_release_resolve_names_and_say_what_is_wrong():
    from controller.agreement.membership import plan_leave, plan_release

    m0 = base()
    chain0 = {0: m0}
    assert plan_leave(chain0, IDS[2][:8], False).reason == ""
    assert plan_leave(chain0, IDS[2], True).reason == DECOMMISSIONED
    with pytest.raises(Refused, match="names no node"):
        plan_leave(chain0, IDS[3], False)  # never a voter
    with pytest.raises(Refused, match="is a voter of membership 0: remove it first"):
        plan_release(chain0, [IDS[2]])
    m1 = chain(m0, m0.left(IDS[2]))
    chain1 = {0: m0, 1: m1}
    with pytest.raises(Refused, match="is not a voter of membership 1 .*members forget"):
        plan_leave(chain1, IDS[2], True)
    released = plan_release(chain1, [IDS[2][:12], IDS[2]])
    assert released.released == (IDS[2],) and released.version == 2
    m2 = chain(m1, released)
    with pytest.raises(Refused, match="pins nothing"):
        plan_release({**chain1, 2: m2}, [IDS[2]])
    with pytest.raises(Refused, match="the last voter"):
        plan_leave({0: Membership(0, {IDS[0]: KEYS[0].public_key}, {})}, IDS[0], False)


# ---------------------------------------------------------------------- what a release gives up
def test_a_node_compacted_past_a_released_sides_fork_refuses_to_join_it():
    """Node 2 secedes alone, is removed with a plain leave, then released: the others
    compact past its fork; a merge decided later cannot be carried out by a node that no
    longer holds the ops from the fork on (its report would be computed from holes)."""
    import random

    from controller.agreement import AgreementReplica, lineage_of, reunion_slot, secede
    from controller.agreement.errors import Reason

    net = Net(3, checkpoint_ops=20, checkpoint_stagger_ms=50, compact=True)
    churn(net, 0, 0, 25)
    churn(net, 2, 50, 5)
    net.run(rounds=400, until=lambda: compacted(net, 1) and settled(net))
    voters = net[0].agreement.membership().voters
    seceded = secede(net[2].identity, net.genesis, voters, [net[2].id],
                     net[2].replica.version_vector(), net.now_ms, confirmed_by="ops")
    net.crash(2)
    _remove(net, 2)
    assert _release(net, 2, net[2].id).status is Status.DECIDED
    churn(net, 0, 300, 60)
    churn(net, 1, 400, 20)
    before = net[0].agreement.checkpoints.final_n
    net.run(rounds=600, until=lambda: net[0].agreement.checkpoints.final_n > before)
    a = net[0].agreement
    p = a.propose(reunion_slot(seceded.cluster_id), "merge", net.now_ms)
    net.run(rounds=200, until=lambda: p.done)
    assert p.outcome is not None and p.outcome.status is Status.DECIDED
    shadow = AgreementReplica.recover(net[2].identity, seceded, random.Random(1), (),
                                      peers=[n.id for n in net.nodes])
    with pytest.raises(Refused, match="compacted past") as exc:
        net[0].replica.join_lineage(shadow)
    assert exc.value.reason is Reason.NO_MERGE
    fork = lineage_of(seceded).fork_vector
    assert any(fork.get(n, 0) < s for n, s in net[0].replica.dag.base.items())
