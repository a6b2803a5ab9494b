"""Joined lineages: a replica holds a second cluster's ops, verified under that cluster's id."""

from __future__ import annotations

import random

import pytest

from controller.replication import (
    Identity,
    OpBatch,
    Replica,
    SyncRequest,
    Upsert,
    UsageError,
    decode_message,
    encode_message,
    make_genesis,
)


def _cluster(name: str, ids: list[Identity]):
    return make_genesis(ids[0], name, [i.public_key for i in ids], 0)


def _pump(replicas: list[Replica], now_ms: int, rounds: int = 100) -> None:
    by_id = {r.node_id: r for r in replicas}
    for _ in range(rounds):
        now_ms += 50
        for r in replicas:
            r.tick(now_ms)
            for x in [r, *r.lineages().values()]:
                while x.has_ready():
                    rd = x.ready()
                    x.advance(rd)
                    for out in rd.messages:
                        msg = decode_message(encode_message(out.message), 1 << 24)
                        if out.to in by_id:
                            by_id[out.to].receive(msg, now_ms)


def test_joined_lineages_converge_to_one_op_set_and_state() -> None:
    xs = [Identity.from_seed(bytes([i + 1]) * 32) for i in range(2)]
    ys = [Identity.from_seed(bytes([i + 9]) * 32) for i in range(2)]
    gx, gy = _cluster("x", xs), _cluster("y", ys)
    everyone = [i.node_id for i in xs + ys]
    rx = [Replica(i, gx, random.Random(k), peers=everyone) for k, i in enumerate(xs)]
    ry = [Replica(i, gy, random.Random(k + 5), peers=everyone) for k, i in enumerate(ys)]
    now = 1_000_000
    rx[0].write([Upsert("kv", ("k",), {"value": b"x"})], now)
    ry[0].write([Upsert("kv", ("k",), {"value": b"y"})], now + 5)  # later: y's value wins
    ry[1].write([Upsert("kv", ("only-y",), {"value": b"1"})], now + 6)
    # Not joined: the other cluster's messages are refused by cluster id, nothing applied.
    _pump(rx + ry, now)
    assert rx[0].counters["wrong_cluster"] > 0 and rx[0].row("kv", ("only-y",)) is None
    for r in rx:
        r.join_lineage(Replica(r.identity, gy, random.Random(1), peers=everyone))
    for r in ry:
        r.join_lineage(Replica(r.identity, gx, random.Random(2), peers=everyone))
    _pump(rx + ry, now + 10_000)
    everyone_r = rx + ry
    assert len({r.op_digest() for r in everyone_r}) == 1
    assert len({r.state_digest() for r in everyone_r}) == 1
    for r in everyone_r:
        assert r.row("kv", ("k",)) == {"value": b"y"}
        assert r.row("kv", ("only-y",)) == {"value": b"1"}
        assert r.version_vector() == (rx[0] if r in rx else ry[0]).version_vector()
    # A joined lineage is read-only; joining twice, or one's own cluster, is misuse.
    (shadow,) = rx[0].lineages().values()
    with pytest.raises(UsageError):
        shadow.write([Upsert("kv", ("z",), {"value": b"z"})], now)
    with pytest.raises(UsageError):
        rx[0].join_lineage(Replica(xs[0], gy, random.Random(3)))
    with pytest.raises(UsageError):
        rx[0].join_lineage(Replica(xs[0], gx, random.Random(3)))
    # A third cluster is still refused; a y op re-tagged as x does not verify.
    gz = _cluster("z", [Identity.from_seed(b"\x33" * 32)])
    before = rx[0].counters["wrong_cluster"]
    rx[0].receive(SyncRequest(gz.cluster_id, ys[0].node_id, {}), now)
    assert rx[0].counters["wrong_cluster"] == before + 1
    y_op = ry[0].log()[0]
    rx[1].receive(OpBatch(gx.cluster_id, ys[0].node_id, (y_op.raw,)), now)
    assert rx[1].counters["unknown_author"] == 1


def test_a_write_after_the_join_beats_the_joined_rows() -> None:
    """The host's clock moves past the joined lineage's ops, so a later local write wins."""
    x, y = Identity.from_seed(b"\x01" * 32), Identity.from_seed(b"\x02" * 32)
    gx, gy = _cluster("x", [x]), _cluster("y", [y])
    ry = Replica(y, gy, random.Random(1))
    ry.write([Upsert("kv", ("k",), {"value": b"y"})], 5_000_000)  # a clock far ahead
    rx = Replica(x, gx, random.Random(2))
    shadow = Replica(x, gy, random.Random(3))
    for op in ry.log():
        assert shadow.receive_op(op.raw, 5_000_000) is None
    rx.join_lineage(shadow)
    assert rx.row("kv", ("k",)) == {"value": b"y"}
    rx.write([Upsert("kv", ("k",), {"value": b"x"})], 1_000_000)
    assert rx.row("kv", ("k",)) == {"value": b"x"}
