"""The SQLite adapter: op log, evidence, materialised tables and merge meta in one WAL file."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from controller.replication import (
    DEFAULT_SCHEMA,
    Genesis,
    Ready,
    Schema,
    Value,
    decode,
    encode,
)

from . import sql
from .port import Stored, StoreError

__all__ = ["SqliteStore", "ReadOnlyQuery", "QueryLimitError"]


def _bools_back(schema: Schema, table: str) -> list[int]:
    """Positions (in select order) of bool columns, which SQLite returns as 0/1."""
    t = schema.table(table)
    order = list(t.key_columns) + list(t.value_columns)
    return [i for i, c in enumerate(order) if c.type == "bool"]


class SqliteStore:
    """A replica's durable state in one SQLite file (WAL, synchronous=FULL).

    Opening checks the file (quick_check when check_file is true) and its format; any
    fault is a StoreError naming the file and what is wrong.
    """

    def __init__(self, path: str | Path, schema: Schema = DEFAULT_SCHEMA, check_file: bool = True):
        self.name = str(path)
        self.schema = schema
        try:
            # A new file is made 0600 first: SQLite gives its -wal and -shm the same mode.
            os.close(os.open(self.name, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise StoreError(f"{self.name}: cannot open: {exc.strerror}") from None
        try:
            self._conn = sqlite3.connect(self.name, isolation_level=None, check_same_thread=False)
            for pragma in sql.PRAGMAS:
                self._conn.execute(pragma)
            if check_file:
                result = self._conn.execute(sql.QUICK_CHECK).fetchall()
                if result != [("ok",)]:
                    raise StoreError(f"{self.name}: damaged database: {result[:3]}")
            self._conn.execute("BEGIN IMMEDIATE")
            for statement in sql.all_ddl(schema):
                self._conn.execute(statement)
            version = self._get_meta("format")
            if version is None:
                self._conn.execute(sql.PUT_META, ("format", sql.FORMAT_VERSION))
            elif version != sql.FORMAT_VERSION:
                raise StoreError(f"{self.name}: format {version}, expected {sql.FORMAT_VERSION}")
            self._conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.name}: not a usable Synod database: {exc}") from None
        self._upsert = {t.name: sql.upsert_row(t) for t in schema.tables}
        self._delete = {t.name: sql.delete_row(t) for t in schema.tables}

    def _get_meta(self, key: str) -> Any:
        row = self._conn.execute(sql.GET_META, (key,)).fetchone()
        return None if row is None else row[0]

    def init(self, genesis: Genesis) -> None:
        held = self._get_meta("genesis")
        if held is not None:
            if held != genesis.raw:
                raise StoreError(f"{self.name}: holds another cluster's genesis")
            return
        with self._transaction():
            self._conn.execute(sql.PUT_META, ("genesis", genesis.raw))

    def load(self) -> Stored:
        try:
            log = tuple(r[0] for r in self._conn.execute(sql.SELECT_LOG))
            evidence = tuple(r[0] for r in self._conn.execute(sql.SELECT_EVIDENCE))
            return Stored(self._get_meta("genesis"), log, evidence)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.name}: cannot read the log: {exc}") from None

    def commit(self, ready: Ready) -> None:
        """Write a Ready's ops, evidence and rows in one durable transaction."""
        conn = self._conn
        with self._transaction():
            if ready.replace_rows:
                for table in self.schema.tables:
                    conn.execute(sql.clear_table(table))
                conn.execute(sql.CLEAR_ROW_METAS)
            conn.executemany(
                sql.INSERT_OP,
                ((op.id, op.author, op.seq, op.hlc, op.body.kind, op.raw) for op in ready.ops),
            )
            conn.executemany(
                sql.INSERT_EVIDENCE, ((op.id, op.author, op.seq, op.raw) for op in ready.evidence)
            )
            upserts: dict[str, list[tuple]] = {}
            deletes: dict[str, list[tuple]] = {}
            metas = []
            for row in ready.rows:
                if row.values is None:
                    deletes.setdefault(row.table, []).append(row.key)
                else:
                    upserts.setdefault(row.table, []).append(row.key + tuple(row.values.values()))
                metas.append((row.table, encode(list(row.key)), row.meta))
            for table, params in deletes.items():
                conn.executemany(self._delete[table], params)
            for table, params in upserts.items():
                conn.executemany(self._upsert[table], params)
            conn.executemany(sql.PUT_ROW_META, metas)

    def drop_chain(self, author: str, seq_from: int) -> int:
        """Remove author's logged ops from seq_from on (repair; see controller/store/repair)."""
        with self._transaction():
            return self._conn.execute(sql.DROP_CHAIN, (author, seq_from)).rowcount

    def _transaction(self) -> _Transaction:
        return _Transaction(self)

    def rows(self, table: str) -> dict[tuple, dict[str, Value]]:
        t = self.schema.table(table)
        nkey = len(t.primary_key)
        names = [c.name for c in t.value_columns]
        bools = _bools_back(self.schema, table)
        out = {}
        for r in self._conn.execute(sql.select_rows(t)):
            r = list(r)
            for i in bools:
                r[i] = None if r[i] is None else bool(r[i])
            out[tuple(r[:nkey])] = dict(zip(names, r[nkey:], strict=True))
        return out

    def row_metas(self) -> Iterator[tuple[str, tuple, bytes]]:
        for tbl, pk, meta in self._conn.execute(sql.SELECT_ROW_METAS).fetchall():
            yield tbl, tuple(decode(pk)), meta

    def query(self, statement: str, params: tuple = ()) -> list[tuple]:
        """Run a read-only SQL query (see ReadOnlyQuery)."""
        with ReadOnlyQuery(self.name) as q:
            return q(statement, params)

    def close(self) -> None:
        self._conn.close()


class _Transaction:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    def __enter__(self) -> None:
        self._store._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        conn = self._store._conn
        if kind is None:
            try:
                conn.execute("COMMIT")
                return
            except sqlite3.DatabaseError as error:
                conn.execute("ROLLBACK")
                raise StoreError(f"{self._store.name}: commit failed: {error}") from None
        conn.execute("ROLLBACK")


_READ_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_RECURSIVE,
}


class QueryLimitError(StoreError):
    """A read-only query ran past its time limit or returned more rows than allowed."""


class ReadOnlyQuery:
    """Users' SQL, on a connection opened read-only, with an authorizer denying any write.

    Optional bounds: time_ms_max (the statement is interrupted after that long) and
    rows_max (more rows is a QueryLimitError, not a silent truncation). After each call,
    `columns` holds the result's column names.
    """

    def __init__(
        self, path: str, *, time_ms_max: int | None = None, rows_max: int | None = None
    ) -> None:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self._conn.execute(sql.READ_ONLY_PRAGMA)
        self._conn.set_authorizer(self._authorize)
        self.time_ms_max = time_ms_max
        self.rows_max = rows_max
        self.columns: list[str] = []

    @staticmethod
    def _authorize(action: int, *args: object) -> int:
        return sqlite3.SQLITE_OK if action in _READ_ACTIONS else sqlite3.SQLITE_DENY

    def __call__(self, statement: str, params: tuple = ()) -> list[tuple]:
        conn, time_ms_max, rows_max = self._conn, self.time_ms_max, self.rows_max
        if time_ms_max is not None:
            deadline = time.monotonic() + time_ms_max / 1000
            conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1_000)
        try:
            cur = conn.execute(statement, params)
            rows = cur.fetchall() if rows_max is None else cur.fetchmany(rows_max + 1)
        except sqlite3.OperationalError as exc:
            if time_ms_max is not None and "interrupted" in str(exc):
                raise QueryLimitError(f"query stopped after the {time_ms_max} ms limit") from None
            raise StoreError(f"query refused or failed: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"query refused or failed: {exc}") from None
        finally:
            if time_ms_max is not None:
                conn.set_progress_handler(None, 0)
        if rows_max is not None and len(rows) > rows_max:
            raise QueryLimitError(f"query returned more than {rows_max} rows; add a LIMIT")
        self.columns = [d[0] for d in cur.description or ()]
        return rows

    def __enter__(self) -> ReadOnlyQuery:
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.close()
