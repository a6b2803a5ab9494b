"""Membership changes one voter at a time, versioned refusals, and the access policy."""

from __future__ import annotations

import pytest

from controller.agreement import (
    AccessPolicy,
    Ballot,
    Membership,
    Prepare,
    Reason,
    Refused,
    Status,
    check_change,
    to_body,
)
from controller.replication import (
    CustomBody,
    RowMutation,
    RowsBody,
    Upsert,
    UsageError,
    sign_op,
)
from controller.replication import Reason as RepReason

from .conftest import Net


def decided_everywhere(net: Net, slot: str, nodes=None):
    nodes = net.nodes if nodes is None else [net[i] for i in nodes]
    return lambda: all(n.agreement.decided(slot) is not None for n in nodes)


def test_join_makes_a_voter_only_once_decided():
    net = Net(3, spares=2)
    newcomer, stranger = net[3], net[4]
    assert newcomer.id not in net[0].agreement.membership().voters
    # A non-member's votes are not even signed (its replica refuses what peers refuse) ...
    kind, data = to_body(Prepare("master/1", Ballot(0, 1, stranger.id)))
    with pytest.raises(UsageError, match="not_member"):
        stranger.replica.emit(kind, data, net.now_ms)
    # ... nor accepted as ops when signed anyway.
    forged = sign_op(stranger.identity, stranger.replica.cluster_id, 1, net.now_ms, (),
                     CustomBody(kind, data))
    assert net[0].replica.receive_op(forged.raw, net.now_ms) is RepReason.UNKNOWN_AUTHOR
    net.run(5)
    assert "master/1" not in net[0].agreement.ledger.slots
    p = net[0].agreement.propose_join(newcomer.identity.public_key, net.now_ms)
    net.run(until=lambda: p.done)
    assert p.outcome.status is Status.DECIDED
    net.run(100, until=lambda: newcomer.agreement.membership().version == 1)
    assert newcomer.id in newcomer.agreement.membership().voters
    q = newcomer.agreement.propose("master/2", "from-the-newcomer", net.now_ms)
    net.run(100, until=lambda: q.done)
    assert q.outcome.status is Status.DECIDED and q.outcome.value == "from-the-newcomer"


def test_two_changes_at_once_are_refused():
    net = Net(3, spares=2)
    m = net[0].agreement.membership()
    both = m.joined(net[3].identity.public_key).joined(net[4].identity.public_key)
    value = {**both.to_value(), "version": 1}
    p = net[0].agreement.propose("membership/1", value, net.now_ms)
    assert p.outcome.status is Status.REFUSED and p.outcome.reason.startswith("bad_membership")


def test_a_removal_may_name_its_reason_and_evidence():
    net = Net(3, spares=1)
    m = net[0].agreement.membership()
    proof = [bytes([1]) * 32, bytes([2]) * 32]
    plain = m.left(net[2].id).to_value()
    assert set(plain) == {"version", "voters", "roles"}  # a plain change encodes as before
    value = m.left(net[2].id, "equivocation", tuple(proof)).to_value()
    assert value["reason"] == "equivocation" and value["evidence"] == proof
    new = check_change(m, value)
    assert new.reason == "equivocation" and list(new.evidence) == proof
    assert Membership.from_value(new.to_value()) == new
    joined = m.joined(net[3].identity.public_key).to_value()
    for bad in [
        {**value, "reason": "dislike"},
        {**value, "evidence": []},
        {**value, "evidence": [b"short"]},
        {**value, "evidence": [proof[0], proof[0]]},
        {k: v for k, v in value.items() if k != "evidence"},
        {**joined, "reason": "equivocation", "evidence": proof},  # only a leave has a reason
    ]:
        with pytest.raises(Refused) as exc:
            check_change(m, bad)
        assert exc.value.reason is Reason.BAD_MEMBERSHIP


def test_leave_and_quorum_of_the_voters_in_force():
    net = Net(3)
    p = net[0].agreement.propose_leave(net[2].id, net.now_ms)
    net.run(until=lambda: p.done)
    assert p.outcome.status is Status.DECIDED
    net.run(until=lambda: net[1].agreement.membership().version == 1)
    net.crash(2)  # the removed node is gone; two voters of two remain: both are needed
    q = net[0].agreement.propose("master/5", "x", net.now_ms)
    net.run(until=lambda: q.done)
    assert q.outcome.value == "x"
    assert len(net[0].agreement.decided("master/5").certificate.ops) == 2
    assert net[0].agreement.propose("master/6", "y", net.now_ms).outcome is None


def test_lagging_node_is_refused_then_catches_up():
    net = Net(5, spares=2)
    lag = net[4]
    net.cut = {lag.id}
    for spare in (5, 6):  # two membership changes the lagging node does not see
        p = net[0].agreement.propose_join(net[spare].identity.public_key, net.now_ms)
        net.run(100, until=lambda p=p: p.done)
        net.run(100, until=lambda s=spare: net[0].agreement.membership().version == s - 4)
    assert lag.agreement.membership().version == 0
    stale = lag.agreement.propose("master/1", "stale", net.now_ms, timeout_ms=5_000)
    net.cut = set()
    net.run(300, until=lambda: stale.done)
    # It was refused under version 0, caught up, and decided under the version in force.
    assert stale.outcome.status is Status.DECIDED
    cert = lag.agreement.decided("master/1").certificate
    assert cert.ballot.mv == 2
    refusals = [
        r
        for rec in lag.agreement.ledger.slots.values()
        for rs in rec.refusals.values()
        for r in rs.values()
    ]
    assert any(r.reason == "stale_membership" and r.mv == 2 for r in refusals)


def test_role_may_not_propose_forbidden_slot_kinds():
    net = Net(3, access={"roles": {}})  # everyone is a plain node
    p = net[0].agreement.propose("policy/v1", AccessPolicy(1).to_value(), net.now_ms)
    assert p.outcome.status is Status.REFUSED and p.outcome.reason.startswith("forbidden")
    # and acceptors refuse it too when a proposer skips its own check
    net[0].replica.emit(*to_body(Prepare("membership/1", Ballot(0, 1, net[0].id))), net.now_ms)
    net.run(10)
    reasons = {
        r.reason
        for rs in net[1].agreement.ledger.slots["membership/1"].refusals.values()
        for r in rs.values()
    }
    assert reasons == {"forbidden"}


def test_policy_that_locks_out_every_admin_is_refused():
    net = Net(3)
    nobody = AccessPolicy(1, roles={n.id: "operator" for n in net.nodes}, default_role="node")
    p = net[0].agreement.propose_policy(nobody, net.now_ms)
    assert p.outcome.status is Status.REFUSED and p.outcome.reason.startswith("lockout")


def test_nobody_grants_themselves_rights():
    net = Net(3, access={"roles": {Net(3)[0].id: "admin", Net(3)[1].id: "operator"}})
    roles = {net[0].id: "admin", net[1].id: "admin"}
    p = net[1].agreement.propose_policy(AccessPolicy(1, roles=roles), net.now_ms)
    assert p.outcome.status is Status.REFUSED  # operator may not propose policy at all
    q = net[0].agreement.propose_policy(AccessPolicy(1, roles=roles), net.now_ms)
    net.run(until=lambda: q.done)
    assert q.outcome.status is Status.DECIDED  # an admin granted it; a majority voted


def test_decided_policy_feeds_the_replication_check_in_causal_past():
    net = Net(3)
    writer = net[2]
    w = writer.replica.write([Upsert("kv", ("a",), {"value": b"1"})], net.now_ms)
    net.run(5)
    assert net[0].replica.row("kv", ("a",)) is not None and w is not None
    roles = {n.id: "admin" for n in net.nodes[:2]} | {writer.id: "viewer"}
    p = net[0].agreement.propose_policy(AccessPolicy(1, roles=roles), net.now_ms)
    net.run(until=decided_everywhere(net, "policy/v1"))
    assert p.outcome.status is Status.DECIDED
    # The writer's next op would have the policy decision in its causal past: peers would
    # refuse it, so the writer does not sign it ...
    with pytest.raises(UsageError, match="forbidden"):
        writer.replica.write([Upsert("kv", ("b",), {"value": b"2"})], net.now_ms)
    # ... and a peer refuses it when signed anyway on top of the decision.
    heads = writer.replica.dag.choose_parents(writer.id, writer.replica.config.parents_max)
    chain = writer.replica.dag.chains[writer.id]
    hlc = max(writer.replica.dag.ops[h].hlc for h in heads) + 1
    forged = sign_op(writer.identity, writer.replica.cluster_id, len(chain) + 1, hlc, heads,
                     RowsBody((RowMutation("kv", ("b",), 1, {"value": b"2"}),)))
    assert net[0].replica.receive_op(forged.raw, net.now_ms) is RepReason.FORBIDDEN
    net.run(5)
    assert net[0].replica.row("kv", ("b",)) is None
