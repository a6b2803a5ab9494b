"""The reunion simulator's oracle: what a reunion must produce, from the simulator's record.

Pure functions over values: they call none of the report code. The simulator records every
row write it made (with the op that carried it) and every decision each node learned; from
that record and from what each side held (the parent's side: also its ops up to the child's
fork point) the oracle says what the conflict report must hold, which lineage wins
(decision 0014), what the CRDT merge must give, and which losses would be silent. Membership
chains are rebuilt from decided certificates alone, each change checked against the one
before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from controller.agreement import (
    ConflictEntry,
    Decision,
    Lineage,
    Membership,
    Reason,
    Refused,
    membership_slot,
    membership_version_of,
    verify_certificate,
)
from controller.agreement.certificate import certificate_ops
from controller.agreement.messages import value_key
from controller.replication import Genesis, NodeId, Op, RowsBody, RowState

__all__ = [
    "Entry",
    "Report",
    "Rows",
    "SideRecord",
    "Write",
    "decided_within",
    "entry_of",
    "expected_report",
    "expected_rows",
    "expected_winner",
    "latest_writes",
    "rows_within",
    "silent_losses",
    "silent_overrides",
    "superseded_apart",
    "unordered_fork_copies",
    "verified_chain",
    "writes_of",
]

Rows = dict[tuple[str, tuple], RowState]
Entry = tuple  # (kind, name, key, column, kept value key, lost value key)


@dataclass(frozen=True)
class Write:
    """One `kv` row write the simulator made, with the op that carried it."""

    cluster: bytes  # the lineage the op was authored in
    key: tuple
    value: bytes
    op: Op
    cl: int
    fork: bool = False  # a row of a seceded founder's fork copy (the parent's state re-signed)

    @property
    def order(self) -> tuple[int, int, NodeId]:
        """The CRDT order of a column version: (causal length, hlc, author)."""
        return (self.cl, self.op.hlc, self.op.author)


def writes_of(op: Op, cluster: bytes, fork: bool = False) -> list[Write]:
    """The `kv` writes an op carries."""
    assert isinstance(op.body, RowsBody)
    return [
        Write(cluster, m.key, m.values["value"], op, m.cl, fork)  # type: ignore[arg-type]
        for m in op.body.mutations
        if m.table == "kv" and "value" in m.values
    ]


@dataclass(frozen=True)
class SideRecord:
    """What one side of a reunion held when the report was computed."""

    cluster: bytes
    decided: Mapping[str, bytes]  # slot -> value key, as the side's node learned them
    latest: Mapping[tuple, Write]  # key -> the newest write the side's node held
    pre_fork: Callable[[Write], bool]  # was this write part of the state at the fork?

    def since_fork(self) -> dict[tuple, Write]:
        """Keys whose newest held version was written after the fork (by the fork point,
        not by wall time: a parent write the seceding founder never received is 'after')."""
        return {k: w for k, w in self.latest.items() if not self.pre_fork(w)}


def latest_writes(
    writes: Iterable[Write], clusters: set[bytes], holds: Callable[[Write], bool]
) -> dict[tuple, Write]:
    """Per key, the newest (CRDT order) write of these lineages that holds() accepts."""
    best: dict[tuple, Write] = {}
    for w in writes:
        if w.cluster not in clusters or not holds(w):
            continue  # another lineage's, or lost in a crash before it was durable
        cur = best.get(w.key)
        if cur is None or w.order > cur.order:
            best[w.key] = w
    return best


@dataclass(frozen=True)
class Report:
    """The expected `conflicts` table: entries, and per row key (kept author, lost author)."""

    entries: frozenset[Entry]
    authors: Mapping[tuple, tuple[NodeId, NodeId]]

    @property
    def slots(self) -> int:
        return sum(1 for e in self.entries if e[0] == "slot")


def entry_of(c: ConflictEntry) -> Entry:
    """A report entry as the oracle spells one (values by their key)."""
    return (c.kind, c.name, c.key, c.column, value_key(c.kept), value_key(c.lost))


def expected_report(kept: SideRecord, lost: SideRecord) -> Report:
    """Slots both sides learned with different values (the winner's value kept); keys both
    sides wrote since their fork with different values (the later CRDT version kept)."""
    entries: set[Entry] = set()
    authors: dict[tuple, tuple[NodeId, NodeId]] = {}
    for slot in sorted(set(kept.decided) & set(lost.decided)):
        if kept.decided[slot] != lost.decided[slot]:
            entries.add(("slot", slot, (), "", kept.decided[slot], lost.decided[slot]))
    ours, theirs = kept.since_fork(), lost.since_fork()
    for key in sorted(set(ours) & set(theirs)):
        older, newer = sorted((ours[key], theirs[key]), key=lambda w: w.order)
        if older.value != newer.value:
            entries.add(("row", "kv", key, "value", value_key(newer.value), value_key(older.value)))
            authors[key] = (newer.op.author, older.op.author)
    return Report(frozenset(entries), authors)


def expected_rows(latest: Mapping[tuple, Write]) -> dict[tuple, bytes]:
    """After the DAGs are joined every column holds its newest version, whichever side."""
    return {k: w.value for k, w in latest.items()}


def silent_losses(
    sides: Iterable[SideRecord], merged: Mapping[tuple, Write], report: Report
) -> list[str]:
    """Writes made since the fork that the other lineage's op overrode with no report entry:
    a reunion may discard a write only by reporting it (within a lineage it is plain LWW)."""
    reported = {e[2] for e in report.entries if e[0] == "row"}
    out = []
    for side in sides:
        for key, w in sorted(side.since_fork().items()):
            final = merged.get(key)
            if final is None or final.cluster == side.cluster or final.value == w.value:
                continue
            if key not in reported:
                what = "fork copy" if final.fork else "write"
                out.append(
                    f"{key}: {w.value!r} (written since the fork in {side.cluster.hex()[:8]}) "
                    f"lost to the {what} {final.value!r} of {final.cluster.hex()[:8]}"
                )
    return out


def unordered_fork_copies(x: SideRecord, y: SideRecord) -> int:
    """Keys whose newest version on both sides is a fork copy, with different values: two
    siblings copied the parent at different points, and the copies carry no parent version
    to order them by."""
    both = set(x.latest) & set(y.latest)
    return sum(
        1
        for k in both
        if x.latest[k].fork and y.latest[k].fork and x.latest[k].value != y.latest[k].value
    )


def silent_overrides(x: Mapping[str, bytes], y: Mapping[str, bytes], report: Report) -> list[str]:
    """Slots both lineages decide (as known once their DAGs are joined) with different
    values and no report entry: the winner's decision stands, so the other is lost."""
    reported = {e[1] for e in report.entries if e[0] == "slot"}
    return [
        f"{slot}: {x[slot]!r} / {y[slot]!r}"
        for slot in sorted(set(x) & set(y))
        if x[slot] != y[slot] and slot not in reported
    ]


def causal_vector(find: Callable[[bytes], Op | None], heads: Iterable[Op]) -> dict[NodeId, int]:
    """{author: highest seq} of the ops' causal past, themselves included, walked through
    their parents (find: an op by id; an op not held ends the walk there)."""
    out: dict[NodeId, int] = {}
    seen: set[bytes] = set()
    todo = list(heads)
    while todo:
        op = todo.pop()
        if op.id in seen:
            continue
        seen.add(op.id)
        out[op.author] = max(out.get(op.author, 0), op.seq)
        todo += [p for pid in op.parents if (p := find(pid)) is not None]
    return out


def decided_within(
    decisions: Mapping[str, Decision], vector: Mapping[NodeId, int]
) -> dict[str, bytes]:
    """Slot -> value key of the decisions whose certificate votes all lie inside vector."""
    out = {}
    for slot, d in decisions.items():
        if all(op.seq <= vector.get(op.author, 0) for op in certificate_ops(d.certificate)):
            out[slot] = value_key(d.value)
    return out


def superseded_apart(
    extra: set[Entry], sides: Iterable[SideRecord], writes: Iterable[Write]
) -> bool:
    """Are these report entries all rows whose lost value a side wrote since the fork but
    had itself superseded by an older-forked version (a concurrent pre-fork write with a
    later hlc)? The side never held that value at the reunion, so the oracle lists nothing."""
    sides, writes = list(sides), list(writes)

    def explained(e: Entry) -> bool:
        kind, _, key, _, _, lost = e
        return kind == "row" and any(
            key in side.latest
            and key not in side.since_fork()
            and any(
                w.cluster == side.cluster
                and w.key == key
                and value_key(w.value) == lost
                and not side.pre_fork(w)
                for w in writes
            )
            for side in sides
        )

    return all(explained(e) for e in extra)


def expected_winner(x: Lineage, y: Lineage, x_voters: int, y_voters: int) -> Lineage:
    """Decision 0014: the lineage the other seceded from; else more voters, then the
    smaller cluster id."""
    if x.cluster_id in y.ancestors:
        return x
    if y.cluster_id in x.ancestors:
        return y
    if x_voters != y_voters:
        return x if x_voters > y_voters else y
    return x if x.cluster_id < y.cluster_id else y


def verified_chain(decisions: Mapping[str, Decision], genesis: Genesis) -> dict[int, Membership]:
    """The membership chain from the genesis, each `membership/<n>` certificate verified
    alone against membership n-1 (raises Refused); a gap is refused too."""
    chain = {0: Membership.from_genesis(genesis)}
    versions = sorted(v for s in decisions if (v := membership_version_of(s)) is not None)
    for version in versions:
        d = decisions[membership_slot(version)]
        if d.certificate.ballot.mv != version - 1:
            mv = d.certificate.ballot.mv
            raise Refused(Reason.BAD_CERTIFICATE, f"{d.slot} decided under membership {mv}")
        verify_certificate(d.certificate, genesis.cluster_id, chain.get)
        chain[version] = Membership.from_value(d.value)
    return chain


def rows_within(log: Iterable[Op], vector: Mapping[NodeId, int]) -> Rows:
    """Rows from the ops of a log inside a version vector (the parent's state at a fork,
    as far as this log holds it), merged by the CRDT rules."""
    rows: Rows = {}
    for op in log:
        if op.seq > vector.get(op.author, 0) or not isinstance(op.body, RowsBody):
            continue
        for m in op.body.mutations:
            rows.setdefault((m.table, m.key), RowState()).merge(m, op.hlc, op.author)
    return rows
