"""Paxos per slot: values, quorum tables, decisions, duels, certificates, refusals, restarts."""

from __future__ import annotations

import pytest

from controller.agreement import (
    Accept,
    Accepted,
    Ballot,
    Certificate,
    Membership,
    Prepare,
    Promise,
    Reason,
    Refuse,
    Refused,
    Status,
    UsageError,
    Vote,
    VoteResult,
    check_slot,
    from_body,
    majority,
    to_body,
    verify_certificate,
    vote_result,
)
from controller.replication import Identity

from .conftest import Net


def test_ballots_order_by_membership_version_first():
    assert Ballot(1, 1, "a") > Ballot(0, 99, "z")
    assert Ballot(0, 2, "a") > Ballot(0, 1, "z")
    assert Ballot(0, 1, "b") > Ballot(0, 1, "a")


@pytest.mark.parametrize(
    "msg",
    [
        Prepare("master/1", Ballot(0, 1, "a")),
        Promise("master/1", Ballot(0, 2, "a"), None),
        Promise("master/1", Ballot(0, 2, "a"), Vote(Ballot(0, 1, "b"), {"x": [1, 2]})),
        Accept("alloc/pool/3", Ballot(2, 1, "a"), "v"),
        Accepted("alloc/pool/3", Ballot(2, 1, "a"), None),
        Refuse("policy/v2", Ballot(0, 1, "a"), "ballot_too_low", Ballot(0, 3, "c"), 4),
    ],
)
def test_vote_bodies_round_trip(msg):
    assert from_body(*to_body(msg)) == msg


@pytest.mark.parametrize(
    "kind, data",
    [
        ("prepare", {"slot": "x/1"}),
        ("prepare", {"slot": "Bad Slot", "ballot": [0, 1, "a"]}),
        ("prepare", {"slot": "x/1", "ballot": [0, 0, "a"]}),
        ("promise", {"slot": "x/1", "ballot": [0, 1, "a"], "last": [[0, 2, "a"], 1]}),
        ("accept", {"slot": "x/1", "ballot": [0, 1, "a"], "value": 1, "extra": 2}),
        ("vote", {}),
    ],
)
def test_malformed_vote_bodies_are_refused(kind, data):
    with pytest.raises(Refused) as exc:
        from_body(kind, data)
    assert exc.value.reason is Reason.MALFORMED


@pytest.mark.parametrize(
    "voters, yes, no, result",
    [
        ("abc", "ab", "", VoteResult.WON),
        ("abc", "a", "b", VoteResult.PENDING),
        ("abc", "a", "bc", VoteResult.LOST),
        ("abcd", "ab", "", VoteResult.PENDING),
        ("abcd", "abc", "d", VoteResult.WON),
        ("abcd", "a", "bc", VoteResult.LOST),
        ("abc", "xyz", "", VoteResult.PENDING),  # non-voters do not count
    ],
)
def test_vote_result_table(voters, yes, no, result):
    assert vote_result(set(voters), set(yes), set(no)) is result


def test_majority():
    assert [majority(n) for n in range(1, 8)] == [1, 2, 2, 3, 3, 4, 4]


def test_slot_names():
    assert check_slot("policy/v8") == "policy/v8"
    for bad in ["", "Policy/v1", "a/" + "x" * 65, "a/b/c/d/e/f", "a b"]:
        with pytest.raises(Refused):
            check_slot(bad)


def test_uncontended_decision_takes_two_round_trips(net3: Net):
    p = net3[0].agreement.propose("master/1", "node-a", net3.now_ms)
    rounds = net3.run(until=lambda: all(n.agreement.decided("master/1") for n in net3.nodes))
    # prepare -> promise -> accept -> accepted: 4 message delays until everyone knows
    assert rounds == 4
    assert p.outcome is not None and p.outcome.status is Status.DECIDED
    assert p.outcome.value == "node-a"
    for n in net3.nodes:
        assert n.agreement.decided("master/1").value == "node-a"


def test_dueling_proposers_decide_one_value():
    net = Net(5)
    handles = [net[i].agreement.propose("alloc/ip/7", f"v{i}", net.now_ms) for i in range(4)]
    net.run(200, until=lambda: all(h.done for h in handles))
    values = {h.outcome.value for h in handles}
    assert len(values) == 1 and values <= {"v0", "v1", "v2", "v3"}
    assert {n.agreement.decided("alloc/ip/7").value for n in net.nodes} == values


def test_watch_reports_decisions_under_a_prefix(net3: Net):
    w = net3[1].agreement.watch("master/")
    net3[0].agreement.propose("master/9", 1, net3.now_ms)
    net3[0].agreement.propose("alloc/x/1", 2, net3.now_ms)
    net3.run(until=lambda: net3[1].agreement.decided("alloc/x/1") is not None)
    assert [d.slot for d in w.drain()] == ["master/9"]
    assert w.drain() == []


def test_a_decided_slot_answers_at_once(net3: Net):
    net3[0].agreement.propose("master/1", "a", net3.now_ms)
    net3.run(until=lambda: net3[2].agreement.decided("master/1") is not None)
    p = net3[2].agreement.propose("master/1", "b", net3.now_ms)
    assert p.outcome.status is Status.DECIDED and p.outcome.value == "a"


def test_minority_proposer_times_out_with_no_quorum(net3: Net):
    net3.cut = {net3[0].id}
    p = net3[0].agreement.propose("master/1", "a", net3.now_ms, timeout_ms=500)
    net3.run(100, until=lambda: p.done)
    assert p.outcome.status is Status.NO_QUORUM
    assert "no quorum reachable" in p.outcome.reason
    # the majority side still decides, and the cut node learns it after the heal
    q = net3[1].agreement.propose("master/1", "b", net3.now_ms)
    net3.run(100, until=lambda: q.done)
    net3.cut = set()
    net3.run(200, until=lambda: net3[0].agreement.decided("master/1") is not None)
    assert net3[0].agreement.decided("master/1").value == "b"


def test_certificate_verifies_alone_and_forgeries_are_refused(net3: Net):
    net3[0].agreement.propose("alloc/web", {"node": "a"}, net3.now_ms)
    net3.run(until=lambda: net3[0].agreement.decided("alloc/web") is not None)
    cert = net3[0].agreement.decided("alloc/web").certificate
    cid = net3.genesis.cluster_id
    m0 = {0: Membership.from_genesis(net3.genesis)}
    verify_certificate(cert, cid, m0.get)
    verify_certificate(Certificate.from_plain(cert.to_plain()), cid, m0.get)
    tampered = bytearray(cert.ops[0])
    tampered[-5] ^= 1  # inside the signature
    forgeries = {
        "signature": Certificate(
            cert.slot, cert.ballot, cert.value, (bytes(tampered), *cert.ops[1:])
        ),
        "too few": Certificate(cert.slot, cert.ballot, cert.value, cert.ops[:1]),
        "twice one voter": Certificate(cert.slot, cert.ballot, cert.value, cert.ops[:1] * 3),
        "other value": Certificate(cert.slot, cert.ballot, {"node": "b"}, cert.ops),
        "other slot": Certificate("alloc/db", cert.ballot, cert.value, cert.ops),
        "other ballot": Certificate(cert.slot, Ballot(0, 9, "x"), cert.value, cert.ops),
    }
    for name, forged in forgeries.items():
        with pytest.raises(Refused) as exc:
            verify_certificate(forged, cid, m0.get)
        assert exc.value.reason is Reason.BAD_CERTIFICATE, name
    with pytest.raises(Refused):  # a verifier that does not know the membership
        verify_certificate(cert, cid, {}.get)
    with pytest.raises(Refused):  # votes from non-voters
        strangers = [Identity.from_seed(bytes([9 + i]) * 32) for i in range(3)]
        voters = {i.node_id: i.public_key for i in strangers}
        verify_certificate(cert, cid, {0: Membership(0, voters, {})}.get)
    with pytest.raises(Refused):  # another cluster's signatures
        verify_certificate(cert, b"\x00" * 32, m0.get)


def test_acceptor_state_survives_restart(net3: Net):
    net3[0].agreement.propose("master/1", "a", net3.now_ms)
    net3.run(until=lambda: net3[1].agreement.decided("master/1") is not None)
    before = dict(net3[1].agreement.ledger.promised)
    net3.crash(1)
    net3.restart(1)
    assert net3[1].agreement.ledger.promised == before
    assert net3[1].agreement.decided("master/1").value == "a"


def test_refusal_names_the_promised_ballot(net3: Net):
    net3[0].agreement.propose("master/1", "a", net3.now_ms)
    net3.run(1)  # everyone promised node 0's ballot (round 1 of node 0)
    a = net3[1].agreement
    low = Ballot(0, 1, "0" * 32)  # lower than anything promised
    a.replica.emit(*to_body(Prepare("master/1", low)), net3.now_ms)
    net3.run(until=lambda: a.ledger.slots["master/1"].refusals.get(low))
    refusals = a.ledger.slots["master/1"].refusals[low]
    assert {r.reason for r in refusals.values()} == {"ballot_too_low"}


def test_usage_errors():
    net = Net(1)
    with pytest.raises(Refused):
        net[0].agreement.propose("Not A Slot", 1, 0)
    with pytest.raises(UsageError):
        net[0].agreement.propose("master/1", {1.5j}, 0)  # type: ignore[arg-type]


def test_single_voter_decides_alone():
    net = Net(1)
    p = net[0].agreement.propose("master/1", "solo", net.now_ms)
    net.run(until=lambda: p.done)
    assert p.outcome.value == "solo"


def test_a_decision_waits_until_this_nodes_vote_is_durable():
    """One voter: its own accepted vote completes the quorum at once, but neither decided(),
    a watch nor the proposal's outcome shows the decision before that vote's Ready was
    carried out (a crash would lose the vote and the decision with it)."""
    net = Net(1)
    node = net[0]
    w = node.agreement.watch("")
    p = node.agreement.propose("master/1", "x", net.now_ms)
    for _ in range(5):  # votes are emitted; nothing carried out yet
        node.agreement.step(net.now_ms)
    assert node.agreement.ledger.decided("master/1") is not None  # counted in memory...
    assert node.agreement.decided("master/1") is None  # ...not handed out
    assert node.agreement.decisions("") == []  # nor listed (WatchSlots' snapshot)
    assert not p.done and w.drain() == []
    ready = node.replica.ready()
    node.store.commit(ready)
    node.replica.advance(ready)
    node.agreement.release()
    assert node.agreement.decided("master/1").value == "x"
    assert [d.slot for d in node.agreement.decisions("master/")] == ["master/1"]
    assert p.outcome.value == "x" and [d.slot for d in w.drain()] == ["master/1"]
