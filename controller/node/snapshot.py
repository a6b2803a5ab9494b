"""Snapshot catch-up (decision 0070, part 3): a node that lacks ops its peers pruned gets
the checkpoint they were compacted to, checks it, and starts from it.

Serving: the peer service reads the compaction record and the checkpoint's rows from its
store file (a read-only connection, one read transaction: what the last commit holds) and
streams them in chunks of at most `chunk_bytes`. Fetching: a node whose store holds no op
yet (it just joined) asks its peers in turn at start; so does a running node that a peer
told it lacks ops pruned there (`Ready.behind`); the first answer that checks out is
installed. A store that holds ops keeps those above the snapshot's cut (`merge`): the new
state is the checkpoint plus that tail, exactly what a restart of a compacted store reads.
Checking: the record and rows are read back exactly as a restart reads its own store
(`Replica.recover(compaction=...)`, every signature checked), then the rows must
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
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import grpc
from synod.v1 import peer_pb2, peer_pb2_grpc

from controller.agreement import AgreementReplica, Refused
from controller.agreement.certificate import Certificate, certificate_ops, verify_certificate
from controller.agreement.checkpoint import Checkpoints
from controller.agreement.errors import Reason
from controller.agreement.ledger import ARCHIVE_KEY, kept_in_memory
from controller.replication import (
    Compaction,
    Config,
    Genesis,
    Identity,
    LogError,
    Op,
    Ready,
    Rejected,
    Schema,
    decode,
    decode_op,
    encode,
)
from controller.store import Stored

from .errors import NodeBaseError
from .lineages import NODE_SCHEMA
from .slots import NodeReplica

__all__ = [
    "SnapshotError",
    "read_compaction",
    "chunks",
    "fetch",
    "check",
    "merge",
    "checker",
    "held_vector",
    "install",
    "Cancel",
]

log = logging.getLogger("synod.snapshot")

CHUNK_BYTES = 1 << 20  # rows per chunk: about this many bytes
SNAPSHOT_BYTES_MAX = 1 << 30  # a larger snapshot is refused (rows are held in memory)
FETCH_TIMEOUT_S = 120.0  # one peer's whole stream
CONNECT_TIMEOUT_S = 5.0  # to reach a peer before asking it


class SnapshotError(NodeBaseError):
    """A snapshot could not be read, was refused, or no peer had one to give."""


Rows = tuple[tuple[str, tuple, bytes, bytes], ...]

# The store's archived decisions (decision 0103) travel with the checkpoint's rows as rows
# of this reserved name (no table may start with "_synod"): key (archive key,), meta the
# certificate, no point. They are not part of the state digest: each is checked alone
# against the membership chain, and stored in the joiner's archive, not its tables.
ARCHIVED = "_synod_archive"


def _split(rows: Rows) -> tuple[Rows, tuple[tuple[str, bytes], ...]]:
    """The checkpoint's rows, and the archive entries that came with them."""
    table = tuple(r for r in rows if r[0] != ARCHIVED)
    entries = []
    for _, key, value, _point in (r for r in rows if r[0] == ARCHIVED):
        if len(key) != 1 or not isinstance(key[0], str):
            raise SnapshotError(f"an archived decision's key is not one string: {key!r}"[:200])
        entries.append((key[0], value))
    return table, tuple(entries)


def _check_archived(entries: tuple[tuple[str, bytes], ...], replica: AgreementReplica,
                    genesis: Genesis) -> None:
    """Each archived decision is a certificate for the slot its key names, decided by a
    quorum of the voters of the membership its ballot names (from the chain the replica
    verified from its genesis), settled inside the snapshot's cut as the serving node's
    ledger settled it (so never a checkpoint at or after the snapshot's own), and never a
    membership or policy slot (kept in memory). A key given twice is refused before any
    signature is checked."""
    ledger, cut = replica.ledger, dict(replica.dag.base)
    keys = [key for key, _ in entries]
    if len(set(keys)) != len(keys):
        raise SnapshotError("an archived decision is given twice")
    for key, value in entries:
        if not key.startswith(ARCHIVE_KEY):
            raise SnapshotError(f"archive key {key[:60]!r}: not a decided slot")
        slot = key[len(ARCHIVE_KEY):]
        try:
            cert = Certificate.from_plain(decode(value))
            if cert.slot != slot:
                raise Refused(Reason.BAD_CERTIFICATE, f"it certifies {cert.slot[:60]!r}")
            if kept_in_memory(slot):
                raise Refused(Reason.BAD_CERTIFICATE, "membership and policy are not archived")
            verify_certificate(cert, genesis.cluster_id, ledger.memberships.get)
            if any(op.seq > cut.get(op.author, 0) for op in certificate_ops(cert)):
                raise Refused(Reason.BAD_CERTIFICATE, "decided above the snapshot's cut")
        except Refused as exc:
            raise SnapshotError(f"archived decision {slot[:60]!r}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a peer's bytes
            raise SnapshotError(f"archived decision {slot[:60]!r}: unreadable: "
                                f"{type(exc).__name__}"[:200]) from None


def read_compaction(
    path: str | Path, lacking: Mapping[str, int] | None = None
) -> tuple[bytes, Rows] | None:
    """The compaction record and the checkpoint's rows of a store file, read in one read
    transaction on a read-only connection; None when the store was never compacted, or
    when `lacking` (a caller's vector) covers its pruned cut (the rows are then not read)."""
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        conn.execute("BEGIN")
        got = conn.execute("SELECT value FROM _synod_meta WHERE key = 'compaction'").fetchone()
        if got is None:
            return None
        if lacking is not None and all(
                lacking.get(a, 0) >= s for a, s in base_of(got[0]).items()):
            return None
        rows = tuple(
            (tbl, tuple(decode(pk)), meta, point)
            for tbl, pk, meta, point in conn.execute(
                "SELECT tbl, pk, meta, point FROM _synod_base ORDER BY tbl, pk"
            )
        )
        try:
            archived = tuple(
                (ARCHIVED, (key,), value, b"")
                for key, value in conn.execute(
                    "SELECT key, value FROM _synod_archive ORDER BY key")
            )
        except sqlite3.OperationalError:  # a file no Synod with an archive opened yet
            archived = ()
        return got[0], rows + archived
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
    rows, archived = _split(rows)
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
    _check_archived(archived, replica, genesis)
    replica._snapshot_rows = tuple(  # what install writes: our own points, not the peer's
        (t, k, meta, points[(t, tuple(k))]) for t, k, meta, _ in rows)
    replica._snapshot_archive = archived
    return replica


def held_vector(stored: Stored, schema: Schema = NODE_SCHEMA) -> dict[str, int]:
    """The version vector of what a store holds: its pruned cut, then its logged ops."""
    vector = base_of(stored.compaction[0]) if stored.compaction is not None else {}
    for op in _decode_all(stored.log, schema):
        vector[op.author] = max(vector.get(op.author, 0), op.seq)
    return vector


def _decode_all(raws: Iterable[bytes], schema: Schema, cfg: Config | None = None) -> list[Op]:
    cfg = cfg or Config()
    return [decode_op(r, schema, cfg.parents_max, cfg.mutations_max) for r in raws]


def merge(
    snap: AgreementReplica,
    record: bytes,
    rows: Rows,
    stored: Stored,
    identity: Identity,
    genesis: Genesis,
    *,
    replica_cls: type[AgreementReplica] = NodeReplica,
    schema: Schema = NODE_SCHEMA,
    **replica_kwargs: Any,
) -> tuple[AgreementReplica, bytes]:
    """The replica a node whose store holds ops starts from with a checked snapshot
    (`snap`, from check()): the checkpoint, then every op of the store above its cut,
    in the store's log order, checked again as a restart checks its tail. The store's ops
    inside the cut are dropped (the certified rows hold their effect); those that the
    kept ops name as parents stay, as the pruned ops a compaction keeps for that
    (`named` in the record). Returns the replica and the record to store; SnapshotError
    when the snapshot is not ahead of the store or the store's ops do not fit on it."""
    rows, archived = _split(rows)
    base = dict(snap.dag.base)
    held_base = base_of(stored.compaction[0]) if stored.compaction is not None else {}
    if any(base.get(a, 0) < s for a, s in held_base.items()):
        raise SnapshotError("its cut is below the checkpoint this store was compacted to")
    config = replica_kwargs.get("config")
    ops = _decode_all(stored.log, schema, config)
    vector = dict(held_base)
    for op in ops:
        vector[op.author] = max(vector.get(op.author, 0), op.seq)
    if all(vector.get(a, 0) >= s for a, s in base.items()):
        raise SnapshotError("this store holds its whole cut already")
    _check_own_ops(snap, ops, identity.node_id)
    tail = [op for op in ops if op.seq > base.get(op.author, 0)]
    inside = {op.id: op for op in ops if op.seq <= base.get(op.author, 0)}
    if stored.compaction is not None:  # the pruned ops the old record kept, by id
        old = decode(stored.compaction[0])
        for op in _decode_all([*old["frontier"], *old["named"]], schema, config):
            inside.setdefault(op.id, op)
    tail_ids = {op.id for op in tail}
    evidence = {op.id for op in _decode_all(stored.evidence, schema, config)}
    named: dict[bytes, bytes] = {}
    for op in tail:
        for p in op.parents:
            if p in tail_ids or p in evidence or snap.dag.holds(p) or p in named:
                continue
            parent = inside.get(p)
            if parent is None:
                raise SnapshotError(f"the store's {op!r} names an op held nowhere")
            named[p] = parent.raw
    plain = decode(record)
    plain["named"] = [*plain["named"], *named.values()]
    merged_record = encode(plain)
    try:
        replica = cast(AgreementReplica, replica_cls.recover(
            identity, genesis, random.Random(), [op.raw for op in tail], stored.evidence,
            verify="all", compaction=(merged_record, rows), schema=schema, **replica_kwargs,
        ))
        points = dict(replica._base_points or {})
        Checkpoints(replica, replica.ledger).restore()
    except (LogError, Refused, Rejected) as exc:
        raise SnapshotError(f"the store's ops above its cut do not fit on it: {exc}") from None
    if replica.forks():
        raise SnapshotError("the store's evidence proves forks below its cut")
    _check_archived(archived, replica, genesis)
    replica._snapshot_rows = tuple(  # type: ignore[attr-defined]
        (t, k, meta, points[(t, tuple(k))]) for t, k, meta, _ in rows)
    replica._snapshot_archive = archived  # type: ignore[attr-defined]
    log.info("snapshot at checkpoint/%d: keeps %d ops of this store above its cut, drops "
             "%d inside it (%d kept as named parents)", replica.restored_checkpoint,
             len(tail), len(ops) - len(tail), len(named))
    return replica, merged_record


def _check_own_ops(snap: AgreementReplica, ops: list[Op], me: str) -> None:
    """This node's own ops in its store against the cut the voters certified. Only this
    node writes its ops, and it stores each before sending it, so its store holds every
    one of them up to its last seq: an op of its own at the cut's seq that differs from
    the certified one means this node signed two ops with one seq (a store restored from
    an older copy that then took writes): refused, naming both, since the cluster holds the
    other and those writes are not in its state. A store whose own ops stop below the cut
    was restored from an older copy: warned, since writes it took since then are dropped."""
    cut = snap.dag.base.get(me, 0)
    if not cut:
        return
    own = [op for op in ops if op.author == me and op.seq <= cut]
    if not own:
        return
    certified = snap.dag.frontier.get(me)
    top = max(own, key=lambda op: op.seq)
    if top.seq == cut and certified is not None and top.id != certified.id:
        raise SnapshotError(
            f"this store holds this node's op {top.id.hex()[:16]} at seq {cut}, and the "
            f"checkpoint certifies another one ({certified.id.hex()[:16]}) there: this "
            "node signed two ops with one seq (its store restored from an older copy, then "
            "written to?); its writes since are not in the cluster's state. Reinitialise "
            "this node's data directory and join again")
    if top.seq < cut:
        log.warning("this store's own ops stop at seq %d but the checkpoint holds this "
                    "node's ops up to seq %d: the store was restored from an older copy; "
                    "a write it took since that copy is not in the cluster's state and is "
                    "dropped", top.seq, cut)


def checker(stored: Stored, identity: Identity, genesis: Genesis,
            **kwargs: Any) -> Callable[[bytes, Rows], tuple[AgreementReplica, bytes]]:
    """fetch()'s check_one for a store holding `stored`: check the snapshot, then merge
    what the store holds above its cut (nothing to merge for an empty store)."""

    def check_one(record: bytes, rows: Rows) -> tuple[AgreementReplica, bytes]:
        snap = check(record, rows, identity, genesis, **kwargs)
        if not stored.log and stored.compaction is None:
            return snap, record
        return merge(snap, record, rows, stored, identity, genesis, **kwargs)

    return check_one


def install(store: Any, replica: AgreementReplica, record: bytes, rows: Rows) -> None:
    """Write a checked snapshot (check(), or merge() for a store that holds ops) in one
    transaction: the materialised tables, the checkpoint's rows and the compaction record,
    and the log's ops inside the cut deleted (a crash before the commit leaves the old
    store whole; SQLite makes the commit all or nothing). A row of an older checkpoint
    this store held is overwritten: row keys only accumulate along the chain (tombstones
    stay), so the new checkpoint's rows hold every key of an older one."""
    replica.rematerialise()
    ready = replica.ready()
    archived = getattr(replica, "_snapshot_archive", None)
    if archived is None:
        rows, archived = _split(rows)
    rows = getattr(replica, "_snapshot_rows", rows)
    store.commit(
        Ready(
            rows=ready.rows,
            replace_rows=True,
            compaction=Compaction(dict(replica.dag.base), rows, record, archived),
        )
    )
    replica.advance(ready)
    replica.ledger.archive = store  # the archived decisions are answered from there


class Cancel:
    """Stops a fetch() running in another thread (a node shutting down): no further peer
    is asked, and the stream being read is cancelled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._call: Any = None

    def set(self) -> None:
        with self._lock:
            self._set = True
            if self._call is not None:
                self._call.cancel()

    def is_set(self) -> bool:
        return self._set

    def track(self, call: Any) -> Any:
        with self._lock:
            self._call = call
            if self._set:
                call.cancel()
        return call


def fetch(
    addresses: list[str],
    credentials: grpc.ChannelCredentials,
    vector: Mapping[str, int],
    *,
    message_bytes_max: int,
    bytes_max: int,
    timeout_s: float,
    check_one: Any,
    cancel: Cancel | None = None,
) -> tuple[bytes, Rows, Any] | None:
    """Ask each peer address in turn for a snapshot; the first that `check_one(record,
    rows)` accepts is returned with what check_one returned. None when no peer has one
    (none compacted past `vector`, or none answered)."""
    request = peer_pb2.SnapshotRequest(version_vector=dict(vector))
    options = [
        ("grpc.ssl_target_name_override", "node.synod"),
        ("grpc.max_receive_message_length", message_bytes_max),
    ]
    cancel = cancel or Cancel()
    for address in addresses:
        if cancel.is_set():
            return None
        try:
            with grpc.secure_channel(address, credentials, options=options) as channel:
                # A peer that does not answer must not hold the start for the whole
                # stream's deadline: connect first, briefly.
                grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT_S)
                stub = peer_pb2_grpc.PeerServiceStub(channel)
                got = collect(cancel.track(stub.Snapshot(request, timeout=timeout_s)),
                              bytes_max)
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

