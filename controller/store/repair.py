"""Repair a log that holds an op of this node's own that verification refuses (a poison op).

Nodes before issue 10 could sign an op their peers refuse (e.g. 10,001 row mutations, over
`mutations_max`). Peers refused it and every later op of that node (each names the one
before), so none of them left the node; on restart its own recovery refused the log and the
node would not start. The repair loses nothing that was acknowledged:

1. find the first logged op the recovery refuses; it must be this node's own (another
   node's bad op is not ours to rewrite: restore from a peer instead);
2. drop it and every later op of this node from the log (no other node holds them: they
   all descend from the refused op); ops of other nodes stay;
3. reopen the rest, which verifies, and write the dropped ops' row changes again, in order,
   as new ops within the limits (each with a new timestamp).

Dropped vote ops (agreement messages after the poison op) were never seen by any peer; they
are dropped only when the caller allows it (`drop_votes`), as if they had not been cast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.replication import (
    Config,
    Delete,
    LogError,
    Mutation,
    Op,
    Replica,
    RowsBody,
    Schema,
    Upsert,
    UsageError,
    decode_op,
)
from controller.replication.errors import Rejected

from .port import Store, StoreError
from .recovery import persist

__all__ = ["RepairResult", "repair_log"]

_LENIENT = 1 << 40  # bounds for reading the refused ops back (never for signing)


@dataclass
class RepairResult:
    refused: str = ""  # why the recovery refused the log ("" when nothing was wrong)
    dropped: list[Op] = field(default_factory=list)  # own ops taken out of the log
    rewritten_rows: int = 0  # row changes written again as new ops
    new_ops: int = 0
    lost: list[str] = field(default_factory=list)  # changes that could not be written again

    @property
    def repaired(self) -> bool:
        return bool(self.dropped)


def repair_log(
    store: Store,
    recover: Callable[[tuple[bytes, ...], tuple[bytes, ...], Any], Replica],
    node_id: str,
    config: Config,
    schema: Schema,
    *,
    drop_votes: bool = False,
    now_ms: int,
    before_change: Callable[[], None] = lambda: None,
) -> tuple[Replica, RepairResult]:
    """Repair store in place (see the module docstring). `recover(log, evidence,
    compaction)` rebuilds a replica as the node does (raising LogError);
    `before_change()` runs once the repair is known to be possible, just before the store
    is changed (e.g. to back it up).
    Returns the replica and what was done; a clean log is left untouched. Raises
    StoreError when the log cannot be repaired here."""
    stored = store.load()
    try:
        return recover(stored.log, stored.evidence, stored.compaction), RepairResult()
    except LogError as exc:
        refused, position = str(exc), exc.position
    if position < 0:
        what = "evidence" if position == -1 else "compaction record"
        raise StoreError(f"{store.name}: the {what} is refused ({refused}); not repairable")
    lenient = dataclasses.replace(config, mutations_max=_LENIENT, op_bytes_max=_LENIENT)
    bad = _read(stored.log[position], schema, lenient)
    if bad is None or bad.author != node_id:
        who = "unreadable" if bad is None else f"by node {bad.author}"
        raise StoreError(
            f"{store.name}: op #{position} ({who}) is refused ({refused}); only this "
            "node's own ops can be repaired: restore the store from a peer"
        )
    dropped: list[Op] = []
    for raw in stored.log[position:]:
        op = _read(raw, schema, lenient)
        if op is not None and op.author == node_id and op.seq >= bad.seq:
            dropped.append(op)
    votes = [op for op in dropped if not isinstance(op.body, RowsBody)]
    if votes and not drop_votes:
        raise StoreError(
            f"{store.name}: {len(votes)} of the {len(dropped)} ops to drop are agreement "
            f"messages ({', '.join(sorted({op.body.kind for op in votes}))}) no peer has "
            "seen; repair again with --drop-votes to drop them as if never cast"
        )
    gone = {op.raw for op in dropped}
    replica = recover(
        tuple(raw for raw in stored.log if raw not in gone), stored.evidence, stored.compaction
    )
    # ^ raises LogError when more than our own chain is wrong: nothing was changed yet.
    before_change()
    store.drop_chain(node_id, bad.seq)
    replica.rematerialise()  # the tables still hold the dropped ops' rows
    result = RepairResult(refused, dropped)
    for op in dropped:
        if isinstance(op.body, RowsBody):
            _rewrite(replica, op, result, now_ms)
    persist(store, replica)
    return replica, result


def _read(raw: bytes, schema: Schema, config: Config) -> Op | None:
    """An op's content, read without the size limits (it is never signed again as is)."""
    try:
        return decode_op(raw, schema, config.parents_max, config.mutations_max)
    except Rejected:
        return None


def _rewrite(replica: Replica, op: Op, result: RepairResult, now_ms: int) -> None:
    assert isinstance(op.body, RowsBody)
    changes: list[Mutation] = [
        Upsert(m.table, m.key, m.values) if m.cl % 2 else Delete(m.table, m.key)
        for m in op.body.mutations
    ]
    step = max(1, replica.config.mutations_max // 2)
    pending = [changes[i:i + step] for i in range(0, len(changes), step)]
    while pending:
        chunk = pending.pop(0)
        try:
            replica.write(chunk, now_ms)
        except UsageError as exc:
            if len(chunk) > 1:  # too many bytes for one op: halve it
                half = len(chunk) // 2
                pending[:0] = [chunk[:half], chunk[half:]]
                continue
            result.lost.append(f"{chunk[0].table} {chunk[0].key!r}: {exc}")
            continue
        result.rewritten_rows += len(chunk)
        result.new_ops += 1
