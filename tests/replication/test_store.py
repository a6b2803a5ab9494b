"""Storage: SQLite and memory twin agree, restart resumes, bad files and logs fail loudly."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from controller.replication import Delete, OpBatch, Upsert
from controller.store import (
    MemoryStore,
    ReadOnlyQuery,
    SqliteStore,
    StoreError,
    open_replica,
    persist,
    stored_state_digest,
)

from .conftest import Net


def _history(n: Net) -> None:
    a, b = n.replicas[:2]
    a.write(
        [Upsert("kv", ("x",), {"value": b"1"}), Upsert("switches", ("d1",), {"connected": True})],
        n.now_ms,
    )
    b.write([Upsert("flows", ("d1", "f1"), {"priority": 7, "match": "ip"})], n.now_ms + 1)
    n.pump(5)
    a.write(
        [Delete("kv", ("x",)), Upsert("links", ("d1", 1, "d2", 2), {"latency_ms": 1.5})], n.now_ms
    )
    b.emit("vote", {"slot": "s/1"}, n.now_ms)


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_store_materialises_rows_and_resumes(tmp_path: Path, kind: str) -> None:
    n = Net(2)
    path = tmp_path / "node.db"
    store = SqliteStore(path) if kind == "sqlite" else MemoryStore()
    replica = open_replica(store, n.identities[0], random.Random(0), n.genesis)
    n.replicas[0] = n.by_id[replica.node_id] = replica
    n.stores[replica.node_id] = store  # the first replica persists; the second is memory only
    _history(n)
    n.pump(10)
    for table in replica.schema.names:
        assert store.rows(table) == replica.rows(table), table
    assert store.rows("switches") == {
        ("d1",): {
            "name": None,
            "site": None,
            "master": None,
            "generation_id": None,
            "connected": True,
        }
    }
    assert stored_state_digest(store) == replica.state_digest()
    digest, log_len = replica.state_digest(), len(replica.log())
    if kind == "sqlite":
        store.close()
        store = SqliteStore(path)
    again = open_replica(store, n.identities[0], random.Random(0), verify="all")
    assert again.state_digest() == digest and len(again.log()) == log_len
    assert again.op_digest() == replica.op_digest()
    assert not again.has_ready() and again.counters["rematerialised"] == 0
    # the resumed replica keeps counting its own seq and hlc upwards
    op = again.write([Upsert("kv", ("y",), {})], n.now_ms - 10_000)
    assert op.seq == 3 and op.hlc > max(o.hlc for o in replica.log())


def test_sqlite_and_memory_twin_hold_the_same_rows(tmp_path: Path) -> None:
    n = Net(2)
    _history(n)
    n.pump(10)
    stores = [SqliteStore(tmp_path / "a.db"), MemoryStore()]
    for store in stores:
        r = open_replica(store, n.identities[1], random.Random(0), n.genesis)
        r.receive(OpBatch(r.cluster_id, "", tuple(o.raw for o in n.replicas[0].log())), n.now_ms)
        persist(store, r)
    for table in n.replicas[0].schema.names:
        assert stores[0].rows(table) == stores[1].rows(table) == n.replicas[0].rows(table)
    assert stored_state_digest(stores[0]) == stored_state_digest(stores[1])


def test_read_only_query_refuses_writes(tmp_path: Path) -> None:
    n = Net(1)
    store = SqliteStore(tmp_path / "q.db")
    r = open_replica(store, n.identities[0], random.Random(0), n.genesis)
    r.write([Upsert("kv", ("k",), {"value": b"v"})], n.now_ms)
    persist(store, r)
    assert store.query("SELECT key, value FROM kv") == [("k", b"v")]
    for bad in (
        "DELETE FROM kv",
        "INSERT INTO kv VALUES ('a', NULL)",
        "DROP TABLE kv",
        "ATTACH DATABASE ':memory:' AS x",
        "PRAGMA journal_mode=DELETE",
    ):
        with pytest.raises(StoreError):
            store.query(bad)
    with ReadOnlyQuery(store.name) as q:
        assert q("SELECT count(*) FROM _synod_ops") == [(1,)]


def test_failed_commit_changes_nothing() -> None:
    n = Net(1)
    store = MemoryStore()
    r = open_replica(store, n.identities[0], random.Random(0), n.genesis)
    r.write([Upsert("kv", ("k",), {"value": b"v"})], n.now_ms)
    store.fail_commits = 1
    rd = r.ready()
    with pytest.raises(StoreError):
        store.commit(rd)
    assert store.log == [] and store.rows("kv") == {}


def _stored(tmp_path: Path) -> tuple[Net, Path]:
    n = Net(2)
    path = tmp_path / "node.db"
    store = SqliteStore(path)
    r = open_replica(store, n.identities[0], random.Random(0), n.genesis)
    for i in range(30):
        r.write([Upsert("kv", (f"k{i}",), {"value": bytes(100)})], n.now_ms + i)
    persist(store, r)
    store.close()
    return n, path


def test_truncated_file_is_a_clear_error_naming_it(tmp_path: Path) -> None:
    n, path = _stored(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(StoreError, match=str(path)):
        open_replica(SqliteStore(path), n.identities[0], random.Random(0))


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="junk.db"):
        SqliteStore(path)


def _flip_signature_bit(path: Path, pos: int) -> None:
    """Edit the stored op at log row pos behind the store's back: one bit of its signature."""
    conn = sqlite3.connect(path)
    raw = bytearray(conn.execute("SELECT raw FROM _synod_ops WHERE pos = ?", (pos,)).fetchone()[0])
    raw[-3] ^= 0x40  # inside the signature
    conn.execute("UPDATE _synod_ops SET raw = ? WHERE pos = ?", (bytes(raw), pos))
    conn.commit()
    conn.close()


def test_tampered_op_in_log_fails_verification_and_names_it(tmp_path: Path) -> None:
    n, path = _stored(tmp_path)
    _flip_signature_bit(path, pos=5)
    with pytest.raises(StoreError, match=r"node\.db.*op #4.*bad_signature"):
        open_replica(SqliteStore(path), n.identities[0], random.Random(0), verify="all")


def test_a_tampered_chain_head_is_caught_only_by_checking_every_signature(tmp_path: Path) -> None:
    """The last op of a chain has no child whose hash link would expose it: only its own
    signature does. The default start-up check samples one signature in 16 (docs/node.md,
    "Start-up verification"); verify_on_start = "all" catches it."""
    n, path = _stored(tmp_path)  # 30 ops of one author: the head is at position 29
    _flip_signature_bit(path, pos=30)
    with pytest.raises(StoreError, match=r"op #29.*bad_signature"):
        open_replica(SqliteStore(path), n.identities[0], random.Random(0), verify="all")
    # 29 % 16 != 0: the sampling check does not look at it (the documented limit).
    sampled = open_replica(SqliteStore(path), n.identities[0], random.Random(0),
                           verify="sample")
    assert sampled.op_count() == 30


def test_deleted_op_breaks_the_hash_links(tmp_path: Path) -> None:
    n, path = _stored(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM _synod_ops WHERE pos = 10")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="bad_parents"):
        open_replica(SqliteStore(path), n.identities[0], random.Random(0), verify="none")


def test_tables_edited_behind_our_back_are_rematerialised(tmp_path: Path) -> None:
    n, path = _stored(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM kv WHERE key = 'k3'")
    conn.execute("DELETE FROM _synod_rows WHERE pk = (SELECT pk FROM _synod_rows LIMIT 1)")
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    r = open_replica(store, n.identities[0], random.Random(0))
    assert r.counters["rematerialised"] == 1
    persist(store, r)
    assert store.rows("kv") == r.rows("kv") and len(store.rows("kv")) == 30
    assert stored_state_digest(store) == r.state_digest()


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_repair_drops_a_refused_own_chain_and_writes_its_rows_again(
    tmp_path: Path, kind: str
) -> None:
    from controller.replication import Config, Replica
    from controller.store.repair import repair_log

    n = Net(2)
    me = n.identities[0]
    store = SqliteStore(tmp_path / "r.db") if kind == "sqlite" else MemoryStore()
    loose = open_replica(store, me, random.Random(0), n.genesis, config=Config(mutations_max=50))
    loose.write([Upsert("kv", ("ok",), {"value": b"1"})], n.now_ms)
    loose.write([Upsert("kv", (f"p{i}",), {"value": b"2"}) for i in range(20)], n.now_ms + 1)
    loose.write([Delete("kv", ("ok",)), Upsert("kv", ("last",), {})], n.now_ms + 2)
    persist(store, loose)
    strict = Config(mutations_max=10)

    def recover(log, evidence=(), compaction=None):
        return Replica.recover(me, n.genesis, random.Random(0), log, evidence, verify="all",
                               config=strict, compaction=compaction)

    with pytest.raises(Exception, match="too_large"):
        recover(store.load().log)
    replica, result = repair_log(store, recover, me.node_id, strict, loose.schema,
                                 now_ms=n.now_ms + 3)
    assert [op.seq for op in result.dropped] == [2, 3] and result.lost == []
    assert result.rewritten_rows == 22 and result.new_ops == 5  # 20 rows in 4 ops of 5, + 1
    assert replica.rows("kv") == loose.rows("kv")  # nothing acknowledged is lost
    for table in replica.schema.names:
        assert store.rows(table) == replica.rows(table), table
    again = recover(store.load().log)  # the repaired log verifies
    assert again.state_digest() == replica.state_digest()


def _pages(path: Path) -> tuple[int, int, int]:
    """(pages, free pages, auto_vacuum) of a store file, read-only."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return tuple(conn.execute(f"PRAGMA {p}").fetchone()[0]
                     for p in ("page_count", "freelist_count", "auto_vacuum"))


def test_compaction_hands_the_pruned_pages_back_and_older_files_are_converted(
        tmp_path: Path) -> None:
    """The file keeps the size of what it holds, not of the longest log it ever held: a
    compaction frees its pages (incremental_vacuum; decision 0102). A store file made
    before (auto_vacuum off) is converted once when the node opens it, rows and log
    unchanged; any other open leaves it as it is."""
    from tests.agreement.conftest import Net as VotingNet
    from tests.agreement.test_checkpoint import settled

    net = VotingNet(3, store_dir=tmp_path, checkpoint_ops=100, compact=True)
    for i in range(600):  # 2 KB values: the pruned log is most of the pages written
        net[i % 3].replica.write([Upsert("kv", (f"k{i % 10}",), {"value": bytes(2000)})],
                                 net.now_ms)
        if i % 20 == 19:
            net.run(rounds=3)
    net.run(rounds=2_000, until=lambda: settled(net) and all(
        n.replica.dag.pruned >= 400 for n in net.nodes))
    path = tmp_path / f"{net[0].id[:8]}.db"
    pages, free, mode = _pages(path)
    # The last compaction freed the pages of ~100 ops of 2 KB; they were handed back.
    assert mode == 2 and free <= 8 and pages < 120, (pages, free)
    net.crash(0)
    with sqlite3.connect(path) as conn:  # as a store made by older code would be
        conn.execute("PRAGMA auto_vacuum=NONE")
        conn.execute("VACUUM")
    assert _pages(path)[2] == 0
    before = SqliteStore(path, check_file=False)  # a plain open (a tool's) converts nothing
    stored = before.load()
    before.close()
    assert _pages(path)[2] == 0
    converted = SqliteStore(path, convert=True)  # the node's own store at start
    try:
        assert _pages(path)[2] == 2
        assert converted.load() == stored
    finally:
        converted.close()
