"""Declared tables of the replicated database: typed columns and primary keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from .errors import Reason, Rejected, UsageError

__all__ = [
    "COLUMN_TYPES",
    "Column",
    "Table",
    "Schema",
    "DEFAULT_SCHEMA",
    "FLOW_ERRORS",
    "FLOW_STATE",
    "INTERNAL",
    "RESERVED_TABLES",
    "SCHEMA_VERSION",
    "TABLES_SINCE",
    "Value",
]

Value = int | float | str | bytes | bool | None

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and _INT64_MIN <= v <= _INT64_MAX


COLUMN_TYPES = {
    "int": _is_int,
    "real": lambda v: isinstance(v, float),
    "text": lambda v: isinstance(v, str),
    "blob": lambda v: isinstance(v, bytes),
    "bool": lambda v: isinstance(v, bool),
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # one of COLUMN_TYPES

    def __post_init__(self) -> None:
        if self.type not in COLUMN_TYPES:
            raise UsageError(f"column {self.name}: unknown type {self.type!r}")
        if not self.name.isidentifier() or self.name.startswith("_"):
            raise UsageError(f"column name {self.name!r} must be an identifier without '_' prefix")

    def accepts(self, value: Any) -> bool:
        return value is None or COLUMN_TYPES[self.type](value)


@dataclass(frozen=True)
class Table:
    """A table: all columns in declaration order, and the names forming the primary key."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise UsageError(f"table {self.name}: duplicate column")
        if not self.primary_key or any(k not in names for k in self.primary_key):
            raise UsageError(f"table {self.name}: primary key must name columns")
        if not self.name.isidentifier() or self.name.startswith("_"):
            raise UsageError(f"table name {self.name!r} must be an identifier without '_' prefix")

    # Cached: a table is immutable, and these are read for every row of every op received.
    @cached_property
    def key_columns(self) -> tuple[Column, ...]:
        by_name = {c.name: c for c in self.columns}
        return tuple(by_name[k] for k in self.primary_key)

    @cached_property
    def value_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.name not in self.primary_key)

    @cached_property
    def value_names(self) -> tuple[str, ...]:
        """The value columns' names, in declaration order."""
        return tuple(c.name for c in self.value_columns)

    @cached_property
    def _value_by_name(self) -> dict[str, Column]:
        return {c.name: c for c in self.value_columns}

    def check_key(self, key: Any) -> tuple:
        """The key as a tuple, or Rejected(BAD_BODY)."""
        cols = self.key_columns
        if not isinstance(key, list | tuple) or len(key) != len(cols):
            raise Rejected(Reason.BAD_BODY, f"{self.name}: key needs {len(cols)} values")
        for col, v in zip(cols, key, strict=True):
            if v is None or not col.accepts(v):
                raise Rejected(Reason.BAD_BODY, f"{self.name}.{col.name}: bad key value")
        return tuple(key)

    def check_values(self, values: Any) -> dict[str, Value]:
        """Non-key column values, type-checked, or Rejected(BAD_BODY)."""
        if type(values) is not dict and not isinstance(values, Mapping):  # dict: no ABC check
            raise Rejected(Reason.BAD_BODY, f"{self.name}: values must be a map")
        cols = self._value_by_name
        for name, v in values.items():
            col = cols.get(name)
            if col is None:
                raise Rejected(Reason.BAD_BODY, f"{self.name}: no value column {name!r}")
            if not col.accepts(v):
                raise Rejected(Reason.BAD_BODY, f"{self.name}.{name}: not {col.type}")
        return dict(values)


@dataclass(frozen=True)
class Schema:
    tables: tuple[Table, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {t.name: t for t in self.tables})

    def table(self, name: Any) -> Table:
        """The named table, or Rejected(BAD_BODY) for a name not in the schema."""
        table = self._by_name.get(name) if isinstance(name, str) else None  # type: ignore[attr-defined]
        if table is None:
            raise Rejected(Reason.BAD_BODY, f"unknown table {name!r}")
        return table

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tables)


def _t(name: str, key: str, cols: str) -> Table:
    """Compact declaration: cols is 'name:type name:type ...', key is 'name name'."""
    columns = tuple(Column(*spec.split(":")) for spec in cols.split())
    return Table(name, columns, tuple(key.split()))


INTERNAL = "internal"  # node-internal records: tokens, peer addresses, lineages met, …
FLOW_ERRORS = "flow_errors"  # a switch's refusal of a flow, reported by its controller
FLOW_STATE = "flow_state"  # what the audit sees of each flow on its switch, with counters
RESERVED_TABLES = frozenset({INTERNAL, FLOW_ERRORS, FLOW_STATE, "conflicts"})  # nodes only

# Schema versions (decision 0037): a node reads every table below, but writes a table added
# in version v only once the slot `schema/<v>` is decided — proposed by a voter when every
# member said it reads v — so a node that does not know the table never meets it in an op.
SCHEMA_VERSION = 2  # the newest version this code reads
TABLES_SINCE = {FLOW_STATE: 2}  # tables added after version 1, and the version that added them

DEFAULT_SCHEMA = Schema(
    (
        _t(
            "flows",
            "dpid flow_id",
            "dpid:text flow_id:text table_id:int priority:int match:text actions:text "
            "cookie:int idle_timeout:int hard_timeout:int",
        ),
        _t(
            "switches",
            "dpid",
            "dpid:text name:text site:text master:text generation_id:int connected:bool",
        ),
        _t("ports", "dpid port_no", "dpid:text port_no:int name:text mac:text up:bool"),
        _t(
            "links",
            "src_dpid src_port dst_dpid dst_port",
            "src_dpid:text src_port:int dst_dpid:text dst_port:int up:bool latency_ms:real",
        ),
        _t(
            "hosts",
            "mac",
            "mac:text ip:text dpid:text port_no:int vlan:int last_seen_ms:int",
        ),
        _t(
            "services",
            "name",
            "name:text image:text vcpus:int memory_mb:int nics:text restart_policy:text "
            "placement:text desired_state:text",
        ),
        _t("placements", "service", "service:text node:text generation:int state:text"),
        _t("kv", "key", "key:text value:blob"),
        # Reserved (controller/replication/reserved.py): nodes write them, clients never.
        _t(INTERNAL, "key", "key:text value:blob"),
        _t(FLOW_ERRORS, "dpid flow_id", "dpid:text flow_id:text error:text"),
        _t(
            FLOW_STATE,
            "dpid flow_id",
            "dpid:text flow_id:text state:text packets:int bytes:int seen_ms:int",
        ),
    )
)
