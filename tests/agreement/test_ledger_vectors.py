"""The ledger's causal-past vectors: a vector computed through a gap (an op kept as
evidence whose parent this node does not hold yet) must not be kept once the gap fills."""

from __future__ import annotations

from controller.agreement import Ledger
from controller.replication import Identity, RowMutation, RowsBody, make_genesis, sign_op


def _op(ident, cluster, seq, parents):
    body = RowsBody((RowMutation("kv", ("k",), 1, {"value": b"v"}),))
    return sign_op(ident, cluster, seq, seq << 16, tuple(parents), body)


class Source:
    def __init__(self) -> None:
        self.ops = {}

    def op(self, op_id):
        return self.ops.get(op_id)


def test_a_vector_through_a_gap_is_recomputed_once_the_gap_fills():
    a, b = Identity.from_seed(b"a" * 32), Identity.from_seed(b"b" * 32)
    g = make_genesis(a, "v", [a.public_key, b.public_key], 0)
    a1 = _op(a, g.cluster_id, 1, [])
    a2 = _op(a, g.cluster_id, 2, [a1.id])
    b1 = _op(b, g.cluster_id, 1, [a2.id])  # held before its parent a2 (evidence-like)
    src = Source()
    src.ops = {a1.id: a1, b1.id: b1}
    ledger = Ledger(g, a.node_id)
    ledger.bind([], src)
    assert dict(ledger.vector(b1.id)) == {b.node_id: 1}  # the gap: a2 unknown
    src.ops[a2.id] = a2
    assert dict(ledger.vector(b1.id)) == {a.node_id: 2, b.node_id: 1}
    assert dict(ledger.past_vector((b1.id,))) == {a.node_id: 2, b.node_id: 1}


def test_decided_in_counts_any_ballot_that_decided_the_value():
    """Two ballots decided one value; this node learned the second first. An op whose past
    holds only the first ballot's quorum still has the slot decided in its past."""
    from types import SimpleNamespace

    from controller.agreement import Ballot, Certificate, Decision
    from controller.agreement.ledger import SlotRecord
    from controller.agreement.messages import value_key

    ids = [Identity.from_seed(bytes([i + 1]) * 32) for i in range(3)]
    g = make_genesis(ids[0], "d", [i.public_key for i in ids], 0)
    a, b, c = (i.node_id for i in ids)
    ledger = Ledger(g, a)
    key = value_key("v")
    first, second = Ballot(0, 1, a), Ballot(0, 2, b)
    rec = ledger.slots.setdefault("master/1", SlotRecord())
    vote = lambda seq: SimpleNamespace(seq=seq)  # noqa: E731 - only .seq is read
    rec.accepted = {first: {key: {a: vote(3), b: vote(4)}}, second: {key: {b: vote(9), c: vote(9)}}}
    rec.decided = Decision("master/1", "v", Certificate("master/1", second, "v", ()))
    assert ledger.decided_in("master/1", {a: 3, b: 4})  # the first ballot's quorum
    assert ledger.decided_in("master/1", {b: 9, c: 9})
    assert not ledger.decided_in("master/1", {a: 3, c: 9})  # no quorum of one ballot
