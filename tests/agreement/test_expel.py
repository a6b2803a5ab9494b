"""Proven equivocators are expelled by a decided leave that the engines propose themselves."""

from __future__ import annotations

import pytest

from controller.agreement import Accepted, Ballot, Membership, Status, to_body
from controller.agreement.membership import EQUIVOCATION
from controller.replication import OpBatch, RowMutation, RowsBody, Upsert, sign_op

from .conftest import Net, Node


def fork(net: Net, evil: Node, to: Node) -> tuple[bytes, bytes]:
    """evil signs two different ops with one seq: its own write goes out as usual, the twin
    only to `to`. Returns the two op ids."""
    real = evil.replica.write([Upsert("kv", ("x",), {"value": b"one"})], net.now_ms)
    assert real is not None
    body = RowsBody((RowMutation("kv", ("x",), 1, {"value": b"two"}),))
    twin = sign_op(evil.identity, net.genesis.cluster_id, real.seq, real.hlc, real.parents, body)
    to.replica.receive(OpBatch(net.genesis.cluster_id, evil.id, (twin.raw,)), net.now_ms)
    return real.id, twin.id


def double_vote(net: Net, evil: Node) -> tuple[bytes, bytes]:
    """evil signs two accepted votes in one ballot for different values (two seqs: no fork)."""
    ballot = Ballot(0, 1, evil.id)
    ids = []
    for value in ("x", "y"):
        op = evil.replica.emit(*to_body(Accepted("master/9", ballot, value)), net.now_ms)
        ids.append(op.id)
    return ids[0], ids[1]


def left_for(net: Net, i: int, offender: str) -> Membership | None:
    """The decided membership that removed offender, as node i knows it."""
    for version, m in sorted(net[i].agreement.ledger.memberships.items()):
        previous = net[i].agreement.ledger.memberships.get(version - 1)
        if previous is not None and offender in previous.voters and offender not in m.voters:
            return m
    return None


@pytest.mark.parametrize("evidence", ["fork", "double_vote"])
def test_the_others_decide_a_membership_without_the_equivocator(evidence):
    net = Net(4)
    evil, honest = net[3], [0, 1, 2]
    net.run(5)
    proof = fork(net, evil, net[2]) if evidence == "fork" else double_vote(net, evil)
    net.run(2)  # the ops leave evil; from now on it is cut off and votes nothing
    net.cut = {evil.id}
    net.run(200, until=lambda: all(left_for(net, i, evil.id) for i in honest))
    for i in honest:
        a = net[i].agreement
        m = a.membership()
        assert m.version == 1 and sorted(m.voters) == sorted(net[j].id for j in honest)
        assert m.reason == EQUIVOCATION and sorted(m.evidence) == sorted(proof)
        value = a.decided("membership/1").value
        assert value["reason"] == "equivocation" and len(value["evidence"]) == 2
        if evidence == "fork":
            assert net[i].replica.forks() == {evil.id: 1}
        else:
            assert [c.author for c in a.ledger.conflicts] == [evil.id]
    assert sum(net[i].agreement.counters["expel_proposed"] for i in honest) >= 1
    # Three voters remain, two of which decide; the evil node is no longer needed.
    p = net[0].agreement.propose("master/1", "after", net.now_ms)
    net.run(100, until=lambda: p.done)
    assert p.outcome.status is Status.DECIDED and p.outcome.value == "after"


def test_with_the_flag_off_nothing_is_proposed():
    net = Net(4, expel_equivocators=False)
    evil = net[3]
    net.run(5)
    fork(net, evil, net[2])
    net.run(2)
    net.cut = {evil.id}
    net.run(100)
    for i in (0, 1, 2):
        a = net[i].agreement
        assert net[i].replica.forks() == {evil.id: 1}  # the evidence is there...
        assert "membership/1" not in a.ledger.slots  # ...and nobody proposed a leave
        assert a.membership().version == 0 and not a.counters["expel_proposed"]


def test_evidence_against_a_node_that_is_no_longer_a_voter_proposes_nothing():
    net = Net(4)
    evil = net[3]
    net.run(5)
    net.cut = {evil.id}  # it double-votes while cut off; the others remove it meanwhile
    double_vote(net, evil)
    p = net[0].agreement.propose_leave(evil.id, net.now_ms)
    net.run(100, until=lambda: p.done)
    assert p.outcome.status is Status.DECIDED
    net.run(100, until=lambda: all(net[i].agreement.membership().version == 1 for i in (1, 2)))
    assert net[0].agreement.membership().reason == ""  # a plain leave, by hand
    net.cut = set()  # its votes arrive: valid (signed while a voter), and proof against it
    net.run(100, until=lambda: all(net[i].agreement.ledger.conflicts for i in (0, 1, 2)))
    net.run(50)
    for i in (0, 1, 2):
        a = net[i].agreement
        assert a.membership().version == 1 and "membership/2" not in a.ledger.slots
        assert not a.counters["expel_proposed"]


def test_a_membership_change_in_flight_goes_first():
    net = Net(3, spares=1)
    evil, spare = net[2], net[3]
    for i in (1, 3):  # only node 0 expels, so the order is its own
        net[i].agreement.config = type(net.agreement_config)(expel_equivocators=False)
    net.run(5)
    join = net[0].agreement.propose_join(spare.identity.public_key, net.now_ms)
    fork(net, evil, net[0])
    net.run(2)
    net.cut = {evil.id}
    # The fork is known at node 0 while its join is in flight: it waits for the join.
    assert net[0].replica.forks() == {evil.id: 1}
    assert not net[0].agreement.counters["expel_proposed"]
    net.run(300, until=lambda: left_for(net, 0, evil.id) and left_for(net, 1, evil.id))
    assert join.outcome.status is Status.DECIDED
    ledger = net[0].agreement.ledger
    assert spare.id in ledger.memberships[1].voters and ledger.memberships[1].reason == ""
    assert evil.id not in ledger.memberships[2].voters
    assert ledger.memberships[2].reason == EQUIVOCATION
    assert net[0].agreement.counters["expel_proposed"] == 1


def test_attempts_are_bounded_when_no_majority_can_remove_it():
    # Two voters: removing one needs both votes, and the equivocator is cut off.
    net = Net(2, timeout_ms=300, expel_retry_ms=100, expel_attempts_max=2)
    evil = net[1]
    net.run(5)
    fork(net, evil, net[0])
    net.run(2)
    net.cut = {evil.id}
    net.run(150)
    a = net[0].agreement
    assert a.membership().version == 0
    assert a.counters["expel_proposed"] == 2 and a.counters["expel_given_up"] == 1
    assert a.counters["no_quorum"] == 2


def test_only_a_role_that_may_propose_membership_proposes_the_removal():
    admin = Net(3)[0].id
    net = Net(3, access={"roles": {admin: "admin"}})  # nodes 1 and 2 are plain 'node's
    evil = net[2]
    net.run(5)
    fork(net, evil, net[1])
    net.run(2)
    net.cut = {evil.id}
    net.run(200, until=lambda: left_for(net, 0, evil.id) and left_for(net, 1, evil.id))
    assert net[0].agreement.counters["expel_proposed"] == 1
    assert net[1].agreement.counters["expel_forbidden"] == 1
    assert not net[1].agreement.counters["expel_proposed"]


def test_the_others_restart_after_expelling_an_equivocator():
    net = Net(4)
    evil = net[3]
    net.run(5)
    fork(net, evil, net[2])
    net.run(2)
    net.cut = {evil.id}
    net.run(200, until=lambda: all(left_for(net, i, evil.id) for i in (0, 1, 2)))
    for i in (0, 1, 2):
        net.crash(i)
        net.restart(i)
        assert net[i].agreement.membership().version == 1


def test_an_equivocator_that_keeps_voting_does_not_split_the_learners():
    """Node 2 logs evil's twin; evil goes on voting on its other branch, whose ops node 2
    can only keep as evidence. A decision that needs evil's vote must still be learned by
    node 2 (votes kept as evidence count too), not only by the nodes on evil's branch."""
    net = Net(4, expel_equivocators=False)
    evil = net[3]
    net.run(5)
    fork(net, evil, net[2])
    net.run(5)
    assert net[2].replica.forks() == {evil.id: 1}
    net.cut = {net[1].id}  # the quorum of 3 now needs evil's vote
    p = net[0].agreement.propose("master/7", "needs-evil", net.now_ms)
    net.run(100, until=lambda: p.done)
    assert p.outcome.status is Status.DECIDED
    net.run(100, until=lambda: net[2].agreement.decided("master/7") is not None)
    assert net[2].agreement.decided("master/7").value == "needs-evil"
