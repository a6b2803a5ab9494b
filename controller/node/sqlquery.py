"""Users' read-only SQL with a time limit and a row limit, on the store's read-only path."""

from __future__ import annotations

import sqlite3
import time

from controller.store import ReadOnlyQuery

__all__ = ["QueryLimit", "run_query"]


class QueryLimit(Exception):
    """The query ran too long or returned too many rows; the message says which."""


class _LimitedQuery(ReadOnlyQuery):
    def run(self, statement: str, params: tuple, time_ms_max: int, rows_max: int):
        deadline = time.monotonic() + time_ms_max / 1000
        conn = self._conn  # the parent's read-only, write-denying connection
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1_000)
        try:
            cur = conn.execute(statement, params)
            rows = cur.fetchmany(rows_max + 1)
        except sqlite3.OperationalError as exc:
            if "interrupted" in str(exc):
                raise QueryLimit(f"query stopped after the {time_ms_max} ms limit") from None
            raise
        if len(rows) > rows_max:
            raise QueryLimit(f"query returned more than {rows_max} rows; add a LIMIT")
        columns = [d[0] for d in cur.description or ()]
        return columns, rows


def run_query(path: str, statement: str, params: tuple, time_ms_max: int, rows_max: int):
    """(columns, rows); raises QueryLimit, or sqlite3.Error for refused or invalid SQL."""
    with _LimitedQuery(path) as q:
        return q.run(statement, params, time_ms_max, rows_max)
