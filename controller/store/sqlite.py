"""The SQLite adapter: op log, evidence, materialised tables and merge meta in one WAL file."""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from controller.replication import (
    DEFAULT_SCHEMA,
    Compaction,
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


log = logging.getLogger("synod.store")
AUTO_VACUUM_INCREMENTAL = 2  # PRAGMA auto_vacuum's value for INCREMENTAL


class SqliteStore:
    """A replica's durable state in one SQLite file (WAL, synchronous=FULL).

    Opening checks the file (quick_check when check_file is true) and its format; any
    fault is a StoreError naming the file and what is wrong.
    """

    def __init__(self, path: str | Path, schema: Schema = DEFAULT_SCHEMA, check_file: bool = True,
                 convert: bool = False):
        """convert: a file made by older code (auto_vacuum off) is rewritten once with
        auto_vacuum=INCREMENTAL (a VACUUM: a copy of its live pages; decision 0102) after
        the file check; the node's own store at start only, never a tool's or a copy's. A
        failed conversion is logged and the file used as it is."""
        self.name = str(path)
        self.schema = schema
        self._archive_conn: sqlite3.Connection | None = None
        _create_private(self.name)
        try:
            self._conn = sqlite3.connect(self.name, isolation_level=None, check_same_thread=False)
            for pragma in sql.PRAGMAS:
                self._conn.execute(pragma)
            if check_file:
                result = self._conn.execute(sql.QUICK_CHECK).fetchall()
                if result != [("ok",)]:
                    raise StoreError(f"{self.name}: damaged database: {result[:3]}")
            if convert:
                self._convert()
            self._conn.execute("BEGIN IMMEDIATE")
            for statement in sql.all_ddl(schema):
                self._conn.execute(statement)
            version = self._get_meta("format")
            if version is None:
                self._conn.execute(sql.PUT_META, ("format", sql.FORMAT_VERSION))
            elif version not in sql.FORMATS_READ:
                raise StoreError(
                    f"{self.name}: format {version}, expected one of {list(sql.FORMATS_READ)}"
                )
            self._conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.name}: not a usable Synod database: {exc}") from None
        self._upsert = {t.name: sql.upsert_row(t) for t in schema.tables}
        self._delete = {t.name: sql.delete_row(t) for t in schema.tables}

    def _convert(self) -> None:
        if self._conn.execute("PRAGMA auto_vacuum").fetchone()[0] == AUTO_VACUUM_INCREMENTAL:
            return
        started = time.monotonic()
        try:
            self._conn.execute("VACUUM")
        except sqlite3.DatabaseError as exc:
            log.warning("%s: not converted to incremental vacuum (%s); freed pages stay in "
                        "the file", self.name, exc)
            return
        log.info("%s: converted to incremental vacuum in %.1f s (once)", self.name,
                 time.monotonic() - started)

    def vacuum(self) -> None:
        """Hand the free pages back to the file system (after a compaction); an error is
        logged, never raised: the commit before it is durable already."""
        try:
            # executescript steps it to the end: execute() frees one page per call.
            self._conn.executescript("PRAGMA incremental_vacuum;")
        except sqlite3.DatabaseError as exc:
            log.warning("%s: incremental vacuum failed: %s", self.name, exc)

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

    def is_empty(self) -> bool:
        """Holds no op and no compaction (a node that has not synced anything yet)."""
        return _holds_nothing(self._conn)

    def load(self) -> Stored:
        try:
            log = tuple(r[0] for r in self._conn.execute(sql.SELECT_LOG))
            evidence = tuple(r[0] for r in self._conn.execute(sql.SELECT_EVIDENCE))
            record = self._get_meta("compaction")
            compaction = None
            if record is not None:
                base = tuple(
                    (tbl, tuple(decode(pk)), meta, point)
                    for tbl, pk, meta, point in self._conn.execute(sql.SELECT_BASE_ROWS)
                )
                compaction = (record, base)
            return Stored(self._get_meta("genesis"), log, evidence, compaction)
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
            if ready.compaction is not None:
                self._compact(ready.compaction)
        if ready.compaction is not None:
            # The pruned ops' pages go back to the file system (the file would otherwise
            # keep the size of the longest log it ever held; decision 0102).
            self.vacuum()

    def _compact(self, compaction: Compaction) -> None:
        """Inside commit's transaction: prune the log to the tail, keep the checkpoint."""
        conn = self._conn
        conn.executemany(sql.PRUNE_CHAIN, sorted(compaction.base.items()))
        conn.executemany(
            sql.PUT_BASE_ROW,
            ((t, encode(list(k)), meta, point) for t, k, meta, point in compaction.rows),
        )
        conn.execute(sql.PUT_META, ("compaction", compaction.record))
        if compaction.archive:
            conn.executemany(sql.PUT_ARCHIVED, compaction.archive)
        archived = compaction.archive or self._get_meta("format") == sql.FORMAT_ARCHIVED
        conn.execute(
            sql.PUT_META, ("format", sql.FORMAT_ARCHIVED if archived else sql.FORMAT_COMPACTED))

    def _reader(self) -> sqlite3.Connection:
        """A read-only connection of its own for archive lookups: they come from the
        event loop while a commit may hold the main connection in another thread."""
        conn = self._archive_conn
        if conn is None:
            uri = Path(self.name).resolve().as_uri() + "?mode=ro"
            conn = self._archive_conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        return conn

    def archived(self, key: str) -> bytes | None:
        """An entry a compaction archived (Compaction.archive), or None."""
        try:
            row = self._reader().execute(sql.GET_ARCHIVED, (key,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.name}: cannot read the archive: {exc}") from None
        return None if row is None else row[0]

    def archived_items(self, prefix: str = "", newest: int | None = None, after: str = "",
                       limit: int | None = None) -> Iterator[tuple[str, bytes]]:
        """Archived (key, value) pairs whose key starts with prefix, by key (those after
        `after`, at most `limit`); or only the `newest` archived last, newest first."""
        # Read to the end at once: a cursor left open would keep its read transaction, and
        # archived() on the same connection would not see entries committed since.
        try:
            if newest is not None:
                rows = self._reader().execute(sql.SELECT_ARCHIVED_NEWEST, (
                    len(prefix), prefix, newest)).fetchall()
            else:
                rows = self._reader().execute(
                    sql.SELECT_ARCHIVED_AFTER if after else sql.SELECT_ARCHIVED,
                    (after or prefix, len(prefix), prefix, -1 if limit is None else limit),
                ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.name}: cannot read the archive: {exc}") from None
        yield from rows

    def backup_to(self, path: str | Path) -> None:
        """A consistent copy of the whole store in one file (SQLite's online backup)."""
        _create_private(str(path))
        target = sqlite3.connect(str(path))
        try:
            self._conn.backup(target)
        finally:
            target.close()

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
        if self._archive_conn is not None:
            self._archive_conn.close()
            self._archive_conn = None
        self._conn.close()


def holds_nothing(path: str | Path) -> bool:
    """Does the store file hold no op and no compaction (SqliteStore.is_empty), read on a
    read-only connection, without creating or changing it? False when it cannot be read
    (whoever opens it then reports why)."""
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.DatabaseError:
        return False
    try:
        return _holds_nothing(conn)
    except sqlite3.OperationalError as exc:
        return "no such table" in str(exc)  # made but never initialised: nothing held
    except sqlite3.DatabaseError:
        return False
    finally:
        conn.close()


def _holds_nothing(conn: sqlite3.Connection) -> bool:
    if conn.execute(sql.HAS_COMPACTION).fetchone() is not None:
        return False
    return conn.execute(sql.HAS_OP).fetchone() is None


def _create_private(name: str) -> None:
    """A new file is made 0600 first: SQLite gives its -wal and -shm the same mode."""
    try:
        os.close(os.open(name, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError as exc:
        raise StoreError(f"{name}: cannot open: {exc.strerror}") from None


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


# Bounds on the shape of users' statements (SQLite's defaults here in brackets); the length
# of any one string or blob is ReadOnlyQuery's value_bytes_max.
_STATEMENT_LIMITS = {
    sqlite3.SQLITE_LIMIT_SQL_LENGTH: 100_000,  # bytes of one statement [1,000,000,000]
    sqlite3.SQLITE_LIMIT_COLUMN: 200,  # result columns, GROUP BY/ORDER BY terms [2,000]
    sqlite3.SQLITE_LIMIT_EXPR_DEPTH: 100,  # [1,000]
    sqlite3.SQLITE_LIMIT_COMPOUND_SELECT: 50,  # terms of a UNION [500]
    sqlite3.SQLITE_LIMIT_VDBE_OP: 100_000,  # instructions of the compiled statement [250 M]
    sqlite3.SQLITE_LIMIT_FUNCTION_ARG: 64,  # [127]
    sqlite3.SQLITE_LIMIT_ATTACHED: 0,  # [10]
    # LIKE/GLOB cost grows with pattern x value: a 50,000-byte pattern ran 70-100 s on 1 MiB.
    sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH: 256,  # [50,000]
    sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER: 256,  # ?-parameters [250,000]
    sqlite3.SQLITE_LIMIT_WORKER_THREADS: 0,  # no helper threads for sorting [0]
}
_PROGRESS_STEPS = 100_000  # VM steps between two clock checks (besides the timer)
_INTERNAL_PREFIXES = ("sqlite_", "_synod_", "pragma_")  # never readable by users' SQL
_REFUSED_ACTIONS = {
    sqlite3.SQLITE_PRAGMA: "pragmas are not allowed",
    sqlite3.SQLITE_ATTACH: "ATTACH is not allowed",
}


class _Watchdog:
    """One thread for the deadlines of every query in the process: at its deadline, a
    query's connection is interrupted (sqlite3_interrupt), even inside a long VM step the
    progress handler would not see. Cheaper than a timer thread per query."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float, interrupt: Callable[[], None]) -> int:
        with self._cond:
            alarm = next(self._ids)
            self._armed[alarm] = interrupt
            heapq.heappush(self._heap, (deadline, alarm))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sql-deadlines",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()
            return alarm

    def disarm(self, alarm: int) -> None:
        with self._cond:
            self._armed.pop(alarm, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, alarm = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                heapq.heappop(self._heap)
                interrupt = self._armed.pop(alarm)
            interrupt()


_WATCHDOG = _Watchdog()


class QueryLimitError(StoreError):
    """A read-only query ran into a limit; `limit` says which: "time", "rows", "value_bytes"
    or "result_bytes"."""

    def __init__(self, message: str, limit: str = "") -> None:
        super().__init__(message)
        self.limit = limit


class ReadOnlyQuery:
    """Users' SQL, on a connection opened read-only, with an authorizer denying any write.

    Every query: bounded statement shapes (_STATEMENT_LIMITS), a small page cache with
    temporary data on file (not RAM), and only the functions of sql.USER_FUNCTIONS.
    Optional bounds: time_ms_max (a watchdog thread interrupts the statement at the
    deadline, and a progress handler checks the clock), rows_max (more rows is a
    QueryLimitError, not a silent truncation), value_bytes_max (SQLITE_LIMIT_LENGTH: no
    string or blob, stored or computed, may be longer, so one function call cannot run long
    on a huge value), result_bytes_max (the rows' values, about), and `readable`: if given,
    only those tables (never sqlite_* or _synod_* ones, whatever the set says). After each
    call, `columns` holds the result's column names.
    """

    def __init__(
        self,
        path: str,
        *,
        time_ms_max: int | None = None,
        rows_max: int | None = None,
        readable: frozenset[str] | None = None,
        value_bytes_max: int | None = None,
        result_bytes_max: int | None = None,
    ) -> None:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        try:
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"query refused or failed: {path}: {exc}") from None
        try:
            for pragma in sql.READ_QUERY_PRAGMAS:
                self._conn.execute(pragma)
            self._real = set()
            if readable is not None:
                self._real = {n.lower() for (n,) in self._conn.execute(sql.SCHEMA_NAMES)}
        except sqlite3.Error as exc:
            self._conn.close()
            raise StoreError(f"query refused or failed: {path}: {exc}") from None
        for limit, value in _STATEMENT_LIMITS.items():
            self._conn.setlimit(limit, value)
        if value_bytes_max is not None:
            self._conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, value_bytes_max)
        self._conn.set_authorizer(self._authorize)
        self.readable = None if readable is None else frozenset(
            n.lower() for n in readable if not n.lower().startswith(_INTERNAL_PREFIXES)
        )
        self.time_ms_max = time_ms_max
        self.rows_max = rows_max
        self.value_bytes_max = value_bytes_max
        self.result_bytes_max = result_bytes_max
        self.columns: list[str] = []
        self._refusal: str | None = None
        self._lock = threading.Lock()  # the timer's interrupt never meets a closed connection
        self._open = True

    def _authorize(self, action: int, arg1: str | None, arg2: str | None, *_: object) -> int:
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_RECURSIVE):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION:
            if (arg2 or "").lower() in sql.USER_FUNCTIONS:
                return sqlite3.SQLITE_OK
            return self._deny(f"function {arg2!r} is not allowed in queries")
        if action == sqlite3.SQLITE_READ:
            if self._may_read(arg1 or "", arg2):
                return sqlite3.SQLITE_OK
            shown = ", ".join(sorted(self.readable or ()))
            return self._deny(f"table {arg1!r} is not readable (SQL reads only: {shown})")
        if action == sqlite3.SQLITE_UPDATE and arg1 == "sqlite_master":
            # SQLite asks this when a statement instantiates a virtual table (json_each,
            # pragma_table_info, ...): those are outside users' SQL.
            return self._deny("table-valued functions and virtual tables are not allowed")
        return self._deny(_REFUSED_ACTIONS.get(action, "only reads of tables are allowed"))

    def _may_read(self, table: str, column: str | None) -> bool:
        if self.readable is None:
            return True
        name = table.lower()
        if name in self.readable:
            return True
        if name in self._real or name.startswith(_INTERNAL_PREFIXES):
            return False
        # Not a table of the file: a common table expression or subquery, whose count(*)
        # is a read of no column. Columns of anything else (virtual tables) are refused.
        return column == ""

    def _deny(self, reason: str) -> int:
        if self._refusal is None:
            self._refusal = reason
        return sqlite3.SQLITE_DENY

    def _interrupt(self) -> None:
        with self._lock:
            if self._open:
                self._conn.interrupt()

    def __call__(self, statement: str, params: tuple = ()) -> list[tuple]:
        conn, time_ms_max = self._conn, self.time_ms_max
        self._refusal = None
        sql_max = _STATEMENT_LIMITS[sqlite3.SQLITE_LIMIT_SQL_LENGTH]
        if len(statement.encode(errors="replace")) > sql_max:
            raise StoreError(f"query refused: statement too long (over {sql_max} bytes)")
        alarm = None
        if time_ms_max is not None:
            deadline = time.monotonic() + time_ms_max / 1000
            conn.set_progress_handler(lambda: int(time.monotonic() > deadline), _PROGRESS_STEPS)
            alarm = _WATCHDOG.arm(deadline, self._interrupt)
        try:
            cur = conn.execute(statement, params)
            rows = self._fetch(cur)
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        finally:
            if alarm is not None:
                _WATCHDOG.disarm(alarm)
                conn.set_progress_handler(None, 0)
        self.columns = [d[0] for d in cur.description or ()]
        return rows

    def _fetch(self, cur: sqlite3.Cursor) -> list[tuple]:
        rows: list[tuple] = []
        rows_max, bytes_max, size = self.rows_max, self.result_bytes_max, 0
        while batch := cur.fetchmany(256):
            rows.extend(batch)
            if rows_max is not None and len(rows) > rows_max:
                raise QueryLimitError(
                    f"query returned more than {rows_max} rows; add a LIMIT", "rows"
                )
            if bytes_max is not None:
                size += sum(_value_size(v) for r in batch for v in r)
                if size > bytes_max:
                    raise QueryLimitError(
                        f"query result is larger than {bytes_max} bytes; select fewer rows or"
                        " columns", "result_bytes"
                    )
        return rows

    def _error(self, exc: sqlite3.Error) -> StoreError:
        text = str(exc)
        if self._refusal is not None:
            return StoreError(f"query refused: not authorized: {self._refusal}")
        if self.time_ms_max is not None and "interrupted" in text:
            return QueryLimitError(f"query stopped after the {self.time_ms_max} ms limit", "time")
        if "string or blob too big" in text and self.value_bytes_max is not None:
            return QueryLimitError(
                f"a string or blob in the query is larger than {self.value_bytes_max} bytes",
                "value_bytes",
            )
        return StoreError(f"query refused or failed: {text}")

    def __enter__(self) -> ReadOnlyQuery:
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._open = False
            self._conn.close()


def _value_size(v: object) -> int:
    if isinstance(v, bytes):
        return len(v)
    if isinstance(v, str):
        return len(v) if v.isascii() else 4 * len(v)
    return 8
