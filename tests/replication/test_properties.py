"""Properties: order, duplication and batching never matter; merge is a join; rebuild = live."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.replication import Delete, OpBatch, Replica, RowState, Upsert
from controller.replication.op import RowMutation

from .conftest import Net

keys = st.sampled_from(["a", "b", "c"])
mutation = st.one_of(
    st.builds(lambda k, v: Upsert("kv", (k,), {"value": v}), keys, st.binary(max_size=2)),
    st.builds(lambda k: Delete("kv", (k,)), keys),
    st.builds(
        lambda k, name, up: Upsert("switches", (k,), {"name": name, "connected": up}),
        keys,
        st.sampled_from(["x", "y"]),
        st.booleans(),
    ),
    st.builds(lambda k, name: Upsert("switches", (k,), {"name": name}), keys, st.just("z")),
    st.builds(lambda k: Delete("switches", (k,)), keys),
)
action = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 2), st.lists(mutation, min_size=1, max_size=3)),
    st.tuples(st.just("sync"), st.integers(0, 2), st.integers(0, 2)),
)


def build_history(actions: list) -> tuple[Net, list]:
    """Three authors writing with partial syncs between them: a DAG with concurrency."""
    n = Net(3)
    for step, act in enumerate(actions):
        if act[0] == "write":
            n.replicas[act[1]].write(act[2], n.now_ms + step)
        else:
            dst, src = n.replicas[act[1]], n.replicas[act[2]]
            raws = tuple(op.raw for op in src.log())
            dst.receive(OpBatch(dst.cluster_id, "", raws), n.now_ms + step)
    ops = {}
    for r in n.replicas:
        for op in r.log():
            ops[op.id] = op
    return n, list(ops.values())


def fresh(n: Net) -> Replica:
    return Replica(n.identities[0], n.genesis, random.Random(0))


def observe(r: Replica) -> tuple:
    return (
        r.state_digest(),
        r.op_digest(),
        {t: r.rows(t) for t in r.schema.names},
        r.version_vector(),
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(action, min_size=1, max_size=14), st.randoms(use_true_random=False), st.data())
def test_any_order_duplication_and_batching_gives_the_same_state(actions, rnd, data) -> None:
    n, ops = build_history(actions)
    reference = fresh(n)
    for r in n.replicas:  # causal order per source
        reference.receive(
            OpBatch(n.genesis.cluster_id, "", tuple(o.raw for o in r.log())), n.now_ms + 100
        )
    raws = [op.raw for op in ops]
    if raws:
        raws += [rnd.choice(raws) for _ in range(data.draw(st.integers(0, 5)))]  # duplicates
    rnd.shuffle(raws)
    other = fresh(n)
    i = 0
    while i < len(raws):  # random batching
        size = data.draw(st.integers(1, 4))
        other.receive(OpBatch(n.genesis.cluster_id, "", tuple(raws[i : i + size])), n.now_ms + 100)
        i += size
    assert observe(other) == observe(reference)
    assert len(other.log()) == len(ops)
    # rebuilding from the log gives the incrementally maintained digest, byte for byte
    rebuilt = Replica.recover(
        n.identities[1], n.genesis, random.Random(0), [o.raw for o in other.log()]
    )
    assert observe(rebuilt) == observe(other)


row_mutation = st.builds(
    lambda cl, v, hlc, author: (
        RowMutation("kv", ("k",), cl, {} if cl % 2 == 0 else {"value": v}),
        hlc,
        author,
    ),
    st.integers(1, 4),
    st.binary(max_size=1),
    st.integers(0, 3),
    st.sampled_from(["a" * 32, "b" * 32]),
)


def merged(items) -> list:
    row = RowState()
    for m, hlc, author in items:
        row.merge(m, hlc, author)
    return row.to_plain()


def _consistent(items) -> list:
    # one (hlc, author) writes one version: the invariant the DAG guarantees
    seen = {}
    for m, hlc, author in items:
        seen.setdefault((hlc, author), (m, hlc, author))
    return list(seen.values())


@given(st.lists(row_mutation, max_size=8), st.randoms(use_true_random=False))
def test_merge_is_commutative_associative_idempotent(items, rnd) -> None:
    items = _consistent(items)
    expected = merged(items)
    shuffled = items[:]
    rnd.shuffle(shuffled)
    assert merged(shuffled) == expected  # commutative
    assert merged(items + items) == expected  # idempotent
    half = len(items) // 2  # associative: merging two partial states equals merging all
    left, right = RowState(), RowState()
    for m, h, a in items[:half]:
        left.merge(m, h, a)
    for m, h, a in items[half:]:
        right.merge(m, h, a)
    joined = RowState.from_plain(left.to_plain())
    joined.cl = max(joined.cl, right.cl)
    for name, v in right.cols.items():
        joined.merge(RowMutation("kv", ("k",), v.cl, {name: v.value}), v.hlc, v.author)
    assert joined.to_plain() == expected
