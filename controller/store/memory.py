"""The in-memory twin of the SQLite adapter, for simulation: same interface, no files."""

from __future__ import annotations

from collections.abc import Iterator

from controller.replication import DEFAULT_SCHEMA, Genesis, Ready, Schema, Value, decode
from controller.replication.identity import hash32
from controller.replication.op import OP_ID_PERSON

from .port import Stored, StoreError

__all__ = ["MemoryStore"]


class MemoryStore:
    """Holds exactly what a durable SQLite file would: commit() is atomic and durable.

    A simulated crash discards the replica object and keeps this store, just as a real
    crash keeps the file; set fail_commits to make the next commits fail before writing.
    """

    def __init__(self, name: str = "memory", schema: Schema = DEFAULT_SCHEMA) -> None:
        self.name = name
        self.schema = schema
        self.genesis: bytes | None = None
        self.log: list[bytes] = []
        self.evidence: dict[bytes, bytes] = {}
        self.tables: dict[str, dict[tuple, dict[str, Value]]] = {n: {} for n in schema.names}
        self.metas: dict[tuple[str, tuple], bytes] = {}
        self.compaction: bytes | None = None
        self.archive: dict[str, bytes] = {}  # Compaction.archive entries, kept for good
        self.base: dict[tuple[str, tuple], tuple[str, tuple, bytes, bytes]] = {}
        self.fail_commits = 0
        self._ids: set[bytes] = set()
        self._author_seq: set[tuple[str, int]] = set()

    def init(self, genesis: Genesis) -> None:
        if self.genesis is not None and self.genesis != genesis.raw:
            raise StoreError(f"{self.name}: holds another cluster's genesis")
        self.genesis = genesis.raw

    def load(self) -> Stored:
        compaction = None
        if self.compaction is not None:
            compaction = (self.compaction, tuple(v for _, v in sorted(self.base.items())))
        return Stored(self.genesis, tuple(self.log), tuple(self.evidence.values()), compaction)

    def commit(self, ready: Ready) -> None:
        if self.fail_commits:
            self.fail_commits -= 1
            raise StoreError(f"{self.name}: commit failed (injected)")
        for op in ready.ops:  # check everything first, so a failure changes nothing
            if op.id in self._ids or (op.author, op.seq) in self._author_seq:
                raise StoreError(f"{self.name}: op {op.id.hex()} already logged")
        if ready.replace_rows:
            self.tables = {n: {} for n in self.schema.names}
            self.metas = {}
        for op in ready.ops:
            self.log.append(op.raw)
            self._ids.add(op.id)
            self._author_seq.add((op.author, op.seq))
        for op in ready.evidence:
            self.evidence.setdefault(op.id, op.raw)
        for row in ready.rows:
            if row.values is None:
                self.tables[row.table].pop(row.key, None)
            else:
                self.tables[row.table][row.key] = dict(row.values)
            self.metas[(row.table, row.key)] = row.meta
        if ready.compaction is not None:
            base = ready.compaction.base
            keep = []
            for raw in self.log:
                author, seq = _op_author_seq(raw)
                if seq <= base.get(author, 0):
                    self._author_seq.discard((author, seq))
                    self._ids.discard(hash32(raw, person=OP_ID_PERSON))
                else:
                    keep.append(raw)
            self.log = keep
            for entry in ready.compaction.rows:
                self.base[(entry[0], entry[1])] = entry
            self.compaction = ready.compaction.record
            self.archive.update(ready.compaction.archive)

    def archived(self, key: str) -> bytes | None:
        return self.archive.get(key)

    def archived_items(self, prefix: str = "", newest: int | None = None, after: str = "",
                       limit: int | None = None) -> Iterator[tuple[str, bytes]]:
        keys = [k for k in self.archive if k.startswith(prefix)]  # dicts keep arrival order
        if newest is not None:
            keys = [k for k in reversed(keys)][:newest]
        else:
            keys = sorted(k for k in keys if k > after)[:limit]
        for key in keys:
            yield key, self.archive[key]

    def rows(self, table: str) -> dict[tuple, dict[str, Value]]:
        self.schema.table(table)
        return {k: dict(v) for k, v in sorted(self.tables[table].items())}

    def row_metas(self) -> Iterator[tuple[str, tuple, bytes]]:
        for (table, key), meta in self.metas.items():
            yield table, key, meta

    def drop_chain(self, author: str, seq_from: int) -> int:
        keep, gone = [], 0
        for raw in self.log:
            op_author, seq = _op_author_seq(raw)
            if op_author == author and seq >= seq_from:
                gone += 1
                self._author_seq.discard((op_author, seq))
                self._ids.discard(hash32(raw, person=OP_ID_PERSON))
                continue
            keep.append(raw)
        self.log = keep
        return gone

    def close(self) -> None:
        pass


def _op_author_seq(raw: bytes) -> tuple[str, int]:
    op_author, seq = decode(decode(raw)[0])[:2]
    return op_author, seq
