"""The storage port: the narrow interface a replica's durable state goes through."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from controller.replication import Genesis, Ready, Value

__all__ = ["Store", "Stored", "StoreError"]


class StoreError(Exception):
    """Base of controller.store errors; the message names the store (file) and the fault."""


@dataclass(frozen=True)
class Stored:
    """What a store holds, as needed to recover a replica."""

    genesis: bytes | None
    log: tuple[bytes, ...]  # op bytes in log order (a causal order); the tail if compacted
    evidence: tuple[bytes, ...]
    # After a compaction (decision 0070): its record and the checkpoint's rows (table, key,
    # merge meta, ECMH point), as Replica.recover(compaction=...) takes them.
    compaction: tuple[bytes, tuple[tuple[str, tuple, bytes, bytes], ...]] | None = None


class Store(Protocol):
    """One replica's durable state: the op log, evidence, materialised rows and their meta.

    commit() is atomic and durable on return: after a crash a store holds all or none of
    a Ready's effects.
    """

    name: str  # a path for files, a label otherwise; used in error messages

    def init(self, genesis: Genesis) -> None:
        """Record the genesis of a new store (idempotent for the same genesis)."""
        ...

    def load(self) -> Stored: ...

    def commit(self, ready: Ready) -> None:
        """Carry out a Ready's storage effects (ops, evidence, rows, and a compaction:
        prune the log, write the checkpoint's rows and record) in one transaction."""
        ...

    def rows(self, table: str) -> dict[tuple, dict[str, Value]]:
        """Materialised alive rows of a table: key -> non-key values."""
        ...

    def row_metas(self) -> Iterator[tuple[str, tuple, bytes]]:
        """(table, key, merge meta) of every row, tombstones included."""
        ...

    def archived(self, key: str) -> bytes | None:
        """An entry a compaction archived (Compaction.archive), or None."""
        ...

    def archived_items(self, prefix: str = "", newest: int | None = None, after: str = "",
                       limit: int | None = None) -> Iterator[tuple[str, bytes]]:
        """Archived (key, value) pairs whose key starts with prefix, by key (those after
        `after`, at most `limit`); or only the `newest` archived last, newest first."""
        ...

    def drop_chain(self, author: str, seq_from: int) -> int:
        """Remove author's logged ops from seq_from on (repair of a refused own op); the
        tables are rewritten by the next open. Returns how many were removed."""
        ...

    def close(self) -> None: ...
