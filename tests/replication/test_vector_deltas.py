"""Vector deltas (controller/replication/vectors.py, decision 0101): idle anti-entropy
carries no vector entries, a lost or unrebuildable delta is recovered by asking for the
whole vector, peers that did not say they take deltas get the old message layout, and a
vector that could not be rebuilt never reaches peer_vectors (which compaction trusts)."""

from __future__ import annotations

import pytest

from controller.replication import (
    OpBatch,
    Rejected,
    SyncRequest,
    Upsert,
    decode_message,
    encode_message,
)
from controller.replication.encoding import decode
from controller.replication.vectors import VectorDeltas, vector_delta, vector_hash


def test_hash_ignores_order_and_sees_every_entry() -> None:
    assert vector_hash({"a": 1, "b": 2}) == vector_hash({"b": 2, "a": 1})
    assert vector_hash({"a": 1, "b": 2}) != vector_hash({"a": 1, "b": 3})
    assert vector_hash({"a": 1}) != vector_hash({"a": 1, "b": 1})
    assert vector_hash({"ab": 1}) != vector_hash({"a": 1, "b": 1})


def _reference_hash(vector: dict) -> bytes:
    """The hash as decision 0101 defines it, written out once more: its bytes travel."""
    import hashlib
    h = hashlib.blake2b(digest_size=16)
    for author in sorted(vector):
        name = author.encode()
        h.update(len(name).to_bytes(2, "big") + name + vector[author].to_bytes(8, "big"))
    return h.digest()


def test_the_hash_is_the_defined_one_and_never_stale() -> None:
    """A replica's memory keeps the last vector it hashed: the same vector again (a hub
    sending it to each peer) must give the same bytes, and a vector changed in place must
    not be answered from that memory."""
    import random
    rng = random.Random(14)
    d = VectorDeltas()
    peers = [f"p{i}" for i in range(5)]
    v = {f"n{i:02d}": rng.randrange(1, 1 << 40) for i in range(50)}
    assert vector_hash(v) == _reference_hash(v)
    for _ in range(200):
        author = rng.choice(sorted(v))
        v[author] = rng.randrange(1, 1 << 40)  # the same dict object, changed in place
        if rng.random() < 0.2:
            v[f"x{rng.randrange(1000)}"] = rng.randrange(1, 100)
        for peer in peers:  # as a hub sends one vector to each peer in turn
            assert d.outgoing(peer, v)[2] == _reference_hash(v)
        assert d.incoming("p0", v, b"", _reference_hash(v)) == v
        assert d.incoming("p1", {}, _reference_hash(v), _reference_hash(v)) is None  # base unknown
    assert vector_hash({}) == _reference_hash({})


def test_delta_lists_changed_and_gone_authors() -> None:
    assert vector_delta({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 5, "d": 1}) == {
        "b": 5, "d": 1, "c": 0}
    assert vector_delta({"a": 1}, {"a": 1}) == {}


def test_sender_and_receiver_memories_rebuild_the_whole_vector() -> None:
    tx, rx = VectorDeltas(), VectorDeltas()
    v1, v2, v3 = {"a": 1, "b": 1}, {"a": 4, "b": 1}, {"a": 4, "c": 2}
    entries, base, digest = tx.outgoing("rx", v1)
    assert (entries, base) == (v1, b"")  # the first one goes whole
    assert rx.incoming("tx", entries, base, digest) == v1
    entries, base, digest = tx.outgoing("rx", v2)
    assert entries == {"a": 4} and base == vector_hash(v1) and digest == vector_hash(v2)
    assert rx.incoming("tx", entries, base, digest) == v2
    lost = tx.outgoing("rx", v3)  # never arrives
    entries, base, digest = tx.outgoing("rx", v3)
    assert entries == {} and base == lost[2]
    assert rx.incoming("tx", entries, base, digest) is None  # base not held
    assert rx.resync_due == {"tx"} and rx.held("tx") == v2  # older, below the true one
    tx.resync("rx")
    entries, base, digest = tx.outgoing("rx", v3)
    assert base == b"" and rx.incoming("tx", entries, base, digest) == v3


def test_memories_hold_only_current_peers() -> None:
    d = VectorDeltas()
    for p in ("p1", "p2", "p3"):
        d.outgoing(p, {"a": 1})
        d.incoming(p, {"a": 1}, b"", vector_hash({"a": 1}))
    d.resync_due = {"p1", "p3"}
    d.set_peers(["p1"])
    assert d.held("p2") is None and d.held("p1") == {"a": 1} and d.resync_due == {"p1"}


def test_encoding_keeps_the_old_layout_without_delta_fields() -> None:
    req = SyncRequest(b"c" * 32, "n1", {"a": 3})
    assert len(decode(encode_message(req))) == 6  # what an older node decodes
    batch = OpBatch(b"c" * 32, "n1", (), {"a": 3})
    assert len(decode(encode_message(batch))) == 7
    h = vector_hash({"a": 3})
    for msg in (SyncRequest(b"c" * 32, "n1", {}, vector_base=h, vector_hash=h),
                OpBatch(b"c" * 32, "n1", (), {"a": 0}, vector_base=h, vector_hash=h),
                OpBatch(b"c" * 32, "n1", (b"op",), resync=True)):
        assert decode_message(encode_message(msg), 1 << 20) == msg


@pytest.mark.parametrize("extra", [
    [b"x", b"y" * 16, False],  # a base that is not a hash
    [b"", b"y" * 15, False],
    [b"y" * 16, b"", False],  # a delta without the whole vector's hash
    [b"", b"", 1],  # resync not a bool
    [b"", b""],  # a field missing
])
def test_malformed_delta_fields_are_refused(extra) -> None:
    from controller.replication.encoding import encode

    plain = [1, b"c" * 32, "n1", {"a": 1}, [], {}] + extra
    with pytest.raises(Rejected):
        decode_message(encode(plain), 1 << 20)


def _messages(replica):
    out = []
    while replica.has_ready():
        rd = replica.ready()
        replica.advance(rd)
        out += list(rd.messages)
    return out


def test_idle_anti_entropy_carries_no_vector_entries(net) -> None:
    n = net(6)
    for k, r in enumerate(n.replicas):
        r.write([Upsert("kv", (f"k{k}",), {"value": b"v"})], n.now_ms)
    n.pump(rounds=60)
    assert n.converged()
    r = n.replicas[0]
    sizes = []
    for _ in range(5):
        n.now_ms += 250
        r.tick(n.now_ms)
        for out in _messages(r):
            assert isinstance(out.message, SyncRequest)
            assert out.message.vector == {} and out.message.vector_base  # a delta, empty
            sizes.append(len(encode_message(out.message)))
            n.by_id[out.to].receive(decode_message(encode_message(out.message), 1 << 24),
                                    n.now_ms)
            answers = _messages(n.by_id[out.to])
            assert [a.message.vector for a in answers] == [{}]
    whole = len(encode_message(SyncRequest(r.cluster_id, r.node_id, r.version_vector())))
    assert max(sizes) < whole  # 5 authors' entries cost more than two hashes


def test_a_lost_delta_is_recovered_by_a_whole_vector(net) -> None:
    n = net(2)
    a, b = n.replicas
    a.write([Upsert("kv", ("x",), {"value": b"1"})], n.now_ms)
    n.pump(rounds=20)
    a.write([Upsert("kv", ("y",), {"value": b"2"})], n.now_ms)
    for _ in _messages(a):  # the push and any request: lost
        pass
    a.sync_with(b.node_id, n.now_ms)  # its vector names a base b never had
    assert _messages(a)  # lost too: b cannot rebuild a delta on a vector it never had
    a.sync_with(b.node_id, n.now_ms)
    (req,) = _messages(a)
    before = dict(b.peer_vectors.get(a.node_id, {}))
    b.receive(decode_message(encode_message(req.message), 1 << 24), n.now_ms)
    assert b.peer_vectors.get(a.node_id, {}) == before  # nothing reported from a guess
    (answer,) = _messages(b)
    assert answer.message.resync
    a.receive(decode_message(encode_message(answer.message), 1 << 24), n.now_ms)
    # a pushes back what b lacks by b's vector and asks again at once, whole
    (again,) = [m for m in _messages(a) if isinstance(m.message, SyncRequest)]
    assert again.message.vector_base == b"" and again.message.vector == a.version_vector()
    n.pump(rounds=20)
    assert n.converged() and b.peer_vectors[a.node_id] == a.version_vector()


def test_peers_not_known_to_take_deltas_get_whole_vectors(net) -> None:
    n = net(3)
    r = n.replicas[0]
    r.delta_peers = {n.replicas[1].node_id}
    for _ in range(3):
        for p in n.replicas[1:]:
            r.sync_with(p.node_id, n.now_ms)
    for out in _messages(r):
        layout = len(decode(encode_message(out.message)))
        if out.to == n.replicas[1].node_id:
            assert layout == 9
        else:
            assert layout == 6 and out.message.vector == r.version_vector()


def test_a_cluster_converges_with_messages_lost(net) -> None:
    n = net(4, seed=3)
    dropped = 0
    for rnd in range(120):
        n.now_ms += 50
        if rnd < 60:
            r = n.replicas[rnd % 4]
            r.write([Upsert("kv", (f"k{rnd}",), {"value": b"v"})], n.now_ms)
        for r in n.replicas:
            r.tick(n.now_ms)
            for out in _messages(r):
                if rnd < 80 and (rnd * 7 + len(out.message.__class__.__name__)) % 3 == 0:
                    dropped += 1
                    continue
                n.by_id[out.to].receive(decode_message(encode_message(out.message), 1 << 24),
                                        n.now_ms)
    assert dropped > 0
    n.pump(rounds=40)
    assert n.converged()
    for r in n.replicas:
        for p, v in r.peer_vectors.items():
            assert v == n.by_id[p].version_vector()


def test_a_node_that_sends_whole_vectors_still_asks_a_delta_sender_to_resync(net) -> None:
    """A replica not sending deltas (a joined lineage's, or before the peer's hello) can
    still be sent them by a peer that remembers an older exchange: it must say resync, or
    that peer would send deltas it cannot rebuild for ever."""
    n = net(2)
    a, b = n.replicas
    b.delta_peers = set()
    a.sync_with(b.node_id, n.now_ms)
    _messages(a)  # lost: a remembers a vector b never had
    a.sync_with(b.node_id, n.now_ms)
    (req,) = _messages(a)
    assert req.message.vector_base
    b.receive(decode_message(encode_message(req.message), 1 << 24), n.now_ms)
    (answer,) = _messages(b)
    assert answer.message.resync and answer.message.vector_base == b""
    assert answer.message.vector == b.version_vector()  # b itself sends whole vectors


def test_delta_fields_and_a_pruned_base_travel_together() -> None:
    h = vector_hash({"a": 3})
    both = OpBatch(b"c" * 32, "n1", (), {"a": 3}, base={"a": 1},
                   vector_base=h, vector_hash=h, resync=True)
    assert len(decode(encode_message(both))) == 11
    assert decode_message(encode_message(both), 1 << 20) == both
    deltas_only = OpBatch(b"c" * 32, "n1", (), {}, vector_base=h, vector_hash=h)
    assert decode(encode_message(deltas_only))[7] is None
    assert decode_message(encode_message(deltas_only), 1 << 20) == deltas_only
    base_only = OpBatch(b"c" * 32, "n1", (), {"a": 3}, base={"a": 1})
    assert len(decode(encode_message(base_only))) == 8  # deltas not taken: no delta fields
    assert decode_message(encode_message(base_only), 1 << 20) == base_only


def test_a_delta_that_does_not_rebuild_the_named_vector_or_grows_too_far_is_refused() -> None:
    rx = VectorDeltas(entries_max=3)
    v1 = {"a": 1}
    assert rx.incoming("tx", v1, b"", vector_hash(v1)) == v1
    forged = {"a": 1, "zz": 9}
    assert rx.incoming("tx", {"zz": 9}, vector_hash(v1), vector_hash({"a": 2})) is None
    assert rx.held("tx") is None and rx.resync_due == {"tx"}  # nothing kept from a lie
    assert rx.incoming("tx", forged, b"", vector_hash(forged)) == forged
    # A peer adding made-up authors, each delta hashed right, stops at the bound.
    whole, base = dict(forged), vector_hash(forged)
    for i in range(3):
        whole[f"x{i}"] = 1
        got = rx.incoming("tx", {f"x{i}": 1}, base, vector_hash(whole))
        base = vector_hash(whole)
        if len(whole) > 3:
            assert got is None and rx.held("tx") is None
            break
        assert got == whole
    else:
        raise AssertionError("the bound never applied")
