"""Integrity at rest (decision 0060), store level: the materialised tables are checked
row by row against the log at open, and store files are private."""

from __future__ import annotations

import logging
import random
import sqlite3
import stat
from pathlib import Path

import pytest

from controller.replication import Upsert
from controller.store import ReadOnlyQuery, SqliteStore, open_replica, persist
from controller.store.recovery import table_mismatches

from .conftest import Net


def _stored(tmp_path: Path) -> tuple[Net, Path]:
    n = Net(1)
    path = tmp_path / "node.db"
    store = SqliteStore(path)
    r = open_replica(store, n.identities[0], random.Random(0), n.genesis)
    r.write([Upsert("kv", (f"k{i}",), {"value": f"v{i}".encode()}) for i in range(20)], n.now_ms)
    r.write([Upsert("links", ("0000000000000001", 1, "0000000000000002", 2),
                    {"up": True, "latency_ms": float("nan")}),
             Upsert("switches", ("0000000000000001",), {"connected": False, "generation_id": 7}),
             Upsert("links", ("0000000000000001", 2, "0000000000000002", 3),
                    {"up": False, "latency_ms": 2.5})], n.now_ms + 1)
    persist(store, r)
    store.close()
    return n, path


def _edit(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    for s in statements:
        conn.execute(s)
    conn.commit()
    conn.close()


def test_an_untouched_store_is_not_rewritten(tmp_path: Path) -> None:
    """Bools, reals (a NaN reads back as NULL), ints and blobs all compare equal."""
    n, path = _stored(tmp_path)
    store = SqliteStore(path)
    r = open_replica(store, n.identities[0], random.Random(0))
    assert list(table_mismatches(store, r)) == []
    assert r.counters["rematerialised"] == 0 and not r.has_ready()


@pytest.mark.parametrize("statement, table, what", [
    ("UPDATE kv SET value = X'626164' WHERE key = 'k3'", "kv", "column value differs"),
    ("UPDATE kv SET value = 'v3' WHERE key = 'k3'", "kv", "column value differs"),  # text
    ("DELETE FROM kv WHERE key = 'k3'", "kv", "missing"),
    ("INSERT INTO kv VALUES ('k99', X'00')", "kv", "a row the log does not hold"),
    ("UPDATE switches SET connected = 1", "switches", "column connected differs"),
    ("UPDATE links SET latency_ms = 9.5 WHERE src_port = 2", "links",
     "column latency_ms differs"),
])
def test_a_row_edited_behind_the_nodes_back_is_named_and_rewritten_from_the_log(
        tmp_path: Path, caplog, statement: str, table: str, what: str) -> None:
    n, path = _stored(tmp_path)
    _edit(path, statement)  # the file stays valid SQLite; _synod_rows is untouched
    store = SqliteStore(path)
    with caplog.at_level(logging.WARNING, logger="synod.store"):
        r = open_replica(store, n.identities[0], random.Random(0))
    assert r.counters["rematerialised"] == 1
    assert any(f"table {table}" in m and what in m for m in caplog.messages), caplog.messages
    assert any("written again from it" in m for m in caplog.messages)
    persist(store, r)
    assert list(table_mismatches(store, r)) == []  # every table, NaN-aware (links too)
    with ReadOnlyQuery(str(path)) as q:  # what users' SQL reads agrees with the API again
        assert q("SELECT value FROM kv WHERE key = 'k3'") == [(b"v3",)]
        assert q("SELECT count(*) FROM kv") == [(20,)]
        assert q("SELECT connected FROM switches") == [(0,)]
    store.close()
    again = open_replica(SqliteStore(path), n.identities[0], random.Random(0))
    assert again.counters["rematerialised"] == 0


def test_many_differing_rows_are_named_up_to_a_limit(tmp_path: Path, caplog) -> None:
    n, path = _stored(tmp_path)
    _edit(path, "UPDATE kv SET value = X'00'")
    with caplog.at_level(logging.WARNING, logger="synod.store"):
        open_replica(SqliteStore(path), n.identities[0], random.Random(0))
    named = [m for m in caplog.messages if "table kv" in m]
    assert len(named) == 10
    assert any("10 rows named, more differ" in m for m in caplog.messages)


def test_store_files_are_private(tmp_path: Path) -> None:
    n = Net(1)
    path = tmp_path / "new.db"
    store = SqliteStore(path)
    r = open_replica(store, n.identities[0], random.Random(0), n.genesis)
    r.write([Upsert("kv", ("k",), {"value": b"v"})], n.now_ms)
    persist(store, r)
    for name in ("new.db", "new.db-wal", "new.db-shm"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    store.close()
