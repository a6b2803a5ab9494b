"""Users' read-only SQL with a time and a row limit, on the store's read-only path."""

from __future__ import annotations

from controller.store import QueryLimitError, ReadOnlyQuery, StoreError

__all__ = ["QueryInvalid", "QueryLimit", "run_query"]


class QueryLimit(Exception):
    """The query ran too long or returned too many rows; the message says which."""


class QueryInvalid(ValueError):
    """The SQL was refused (not a read, not one statement) or failed; the message says why."""


def run_query(path: str, statement: str, params: tuple, time_ms_max: int, rows_max: int):
    """(columns, rows); raises QueryLimit, or QueryInvalid for refused or invalid SQL."""
    try:
        with ReadOnlyQuery(path, time_ms_max=time_ms_max, rows_max=rows_max) as q:
            rows = q(statement, params)
            return q.columns, rows
    except QueryLimitError as exc:
        raise QueryLimit(str(exc)) from None
    except StoreError as exc:
        raise QueryInvalid(str(exc).removeprefix("query refused or failed: ")) from None
