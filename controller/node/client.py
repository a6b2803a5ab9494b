"""A small synchronous client for the node's API, used by the `synod` CLI and the tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import json_format
from synod.v1 import local_pb2_grpc, northbound_pb2, northbound_pb2_grpc

from controller.replication import Value

from . import codec
from .errors import NodeBaseError

__all__ = ["Client", "ClientError", "coerce", "to_plain"]


class ClientError(NodeBaseError):
    """A call failed; the message is the status code and the node's explanation."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Client:
    server: str = "127.0.0.1:7000"
    token: str = ""
    ca_file: str | None = None
    insecure: bool = False
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        options = [("grpc.max_receive_message_length", 64 << 20)]
        if self.insecure:
            self.channel = grpc.insecure_channel(self.server, options=options)
        else:
            root = None
            if self.ca_file:
                try:
                    root = Path(self.ca_file).read_bytes()
                except OSError as exc:
                    raise ClientError(f"{self.ca_file}: cannot read: {exc.strerror}") from None
            creds = grpc.ssl_channel_credentials(root)
            self.channel = grpc.secure_channel(self.server, creds, options=options)
        self.cluster = northbound_pb2_grpc.ClusterServiceStub(self.channel)
        self.rows = northbound_pb2_grpc.RowServiceStub(self.channel)
        self.admin = northbound_pb2_grpc.AdminServiceStub(self.channel)
        self.slots = northbound_pb2_grpc.SlotServiceStub(self.channel)
        self.lineage = northbound_pb2_grpc.LineageServiceStub(self.channel)
        self.local = local_pb2_grpc.LocalServiceStub(self.channel)
        self._schema: dict[str, list] | None = None

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def call(self, method, request, timeout_s: float | None = None):
        try:
            return method(request, timeout=timeout_s or self.timeout_s, metadata=self.metadata)
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            details = exc.details() or ""  # type: ignore[attr-defined]
            if code == grpc.StatusCode.UNAVAILABLE and "no quorum reachable" not in details:
                details = (
                    f"cannot reach {self.server}: {details.splitlines()[0] if details else ''}"
                )
            raise ClientError(f"{code.name.lower()}: {details}", code) from None

    def stream(self, method, request) -> Iterator:
        try:
            yield from method(request, metadata=self.metadata)
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            raise ClientError(f"{code.name.lower()}: {exc.details()}", code) from None  # type: ignore[attr-defined]

    # ---------------------------------------------------------------- rows, typed by schema
    def schema(self) -> dict[str, list]:
        if self._schema is None:
            s = self.call(self.cluster.GetSchema, northbound_pb2.GetSchemaRequest())
            self._schema = {t.name: list(t.columns) for t in s.tables}
        return self._schema

    def columns(self, table: str) -> tuple[list, list]:
        cols = self.schema().get(table)
        if cols is None:
            raise ClientError(f"unknown table {table!r} (tables: {', '.join(self.schema())})")
        return [c for c in cols if c.primary_key], [c for c in cols if not c.primary_key]

    def key(self, table: str, key: str | list) -> list[Value]:
        """A key from 'a/b' text (or a list of parts), typed by the schema."""
        keys, _ = self.columns(table)
        parts = key.split("/") if isinstance(key, str) else list(key)
        if len(parts) != len(keys):
            names = "/".join(c.name for c in keys)
            raise ClientError(f"{table} key is {names} ({len(keys)} part(s)), got {key!r}")
        return [coerce(c, p) for c, p in zip(keys, parts, strict=True)]

    def row(self, table: str, key: str | list, assignments: dict[str, str]):
        _, values = self.columns(table)
        by_name = {c.name: c for c in values}
        row = northbound_pb2.Row(table=table, key=[codec.value_pb(v) for v in self.key(table, key)])
        for name, text in assignments.items():
            col = by_name.get(name)
            if col is None:
                raise ClientError(f"{table} has no column {name!r} ({', '.join(by_name)})")
            row.values[name].CopyFrom(codec.value_pb(coerce(col, text)))
        return row


def coerce(col, text: str) -> Value:
    """Command-line text to a column's type: int, real, bool (true/false), blob (hex), text."""
    if not isinstance(text, str):
        return text
    try:
        if col.type == "int":
            return int(text, 0)
        if col.type == "real":
            return float(text)
        if col.type == "bool":
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise ValueError(text)
        if col.type == "blob":
            return bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise ClientError(f"column {col.name} is {col.type}: cannot read {text!r}") from None
    return text


def to_plain(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def row_plain(row) -> dict:
    """A Row as {column: value} with key columns first (blobs as hex)."""
    out = {}
    for i, v in enumerate(row.key):
        out[f"key{i}"] = codec.json_plain(codec.value_from_pb(v))
    for name, v in sorted(row.values.items()):
        out[name] = codec.json_plain(codec.value_from_pb(v))
    return out




__all__ += ["row_plain"]
