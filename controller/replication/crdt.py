"""Row state as a CRDT: per-column LWW registers by (cl, hlc, author), rows alive when cl is odd."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .encoding import encode
from .identity import NodeId
from .op import RowMutation
from .schema import Schema, Value

__all__ = ["ColumnVersion", "RowState", "Tables", "RowKey", "row_version_bytes"]

RowKey = tuple[str, tuple]  # (table, primary key)


@dataclass(frozen=True, slots=True)
class ColumnVersion:
    """One column register: its value and the version that wrote it."""

    value: Value
    cl: int
    hlc: int
    author: NodeId

    @property
    def order(self) -> tuple[int, int, NodeId]:
        return (self.cl, self.hlc, self.author)


class RowState:
    """Merge state of one row (mutable, owned by Tables). Alive iff cl is odd."""

    __slots__ = ("cl", "cols")

    def __init__(self) -> None:
        self.cl = 0
        self.cols: dict[str, ColumnVersion] = {}

    @property
    def alive(self) -> bool:
        return self.cl % 2 == 1

    def merge(self, m: RowMutation, hlc: int, author: NodeId) -> bool:
        """Join one mutation into this row; True when the state changed.

        Both parts are joins of a lattice (max of cl; max of each register by
        (cl, hlc, author)), so merging is commutative, associative and idempotent.
        """
        changed = False
        if m.cl > self.cl:
            self.cl = m.cl
            changed = True
        if m.values:
            order = (m.cl, hlc, author)
            cols = self.cols
            for name, value in m.values.items():
                cur = cols.get(name)
                if cur is None or order > (cur.cl, cur.hlc, cur.author):
                    cols[name] = ColumnVersion(value, m.cl, hlc, author)
                    changed = True
        return changed

    def to_plain(self) -> list:
        """The merge metadata, as stored beside the materialised row."""
        return [
            self.cl,
            [[n, v.value, v.cl, v.hlc, v.author] for n, v in sorted(self.cols.items())],
        ]

    @classmethod
    def from_plain(cls, plain: list) -> RowState:
        row = cls()
        row.cl = plain[0]
        row.cols = {n: ColumnVersion(v, cl, h, a) for n, v, cl, h, a in plain[1]}
        return row

    def values(self, columns: tuple[str, ...]) -> dict[str, Value]:
        cols = self.cols
        return {c: (cols[c].value if c in cols else None) for c in columns}


def row_version_bytes(table: str, key: tuple, row: RowState, meta: bytes | None = None) -> bytes:
    """Canonical bytes of one row version: what the state digest hashes.

    `meta` is encode(row.to_plain()) when the caller has it already (a RowUpdate's): a
    canonical CBOR array is its header followed by its items' encodings, so the bytes are
    the same as encode([table, list(key), row.to_plain()]), without encoding the row again.
    """
    if meta is None:
        return encode([table, list(key), row.to_plain()])
    return b"\x83" + encode(table) + encode(list(key)) + meta


class Tables:
    """All rows of all tables, with merge metadata (tombstones included)."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.rows: dict[str, dict[tuple, RowState]] = {name: {} for name in schema.names}

    def merge(self, m: RowMutation, hlc: int, author: NodeId) -> bool:
        rows = self.rows[m.table]
        row = rows.get(m.key)
        if row is None:
            row = rows[m.key] = RowState()
        return row.merge(m, hlc, author)

    def get(self, table: str, key: tuple) -> RowState | None:
        return self.rows[table].get(key)

    def alive(self, table: str) -> Iterator[tuple[tuple, dict[str, Value]]]:
        """(key, values of all columns) for each alive row of table, in key order."""
        t = self.schema.table(table)
        names = tuple(c.name for c in t.value_columns)
        rows = self.rows[table]
        for key in sorted(rows):
            row = rows[key]
            if row.alive:
                yield key, row.values(names)

    def all_rows(self) -> Iterator[tuple[str, tuple, RowState]]:
        for table, rows in self.rows.items():
            for key, row in rows.items():
                yield table, key, row

    def clear(self) -> None:
        for rows in self.rows.values():
            rows.clear()
