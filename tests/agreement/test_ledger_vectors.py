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
