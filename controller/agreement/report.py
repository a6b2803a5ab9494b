"""A reunion's conflict report, computed from the two lineages' own op logs (pure).

The simulator knows what each side wrote; a node does not. After a decided merge a node
holds both lineages (its own replica and the joined one), and computes the report from
them alone, the same on every node that holds both:

- The *cut* of a side is the causal past of its decided `reunion/<other>` certificate:
  what that side had when it voted to merge; for a parent, also its ops up to the child's
  fork point (the child may have held some that the parent's other nodes had not).
  Writes after the cut merge by the CRDT rules without a report entry (both sides already
  see each other then).
- A side's writes *apart* are its ops inside its cut, less what both sides share: the
  parent's ops up to the child's fork point, and the seceded founder's fork copy (the
  founder's first ops in a seceded lineage, which re-sign the parent's rows, up to the one
  that writes the `fork-copy` marker: fork_copy_writes; decision 0018).
- A column written apart on both sides with different values is reported (`row_conflicts`
  on the two sides' apart-only tables); a slot decided inside both cuts with different
  values is reported (`slot_conflicts`), the winner lineage's decision standing.
- A service both sides held as running at their cuts, on different nodes or generations,
  ran twice while apart (decision 0081 §4): `placement_overlaps` reports it (kind
  `placement`, both nodes, generations, states and the times of their state writes), and
  `overlap_fixes` sets its placement to the higher generation, whose owner keeps it; the
  older one's agent sees the service placed elsewhere and stops its VM.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.replication import NodeId, RowsBody, RowState, Upsert, node_id_of
from controller.replication.crdt import Tables
from controller.replication.reserved import FORK_COPY_KEY, INTERNAL

from .certificate import Decision, certificate_ops
from .lineage import (
    MERGE,
    ConflictEntry,
    Lineage,
    lineage_of,
    reunion_slot,
    row_conflicts,
    slot_conflicts,
    winner,
)
from .messages import value_key
from .policy import AgreementReplica

__all__ = [
    "PLACEMENTS",
    "Report",
    "fork_copy_end",
    "fork_copy_writes",
    "late_slot_conflicts",
    "overlap_fixes",
    "placement_overlaps",
    "reunion_report",
]

PLACEMENTS = "placements"  # the table of where services run and what their agents observe
# Observed states of a VM that exists (edge_agent/reconcile.py): its copy was running.
_RUNNING_STATES = ("starting", "running", "unhealthy")


Vector = dict[NodeId, int]


@dataclass(frozen=True)
class Report:
    kept: bytes  # cluster id of the lineage whose decisions stand
    entries: list[ConflictEntry]


def _cut(replica: AgreementReplica, other: bytes) -> Vector | None:
    """The causal past of this lineage's decided merge with `other` (None: not decided)."""
    replica.ledger.catch_up()
    d = replica.ledger.decided(reunion_slot(other))
    if d is None or value_key(d.value) != value_key(MERGE):
        return None
    cut: Vector = {}
    for op in certificate_ops(d.certificate):
        for author, seq in replica.ledger.vector(op.id).items():
            cut[author] = max(cut.get(author, 0), seq)
    return cut


def _inside(replica: AgreementReplica, d: Decision, cut: Vector) -> bool:
    return all(cut.get(op.author, 0) >= op.seq for op in certificate_ops(d.certificate))


def _decisions(replica: AgreementReplica, cut: Vector) -> dict[str, Decision]:
    """Slots decided inside the cut (reunion slots name the other side: never shared)."""
    return {
        d.slot: d
        for d in replica.ledger.decided_items()
        if not d.slot.startswith("reunion/") and _inside(replica, d, cut)
    }


def fork_copy_writes(rows: list[Upsert], parent: bytes, mutations_max: int) -> list[list[Upsert]]:
    """The founder's first ops in a seceded lineage, one list of writes each (decision 0018):
    the parent's rows in chunks, the last ending with the `fork-copy` marker (the parent's
    id) that fork_copy_end looks for. One op even with no rows: the marker is what says
    where the copy ends, so the founder's first write apart is never taken for a copy. A
    parent that seceded itself holds its own marker: not copied, or an early chunk would
    end the copy."""
    step = mutations_max - 1  # room for the marker
    assert step >= 1, "an op must hold a row and the marker"
    rows = [w for w in rows if (w.table, w.key) != (INTERNAL, (FORK_COPY_KEY,))]
    chunks = [rows[i : i + step] for i in range(0, len(rows), step)] or [[]]
    chunks[-1] = [*chunks[-1], Upsert(INTERNAL, (FORK_COPY_KEY,), {"value": parent})]
    return chunks


def fork_copy_end(replica: AgreementReplica) -> int:
    """The founder's last fork-copy seq in a seceded lineage: its op carrying the marker
    (fork_copy_writes). 0: not a seceded lineage, or its founder wrote no copy (held here)."""
    if lineage_of(replica.genesis).parent is None:
        return 0
    founder = node_id_of(replica.genesis.founder)
    mine = sorted((op for op in replica.log() if op.author == founder), key=lambda o: o.seq)
    for op in mine[: replica.config.mutations_max]:
        if isinstance(op.body, RowsBody) and any(
            m.table == INTERNAL and m.key == (FORK_COPY_KEY,) for m in op.body.mutations
        ):
            return op.seq
    return 0


def _apart(
    replica: AgreementReplica, mine: Lineage, other: Lineage, cut: Vector
) -> dict[tuple[str, tuple], RowState]:
    """Tables built from this side's row ops written apart (see the module docstring)."""
    shared: Vector = dict(other.fork_vector) if other.parent == mine.cluster_id else {}
    founder, copied = node_id_of(replica.genesis.founder), fork_copy_end(replica)
    tables = Tables(replica.schema)
    held = Tables(replica.schema)  # everything inside the cut: what this side held
    for op in replica.log():
        if not isinstance(op.body, RowsBody) or replica.dag.excluded(op):
            continue
        if op.seq > cut.get(op.author, 0):
            continue
        for m in op.body.mutations:
            held.merge(m, op.hlc, op.author)
        if op.seq <= shared.get(op.author, 0) or (op.author == founder and op.seq <= copied):
            continue
        for m in op.body.mutations:
            tables.merge(m, op.hlc, op.author)
    out = {}
    for t, k, row in tables.all_rows():
        # A write apart that lost, inside this side, to a version held at the fork (a
        # concurrent pre-fork write with a later hlc) is not a value this side held.
        now = held.get(t, k)
        cols = {c: v for c, v in row.cols.items() if now is not None and _same(now.cols.get(c), v)}
        if cols:
            kept = RowState.from_plain(row.to_plain())
            kept.cols = cols
            out[(t, k)] = kept
    return out


def _same(a, b) -> bool:
    """The same write (a column's causal length depends on which deletes a table saw)."""
    return a is not None and (a.hlc, a.author, a.value) == (b.hlc, b.author, b.value)


def _held_placements(replica: AgreementReplica, cut: Vector) -> dict[str, RowState]:
    """The placements rows this side held at its cut, by service."""
    tables = Tables(replica.schema)
    for op in replica.log():
        if not isinstance(op.body, RowsBody) or replica.dag.excluded(op):
            continue
        if op.seq > cut.get(op.author, 0):
            continue
        for m in op.body.mutations:
            if m.table == PLACEMENTS:
                tables.merge(m, op.hlc, op.author)
    return {str(k[0]): row for t, k, row in tables.all_rows()
            if t == PLACEMENTS and k and row.cols}


def _running(row: RowState) -> dict | None:
    """{node, generation, state} of a placement its owner last said was running, with the
    state write's time and author; None otherwise."""
    cols = row.cols
    state, node, gen = cols.get("state"), cols.get("node"), cols.get("generation")
    if state is None or node is None or not isinstance(state.value, str):
        return None
    if not state.value.startswith(_RUNNING_STATES) or not isinstance(node.value, str):
        return None
    generation = gen.value if gen is not None and isinstance(gen.value, int) else 0
    return {"node": node.value, "generation": generation, "state": state.value,
            "hlc": state.hlc, "author": state.author}


def placement_overlaps(
    kept: tuple[Lineage, dict[str, RowState]], lost: tuple[Lineage, dict[str, RowState]]
) -> list[ConflictEntry]:
    """Services each side held as running at its cut on another node or generation: two
    copies ran while apart. The higher generation is kept (on a tie, the kept lineage's)."""
    (kl, krows), (ll, lrows) = kept, lost
    out = []
    for service in sorted(set(krows) & set(lrows)):
        a, b = _running(krows[service]), _running(lrows[service])
        if a is None or b is None or (a["node"], a["generation"]) == (b["node"], b["generation"]):
            continue
        (hi, hl), (lo, lol) = ((a, kl), (b, ll)) if a["generation"] >= b["generation"] \
            else ((b, ll), (a, kl))
        out.append(ConflictEntry(
            "placement", PLACEMENTS, (service,), "generation",
            {k: hi[k] for k in ("node", "generation", "state")}, hi["author"], hi["hlc"],
            {k: lo[k] for k in ("node", "generation", "state")}, lo["author"], lo["hlc"],
            hl.cluster_id, lol.cluster_id))
    return out


def overlap_fixes(entries: list[ConflictEntry]) -> list[Upsert]:
    """For each placement overlap, the placement of the generation that stands (written
    with the report): its owner keeps running it, the other's agent stops its copy."""
    return [Upsert(PLACEMENTS, e.key, {"node": e.kept["node"],
                                       "generation": e.kept["generation"]})
            for e in entries if e.kind == "placement"]


def reunion_report(a: AgreementReplica, b: AgreementReplica) -> Report | None:
    """The report of the merge of a's and b's lineages, or None until both sides' decided
    merges are held (a node learns the other side's decision through the joined DAG)."""
    la, lb = lineage_of(a.genesis), lineage_of(b.genesis)
    cut_a, cut_b = _cut(a, lb.cluster_id), _cut(b, la.cluster_id)
    if cut_a is None or cut_b is None:
        return None
    # The parent's ops up to the child's fork point belong to the parent's side too: the
    # child held some the parent's other nodes had not (votes among them, which may
    # complete a parent decision only once the DAGs join). Wait until the parent's replica
    # holds them all, so every node computes the report from the same ops.
    rows_cut = {la.cluster_id: dict(cut_a), lb.cluster_id: dict(cut_b)}  # what each held
    for (parent, cut), child in ((a, cut_a), lb), ((b, cut_b), la):
        if child.parent != parent.cluster_id:
            continue
        held = parent.version_vector()
        if any(held.get(n, 0) < s for n, s in child.fork_vector.items()):
            return None
        for n, s in child.fork_vector.items():
            cut[n] = max(cut.get(n, 0), s)
    kept = winner(la, lb, len(a.ledger.membership.voters), len(b.ledger.membership.voters))
    sides = [(la, a, cut_a, lb), (lb, b, cut_b, la)]
    if kept is lb:
        sides.reverse()
    (lk, rk, ck, ok), (ll, rl, cl, ol) = sides
    entries = slot_conflicts((lk, _decisions(rk, ck)), (ll, _decisions(rl, cl)))
    ak = _apart(rk, lk, ok, rows_cut[lk.cluster_id])
    al = _apart(rl, ll, ol, rows_cut[ll.cluster_id])
    entries += row_conflicts((lk, ak, {}), (ll, al, {}))
    entries += placement_overlaps(
        (lk, _held_placements(rk, rows_cut[lk.cluster_id])),
        (ll, _held_placements(rl, rows_cut[ll.cluster_id])))
    return Report(lk.cluster_id, entries)


def late_slot_conflicts(a: AgreementReplica, b: AgreementReplica) -> list[ConflictEntry]:
    """Slots the kept lineage decided *after* its cut that the other side had decided
    differently inside its own cut: a parent slot still open at the split can be completed
    after the merge (a pre-split ballot that reaches the rest of the parent only with the
    join). Its entry is added to the report when that happens; entries only grow (a
    decision is final), so every node adds the same ones. Empty until both merges are held.
    """
    report = reunion_report(a, b)
    if report is None:
        return []
    la, lb = lineage_of(a.genesis), lineage_of(b.genesis)
    (kr, kl), (lr, ll) = ((a, la), (b, lb)) if report.kept == la.cluster_id else ((b, lb), (a, la))
    cut = _cut(lr, kl.cluster_id)
    assert cut is not None  # the report exists: both merges are held
    kr.ledger.catch_up()
    known = {d.slot: d for d in kr.ledger.decided_items() if not d.slot.startswith("reunion/")}
    reported = {e.id for e in report.entries}
    return [e for e in slot_conflicts((kl, known), (ll, _decisions(lr, cut)))
            if e.id not in reported]
