"""Values and JSON with light imports: the one bytes-as-hex JSON rule, and API messages as
plain data for `--json` (every field, defaults included, 64-bit integers as numbers).

The CLI imports this instead of codec.py, which pulls in the replication core: a `synod`
call pays for what it uses (docs/operations.md, per-call time).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from synod.v1 import northbound_pb2

__all__ = ["dumps", "json_plain", "message_plain", "pb", "value", "value_pb", "values"]

_VALUE = "synod.v1.Value"


def pb():
    """The northbound messages module (synod.v1.northbound_pb2), imported on first use so
    that `synod --help` and `synod node run` do not load protobuf for the CLI."""
    from synod.v1 import northbound_pb2

    return northbound_pb2


def json_plain(v: Any) -> Any:
    """A value (CBOR-plain: bytes, lists, maps, …) as JSON-able: bytes become hex. The one
    bytes-to-hex rule of the API's JSON output (CLI --json, Conflict values)."""
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, list | tuple):
        return [json_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): json_plain(x) for k, x in v.items()}
    return v


def value(v: northbound_pb2.Value) -> Any:
    """A synod.v1.Value as its Python value (None when no kind is set)."""
    kind = v.WhichOneof("kind")
    return None if kind is None else getattr(v, kind)


def value_pb(v: Any) -> northbound_pb2.Value:
    """A Python value (None, bool, int, float, str, bytes) as a synod.v1.Value."""
    m = pb().Value
    if v is None:
        return m()
    if isinstance(v, bool):
        return m(bool_value=v)
    if isinstance(v, int):
        return m(int_value=v)
    if isinstance(v, float):
        return m(real_value=v)
    if isinstance(v, str):
        return m(text_value=v)
    if isinstance(v, bytes):
        return m(blob_value=v)
    raise TypeError(f"value of type {type(v).__name__} has no protobuf form")


def values(vs) -> list:
    return [value_pb(v) for v in vs]


def message_plain(message) -> dict:
    """Every field of an API message, by its proto name: defaults included (a down member
    has "up": false), integers as JSON numbers (also 64-bit ones), bytes as hex, enums by
    name, maps as objects, a synod.v1.Value as its plain value, and null for a message or
    optional field that is not set."""
    return {f.name: _field(message, f) for f in message.DESCRIPTOR.fields}


def _field(message, f) -> Any:
    v = getattr(message, f.name)
    if f.is_repeated:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            inner = f.message_type.fields_by_name["value"]
            return {str(k): _single(inner, v[k]) for k in sorted(v)}
        return [_single(f, x) for x in v]
    if f.has_presence and not message.HasField(f.name):
        return None
    return _single(f, v)


def _single(f, v) -> Any:
    if f.type == f.TYPE_MESSAGE:
        if f.message_type.full_name == _VALUE:
            return json_plain(value(v))
        return message_plain(v)
    if f.type == f.TYPE_BYTES:
        return v.hex()
    if f.type == f.TYPE_ENUM:
        known = f.enum_type.values_by_number.get(v)
        return known.name if known is not None else v
    return v


def dumps(data: Any) -> str:
    """JSON text of plain data for stdout. Bytes become hex; anything else that is not
    JSON (a Python object's repr) is a bug, so it raises rather than print a repr."""
    return json.dumps(json_plain(data), indent=2, ensure_ascii=False)
