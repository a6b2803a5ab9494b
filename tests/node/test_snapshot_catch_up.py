"""Snapshot catch-up of a node whose store holds a partial log below its peers' pruned cut
(decision 0070, part 3): the peers say so in their sync answers (`Ready.behind`), the
node merges a checked snapshot with what its store holds above the cut (its own writes
included) and installs it in one transaction; the peers then take the writes it made
while below, whose parents they pruned (`named_adopted`)."""

from __future__ import annotations

import random
import sqlite3
import threading
import time

import pytest
from synod.v1 import northbound_pb2 as nb

from controller.node import server, snapshot
from controller.node.datadir import init_data_dirs
from controller.node.engine import BelowCheckpoint
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
from tests.node.conftest import InProcessNode

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


# --- the serve loop's catch-up (controller/node/server.py): fetch in a daemon thread while
# the node serves, install with the core closed. The fetch and the install are stand-ins
# (server._fetch_checked, server._install_checked); what is under test is the loop around
# them: a stop or a secession during a fetch, a stop during an install.

WAIT_S = 10.0  # every wait below is bounded by this


class _Stub:
    """A stand-in for _fetch_checked or _install_checked: records its call, blocks until
    released (ignoring cancel: a long snapshot verification does not look at it), and
    returns `result`."""

    def __init__(self, result, block=True) -> None:
        self.result = result
        self.entered, self.release, self.finished = (threading.Event() for _ in range(3))
        self.calls: list[tuple] = []
        self.thread: threading.Thread | None = None
        if not block:
            self.release.set()

    def __call__(self, *args):
        self.calls.append(args)
        self.thread = threading.current_thread()
        self.entered.set()
        assert self.release.wait(60), "the test did not release the stand-in"
        self.finished.set()
        return self.result


class _Serving:
    """An in-process node whose serve loop's catch-up and secession can be driven from the
    test (the instances serve() makes, caught through the module's names)."""

    def __init__(self, tmp_path, monkeypatch, fetch: _Stub, install: _Stub) -> None:
        made: dict[str, object] = {}

        def catching(cls):
            def make(*args, **kwargs):
                made[cls.__name__] = obj = cls(*args, **kwargs)
                return obj
            return make

        for name in ("_CatchUp", "_Secession", "Metrics"):
            monkeypatch.setattr(server, name, catching(getattr(server, name)))
        monkeypatch.setattr(server, "_fetch_checked", fetch)
        monkeypatch.setattr(server, "_install_checked", install)
        data = tmp_path / "solo"
        init_data_dirs([data], "solo")
        self.node = InProcessNode(data).start()
        self.catch_up, self.secession = made["_CatchUp"], made["_Secession"]
        self.metrics = made["Metrics"]

    def on_loop(self, fn, *args) -> None:
        assert self.node._loop is not None
        self.node._loop.call_soon_threadsafe(fn, *args)

    def below(self) -> None:
        """What the engine emits when a peer says it pruned ops this node lacks."""
        self.on_loop(self.catch_up.on_event, BelowCheckpoint("f" * 32, {"f" * 32: 9}))

    def counter(self, name: str) -> int:
        return self.metrics.counters[name]

    def status(self):
        with self.node.client() as c:
            return c.call(c.cluster.GetStatus, nb.GetStatusRequest())


def _until(pred, timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def test_a_stop_during_a_slow_fetch_returns_at_once_and_cancels_it(tmp_path, monkeypatch):
    """SIGTERM (serve's stop) while a snapshot is being fetched and checked: the node
    stops within the bound, tells the fetch to stop, and does not wait for it (a daemon
    thread: asyncio.to_thread's executor is joined by asyncio.run and at exit)."""
    fetch, install = _Stub(("record", (), "replica")), _Stub(True, block=False)
    serving = _Serving(tmp_path, monkeypatch, fetch, install)
    try:
        serving.below()
        assert fetch.entered.wait(WAIT_S), "no fetch started"
        (cfg, addresses, vector, identity, genesis, creds, cancel, store_file), = fetch.calls
        assert not cancel.is_set()
        assert serving.status().node_id  # the node serves during the fetch
        started = time.monotonic()
        serving.node.stop()  # joins the thread that ran asyncio.run(serve(...))
        assert time.monotonic() - started < 5.0
        assert cancel.is_set()
        assert fetch.thread is not None and fetch.thread.daemon
        assert fetch.thread.is_alive() and not fetch.finished.is_set()  # not waited for
    finally:
        fetch.release.set()
    assert fetch.thread.join(WAIT_S) is None and not fetch.thread.is_alive()
    assert install.calls == []


def test_a_secession_during_a_fetch_cancels_it_and_nothing_is_installed(
        tmp_path, monkeypatch):
    """A secession replaces the core while a fetch runs: the fetch is cancelled, and what
    it brings (here a snapshot that checked out just as the secession came) is the old
    lineage's: not installed. The node serves on in the new core."""
    fetch, install = _Stub(("record", (), "replica")), _Stub(True, block=False)
    serving = _Serving(tmp_path, monkeypatch, fetch, install)
    try:
        serving.below()
        assert fetch.entered.wait(WAIT_S), "no fetch started"
        cancel = fetch.calls[0][6]
        old_core = serving.secession.core
        serving.on_loop(serving.secession.requested.set)  # what move() and go_home() do
        assert _until(lambda: serving.secession.done.is_set()), "no new core"
        assert cancel.is_set() and serving.secession.core is not old_core
        fetch.release.set()
        assert _until(lambda: serving.counter("snapshot_catch_ups|none") == 1)
        assert install.calls == [] and serving.counter("snapshot_catch_ups|installed") == 0
        assert serving.status().node_id
    finally:
        fetch.release.set()
        serving.node.stop()


def test_a_checked_snapshot_is_installed_with_the_core_closed_then_it_serves_again(
        tmp_path, monkeypatch):
    got = ("record", (), "replica")
    fetch, install = _Stub(got, block=False), _Stub(True)
    serving = _Serving(tmp_path, monkeypatch, fetch, install)
    try:
        old_core = serving.secession.core
        serving.below()
        assert install.entered.wait(WAIT_S), "no install started"
        assert old_core.closed  # the store is written only with the core closed
        (_, _, passed, _, genesis, _), = install.calls
        assert passed is got and genesis is old_core.genesis
        install.release.set()
        assert _until(lambda: serving.counter("snapshot_catch_ups|installed") == 1)
        assert serving.secession.core is not old_core and serving.status().node_id
    finally:
        install.release.set()
        serving.node.stop()


@pytest.mark.parametrize("finishes", [True, False])
def test_a_stop_during_an_install_waits_for_it_but_bounded(tmp_path, monkeypatch, finishes):
    """An install must finish or not start: a stop waits for one under way, up to
    INSTALL_STOP_WAIT_S; one that takes longer is left to the exit (SQLite rolls its
    transaction back)."""
    monkeypatch.setattr(server, "INSTALL_STOP_WAIT_S", 1.0)
    fetch, install = _Stub(("record", (), "replica"), block=False), _Stub(True)
    serving = _Serving(tmp_path, monkeypatch, fetch, install)
    try:
        serving.below()
        assert install.entered.wait(WAIT_S), "no install started"
        stopping = threading.Thread(target=serving.node.stop, daemon=True)
        started = time.monotonic()
        stopping.start()
        time.sleep(0.3)
        assert stopping.is_alive()  # waiting for the install
        if finishes:
            install.release.set()
        stopping.join(WAIT_S)
        assert not stopping.is_alive() and not serving.node._thread.is_alive()
        assert time.monotonic() - started < 1.0 + 5.0
        assert install.finished.is_set() == finishes
        assert install.thread is not None and install.thread.daemon
    finally:
        install.release.set()
    install.thread.join(WAIT_S)
