"""A small synchronous client for the node's API, used by the `synod` CLI and the tests.

Its imports are kept light (gRPC and the generated messages; no replication core) because
every `synod` call pays for them (docs/operations.md, per-call time).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from synod.v1 import northbound_pb2, northbound_pb2_grpc

from . import codec_lite
from .errors import NodeBaseError

__all__ = ["Client", "ClientError", "Column", "SchemaMiss", "coerce", "row_plain", "to_plain"]


class ClientError(NodeBaseError):
    """A call failed; the message is the status code and the node's explanation, with a
    hint naming the flag or variable to fix when TLS, the address or the token is wrong."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class SchemaMiss(ClientError):
    """A table, column or key shape the client's schema does not know (maybe stale)."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # int, real, text, blob, bool
    primary_key: bool


@dataclass
class Client:
    server: str = "127.0.0.1:7000"
    token: str = ""
    ca_file: str | None = None
    insecure: bool = False
    timeout_s: float = 10.0
    # Where each setting came from (clientconf.ClientSettings.origin): the CLI's; error
    # lines then name the flag or variable to fix. Empty for other programs' clients.
    origin: Mapping[str, str] = field(default_factory=dict)
    # Keep the schema in $XDG_CACHE_HOME/synod/ between calls (the CLI does): a `put` or a
    # `get` then costs one call, not two. A stale schema is refreshed (schema_changed).
    schema_cache: bool = False

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
                    raise ClientError(f"{self.ca_file} (CA from {self._from('ca')}): "
                                      f"cannot read: {exc.strerror}") from None
            creds = grpc.ssl_channel_credentials(root)
            self.channel = grpc.secure_channel(self.server, creds, options=options)
        self._stubs: dict[str, Any] = {}
        self._schema: dict[str, list[Column]] | None = None
        self._schema_cached = False  # the schema in use came from the cache file

    # Stubs are made on first use: a call that needs one service builds one.
    def _stub(self, name: str):
        stub = self._stubs.get(name)
        if stub is None:
            if name == "local":
                from synod.v1 import local_pb2_grpc

                stub = local_pb2_grpc.LocalServiceStub(self.channel)
            else:
                stub = getattr(northbound_pb2_grpc, name)(self.channel)
            self._stubs[name] = stub
        return stub

    cluster = property(lambda self: self._stub("ClusterServiceStub"))
    rows = property(lambda self: self._stub("RowServiceStub"))
    admin = property(lambda self: self._stub("AdminServiceStub"))
    slots = property(lambda self: self._stub("SlotServiceStub"))
    lineage = property(lambda self: self._stub("LineageServiceStub"))
    local = property(lambda self: self._stub("local"))

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
            raise ClientError(self.explain(code, exc.details() or ""), code) from None  # type: ignore[attr-defined]

    def stream(self, method, request) -> Iterator:
        try:
            yield from method(request, metadata=self.metadata)
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            raise ClientError(self.explain(code, exc.details() or ""), code) from None  # type: ignore[attr-defined]

    # ------------------------------------------------------------------- error hints
    def _from(self, name: str) -> str:
        return self.origin.get(name, "default")

    def explain(self, code: grpc.StatusCode, details: str) -> str:
        """A failed call in one line: the code, the node's words, and when the cause is on
        this side (no CA, wrong CA, TLS against plaintext, no token), the flag or variable
        that fixes it."""
        name = code.name.lower()
        if code == grpc.StatusCode.UNAVAILABLE and "no quorum reachable" not in details:
            return f"{name}: {self._unreachable(details)}"
        if not self.origin:  # a program's client (the controller's node link): no CLI flags
            return f"{name}: {details}"
        if code == grpc.StatusCode.UNAUTHENTICATED:
            if not self.token:
                return (f"{name}: {details}: {self.server} needs a token: give --token TOKEN "
                        "(or @FILE) or set SYNOD_TOKEN; `synod init` wrote an admin token "
                        "to DATA/admin.token")
            return f"{name}: {details} (token from {self._from('token')})"
        if code == grpc.StatusCode.PERMISSION_DENIED:
            return f"{name}: {details} (token from {self._from('token')})"
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and not details.strip():
            return f"{name}: no answer from {self.server} in {self.timeout_s:g} s (--timeout)"
        return f"{name}: {details}"

    def _unreachable(self, details: str) -> str:
        first = details.splitlines()[0] if details else ""
        first = re.sub(r"^failed to connect to all addresses; last error: ", "", first)
        if not self.origin:
            return f"cannot reach {self.server}: {first.removesuffix(': OK')}"
        at = f"{self.server} (from {self._from('server')})"
        if "CERTIFICATE_VERIFY_FAILED" in details or "certificate verify failed" in details:
            if not self.ca_file:
                return (f"cannot verify the TLS certificate of {at}: give the cluster's CA "
                        "certificate with --ca FILE or SYNOD_CA (`synod init` wrote it to "
                        "DATA/ca.crt)")
            return (f"the TLS certificate of {at} is not signed by the CA in {self.ca_file} "
                    f"(from {self._from('ca')}): is that the CA of this node's cluster?")
        if "WRONG_VERSION_NUMBER" in details:
            return (f"{at} does not speak TLS (a node run with --insecure-loopback?): add "
                    "--insecure or set SYNOD_INSECURE=1")
        if "Peer name" in details or "not in peer certificate" in details:
            host = self.server.rpartition(":")[0]
            return (f"the TLS certificate of {at} does not name {host}: connect by a name "
                    "it holds (`synod init --host` adds names)")
        if self.insecure and ("Socket closed" in details or "Connection reset" in details):
            return (f"{at} closed a plaintext connection; it may want TLS: drop --insecure "
                    f"(set by {self._from('insecure')})")
        if "Connection refused" in details:
            return (f"nothing answers at {at}: is the node running there? Give its API "
                    "address with --server or SYNOD_SERVER")
        return f"cannot reach {at}: {first.removesuffix(': OK')}"

    # ---------------------------------------------------------------- rows, typed by schema
    def schema(self) -> dict[str, list[Column]]:
        if self._schema is None:
            cached = _load_schema(self.server) if self.schema_cache else None
            if cached is not None:
                self._schema, self._schema_cached = cached, True
            else:
                self._fetch_schema()
        assert self._schema is not None
        return self._schema

    def _fetch_schema(self) -> bool:
        """Ask the node for its schema; True if it differs from the one in use."""
        s = self.call(self.cluster.GetSchema, northbound_pb2.GetSchemaRequest())
        fresh = {t.name: [Column(c.name, c.type, c.primary_key) for c in t.columns]
                 for t in s.tables}
        changed = fresh != self._schema
        self._schema, self._schema_cached = fresh, False
        if self.schema_cache and changed:
            _save_schema(self.server, fresh)
        return changed

    def fresh_schema(self) -> None:
        """Use the node's schema, not the cache: for a command that cannot simply be run
        again (an import reads its input once)."""
        self._fetch_schema()

    def schema_changed(self, error: ClientError) -> bool:
        """After a failure that a stale cached schema could explain (a table, column or key
        it did not know, or the node refusing a request as invalid): fetch the node's
        schema; True if it differed, so the command is worth one more try."""
        if not self._schema_cached:
            return False
        if not isinstance(error, SchemaMiss) and error.code != grpc.StatusCode.INVALID_ARGUMENT:
            return False
        return self._fetch_schema()

    def columns(self, table: str) -> tuple[list[Column], list[Column]]:
        cols = self.schema().get(table)
        if cols is None:
            raise SchemaMiss(f"unknown table {table!r} (tables: {', '.join(self.schema())})")
        return [c for c in cols if c.primary_key], [c for c in cols if not c.primary_key]

    def key(self, table: str, key: str | list) -> list:
        """A key from 'a/b' text (or a list of parts), typed by the schema."""
        keys, _ = self.columns(table)
        parts = key.split("/") if isinstance(key, str) else list(key)
        if len(parts) != len(keys):
            names = "/".join(c.name for c in keys)
            raise SchemaMiss(f"{table} key is {names} ({len(keys)} part(s)), got {key!r}")
        return [coerce(c, p) for c, p in zip(keys, parts, strict=True)]

    def row(self, table: str, key: str | list, assignments: dict[str, str]):
        _, values = self.columns(table)
        by_name = {c.name: c for c in values}
        row = northbound_pb2.Row(table=table, key=codec_lite.values(self.key(table, key)))
        for name, text in assignments.items():
            col = by_name.get(name)
            if col is None:
                raise SchemaMiss(f"{table} has no column {name!r} ({', '.join(by_name)})")
            row.values[name].CopyFrom(codec_lite.value_pb(coerce(col, text)))
        return row


def coerce(col, text: str) -> Any:
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
    """An API message as plain data: every field, bytes as hex (codec_lite.message_plain)."""
    return codec_lite.message_plain(message)


def row_plain(row) -> dict:
    """A Row as {column: value} with key columns first (blobs as hex)."""
    out = {}
    for i, v in enumerate(row.key):
        out[f"key{i}"] = codec_lite.json_plain(codec_lite.value(v))
    for name, v in sorted(row.values.items()):
        out[name] = codec_lite.json_plain(codec_lite.value(v))
    return out


# ---------------------------------------------------------------------- the schema cache
SCHEMA_CACHE_FILES_MAX = 64  # servers remembered; the least recently written go first


def _cache_file(server: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "synod" / "schema" / (re.sub(r"[^A-Za-z0-9.-]", "_", server) + ".json")


def _load_schema(server: str) -> dict[str, list[Column]] | None:
    try:
        raw = json.loads(_cache_file(server).read_text())
        return {t: [Column(str(n), str(ty), bool(pk)) for n, ty, pk in cols]
                for t, cols in raw["tables"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # no cache, or one this version cannot read: ask the node


def _save_schema(server: str, schema: dict[str, list[Column]]) -> None:
    path = _cache_file(server)
    data = {"server": server,
            "tables": {t: [[c.name, c.type, c.primary_key] for c in cols]
                       for t, cols in schema.items()}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
        # Emulations and tests start nodes on fresh ports: keep the directory bounded.
        others = sorted((f for f in path.parent.glob("*.json") if f != path),
                        key=lambda f: f.stat().st_mtime_ns)
        for old in others[:max(0, len(others) - SCHEMA_CACHE_FILES_MAX + 1)]:
            old.unlink(missing_ok=True)
    except OSError:
        pass  # a cache that cannot be written only costs the next call one GetSchema
