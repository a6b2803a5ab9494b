"""Snapshot catch-up (decision 0070, part 3): a node that lacks ops its peers pruned gets
the checkpoint they were compacted to, checks it, and starts from it.

Serving: the peer service reads the compaction record and the checkpoint's rows from its
store file (a read-only connection, one read transaction: what the last commit holds) and
streams them in chunks of at most `chunk_bytes`. Fetching: a node whose store holds no op
yet (it just joined) asks its peers in turn; the first answer that checks out is
installed. Checking: the record and rows are read back exactly as a restart reads its own
store (`Replica.recover(compaction=...)`, every signature checked), then the rows must
add up to the state digest of the checkpoint whose certificate the retained votes carry,
and the cut must be the pruned one (`Checkpoints.restore`). The certificate's votes are
verified with keys from the membership chain decided from the genesis, so a peer cannot
hand over a state the voters did not decide. A wrong, truncated or oversized snapshot is
refused with the reason logged, and the next peer is asked.
"""

from __future__ import annotations

import logging
import random
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
from synod.v1 import peer_pb2, peer_pb2_grpc

from controller.agreement import AgreementReplica, Refused
from controller.agreement.checkpoint import Checkpoints
from controller.replication import (
    Compaction,
    Genesis,
    Identity,
    LogError,
    Ready,
    Rejected,
    Schema,
    decode,
    encode,
)

from .errors import NodeBaseError
from .lineages import NODE_SCHEMA
from .slots import NodeReplica

__all__ = ["SnapshotError", "read_compaction", "chunks", "fetch", "check", "install"]

log = logging.getLogger("synod.snapshot")

CHUNK_BYTES = 1 << 20  # rows per chunk: about this many bytes
SNAPSHOT_BYTES_MAX = 1 << 30  # a larger snapshot is refused (rows are held in memory)
FETCH_TIMEOUT_S = 120.0  # one peer's whole stream
CONNECT_TIMEOUT_S = 5.0  # to reach a peer before asking it


class SnapshotError(NodeBaseError):
    """A snapshot could not be read, was refused, or no peer had one to give."""


Rows = tuple[tuple[str, tuple, bytes, bytes], ...]


def read_compaction(path: str | Path) -> tuple[bytes, Rows] | None:
    """The compaction record and the checkpoint's rows of a store file, read in one read
    transaction on a read-only connection; None when the store was never compacted."""
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        conn.execute("BEGIN")
        got = conn.execute("SELECT value FROM _synod_meta WHERE key = 'compaction'").fetchone()
        if got is None:
            return None
        rows = tuple(
            (tbl, tuple(decode(pk)), meta, point)
            for tbl, pk, meta, point in conn.execute(
                "SELECT tbl, pk, meta, point FROM _synod_base ORDER BY tbl, pk"
            )
        )
        return got[0], rows
    finally:
        conn.close()


def base_of(record: bytes) -> dict[str, int]:
    """The pruned cut a compaction record names (checked by recover, not here)."""
    plain = decode(record)
    base = plain.get("base") if isinstance(plain, dict) else None
    return dict(base) if isinstance(base, dict) else {}


def chunks(
    record: bytes, rows: Rows, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[peer_pb2.SnapshotChunk]:
    """The stream: the record and the row count first, rows in bounded chunks, `last` set
    on the final chunk."""
    out = peer_pb2.SnapshotChunk(record=record, rows_total=len(rows))
    size = len(record)
    for table, key, meta, point in rows:
        row = peer_pb2.SnapshotRow(table=table, key=encode(list(key)), meta=meta, point=point)
        n = len(table) + len(row.key) + len(meta) + len(point) + 16
        if out.rows and size + n > chunk_bytes:
            yield out
            out, size = peer_pb2.SnapshotChunk(), 0
        out.rows.append(row)
        size += n
    out.last = True
    yield out


def collect(stream: Any, bytes_max: int) -> tuple[bytes, Rows] | None:
    """Read a Snapshot stream: None when the peer has nothing to give; SnapshotError when
    it is cut short, too large, or its parts are inconsistent."""
    record, rows, total, size, done = b"", [], 0, 0, False
    for i, chunk in enumerate(stream):
        if done:
            raise SnapshotError("chunks after the last one")
        if i == 0:
            record, total = chunk.record, chunk.rows_total
            if not record:
                raise SnapshotError("the first chunk carries no compaction record")
        elif chunk.record:
            raise SnapshotError("a compaction record after the first chunk")
        size += chunk.ByteSize()
        if size > bytes_max:
            raise SnapshotError(f"larger than {bytes_max} bytes")
        for r in chunk.rows:
            try:
                key = decode(r.key)
            except Exception:  # noqa: BLE001 - a peer's bytes
                raise SnapshotError(f"row {len(rows)}: key is not canonical CBOR") from None
            if not isinstance(key, list):
                raise SnapshotError(f"row {len(rows)}: key is not a list")
            rows.append((r.table, tuple(key), r.meta, r.point))
        if len(rows) > total:
            raise SnapshotError(f"more rows than the {total} announced")
        done = chunk.last
    if not record and not rows:
        return None
    if not done:
        raise SnapshotError(f"cut short after {len(rows)} of {total} rows")
    if len(rows) != total:
        raise SnapshotError(f"{len(rows)} rows, {total} announced")
    return record, tuple(rows)


def check(
    record: bytes,
    rows: Rows,
    identity: Identity,
    genesis: Genesis,
    *,
    replica_cls: type[AgreementReplica] = NodeReplica,
    schema: Schema = NODE_SCHEMA,
    **replica_kwargs: Any,
) -> AgreementReplica:
    """The replica a node would start from with this snapshot, once it checks out (see the
    module docstring); SnapshotError naming what is wrong otherwise."""
    try:
        replica = replica_cls.recover(
            identity, genesis, random.Random(), (), (), verify="all",
            compaction=(record, rows), schema=schema, **replica_kwargs,
        )
        points = dict(replica._base_points or {})  # recomputed from the rows (verify="all")
        Checkpoints(replica, replica.ledger).restore()
    except (LogError, Refused, Rejected) as exc:
        raise SnapshotError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a peer's bytes must not stop our start
        raise SnapshotError(f"unreadable: {type(exc).__name__}: {exc}"[:300]) from None
    if not replica.restored_checkpoint:
        raise SnapshotError("the record names no checkpoint")
    if replica.forks():
        # A fork below the checkpoint is proven by evidence a snapshot does not carry: the
        # joiner could not check it, so it is not taken (decision 0070).
        raise SnapshotError("the record names forks, whose evidence a snapshot does not carry")
    replica._snapshot_rows = tuple(  # what install writes: our own points, not the peer's
        (t, k, meta, points[(t, tuple(k))]) for t, k, meta, _ in rows)
    return replica


def install(store: Any, replica: AgreementReplica, record: bytes, rows: Rows) -> None:
    """Write a checked snapshot into an empty store in one transaction: the materialised
    tables, the checkpoint's rows and the compaction record."""
    replica.rematerialise()
    ready = replica.ready()
    rows = getattr(replica, "_snapshot_rows", rows)
    store.commit(
        Ready(
            rows=ready.rows,
            replace_rows=True,
            compaction=Compaction(dict(replica.dag.base), rows, record),
        )
    )
    replica.advance(ready)


def fetch(
    addresses: list[str],
    credentials: grpc.ChannelCredentials,
    vector: Mapping[str, int],
    *,
    message_bytes_max: int,
    bytes_max: int,
    timeout_s: float,
    check_one: Any,
) -> tuple[bytes, Rows, Any] | None:
    """Ask each peer address in turn for a snapshot; the first that `check_one(record,
    rows)` accepts is returned with what check_one returned. None when no peer has one
    (none compacted past `vector`, or none answered)."""
    request = peer_pb2.SnapshotRequest(version_vector=dict(vector))
    options = [
        ("grpc.ssl_target_name_override", "node.synod"),
        ("grpc.max_receive_message_length", message_bytes_max),
    ]
    for address in addresses:
        try:
            with grpc.secure_channel(address, credentials, options=options) as channel:
                # A peer that does not answer must not hold the start for the whole
                # stream's deadline: connect first, briefly.
                grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT_S)
                stub = peer_pb2_grpc.PeerServiceStub(channel)
                got = collect(stub.Snapshot(request, timeout=timeout_s), bytes_max)
        except grpc.FutureTimeoutError:
            log.warning("snapshot from %s: not reachable in %.0f s", address, CONNECT_TIMEOUT_S)
            continue
        except grpc.RpcError as exc:
            log.warning("snapshot from %s: %s", address, exc.details() or exc.code().name)
            continue
        except SnapshotError as exc:
            log.warning("snapshot from %s refused: %s", address, exc)
            continue
        if got is None:
            continue
        try:
            checked = check_one(*got)
        except SnapshotError as exc:
            log.warning("snapshot from %s refused: %s", address, exc)
            continue
        log.info("snapshot from %s: %d rows at the checkpoint", address, len(got[1]))
        return got[0], got[1], checked
    return None

