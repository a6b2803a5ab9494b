"""Replica behaviour: merge rules, validation with reason codes, buffering, evidence."""

from __future__ import annotations

import random

import pytest

from controller.replication import (
    Config,
    Delete,
    Identity,
    OpBatch,
    Reason,
    Replica,
    StaticPolicy,
    SyncRequest,
    Upsert,
    UsageError,
    hlc_pack,
    make_genesis,
)
from controller.replication.op import CustomBody, RowMutation, RowsBody, sign_op

KV = "kv"


def kv(key: str, value: bytes) -> Upsert:
    return Upsert(KV, (key,), {"value": value})


def batch(replica: Replica, *raws: bytes, sender: str = "") -> OpBatch:
    return OpBatch(replica.cluster_id, sender, tuple(raws))


def test_concurrent_writes_converge_by_hlc_then_author(net) -> None:
    n = net(3)
    a, b, c = n.replicas
    a.write([kv("x", b"a")], n.now_ms)
    b.write([kv("x", b"b")], n.now_ms + 5)  # later hlc wins
    c.write([Upsert("switches", ("d1",), {"name": "s"})], n.now_ms)
    n.pump()
    assert n.converged()
    for r in n.replicas:
        assert r.rows(KV) == {("x",): {"value": b"b"}}
        assert r.row("switches", ("d1",)) == {
            "name": "s",
            "site": None,
            "master": None,
            "generation_id": None,
            "connected": None,
        }


def test_delete_wins_over_concurrent_update_and_reinsert_wins_over_delete(net) -> None:
    n = net(2)
    a, b = n.replicas
    a.write([kv("x", b"1")], n.now_ms)
    n.pump()
    a.write([Delete(KV, ("x",))], n.now_ms)  # cl 2
    b.write([kv("x", b"2")], n.now_ms + 100)  # concurrent update at cl 1: loses to the delete
    n.pump()
    assert a.rows(KV) == b.rows(KV) == {}
    b.write([kv("x", b"3")], n.now_ms)  # re-insert: cl 3, alive again
    n.pump()
    assert a.rows(KV) == b.rows(KV) == {("x",): {"value": b"3"}}
    assert a.state_digest() == b.state_digest()


def test_one_write_coalesces_mutations_of_a_row(net) -> None:
    n = net(1)
    (a,) = n.replicas
    op = a.write(
        [kv("x", b"1"), kv("x", b"2"), Delete(KV, ("y",)), kv("y", b"y"), Delete(KV, ("y",))],
        n.now_ms,
    )
    assert isinstance(op.body, RowsBody)
    by_key = {m.key: m for m in op.body.mutations}
    assert by_key[("x",)].values == {"value": b"2"} and by_key[("x",)].cl == 1
    assert by_key[("y",)].cl == 2 and by_key[("y",)].values == {}
    assert a.rows(KV) == {("x",): {"value": b"2"}}


def test_local_misuse_raises_usage_error(net) -> None:
    (a,) = net(1).replicas
    with pytest.raises(UsageError):
        a.write([Upsert("nope", ("x",), {})], 1)
    with pytest.raises(UsageError):
        a.write([Upsert(KV, ("x",), {"value": 5})], 1)  # blob column
    with pytest.raises(UsageError):
        a.write([], 1)
    with pytest.raises(UsageError):
        a.emit("rows", {}, 1)
    rd = a.ready()
    with pytest.raises(UsageError):
        a.ready()
    a.advance(rd)


def test_ready_orders_persist_before_send_and_acks_own_ops(net) -> None:
    n = net(2)
    a, _ = n.replicas
    op = a.write([kv("x", b"1")], n.now_ms)
    rd = a.ready()
    assert rd.ops == (op,) and rd.acked == (op.id,)
    assert rd.rows[0].table == KV and rd.rows[0].values == {"value": b"1"}
    assert [m.message.ops for m in rd.messages] == [(op.raw,)]  # eager push
    a.advance(rd)
    assert not a.has_ready()


def _forge(n, author: Identity, seq: int, parents=(), hlc=None, body=None):
    body = body or RowsBody((RowMutation(KV, ("f",), 1, {"value": b"f"}),))
    return sign_op(author, n.genesis.cluster_id, seq, hlc or hlc_pack(n.now_ms), parents, body)


def test_bad_signature_unknown_author_and_wrong_cluster_are_counted_not_applied(net) -> None:
    n = net(2)
    a, b = n.replicas
    good = _forge(n, n.identities[1], 1)
    tampered = bytearray(good.raw)
    tampered[-1] ^= 1  # inside the signature
    outsider = _forge(n, Identity.from_seed(b"\x99" * 32), 1)
    a.receive(batch(a, bytes(tampered), outsider.raw), n.now_ms)
    a.receive(OpBatch(b"\x00" * 32, "", (good.raw,)), n.now_ms)
    assert a.counters[Reason.BAD_SIGNATURE] == 1
    assert a.counters[Reason.UNKNOWN_AUTHOR] == 1
    assert a.counters[Reason.WRONG_CLUSTER] == 1
    assert a.rows(KV) == {} and a.version_vector() == {}
    a.receive(batch(a, good.raw), n.now_ms)  # the genuine op still goes in afterwards
    assert a.rows(KV) == {("f",): {"value": b"f"}}


def test_missing_parents_are_buffered_then_applied_in_causal_order(net) -> None:
    n = net(2)
    a, b = n.replicas
    ops = [b.write([kv(f"k{i}", bytes([i]))], n.now_ms + i) for i in range(5)]
    a.receive(batch(a, *(o.raw for o in reversed(ops))), n.now_ms + 10)
    assert a.version_vector() == {b.node_id: 5}
    rd = a.ready()
    assert [o.seq for o in rd.ops] == [1, 2, 3, 4, 5]  # observers see causal order
    assert a.counters["buffered"] == 4


def test_buffer_is_bounded_and_evicts_oldest(net) -> None:
    n = net(2, config=Config(pending_ops_max=3))
    a, b = n.replicas
    ops = [b.write([kv("k", bytes([i]))], n.now_ms + i) for i in range(6)]
    a.receive(batch(a, *(o.raw for o in ops[1:])), n.now_ms)
    assert len(a.dag.pending) == 3 and a.counters[Reason.BUFFER_FULL] == 2
    b_sync = SyncRequest(a.cluster_id, a.node_id, a.version_vector())
    b.receive(b_sync, n.now_ms)  # anti-entropy repairs what the bound dropped
    for out in b.ready().messages:
        if out.to == a.node_id and isinstance(out.message, OpBatch) and out.message.vector:
            a.receive(out.message, n.now_ms)
    assert a.version_vector() == {b.node_id: 6}


def test_forged_parents_and_hlc_regression_are_rejected(net) -> None:
    n = net(2)
    a, b = n.replicas
    ident = n.identities[1]
    first = _forge(n, ident, 1)
    other = a.write([kv("a", b"a")], n.now_ms)
    # seq 2 whose parents[0] is not the author's seq 1
    forged = _forge(n, ident, 2, parents=(other.id,), hlc=first.hlc + 5)
    regress = _forge(n, ident, 2, parents=(first.id,), hlc=first.hlc - 1)
    self_head = _forge(n, ident, 1, parents=(other.id,), hlc=other.hlc + 1)
    a.receive(batch(a, first.raw, forged.raw), n.now_ms)
    assert a.counters[Reason.BAD_PARENTS] == 1
    a.receive(batch(a, regress.raw), n.now_ms)
    assert a.counters[Reason.HLC_REGRESSION] == 1
    assert a.version_vector()[ident.node_id] == 1
    assert self_head.seq == 1  # a second seq-1 op from the same author is an equivocation
    a.receive(batch(a, self_head.raw), n.now_ms)
    assert a.counters[Reason.EQUIVOCATION] == 1


def test_future_ops_are_held_until_the_clock_catches_up(net) -> None:
    n = net(2, config=Config(max_skew_ms=1_000))
    a, _ = n.replicas
    future = _forge(n, n.identities[1], 1, hlc=hlc_pack(n.now_ms + 5_000))
    a.receive(batch(a, future.raw), n.now_ms)
    assert a.counters["held_future"] == 1 and a.rows(KV) == {}
    a.tick(n.now_ms + 2_000)
    assert a.rows(KV) == {}
    a.tick(n.now_ms + 4_001)
    assert a.rows(KV) == {("f",): {"value": b"f"}}
    assert a.clock.last >= future.hlc  # observed once applied


def test_huge_ops_and_messages_are_rejected() -> None:
    ids = [Identity.from_seed(bytes([i + 1]) * 32) for i in range(2)]
    g = make_genesis(ids[0], "t", [i.public_key for i in ids], 0)
    a = Replica(ids[0], g, random.Random(1), config=Config(mutations_max=10))
    b = Replica(ids[1], g, random.Random(2))
    big = b.write([kv(f"k{i}", b"") for i in range(11)], 10)
    a.receive(OpBatch(a.cluster_id, "", (big.raw,)), 10)
    assert a.counters[Reason.TOO_LARGE] == 1 and a.rows(KV) == {}
    with pytest.raises(UsageError):
        Replica(ids[0], g, random.Random(1), config=Config(op_bytes_max=100)).write(
            [kv("k", b"x" * 200)], 10
        )


def test_policy_refuses_writes_to_a_table() -> None:
    ids = [Identity.from_seed(bytes([i + 1]) * 32) for i in range(2)]
    g = make_genesis(
        ids[0], "t", [i.public_key for i in ids], 0, policy={"writers": {"flows": [ids[0].node_id]}}
    )
    a, b = (Replica(i, g, random.Random(k)) for k, i in enumerate(ids))
    assert isinstance(a.policy, StaticPolicy)
    # The author refuses to sign what its peers would refuse (issue 10: no poison op) ...
    with pytest.raises(UsageError, match="forbidden"):
        b.write([Upsert("flows", ("d", "f"), {"priority": 1})], 10)
    assert b.op_count() == 0 and b.counters["refused_own"] == 1
    # ... and a peer refuses such an op if it is signed anyway.
    body = RowsBody((RowMutation("flows", ("d", "f"), 1, {"priority": 1}),))
    op = sign_op(b.identity, b.cluster_id, 1, 10, (), body)
    a.receive(OpBatch(a.cluster_id, "", (op.raw,)), 10)
    assert a.counters[Reason.FORBIDDEN] == 1 and a.rows("flows") == {}


def _limit_pair() -> tuple[Replica, Replica]:
    ids = [Identity.from_seed(bytes([i + 1]) * 32) for i in range(2)]
    g = make_genesis(ids[0], "t", [i.public_key for i in ids], 0)
    return Replica(ids[0], g, random.Random(1)), Replica(ids[1], g, random.Random(2))


def _signed_anyway(author: Replica, body: RowsBody) -> bytes:
    return sign_op(author.identity, author.cluster_id, 1, 10, (), body).raw


@pytest.mark.parametrize(
    ("mutations", "reason"),
    [
        # more rows than one op may carry (the poison op of issue 10: 10,001 kv rows)
        ([Upsert("kv", (f"k{i}",), {"value": b"x"}) for i in range(10_001)], Reason.TOO_LARGE),
        # a reserved row of the wrong shape
        ([Upsert("internal", ("peer/not-a-node",), {"value": b"h:1"})], Reason.BAD_BODY),
        ([Upsert("internal", ("peer/" + "ab" * 16,), {"value": b"no port"})], Reason.BAD_BODY),
        ([Upsert("internal", ("genesis/xyz",), {"value": b""})], Reason.BAD_BODY),
        ([Upsert("internal", ("anything",), {"value": b""})], Reason.BAD_BODY),
    ],
    ids=["mutations_max", "peer_key", "peer_address", "genesis_key", "unknown_key"],
)
def test_the_author_refuses_what_a_peer_refuses(mutations, reason) -> None:
    a, b = _limit_pair()
    with pytest.raises(UsageError, match=reason.value):
        b.write(mutations, 10)
    assert b.op_count() == 0 and b.counters["refused_own"] == 1
    body = RowsBody(tuple(RowMutation(m.table, m.key, 1, m.values) for m in mutations))
    assert a.receive_op(_signed_anyway(b, body), 10) is reason
    assert a.op_count() == 0


def test_the_author_refuses_an_op_over_op_bytes_max_and_so_does_a_peer() -> None:
    a, b = _limit_pair()
    big = [Upsert("kv", (f"k{i}",), {"value": b"x" * 60_000}) for i in range(20)]
    with pytest.raises(UsageError, match="op_bytes_max"):
        b.write(big, 10)
    assert b.op_count() == 0
    body = RowsBody(tuple(RowMutation(m.table, m.key, 1, m.values) for m in big))
    assert a.receive_op(_signed_anyway(b, body), 10) is Reason.TOO_LARGE


def test_well_formed_internal_rows_are_signed_and_accepted() -> None:
    a, b = _limit_pair()
    rows = [
        Upsert("internal", ("peer/" + "ab" * 16,), {"value": b"127.0.0.1:7101"}),
        Upsert("internal", ("genesis/" + "cd" * 32,), {"value": b"raw"}),
        Upsert("internal", ("token/0123456789abcdef",), {"value": b"record"}),
        Upsert("internal", ("flowstats/0000000000000001",), {"value": b"stats"}),
    ]
    op = b.write(rows, 10)
    assert a.receive_op(op.raw, 10) is None and len(a.rows("internal")) == 4


def test_custom_bodies_replicate_and_reach_observers_in_causal_order(net) -> None:
    n = net(2)
    a, b = n.replicas
    vote = a.emit("vote", {"slot": "policy/1", "ballot": 3}, n.now_ms)
    n.pump()
    got = [op for op in b.log() if isinstance(op.body, CustomBody)]
    assert got == [vote] and got[0].body.data == {"slot": "policy/1", "ballot": 3}


def test_equivocation_is_kept_as_evidence_and_does_not_split_state(net) -> None:
    n = net(4)
    a, b, c, evil = n.replicas
    ident = n.identities[3]
    base = evil.write([kv("e0", b"ok")], n.now_ms)  # seq 1: before the fork, it counts
    n.pump()
    fork_a = _forge(n, ident, 2, parents=(base.id,), hlc=base.hlc + 1)
    fork_b = _forge(
        n,
        ident,
        2,
        parents=(base.id,),
        hlc=base.hlc + 2,
        body=RowsBody((RowMutation(KV, ("f",), 1, {"value": b"other"}),)),
    )
    a.receive(batch(a, fork_a.raw), n.now_ms)
    b.receive(batch(b, fork_b.raw), n.now_ms)
    c.receive(batch(c, fork_a.raw), n.now_ms)
    # an honest op built on one branch must still be accepted everywhere
    honest = c.write([kv("h", b"h")], n.now_ms + 10)
    assert fork_a.id in honest.parents
    n.pump()
    for r in (a, b, c):
        assert r.forks() == {ident.node_id: 2}
        assert r.rows(KV) == {("e0",): {"value": b"ok"}, ("h",): {"value": b"h"}}
    assert a.state_digest() == b.state_digest() == c.state_digest()
    assert (
        sum(r.counters["evidence_learned"] + r.counters[Reason.EQUIVOCATION] for r in (a, b, c))
        >= 2
    )


def test_a_node_that_logged_an_op_built_on_the_other_branch_recovers(net) -> None:
    """b logs one branch of a fork and keeps the other as evidence, then logs an honest op
    whose parent is that other branch: its stored log and evidence must recover."""
    n = net(4)
    a, b, c, evil = n.replicas
    ident = n.identities[3]
    base = evil.write([kv("e0", b"ok")], n.now_ms)
    n.pump()
    twins = [
        _forge(n, ident, 2, parents=(base.id,), hlc=base.hlc + 1 + i,
               body=RowsBody((RowMutation(KV, ("f",), 1, {"value": v}),)))
        for i, v in enumerate((b"one", b"two"))
    ]
    b.receive(batch(b, twins[1].raw), n.now_ms)
    c.receive(batch(c, twins[0].raw), n.now_ms)
    honest = c.write([kv("h", b"h")], n.now_ms + 10)
    assert twins[0].id in honest.parents
    n.pump()
    assert b.dag.at(ident.node_id, 2).id == twins[1].id and b.dag.holds(honest.id)
    for i, r in enumerate((a, b, c)):
        again = Replica.recover(
            n.identities[i], n.genesis, random.Random(0),
            [op.raw for op in r.log()], [op.raw for op in r.dag.evidence.values()],
        )
        assert again.forks() == r.forks() == {ident.node_id: 2}
        assert again.state_digest() == r.state_digest() and again.op_digest() == r.op_digest()


@pytest.mark.parametrize("kind", ["", "rows", "k" * 65])
def test_the_author_refuses_a_custom_kind_a_peer_refuses(kind) -> None:
    a, b = _limit_pair()
    with pytest.raises(UsageError, match="body kind"):
        b.emit(kind, {"x": 1}, 10)
    assert b.op_count() == 0
    forged = sign_op(b.identity, b.cluster_id, 1, 10, (), CustomBody(kind, {"x": 1}))
    assert a.receive_op(forged.raw, 10) is Reason.BAD_BODY
