"""Snapshot catch-up of a node whose store holds a partial log below its peers' pruned cut
(decision 0070, part 3): the peers say so in their sync answers (`Ready.behind`), the
node merges a checked snapshot with what its store holds above the cut (its own writes
included) and installs it in one transaction; the peers then take the writes it made
while below, whose parents they pruned (`named_adopted`)."""

from __future__ import annotations

import random
import sqlite3

import pytest

from controller.node import snapshot
from controller.node.lineages import NODE_SCHEMA
from controller.node.slots import NodeReplica
from controller.node.snapshot import SnapshotError
from controller.replication import (
    INVITE,
    Behind,
    Identity,
    OpBatch,
    Upsert,
    decode,
    decode_message,
    encode,
    encode_message,
    invitation_data,
)
from controller.store import SqliteStore, Stored
from tests.agreement import conftest
from tests.agreement.conftest import Net
from tests.agreement.test_checkpoint import churn

IDS = [Identity.from_seed(bytes([i + 1]) * 32) for i in range(4)]


def _settled(net: Net) -> bool:
    return len({n.replica.state_digest() for n in net.nodes}) == 1 and len(
        {tuple(sorted(n.replica.version_vector().items())) for n in net.nodes}) == 1


class _Helloed(NodeReplica):
    """A node's replica once every peer's hello said it takes the newer message layouts
    (the pruned cut in an answer goes only to those; decision 0101)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.delta_peers = None


def _behind_net(tmp_path, monkeypatch):
    """Three voters and an invited node L (net[3]). L syncs, is then cut off and is no
    peer of the voters while they checkpoint and prune past everything it holds; it
    writes three rows meanwhile (acknowledged: committed to its store)."""
    monkeypatch.setattr(conftest, "AgreementReplica", _Helloed)  # invitations count
    net = Net(3, spares=1, identities=IDS, access={"roles": {i.node_id: "admin" for i in IDS}},
              schema=NODE_SCHEMA, store_dir=tmp_path, checkpoint_ops=20,
              checkpoint_stagger_ms=50, compact=True)
    lagger = net[3]
    net[0].replica.emit(INVITE, invitation_data(lagger.identity.public_key, "127.0.0.1:1",
                                                net[0].id), net.now_ms)
    churn(net, 0, 0, 8, keys=12)
    net.run(rounds=200, until=lambda: _settled(net))
    churn(net, 1, 50, 2, keys=12)  # L's newest op: voter 1's, which writes on below
    net.run(rounds=200, until=lambda: _settled(net))
    voters = [n.id for n in net.nodes[:3]]
    for node in net.nodes[:3]:
        node.replica.set_peers(voters)  # L is no peer of theirs: they do not wait for it
    net.cut = {lagger.id}
    own = [lagger.replica.write([Upsert("kv", (f"mine{i}",), {"value": b"L"})], net.now_ms)
           for i in range(3)]
    churn(net, 1, 200, 30, keys=12)
    net.run(rounds=5)  # voter 0 writes on top of voter 1's newest op, not of L's parent
    churn(net, 0, 100, 30, keys=12)
    net.run(rounds=400, until=lambda: all(
        n.agreement.checkpoints.final_n >= 1 for n in net.nodes[:3]))
    base = net[0].replica.dag.base
    assert any(lagger.replica.dag.vector().get(a, 0) < s for a, s in base.items())
    # Its writes name an op of voter 1 inside the cut that is not the last one there:
    # the voters pruned it (and keep only their frontier).
    parents = [lagger.replica.dag.find(p) for p in lagger.replica.log()[-3].parents]
    assert any(p.seq < base.get(p.author, 0) for p in parents), parents
    return net, lagger, [op.id for op in own]


def _snapshot_for(net: Net, lagger) -> tuple[bytes, snapshot.Rows]:
    stored = lagger.store.load()
    got = snapshot.read_compaction(net.store_dir / f"{net[0].id[:8]}.db",
                                   lacking=snapshot.held_vector(stored))
    assert got is not None
    return got


def _check_one(net: Net, lagger):
    return snapshot.checker(lagger.store.load(), lagger.identity, net.genesis,
                            replica_cls=NodeReplica, schema=NODE_SCHEMA)


def _dump(path) -> list:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return [conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
                for t in ("_synod_ops", "_synod_meta", "_synod_base", "_synod_rows")]


def test_a_node_below_the_pruned_cut_is_told_merges_a_snapshot_and_keeps_its_writes(
        tmp_path, monkeypatch):
    net, lagger, own = _behind_net(tmp_path, monkeypatch)
    voters = [n.id for n in net.nodes]
    for node in net.nodes[:3]:
        node.replica.set_peers(voters)  # L is a peer again: it syncs, and is told
    net.cut = set()
    net.run(rounds=20)
    assert lagger.replica.counters["below_peer_checkpoint"] > 0
    assert sum(n.replica.counters["snapshot_needed"] for n in net.nodes[:3]) > 0
    # Sync alone cannot bring it there: it stays below.
    assert lagger.replica.dag.vector() != net[0].replica.dag.vector()

    record, rows = _snapshot_for(net, lagger)
    replica, merged = _check_one(net, lagger)(record, rows)
    assert all(replica.op(i) is not None for i in own)  # its writes, above the cut, kept
    assert dict(replica.dag.base) == dict(net[0].replica.dag.base)
    net.crash(3)
    snapshot.install(lagger.store, replica, merged, rows)
    net.restart(3)  # reopens from the installed store, the way a node does
    assert all(lagger.replica.op(i) is not None for i in own)
    assert lagger.replica.row("kv", ("mine0",)) == {"value": b"L"}
    assert lagger.replica.dag.base == net[0].replica.dag.base
    net.run(rounds=400, until=lambda: _settled(net))
    for node in net.nodes:  # every acknowledged write of L reached everyone
        assert node.replica.row("kv", ("mine2",)) == {"value": b"L"}
    assert sum(n.replica.counters["named_adopted"] for n in net.nodes[:3]) > 0
    # A voter that adopted L's pruned parents reopens from its store (the record names
    # them), and the cluster goes on compacting with L among the peers.
    before = net[1].replica.state_digest()
    net.crash(1)
    net.restart(1)
    assert net[1].replica.state_digest() == before
    churn(net, 3, 300, 40, keys=12)
    net.run(rounds=500, until=lambda: all(
        n.agreement.checkpoints.final_n >= 2 for n in net.nodes) and _settled(net))


def test_a_forged_or_stale_snapshot_leaves_the_store_unchanged(tmp_path, monkeypatch):
    net, lagger, _ = _behind_net(tmp_path, monkeypatch)
    path = net.store_dir / f"{lagger.id[:8]}.db"
    before = _dump(path)
    record, rows = _snapshot_for(net, lagger)
    check_one = _check_one(net, lagger)
    table, key, meta, point = rows[0]
    plain = decode(meta)
    plain[0] += 2
    with pytest.raises(SnapshotError, match="certified digest"):
        check_one(record, ((table, key, encode(plain), point), *rows[1:]))
    with pytest.raises(SnapshotError, match="certified digest"):
        check_one(record, rows[:-1])  # truncated: a row left out
    # A snapshot whose cut this store already holds brings nothing: refused.
    held = snapshot.checker(net[0].store.load(), net[0].identity, net.genesis,
                            replica_cls=NodeReplica, schema=NODE_SCHEMA)
    with pytest.raises(SnapshotError, match="whole cut already"):
        held(record, rows)
    assert _dump(path) == before


def test_a_crash_inside_the_install_leaves_the_old_store_whole(tmp_path, monkeypatch):
    net, lagger, own = _behind_net(tmp_path, monkeypatch)
    path = net.store_dir / f"{lagger.id[:8]}.db"
    record, rows = _snapshot_for(net, lagger)
    replica, merged = _check_one(net, lagger)(record, rows)
    net.crash(3)
    before = _dump(path)

    def crash(self, compaction):
        self._conn.executemany("DELETE FROM _synod_ops WHERE author = ? AND seq <= ?",
                               sorted(compaction.base.items()))
        raise OSError("power cut")

    monkeypatch.setattr(SqliteStore, "_compact", crash)
    with pytest.raises(OSError):
        snapshot.install(lagger.store, replica, merged, rows)
    assert _dump(path) == before
    net.restart(3)
    assert all(lagger.replica.op(i) is not None for i in own)


def test_an_answer_carries_the_pruned_cut_only_to_a_peer_that_lacks_it():
    """The wire: an eighth field, set only when the requester lacks pruned ops; the
    receiver reports `Behind` when its vector does not cover it."""
    cid = bytes(32)
    plain = OpBatch(cid, "a" * 32, (), {"b": 3}, False, ())
    assert len(decode(encode_message(plain))) == 7
    told = OpBatch(cid, "a" * 32, (), {"b": 3}, False, (), {"b": 2})
    assert decode_message(encode_message(told), 1 << 20) == told
    with pytest.raises(Exception, match="outside an answer"):
        decode_message(encode(decode(encode_message(told))[:4] + [None, False, [], {"b": 2}]),
                       1 << 20)
    r = NodeReplica(IDS[0], conftest.Net(3, identities=IDS[:3]).genesis, random.Random(0),
                    schema=NODE_SCHEMA)
    r.receive(OpBatch(r.cluster_id, IDS[1].node_id, (), {IDS[1].node_id: 4}, False, (),
                      {IDS[1].node_id: 4}), 0)
    rd = r.ready()
    assert rd.behind == Behind(IDS[1].node_id, {IDS[1].node_id: 4})
    r.advance(rd)
    r.receive(OpBatch(r.cluster_id, IDS[1].node_id, (), {}, False, ()), 0)
    assert r.ready().behind is None


def test_a_store_that_signed_another_op_at_the_cut_is_refused(tmp_path, monkeypatch, caplog):
    """Voter 1's store is as if restored from an older copy that then took writes: its ops
    are signed with voter 1's key but are not the ones the checkpoint certifies. Its op at
    the cut's seq differs from the certified one: the merge is refused, naming both (those
    writes are not in the cluster's state). Own ops that stop below the cut are warned of."""
    net, lagger, _ = _behind_net(tmp_path, monkeypatch)
    record, rows = _snapshot_for(net, lagger)
    snap = snapshot.check(record, rows, lagger.identity, net.genesis, replica_cls=NodeReplica,
                          schema=NODE_SCHEMA)
    me = net[1].identity
    cut = snap.dag.base[me.node_id]
    restored = NodeReplica(me, net.genesis, random.Random(1), schema=NODE_SCHEMA)
    for i in range(cut):
        restored.write([Upsert("kv", (f"again{i}",), {"value": b"x"})], net.now_ms)
    ops = restored.log()
    assert ops[-1].seq == cut and ops[-1].id != snap.dag.frontier[me.node_id].id
    with pytest.raises(SnapshotError, match=f"at seq {cut}.*signed two ops with one seq"):
        snapshot._check_own_ops(snap, ops, me.node_id)
    with pytest.raises(SnapshotError, match="two ops with one seq"):
        snapshot.merge(snap, record, rows, Stored(net.genesis.raw, tuple(op.raw for op in ops), ()),
                       me, net.genesis, replica_cls=NodeReplica, schema=NODE_SCHEMA)
    with caplog.at_level("WARNING", logger="synod.snapshot"):
        snapshot._check_own_ops(snap, ops[:-1], me.node_id)
    assert "restored from an older copy" in caplog.text
    # The store's own ops as the cluster has them pass.
    held = snapshot._decode_all(net[1].store.load().log, NODE_SCHEMA)
    snapshot._check_own_ops(snap, held, me.node_id)
