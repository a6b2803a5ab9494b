"""The reunion story: its acts, and the oracle that says what each act must produce.

The acts (ReunionStory, mixed into ReunionSim in reunion.py, which holds the net and the
checks): together, split mid-traffic, secede, apart, reunite, resolve, merge.

The oracle (pure functions) calls none of the report code: the simulator records every row
write it made (with the op that carried it) and every decision each node learned, and the
oracle says, from that record and from what each side held (the parent's side: also its ops
up to the child's fork point), what the report must hold — computed before the join by
`slot_conflicts`/`row_conflicts` and after it by `reunion_report` — and what `winner` and
the CRDT merge must give. Membership chains are rebuilt from decided certificates alone,
each change checked against the one before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from controller.agreement import (
    Decision,
    Lineage,
    Membership,
    Reason,
    Refused,
    Relation,
    Status,
    auto_reunion_value,
    check_reunion,
    conflict_mutations,
    lineage_of,
    membership_slot,
    membership_version_of,
    relate,
    reunion_slot,
    row_conflicts,
    secede,
    slot_conflicts,
    verify_certificate,
    winner,
    with_conflicts_table,
)
from controller.agreement.certificate import certificate_ops
from controller.agreement.lineage import MERGE
from controller.agreement.messages import value_key
from controller.agreement.report import late_slot_conflicts, reunion_report
from controller.replication import (
    DEFAULT_SCHEMA,
    Genesis,
    NodeId,
    Op,
    RowsBody,
    RowState,
    Upsert,
)

if TYPE_CHECKING:
    from .reunion import ReunionSimConfig

__all__ = [
    "SCHEMA",
    "Report",
    "ReunionSimResult",
    "ReunionStory",
    "Side",
    "SideRecord",
    "Write",
    "expected_report",
    "expected_rows",
    "expected_winner",
    "decided_within",
    "latest_writes",
    "rows_within",
    "silent_losses",
    "silent_overrides",
    "superseded_apart",
    "unordered_fork_copies",
    "verified_chain",
    "writes_of",
]

SCHEMA = with_conflicts_table(DEFAULT_SCHEMA)
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


@dataclass
class ReunionSimResult:
    config: ReunionSimConfig
    slot_conflicts: int
    row_conflicts: int
    merged_ms: int  # virtual ms from the merge write until every node's digest is equal
    auto_merged: bool  # both sides proposed merge by policy, no operator vote
    messages: int
    relation: str  # of the reunited lineages: b_seceded_from_a or siblings
    membership_version: int  # the parent lineage's at the end (0: no change decided)
    split_one_side: int  # writes made before the split that only one side held at its fork
    # Siblings: keys both fork copies hold with different values and neither side wrote
    # since; the merge keeps the copy with the larger (hlc, founder), reported nowhere.
    unordered_copies: int
    counters: dict[str, int] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)  # faults of other layers (strict: fail)


@dataclass
class Side:
    """One side of the split: the parent lineage (A) or a seceded one (B, C)."""

    name: str
    nodes: list[NodeId]  # the first is its founder (seceded) or its reference node (A)
    genesis: Genesis
    fork_vector: dict[NodeId, int] | None = None  # seceded: the founder's vector of A
    base: Rows | None = None  # seceded: rows right after the fork copy

    @property
    def cluster(self) -> bytes:
        return self.genesis.cluster_id

    @property
    def lineage(self) -> Lineage:
        return lineage_of(self.genesis)

    @property
    def tag(self) -> str:
        return self.name.lower()


class ReunionStory:
    """The acts of a run, over the simulator's net and checks (ReunionSim in reunion.py)."""

    @property
    def seceded(self) -> list[Side]:
        return [s for name, s in sorted(self.sides.items()) if name != "A"]

    @property
    def pair(self) -> tuple[Side, Side]:
        """The sides that reunite: the parent and its seceded side, or two siblings."""
        b, *c = self.seceded
        return (b, c[0]) if c else (self.sides["A"], b)

    # Names from before the sides were general (tests/agreement/test_report.py reads them).
    @property
    def everyone(self) -> list[NodeId]:
        """The nodes of the two reunited sides (after the merge: those holding both)."""
        x, y = self.pair
        return sorted(x.nodes + y.nodes)

    @property
    def majority(self) -> list[NodeId]:
        return self.sides["A"].nodes

    @property
    def minority(self) -> list[NodeId]:
        return self.sides["B"].nodes

    @property
    def genesis_b(self) -> Genesis:
        return self.sides["B"].genesis

    @property
    def expected(self) -> frozenset[tuple]:
        """The oracle's conflict report entries (after the resolve act)."""
        return self.report.entries

    def run(self) -> ReunionSimResult:  # type: ignore[override]
        """The story, one method per act; each act ends in its checks."""
        self._together()
        self._split()
        self._secede()
        self._apart()
        x, y = self.pair
        auto = self._reunite(x, y)
        self._resolve(x, y)
        merged_ms = self._merge(x, y)
        report = self.report
        counters: dict[str, int] = {}
        for n in self.nodes:
            a = self._agreement(n)
            for k, v in (a.ledger.counters + a.counters).items():
                counters[k] = counters.get(k, 0) + v
        return ReunionSimResult(
            self.config,
            report.slots,
            len(report.entries) - report.slots,
            merged_ms,
            auto,
            self.messages,
            relate(x.lineage, y.lineage).value,
            self._agreement(self.sides["A"].nodes[0]).ledger.mv,
            self._split_one_side(),
            unordered_fork_copies(self.records[x.name], self.records[y.name]),
            counters,
            self.findings,
        )

    def _phase(self, side: list[NodeId], tag: str, slots: list[tuple[str, str]], end: int) -> None:
        cfg, rng = self.config, self.rng
        start = self.time_ms
        for i in range(cfg.writes):
            value = f"{tag}{i}".encode()
            at = start + rng.randint(0, end)
            self._at(at, "write", (side, rng.randrange(cfg.keys), value))
        for slot, value in slots:
            at = start + rng.randint(0, end)
            for d in range(cfg.duelers):
                self._at(at + rng.randint(0, 50), "propose", (side, slot, f"{value}-{d}"))

    def _together(self) -> None:
        """One cluster writes rows and decides slots; the split comes in the middle of it
        (traffic goes on for a while after), with a write and a slot surely in flight."""
        cfg, rng = self.config, self.rng
        everyone = self.founders
        self._phase(everyone, "pre", [(f"master/{i}", f"pre{i}") for i in range(2)], cfg.split_ms)
        late = cfg.split_ms - rng.randint(0, min(cfg.split_ms, cfg.delay_ms_max))
        self._at(late, "write", (everyone, rng.randrange(cfg.keys), b"pre-late"))
        self._at(late, "propose", (everyone, "master/late", "late"))
        after = cfg.split_ms + rng.randint(1, cfg.phase_ms // 4)  # before any secession
        self._at(after, "write", (everyone, rng.randrange(cfg.keys), b"pre-after"))
        self._advance(cfg.split_ms)

    def _split(self) -> None:
        """The founders split into the parent's side A (with the spares) and one or two
        seceding sides; a seceding side's proposal must end no_quorum."""
        cfg, rng = self.config, self.rng
        b = sorted(rng.sample(self.founders, cfg.seceders))
        rest = [n for n in self.founders if n not in b]
        c = sorted(rng.sample(rest, cfg.siblings))
        a = [n for n in rest if n not in c]
        self.sides = {"A": Side("A", a + self.spares, self.genesis)}
        for name, nodes in (("B", b), ("C", c)):
            if nodes:
                self.sides[name] = Side(name, nodes, self.genesis)
        self.groups = [set(s.nodes) for s in self.sides.values()]
        ps = [self.propose(s.nodes[0], f"alloc/ip/{s.name}", s.name, 1_500) for s in self.seceded]

        def done() -> bool:
            return all(p is not None and p.done for p in ps) and self._done_proposals()

        if not self._advance(self.time_ms + cfg.quiet_ms_max, done):
            raise self.fail("termination: proposals in flight at the split never ended")
        for p in ps:
            if p is None or p.outcome is None or p.outcome.status is not Status.NO_QUORUM:
                raise self.fail(f"minority: expected no_quorum, got {p and p.outcome}")

    def _secede(self) -> None:
        for side in self.seceded:
            self._secede_side(side)

    def _secede_side(self, side: Side) -> None:
        """The operator on a minority side confirms; its founder's vector of the parent is
        the fork point and its rows are copied into the new lineage (the fork copy)."""
        founder = self.nodes[side.nodes[0]]
        for n in side.nodes:
            self._flush(self.nodes[n])
        assert founder.replica is not None
        fork_rows = [
            Upsert(t, k, v) for t in SCHEMA.names for k, v in founder.replica.rows(t).items()
        ]
        voters = self._agreement(founder.id).membership().voters
        side.fork_vector = founder.replica.version_vector()
        access = {"roles": {n: "admin" for n in side.nodes}, "auto_merge": self.auto}
        side.genesis = secede(
            founder.identity,
            self.genesis,
            voters,
            side.nodes,
            side.fork_vector,
            self.now(),
            confirmed_by="operator@sim",
            access=access,
        )
        lin = side.lineage
        if lin.parent != self.genesis.cluster_id or set(lin.left) != set(voters) - set(side.nodes):
            raise self.fail(f"secession: lineage {lin}")
        for n in side.nodes:
            self._move(self.nodes[n], side.genesis)
        assert founder.replica is not None
        if fork_rows:
            # 'oldest': hlc 1 (a fresh lineage's clock), below every version of the parent.
            at_ms = 0 if self.config.fork_copy == "oldest" else self.now()
            self._record(founder, founder.replica.write(fork_rows, at_ms), fork=True)
            self._pump(founder)
        side.base = self._snapshot(founder.id)

    def _apart(self) -> None:
        """Every side writes the same keys; the deciding sides decide contested slots
        differently; the parent changes its membership; crashes. Once quiet, a final
        contested slot must decide on each deciding side, and every change be in force."""
        cfg, rng = self.config, self.rng
        # 1 ms after the fork copies, so every write apart has a later hlc than a copy.
        self._advance(self.time_ms + 1)
        apart = self.time_ms
        deciding = list(self.pair)
        contested = [f"alloc/pool/{i}" for i in range(cfg.contested)]
        slots = {s.name: [(c, f"{s.tag}{i}") for i, c in enumerate(contested)] for s in deciding}
        for i in range(cfg.one_sided):
            slots[rng.choice(deciding).name].append((f"placement/one{i}", f"o{i}"))
        for side in self.seceded:  # operators retry the slots in flight at the split
            if side.name in slots:
                retried = ["master/0", "master/1", "master/late"]
                slots[side.name] += [(m, f"{side.tag}-{m}") for m in retried]
        for side in self.sides.values():
            self._phase(side.nodes, side.tag, slots.get(side.name, []), cfg.phase_ms)
        for change in self._changes():
            self._at(apart + rng.randint(0, cfg.phase_ms), "member", change)
        for _ in range(cfg.crashes):
            victim = rng.choice(sorted(self.nodes))
            at = apart + rng.randint(100, cfg.phase_ms)
            self._at(at, "crash", victim)
            self._at(min(apart + cfg.phase_ms, at + rng.randint(0, 1_500)), "restart", victim)
        if cfg.lagging:  # a voter of the parent misses the changes, and catches up after
            laggard = rng.choice([n for n in self.sides["A"].nodes if n in self.founders])
            self._at(apart + rng.randint(0, cfg.phase_ms // 2), "isolate", laggard)
            self._at(apart + cfg.phase_ms, "rejoin")
        self._advance(apart + cfg.phase_ms)
        for n in sorted(self.nodes):
            self._handle("restart", n)
        self._complete_changes()
        for side in deciding:
            self.propose(side.nodes[0], "alloc/final", f"final-{side.name}", cfg.quiet_ms_max)
        for side in self.sides.values():
            extra = self._all_decided(side.nodes, "alloc/final") if side in deciding else None
            self._settle(side.nodes, f"side {side.name} apart", extra)
            for n in side.nodes:
                self._check_node(n, side.genesis)

    def _changes(self) -> list[tuple[str, NodeId]]:
        """The parent's membership changes while apart: spares join, seceded voters leave."""
        leaving = self.sides["B"].nodes[: self.config.leaves]
        changes = [("join", n) for n in self.spares] + [("leave", n) for n in leaving]
        self.rng.shuffle(changes)
        return changes

    def _complete_changes(self) -> None:
        """A change the chaos left undecided (timed out, or lost a duel for its version) is
        proposed again once quiet, one at a time; each must then be in force."""
        a = self.sides["A"]
        for change, subject in self._changes_left():
            for _ in range(3):
                self._settle(a.nodes, "the parent before a membership change")
                proposer = self._voting(a.nodes, admins=True)[0]
                p = self._change(proposer, change, subject, self.config.quiet_ms_max)
                if p is None:
                    break
                if not self._advance(self.time_ms + self.config.quiet_ms_max, lambda p=p: p.done):
                    raise self.fail(f"termination: {change} of {subject[:8]} never ended")
            if (change, subject) in self._changes_left():
                raise self.fail(f"membership: {change} of {subject[:8]} not in force")

    def _changes_left(self) -> list[tuple[str, NodeId]]:
        voters = self._agreement(self.sides["A"].nodes[0]).membership().voters
        leaving = self.sides["B"].nodes[: self.config.leaves]
        return [("join", n) for n in self.spares if n not in voters] + [
            ("leave", n) for n in leaving if n in voters
        ]

    def _reunite(self, x: Side, y: Side) -> bool:
        """Each side relates the lineages and decides merge in its reunion slot, proposed
        by its policy (auto_merge='related', never for siblings) or by an operator.
        True: by policy on both sides."""
        for side, other in ((x, y), (y, x)):  # no decided merge yet: joining is refused
            node = self.nodes[side.nodes[0]]
            assert node.replica is not None
            try:
                node.replica.join_lineage(self._shadow(node, other.genesis))
            except Refused as exc:
                if exc.reason is not Reason.NO_MERGE:
                    raise self.fail(f"join before the merge: {exc}") from None
            else:
                raise self.fail("join before the merge: accepted")
        auto = True
        for side, other in ((x, y), (y, x)):
            relation = check_reunion(side.lineage, other.lineage)
            policy = self._agreement(side.nodes[0]).ledger.policy
            value = auto_reunion_value(policy, relation)
            related = relation in (Relation.A_FROM_B, Relation.B_FROM_A)
            if (value == MERGE) != (self.config.auto_merge and related):
                raise self.fail(f"auto-merge: {policy.auto_merge}, {relation} gave {value!r}")
            auto = auto and value == MERGE
            proposer = self._voting(side.nodes)[0]
            self.propose(proposer, reunion_slot(other.cluster), MERGE, self.config.quiet_ms_max)
        for side, other in ((x, y), (y, x)):
            slot = reunion_slot(other.cluster)
            self._settle(side.nodes, slot, self._all_decided(side.nodes, slot))
            d = self._agreement(side.nodes[0]).decided(slot)
            if d is None or d.value != MERGE:
                raise self.fail(f"reunion: {side.name} decided {d}")
        return auto

    def _record_of(self, side: Side, x: Side, y: Side) -> SideRecord:
        """What the side's reference node held, for the oracle."""
        ref = side.nodes[0]
        r = self.nodes[ref].replica
        assert r is not None
        if side.fork_vector is None:  # the parent: 'before the fork' is inside the child's vector
            child = y if side is x else x
            vector = child.fork_vector or {}

            def pre_fork(w: Write) -> bool:
                return w.op.seq <= vector.get(w.op.author, 0)
        else:

            def pre_fork(w: Write) -> bool:
                return w.fork

        latest = latest_writes(self.writes, {side.cluster}, lambda w: r.dag.holds(w.op.id))
        learned = dict(self.learned_at[(side.cluster, ref)])
        return SideRecord(side.cluster, learned, latest, pre_fork)

    def _resolve(self, x: Side, y: Side) -> None:
        """Before the join: the winner checks the other side's decisions alone (from its
        genesis), and the report computed from the two sides' states (lineage.py) must hold
        exactly what the oracle predicts from the simulator's record."""
        voters = {s.name: len(self._agreement(s.nodes[0]).membership().voters) for s in (x, y)}
        kept_lin = winner(x.lineage, y.lineage, voters[x.name], voters[y.name])
        expected = expected_winner(x.lineage, y.lineage, voters[x.name], voters[y.name])
        if kept_lin != expected:
            raise self.fail(f"resolution: {kept_lin.cluster_id.hex()[:8]} won, not expected")
        kept, lost = (x, y) if kept_lin.cluster_id == x.cluster else (y, x)
        decisions = {s.name: self._decisions(s.nodes[0]) for s in (x, y)}
        for s, other in ((x, y), (y, x)):
            self._verify_all(decisions[s.name], s.genesis, f"{s.name}'s checked by {other.name}")
            learned = self.learned_at[(s.cluster, s.nodes[0])]
            held = {k: value_key(d.value) for k, d in decisions[s.name].items()}
            unlearned = sorted(set(learned) - set(held))
            if unlearned:  # the watch told of them before the node's own vote was durable
                self._finding(f"{s.name} learned {unlearned}, then a crash lost the deciding vote")
                for slot in unlearned:
                    del learned[slot]
            if held != learned:
                raise self.fail(f"record: {s.name}'s decisions differ from what it learned")
        snaps = {s.name: self._snapshot(s.nodes[0]) for s in (x, y)}
        bases = {s.name: self._base(s, x, y) for s in (x, y)}
        conflicts = slot_conflicts(
            (kept.lineage, decisions[kept.name]), (lost.lineage, decisions[lost.name])
        )
        conflicts += row_conflicts(
            (x.lineage, snaps[x.name], bases[x.name]), (y.lineage, snaps[y.name], bases[y.name])
        )
        self.records = {s.name: self._record_of(s, x, y) for s in (x, y)}
        self.held = {s.name: self._replica(s.nodes[0]).version_vector() for s in (x, y)}
        report = expected_report(self.records[kept.name], self.records[lost.name])
        got = {
            (c.kind, c.name, c.key, c.column, value_key(c.kept), value_key(c.lost))
            for c in conflicts
        }
        if got != report.entries or len(conflicts) != len(report.entries):
            raise self.fail(
                f"conflict report: got {sorted(got)}, expected {sorted(report.entries)}"
            )
        self.kept, self.report = kept, report

    def _write_report(self, x: Side, y: Side) -> Report:
        """The winner computes the report from the two lineages it holds once joined
        (reunion_report, as a node does), checks it against the oracle, and writes it."""
        writer = self.nodes[self.kept.nodes[0]]
        computed: list[Any] = []

        def ready() -> bool:
            r = self._replica(writer.id)
            computed[:] = [reunion_report(r, *r.lineages().values())]
            return computed[0] is not None

        if not self._advance(self.time_ms + self.config.quiet_ms_max, ready):
            raise self.fail("termination: the winner cannot compute the report")
        report = self.report = self._joined_report(x, y)
        got = computed[0]
        entries = {
            (c.kind, c.name, c.key, c.column, value_key(c.kept), value_key(c.lost))
            for c in got.entries
        }
        extra, missing = entries - report.entries, report.entries - entries
        diagnosed = not missing and superseded_apart(extra, self.records.values(), self.writes)
        if got.kept != self.kept.cluster or (entries != report.entries and not diagnosed):
            raise self.fail(
                f"conflict report from the logs: got {sorted(entries)}, "
                f"expected {sorted(report.entries)}"
            )
        if extra:  # the report lists a write its own side had superseded before the fork
            self._finding(f"report from the logs: entries for superseded writes {sorted(extra)}")
            authors = dict(report.authors)
            for c in got.entries:
                if c.kind == "row":
                    authors[c.key] = (c.kept_author, c.lost_author)
            report = self.report = Report(frozenset(entries), authors)
        if got.entries:
            self._replica(writer.id).write(conflict_mutations(got.entries), self.now())
            self._pump(writer)
        return report

    def _check_merge(self, x: Side, y: Side, report: Report) -> None:
        """Once merged: no write or decision lost without a report entry; every node holds
        the oracle's rows and report (_check_merged)."""
        both = sorted(x.nodes + y.nodes)
        r = self._replica(both[0])
        held = [r, *r.lineages().values()]
        merged = latest_writes(
            self.writes, {x.cluster, y.cluster}, lambda w: any(h.dag.holds(w.op.id) for h in held)
        )
        lost = silent_losses(self.records.values(), merged, report)
        if lost:
            raise self.fail("merge: a write silently lost: " + "; ".join(lost))
        decided = [self._decided_keys(r if r.cluster_id == s.cluster else held[1]) for s in (x, y)]
        overridden = silent_overrides(*decided, report)
        if overridden:  # votes cast after the join on a ballot it brought
            self._finding("merge: a decision silently overridden: " + "; ".join(overridden))
        final = expected_rows(merged)
        for n in both:
            self._check_merged(n, x, y, report, final)

    def _joined_report(self, x: Side, y: Side) -> Report:
        """The oracle once the DAGs are joined: the parent's decisions also count those its
        ops up to the child's fork point complete (votes only the child held at the split)."""
        a = self.sides["A"]
        if a in (x, y):
            child = y if a is x else x
            r = self._replica(self.kept.nodes[0])
            held = r if r.cluster_id == a.cluster else r.lineages()[a.cluster]
            held.ledger.catch_up()  # type: ignore[attr-defined]
            slots = held.ledger.slots.items()  # type: ignore[attr-defined]
            decided = {s: rec.decided for s, rec in slots if rec.decided is not None}
            vector = dict(self.held[a.name])
            for n, seq in (child.fork_vector or {}).items():
                vector[n] = max(vector.get(n, 0), seq)
            old = self.records[a.name]
            completed = decided_within(decided, vector)
            self.records[a.name] = replace(old, decided={**completed, **old.decided})
        lost = y if self.kept is x else x
        return expected_report(self.records[self.kept.name], self.records[lost.name])

    def _base(self, side: Side, x: Side, y: Side) -> Rows:
        """Rows at the fork: a seceded side's right after its fork copy; the parent's from
        its ops inside the child's fork vector (not its rows at the split by wall time)."""
        if side.base is not None:
            return side.base
        child = y if side is x else x
        r = self.nodes[side.nodes[0]].replica
        assert r is not None and child.fork_vector is not None
        return rows_within(r.log(), child.fork_vector)

    def _merge(self, x: Side, y: Side) -> int:
        """Every node of both sides joins the other lineage's DAG; the winner computes the
        report from the two lineages it then holds (reunion_report, as a node does) and
        writes it; every node must reach one op set and one state. Returns ms."""
        merged_at = self.time_ms
        self.groups = None  # a third side meets again too, but its lineage stays apart
        both = sorted(x.nodes + y.nodes)
        for side, other in ((x, y), (y, x)):
            for n in side.nodes:
                self.partner[n] = other.genesis
        for n in both:
            node = self.nodes[n]
            self._join(node)
            self._pump(node)
        report = self._write_report(x, y)
        if self.config.crashes:  # a restart re-joins the other lineage from its store
            victim = self.rng.choice(both)
            at = self.time_ms + self.rng.randint(10, 500)
            self._at(at, "crash", victim)
            self._at(at + self.rng.randint(0, 1_000), "restart", victim)
        self._settle(both, "the merged cluster", one_lineage=False)
        report = self._write_late(both, report)
        self._check_merge(x, y, report)
        return self.time_ms - merged_at

    def _write_late(self, both: list[NodeId], report: Report) -> Report:
        """A slot the kept lineage decided only after the report (a pre-split ballot the
        join brought) that the other side decided otherwise: the winner adds its entry
        (late_slot_conflicts, as a node's keeper does), and it must reach every node."""
        writer = self.nodes[self.kept.nodes[0]]
        r = self._replica(writer.id)
        late = late_slot_conflicts(r, *r.lineages().values())  # type: ignore[arg-type]
        if not late:
            return report
        self.late_entries += len(late)
        r.write(conflict_mutations(late), self.now())
        self._pump(writer)
        entries = {
            (c.kind, c.name, c.key, c.column, value_key(c.kept), value_key(c.lost)) for c in late
        }
        report = self.report = Report(report.entries | entries, report.authors)
        self._settle(both, "the merged cluster with late report entries", one_lineage=False)
        return report

    def _split_one_side(self) -> int:
        """Writes made before the split that one side held at its fork and another did not."""
        a = self.nodes[self.sides["A"].nodes[0]].replica
        assert a is not None
        count = 0
        for w in self.writes:
            if w.cluster != self.genesis.cluster_id or not w.value.startswith(b"pre"):
                continue
            held = [w.op.seq <= (s.fork_vector or {}).get(w.op.author, 0) for s in self.seceded]
            if len({*held, a.dag.holds(w.op.id)}) > 1:
                count += 1
        return count
