"""Users' read-only SQL: what it may read, its limits, and its own bounded thread pool.

A query runs on the SqlPool's threads (never on the engine's commit thread nor the event
loop's default executor), at most `api.sql_per_token_max` at once per token and with at most
`api.sql_queued_max` waiting for a worker; the store's ReadOnlyQuery enforces the per-query
limits (time, rows, value and result sizes, statement shapes, an allow-list of functions)
and reads only the tables `readable_tables` gives: the user tables of the schema, never a
node-internal one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from controller.replication.schema import INTERNAL, RESERVED_TABLES
from controller.store import QueryLimitError, ReadOnlyQuery, StoreError

from .errors import NodeBaseError

__all__ = [
    "QueryBusy",
    "QueryInvalid",
    "QueryLimit",
    "SqlPool",
    "readable_tables",
    "run_query",
]

# Reserved tables (only nodes write them) that users' SQL may still read: the switches'
# refusals of flows and the reunion's report. `internal` (tokens, peer addresses, …) never.
READABLE_RESERVED = frozenset({"flow_errors", "conflicts"})
_CONFIG_KEYS = {
    "time": "api.sql_time_ms_max",
    "rows": "api.sql_rows_max",
    "value_bytes": "api.sql_value_bytes_max",
    "result_bytes": "half of api.message_bytes_max",
}


class QueryLimit(NodeBaseError):
    """The query ran into a limit; the message says which, and its config key."""


class QueryInvalid(NodeBaseError, ValueError):
    """The SQL was refused (not a read, not one statement, a table or function users may not
    use) or failed; the message says why."""


class QueryBusy(NodeBaseError):
    """Refused before it ran: the token's or the node's SQL capacity is in use; the message
    names the limit."""


def readable_tables(names: Iterable[str]) -> frozenset[str]:
    """The tables of a schema users' SQL may read: not internal, not reserved (but for
    READABLE_RESERVED), never `internal` nor a `_synod_*`/`sqlite_*` name."""
    out = set()
    for name in names:
        low = name.lower()
        if low.startswith(("_synod_", "sqlite_")) or low == INTERNAL:
            continue
        if name in RESERVED_TABLES and name not in READABLE_RESERVED:
            continue
        out.add(name)
    return frozenset(out)


def run_query(
    path: str,
    statement: str,
    params: tuple,
    time_ms_max: int,
    rows_max: int,
    *,
    readable: frozenset[str] | None = None,
    value_bytes_max: int | None = None,
    result_bytes_max: int | None = None,
):
    """(columns, rows); raises QueryLimit, or QueryInvalid for refused or invalid SQL."""
    try:
        with ReadOnlyQuery(
            path,
            time_ms_max=time_ms_max,
            rows_max=rows_max,
            readable=readable,
            value_bytes_max=value_bytes_max,
            result_bytes_max=result_bytes_max,
        ) as q:
            rows = q(statement, params)
            return q.columns, rows
    except QueryLimitError as exc:
        key = _CONFIG_KEYS.get(exc.limit)
        raise QueryLimit(f"{exc} ({key})" if key else str(exc)) from None
    except StoreError as exc:
        text = str(exc).removeprefix("query refused or failed: ").removeprefix("query refused: ")
        raise QueryInvalid(text) from None


NICE_INCREMENT = 10  # SQL threads yield the CPU to the engine, the API and the links


def _background() -> None:
    """Lower this thread's CPU priority (Linux: a thread has its own nice value), so a
    query burning a core gives way to commits and calls at once; idle cores still run it."""
    with contextlib.suppress(AttributeError, OSError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid)
                                                 + NICE_INCREMENT))


class SqlPool:
    """Threads for users' SQL, apart from the engine's: `workers` of them; a token may have
    `per_token_max` queries admitted (running or waiting) at once, and at most `queued_max`
    queries wait for a worker. A query counts until its thread is done with it, even if its
    caller gave up, so cancelling calls does not pile up work. Admission runs on the event
    loop's thread only."""

    def __init__(self, workers: int, per_token_max: int, queued_max: int) -> None:
        self.workers = max(1, workers)
        self.per_token_max = max(1, per_token_max)
        self.queued_max = queued_max
        self._executor = ThreadPoolExecutor(
            self.workers, thread_name_prefix="synod-sql", initializer=_background
        )
        self._by_token: dict[str, int] = {}
        self._admitted = 0  # running or waiting for a worker

    @property
    def waiting(self) -> int:
        return max(0, self._admitted - self.workers)

    async def run(self, token_id: str, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) on a pool thread; QueryBusy if the token or the queue is at its limit."""
        held = self._by_token.get(token_id, 0)
        if held >= self.per_token_max:
            raise QueryBusy(
                f"token {token_id} already has {held} SQL queries in progress"
                f" (api.sql_per_token_max={self.per_token_max}); wait for one to finish"
            )
        if self._admitted >= self.workers + self.queued_max:
            raise QueryBusy(
                f"{self.waiting} SQL queries already wait for a worker"
                f" (api.sql_queued_max={self.queued_max}); try again later"
            )
        try:
            future = self._executor.submit(fn, *args)
        except RuntimeError:  # shut down
            raise QueryBusy("the node is stopping") from None
        self._by_token[token_id] = held + 1
        self._admitted += 1
        loop = asyncio.get_running_loop()

        def done(_: object) -> None:
            try:
                loop.call_soon_threadsafe(self._release, token_id)
            except RuntimeError:  # the loop is closed: nothing left to admit
                pass

        future.add_done_callback(done)
        return await asyncio.wrap_future(future)

    def _release(self, token_id: str) -> None:
        self._admitted -= 1
        left = self._by_token.get(token_id, 1) - 1
        if left > 0:
            self._by_token[token_id] = left
        else:
            self._by_token.pop(token_id, None)

    def close(self) -> None:
        """Refuse new queries, drop waiting ones; running ones end at their time limit."""
        self._executor.shutdown(wait=False, cancel_futures=True)
