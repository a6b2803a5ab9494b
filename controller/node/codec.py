"""Protobuf <-> values: the one place where synod.v1 messages meet the core's values."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from synod.v1 import local_pb2, northbound_pb2, peer_pb2

from controller.replication import Delete, Schema, Upsert, Value
from controller.replication.errors import Rejected

from . import codec_lite
from .errors import NodeBaseError

__all__ = [
    "DPID_KEY_PARTS",
    "canonical_dpid",
    "canonical_key",
    "json_plain",
    "CodecError",
    "clip",
    "table_of",
    "ack_level",
    "delete_mutations",
    "digest_pb",
    "key_from_pb",
    "members_pb",
    "put_mutations",
    "query_pb",
    "row_event_pb",
    "row_pb",
    "schema_pb",
    "status_pb",
    "token_pb",
    "value_from_pb",
    "value_pb",
    "values_from_pb",
    "vector_pb",
]

pb = northbound_pb2


class CodecError(NodeBaseError, ValueError):
    """A request that does not fit the schema; the message names table, column or field."""


ECHO_CHARS_MAX = 200  # of a client's input quoted back in an error message


def clip(text: str, limit: int = ECHO_CHARS_MAX) -> str:
    """text as an error message may quote it: when longer than limit, its head and tail
    around a note of how much was cut (the tail often says what is wrong). Every echo of
    a client's input in an error goes through here, so no error carries unbounded input
    (a 200 kB value echoed back would also break gRPC's limit on a status message)."""
    text = str(text)
    if len(text) <= limit:
        return text
    tail = limit // 4
    head = limit - tail
    return f"{text[:head]}…[{len(text) - head - tail} chars cut]…{text[len(text) - tail:]}"


json_plain = codec_lite.json_plain  # the one bytes-to-hex rule, kept with the CLI's JSON
value_from_pb = codec_lite.value


def value_pb(v: Value) -> northbound_pb2.Value:
    try:
        return codec_lite.value_pb(v)
    except TypeError as exc:
        raise CodecError(str(exc)) from None


def values_from_pb(vs: Iterable[northbound_pb2.Value]) -> tuple[Value, ...]:
    return tuple(value_from_pb(v) for v in vs)


def table_of(schema: Schema, name: str):
    try:
        return schema.table(name)
    except Rejected:
        raise CodecError(
            f"unknown table {clip(name)!r} (tables: {', '.join(schema.names)})"
        ) from None


# Datapath-id key columns: written in one form (16 lowercase hex digits) whatever the
# client sent (3, 0x3, 0000000000000003), so one switch is one row. By position in the key.
DPID_KEY_PARTS = {"flows": (0,), "flow_errors": (0,), "switches": (0,), "ports": (0,),
                  "links": (0, 2)}


def canonical_dpid(table: str, column: str, value: Value) -> str:
    """A datapath id as 16 lowercase hex digits (controller/forwarding/flowspec.py
    parse_dpid reads it), or CodecError naming the table, column and value."""
    from controller.forwarding.flowspec import FlowSpecError, parse_dpid

    try:
        return f"{parse_dpid(value):016x}"
    except FlowSpecError as exc:
        raise CodecError(f"{table}.{column}: {clip(str(exc))} (a datapath id: 3, 0x3 or "
                         "0000000000000003)") from None


def canonical_key(table: str, key: tuple, columns) -> tuple:
    """`key` with its datapath-id parts in canonical form (see DPID_KEY_PARTS)."""
    parts = DPID_KEY_PARTS.get(table, ())
    if not parts:
        return key
    out = list(key)
    for i in parts:
        if i < len(out) and i < len(columns):
            out[i] = canonical_dpid(table, columns[i].name, out[i])
    return tuple(out)


def key_from_pb(schema: Schema, table: str, key: Sequence[northbound_pb2.Value],
                canonical: bool = True) -> tuple:
    """The key, type-checked; datapath ids in canonical form unless `canonical` is False
    (controllers' reports: they send the canonical form, and any other is their bug)."""
    t = table_of(schema, table)
    values = values_from_pb(key)
    if canonical:
        values = canonical_key(table, values, t.key_columns)
    try:
        return t.check_key(values)
    except Rejected as exc:
        cols = ", ".join(f"{c.name}:{c.type}" for c in t.key_columns)
        raise CodecError(f"{clip(exc.detail)} (key of {table} is {cols})") from None


def put_mutations(schema: Schema, rows: Sequence[northbound_pb2.Row],
                  canonical: bool = True) -> list[Upsert]:
    if not rows:
        raise CodecError("put needs at least one row")
    out = []
    for i, row in enumerate(rows):
        key = key_from_pb(schema, row.table, row.key, canonical)
        values = {name: value_from_pb(v) for name, v in row.values.items()}
        try:
            table_of(schema, row.table).check_values(values)
        except Rejected as exc:
            raise CodecError(f"rows[{i}]: {clip(exc.detail)}") from None
        if canonical and row.table == "hosts" and isinstance(values.get("dpid"), str) \
                and values["dpid"]:
            values["dpid"] = canonical_dpid("hosts", "dpid", values["dpid"])
        out.append(Upsert(row.table, key, values))
    return out


def delete_mutations(schema: Schema, table: str, keys: Sequence,
                     canonical: bool = True) -> list[Delete]:
    if not keys:
        raise CodecError("delete needs at least one key")
    return [Delete(table, key_from_pb(schema, table, k.key, canonical)) for k in keys]


def ack_level(ack: int) -> str:
    return "quorum" if ack == pb.ACK_QUORUM else "local"


def row_pb(table: str, key: tuple, values: Mapping[str, Value] | None) -> northbound_pb2.Row:
    row = pb.Row(table=table, key=[value_pb(k) for k in key])
    for name, v in (values or {}).items():
        row.values[name].CopyFrom(value_pb(v))
    return row


def row_event_pb(table, key, values, snapshot: bool = False) -> northbound_pb2.RowEvent:
    return pb.RowEvent(row=row_pb(table, key, values), deleted=values is None, snapshot=snapshot)


def flow_event_pb(key, values, snapshot: bool = False) -> local_pb2.FlowEvent:
    return local_pb2.FlowEvent(
        flow=row_pb("flows", key, values), deleted=values is None, snapshot=snapshot
    )


def service_event_pb(key, values, snapshot: bool = False) -> local_pb2.ServiceEvent:
    return local_pb2.ServiceEvent(
        service=row_pb("services", key, values), deleted=values is None, snapshot=snapshot
    )


def vector_pb(target, vector: Mapping[str, int]) -> None:
    """Fill a map<string, uint64> field."""
    for k, v in vector.items():
        target[k] = v


def vector_from_pb(field) -> dict[str, int]:
    return {str(k): int(v) for k, v in field.items()}


def status_pb(**kw) -> northbound_pb2.Status:
    vector = kw.pop("version_vector")
    counters = kw.pop("counters")
    msg = pb.Status(**kw)
    vector_pb(msg.version_vector, vector)
    vector_pb(msg.counters, {k: int(v) for k, v in counters.items() if v >= 0})
    return msg


def members_pb(members: Iterable[dict]) -> northbound_pb2.ListMembersResponse:
    out = pb.ListMembersResponse()
    for m in members:
        vector = m.pop("version_vector")
        item = out.members.add(**m)
        vector_pb(item.version_vector, vector)
    return out


def digest_pb(node_id: str, state: bytes, ops_digest: bytes, ops: int) -> northbound_pb2.Digest:
    return pb.Digest(node_id=node_id, state_digest=state, op_digest=ops_digest, ops=ops)


def schema_pb(schema: Schema) -> northbound_pb2.Schema:
    out = pb.Schema()
    for t in schema.tables:
        table = out.tables.add(name=t.name)
        for c in t.columns:
            table.columns.add(name=c.name, type=c.type, primary_key=c.name in t.primary_key)
    return out


def query_pb(columns: Sequence[str], rows: Sequence[tuple]) -> northbound_pb2.QueryResponse:
    out = pb.QueryResponse(columns=list(columns))
    for r in rows:
        out.rows.add(values=[value_pb(v) for v in r])
    return out


def token_pb(record, now_ms: int = 0) -> northbound_pb2.TokenInfo:
    """A token's record (never its secret); expired by this node's clock when now_ms given."""
    return pb.TokenInfo(
        id=record.id,
        role=record.role.label,
        description=record.description,
        created_ms=record.created_ms,
        revoked=record.revoked,
        expires_ms=record.expires_ms,
        expired=bool(now_ms) and record.expired(now_ms),
    )


def hello_pb(node_id: str, cluster_id: bytes, vector: Mapping[str, int]) -> peer_pb2.HelloResponse:
    out = peer_pb2.HelloResponse(node_id=node_id, cluster_id=cluster_id)
    vector_pb(out.version_vector, vector)
    return out


def deliver_pb(vector: Mapping[str, int], rejected: int) -> peer_pb2.DeliverResponse:
    out = peer_pb2.DeliverResponse(rejected=rejected)
    vector_pb(out.version_vector, vector)
    return out


__all__ += [
    "deliver_pb",
    "flow_event_pb",
    "hello_pb",
    "service_event_pb",
    "vector_from_pb",
]
