"""The reunion story: a seeded run told in acts over a ReunionNet, each act ending in its checks.

Together, split mid-traffic, secede, apart, reunite, resolve, merge. What each act must
produce comes from the oracle (reunion_oracle.py), which reads only the net's record; the
report itself is computed by the code a node runs: `slot_conflicts`/`row_conflicts` before
the join and `reunion_report` (then `late_slot_conflicts`) after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from controller.agreement import (
    AgreementReplica,
    Decision,
    Lineage,
    Reason,
    Refused,
    Relation,
    Status,
    check_reunion,
    lineage_of,
    relate,
    reunion_slot,
    row_conflicts,
    slot_conflicts,
    winner,
)
from controller.agreement.certificate import certificate_ops
from controller.agreement.coordinator import check_notice, fork_copy_due, plan_secession
from controller.agreement.lineage import MERGE
from controller.agreement.messages import value_key
from controller.agreement.report import fork_copy_writes, late_slot_conflicts, reunion_report
from controller.replication import Genesis, NodeId, Upsert, decode
from controller.replication.reserved import INTERNAL, report_key

from . import reunion_oracle as oracle
from .reunion_net import SCHEMA, ReunionNet, ReunionSimConfig
from .reunion_oracle import Report, Rows, SideRecord, Write, entry_of

__all__ = ["ReunionSim", "ReunionSimResult", "Side"]


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
    late_entries: int = 0  # report entries for decisions completed after the report
    returned: int = 0  # seceded nodes that moved home into the parent after the report
    counters: dict[str, int] = field(default_factory=dict)
    # Faults diagnosed in other layers; only with strict=False (strict fails on the first).
    findings: list[str] = field(default_factory=list)


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


class ReunionSim:
    """Nodes of one cluster that split, secede, work apart, meet again and merge: the acts,
    over the net they drive (self.net), checked against the oracle."""

    def __init__(self, config: ReunionSimConfig) -> None:
        self.config = config
        self.net = ReunionNet(config)
        self.sides: dict[str, Side] = {}
        self.records: dict[str, SideRecord] = {}  # what each reunited side held (resolve)
        self.held: dict[str, dict[NodeId, int]] = {}  # and its version vector then
        self.kept: Side | None = None  # the winner (resolve)
        self.report = Report(frozenset(), {})  # the oracle's report (resolve, then merge)
        self.late_entries = 0  # report entries added after the merge (late_slot_conflicts)

    @property
    def seceded(self) -> list[Side]:
        return [s for name, s in sorted(self.sides.items()) if name != "A"]

    @property
    def pair(self) -> tuple[Side, Side]:
        """The sides that reunite: the parent and its seceded side, or two siblings."""
        b, *c = self.seceded
        return (b, c[0]) if c else (self.sides["A"], b)

    @property
    def everyone(self) -> list[NodeId]:
        """The nodes of the two reunited sides (after the merge: those holding both)."""
        x, y = self.pair
        return sorted(x.nodes + y.nodes)

    @property
    def expected(self) -> frozenset[tuple]:
        """The oracle's conflict report entries (after the resolve act)."""
        return self.report.entries

    def _winner(self) -> Side:
        assert self.kept is not None, "resolved"
        return self.kept

    def run(self) -> ReunionSimResult:
        """The story, one method per act; each act ends in its checks."""
        net = self.net
        self._together()
        self._split()
        self._secede()
        self._apart()
        x, y = self.pair
        self._resolve(x, y)
        auto = self._reunite(x, y)
        merged_ms = self._merge(x, y)
        report = self.report
        counters: dict[str, int] = {}
        for n in net.nodes:
            a = net.agreement(n)
            for k, v in (a.ledger.counters + a.counters).items():
                counters[k] = counters.get(k, 0) + v
        return ReunionSimResult(
            self.config,
            report.slots,
            len(report.entries) - report.slots,
            merged_ms,
            auto,
            net.messages,
            relate(x.lineage, y.lineage).value,
            net.agreement(self.sides["A"].nodes[0]).ledger.mv,
            self._split_one_side(),
            oracle.unordered_fork_copies(self.records[x.name], self.records[y.name]),
            self.late_entries,
            len(net.returned),
            counters,
            net.findings,
        )

    # -------------------------------------------------------------- acts
    def _phase(self, side: list[NodeId], tag: str, slots: list[tuple[str, str]], end: int) -> None:
        net, cfg = self.net, self.config
        rng = net.rng
        start = net.time_ms
        for i in range(cfg.writes):
            row_value = f"{tag}{i}".encode()
            at = start + rng.randint(0, end)
            net.at(at, "write", (side, rng.randrange(cfg.keys), row_value))
        for slot, value in slots:
            at = start + rng.randint(0, end)
            for d in range(cfg.duelers):
                net.at(at + rng.randint(0, 50), "propose", (side, slot, f"{value}-{d}"))

    def _together(self) -> None:
        """One cluster writes rows and decides slots; the split comes in the middle of it
        (traffic goes on for a while after), with a write and a slot surely in flight."""
        net, cfg = self.net, self.config
        rng = net.rng
        everyone = net.founders
        self._phase(everyone, "pre", [(f"master/{i}", f"pre{i}") for i in range(2)], cfg.split_ms)
        late = cfg.split_ms - rng.randint(0, min(cfg.split_ms, cfg.delay_ms_max))
        net.at(late, "write", (everyone, rng.randrange(cfg.keys), b"pre-late"))
        net.at(late, "propose", (everyone, "master/late", "late"))
        after = cfg.split_ms + rng.randint(1, cfg.phase_ms // 4)  # before any secession
        net.at(after, "write", (everyone, rng.randrange(cfg.keys), b"pre-after"))
        net.advance(cfg.split_ms)

    def _split(self) -> None:
        """The founders split into the parent's side A (with the spares) and one or two
        seceding sides; a seceding side's proposal must end no_quorum."""
        net, cfg = self.net, self.config
        rng = net.rng
        b = sorted(rng.sample(net.founders, cfg.seceders))
        rest = [n for n in net.founders if n not in b]
        c = sorted(rng.sample(rest, cfg.siblings))
        a = [n for n in rest if n not in c]
        self.sides = {"A": Side("A", a + net.spares, net.genesis)}
        for name, nodes in (("B", b), ("C", c)):
            if nodes:
                self.sides[name] = Side(name, nodes, net.genesis)
        net.groups = [set(s.nodes) for s in self.sides.values()]
        ps = [net.propose(s.nodes[0], f"alloc/ip/{s.name}", s.name, 1_500) for s in self.seceded]

        def done() -> bool:
            return all(p is not None and p.done for p in ps) and net.done_proposals()

        if not net.advance(net.time_ms + cfg.quiet_ms_max, done):
            raise net.fail("termination: proposals in flight at the split never ended")
        for p in ps:
            if p is None or p.outcome is None or p.outcome.status is not Status.NO_QUORUM:
                raise net.fail(f"minority: expected no_quorum, got {p and p.outcome}")

    def _secede(self) -> None:
        for side in self.seceded:
            self._secede_side(side)

    def _secede_side(self, side: Side) -> None:
        """The operator on a minority side confirms; its founder's vector of the parent is
        the fork point and its rows are copied into the new lineage (the fork copy)."""
        net = self.net
        founder = net.nodes[side.nodes[0]]
        for n in side.nodes:
            net.flush(net.nodes[n])
        r = net.replica(founder.id)
        fork_rows = [Upsert(t, k, v) for t in SCHEMA.names for k, v in r.rows(t).items()]
        a = net.agreement(founder.id)
        voters = a.membership().voters
        side.fork_vector = r.version_vector()
        # As the node's LineageService.Secede: planned and checked by the coordinator's
        # plan_secession (the parent's policy carries over), then each other seceding
        # voter checks the founder's notice (check_notice) before it moves.
        side.genesis = plan_secession(
            founder.identity,
            net.genesis,
            a.membership(),
            a.policy(),
            side.fork_vector,
            side.nodes,
            "operator@sim",
            net.now(),
        )
        for n in side.nodes[1:]:
            check_notice(net.genesis, side.genesis, n, founder.id)
        lin = side.lineage
        if lin.parent != net.genesis.cluster_id or set(lin.left) != set(voters) - set(side.nodes):
            raise net.fail(f"secession: lineage {lin}")
        for n in side.nodes:
            net.move(net.nodes[n], side.genesis)
        # The copy as the node writes it (fork_copy_writes: a marker op even with no rows),
        # 'oldest': at hlc 1 (a fresh lineage's clock), below every version of the parent.
        at_ms = 0 if self.config.fork_copy == "oldest" else net.now()
        r = net.replica(founder.id)
        for n in side.nodes:  # as the node on start: only the founder, only once
            node = net.nodes[n]
            own = net.replica(n).version_vector().get(n, 0)
            due = fork_copy_due(side.genesis, node.identity.public_key, own)
            if due != (net.genesis.cluster_id if node is founder else None):
                raise net.fail(f"fork copy: {n[:8]} is told {due!r}")
        for writes in fork_copy_writes(fork_rows, net.genesis.cluster_id, r.config.mutations_max):
            net.record(founder, r.write(writes, at_ms), fork=True)
        own = r.version_vector().get(founder.id, 0)
        if fork_copy_due(side.genesis, founder.identity.public_key, own) is not None:
            raise net.fail("fork copy: still due once written")
        net.pump(founder)
        side.base = net.snapshot(founder.id)

    def _apart(self) -> None:
        """Every side writes the same keys; the deciding sides decide contested slots
        differently; the parent changes its membership; crashes. Once quiet, a final
        contested slot must decide on each deciding side, and every change be in force."""
        net, cfg = self.net, self.config
        rng = net.rng
        # 1 ms after the fork copies, so every write apart has a later hlc than a copy.
        net.advance(net.time_ms + 1)
        apart = net.time_ms
        deciding = list(self.pair)
        contested = [f"alloc/pool/{i}" for i in range(cfg.contested)]
        slots = {s.name: [(c, f"{s.tag}{i}") for i, c in enumerate(contested)] for s in deciding}
        for i in range(cfg.one_sided):
            slots[rng.choice(deciding).name].append((f"alloc/one{i}", f"o{i}"))
        for side in self.seceded:  # operators retry the slots in flight at the split
            if side.name in slots:
                retried = ["master/0", "master/1", "master/late"]
                slots[side.name] += [(m, f"{side.tag}-{m}") for m in retried]
        for side in self.sides.values():
            self._phase(side.nodes, side.tag, slots.get(side.name, []), cfg.phase_ms)
        parent = self.sides["A"].nodes
        for change, subject in self._changes():
            net.at(apart + rng.randint(0, cfg.phase_ms), "member", (parent, change, subject))
        for _ in range(cfg.crashes):
            victim = rng.choice(sorted(net.nodes))
            at = apart + rng.randint(100, cfg.phase_ms)
            net.at(at, "crash", victim)
            net.at(min(apart + cfg.phase_ms, at + rng.randint(0, 1_500)), "restart", victim)
        if cfg.lagging:  # a voter of the parent misses the changes, and catches up after
            laggard = rng.choice([n for n in parent if n in net.founders])
            net.at(apart + rng.randint(0, cfg.phase_ms // 2), "isolate", laggard)
            net.at(apart + cfg.phase_ms, "rejoin")
        net.advance(apart + cfg.phase_ms)
        for n in sorted(net.nodes):
            net.restart(n)
        self._complete_changes()
        for side in deciding:
            net.propose(side.nodes[0], "alloc/final", f"final-{side.name}", cfg.quiet_ms_max)
        for side in self.sides.values():
            extra = net.all_decided(side.nodes, "alloc/final") if side in deciding else None
            net.settle(side.nodes, f"side {side.name} apart", extra)
            for n in side.nodes:
                net.check_node(n, side.genesis)

    def _changes(self) -> list[tuple[str, NodeId]]:
        """The parent's membership changes while apart: spares join, seceded voters leave."""
        leaving = self.sides["B"].nodes[: self.config.leaves]
        changes = [("join", n) for n in self.net.spares] + [("leave", n) for n in leaving]
        self.net.rng.shuffle(changes)
        return changes

    def _complete_changes(self) -> None:
        """A change the chaos left undecided (timed out, or lost a duel for its version) is
        proposed again once quiet, one at a time; each must then be in force."""
        net, a = self.net, self.sides["A"]
        quiet_ms = self.config.quiet_ms_max
        for change, subject in self._changes_left():
            for _ in range(3):
                net.settle(a.nodes, "the parent before a membership change")
                proposer = net.voting(a.nodes, admins=True)[0]
                p = net.change(proposer, change, subject, quiet_ms)
                if p is None:
                    break
                if not net.advance(net.time_ms + quiet_ms, lambda p=p: p.done):
                    raise net.fail(f"termination: {change} of {subject[:8]} never ended")
            if (change, subject) in self._changes_left():
                raise net.fail(f"membership: {change} of {subject[:8]} not in force")

    def _changes_left(self) -> list[tuple[str, NodeId]]:
        voters = self.net.agreement(self.sides["A"].nodes[0]).membership().voters
        leaving = self.sides["B"].nodes[: self.config.leaves]
        return [("join", n) for n in self.net.spares if n not in voters] + [
            ("leave", n) for n in leaving if n in voters
        ]

    def _reunite(self, x: Side, y: Side) -> bool:
        """The network heals and each side's nodes meet the other lineage (a peer's Hello);
        from then on each node's lineage coordinator decides, as in the node: it proposes
        merge in its reunion slot where the policy says so (auto_merge='related', never for
        siblings), an operator proposes it otherwise, and once this side decided merge the
        coordinator joins the other DAG. True: proposed by policy on both sides."""
        net = self.net
        for side, other in ((x, y), (y, x)):  # no decided merge yet: joining is refused
            node = net.nodes[side.nodes[0]]
            try:
                net.replica(node.id).join_lineage(net.shadow(node, other.genesis))
            except Refused as exc:
                if exc.reason is not Reason.NO_MERGE:
                    raise net.fail(f"join before the merge: {exc}") from None
            else:
                raise net.fail("join before the merge: accepted")
        # A third side meets again too, but only the pair meets (its Hello is scripted):
        # the third lineage stays apart.
        net.groups = None
        relation = check_reunion(x.lineage, y.lineage)
        auto = self.config.auto_merge and relation in (Relation.A_FROM_B, Relation.B_FROM_A)
        for side, other in ((x, y), (y, x)):
            for n in side.nodes:
                net.meet(net.nodes[n], other.genesis, other.nodes[0])
            if not auto:  # the policy does not propose: an operator does, in the same slot
                proposer = net.voting(side.nodes)[0]
                slot = reunion_slot(other.cluster)
                net.propose(proposer, slot, MERGE, self.config.quiet_ms_max)
        # Each side's nodes decide in their lineage; a node may already be home in the
        # parent by then (the report about its side written): its seceded lineage is
        # joined there.
        def decided() -> bool:
            return net.done_proposals() and all(
                net.nodes[n].replica is not None
                and self._decided_in(n, side).get(reunion_slot(other.cluster)) is not None
                for side, other in ((x, y), (y, x))
                for n in side.nodes
            )

        if not net.advance(net.time_ms + self.config.quiet_ms_max, decided):
            raise net.fail("termination: the reunion slots not decided on every node")
        for side, other in ((x, y), (y, x)):
            d = self._decided_in(side.nodes[0], side)[reunion_slot(other.cluster)]
            if d.value != MERGE:
                raise net.fail(f"reunion: {side.name} decided {d}")
            by_policy = sorted(n[:8] for n in side.nodes if (n, other.cluster) in net.auto_proposed)
            if bool(by_policy) != auto:
                policy = net.agreement(side.nodes[0]).ledger.policy.auto_merge
                raise net.fail(f"auto-merge: {policy}, {relation}: proposed by {by_policy}")
        # What each side held when it decided merge: the causal past of its certificate
        # (its cut), the writes and decisions inside it (the sides meet before they decide:
        # a seceded node that joined the parent's DAG relays the pre-split ops it held, and
        # a slot left open at the split may complete meanwhile).
        for side, other in ((x, y), (y, x)):
            ref = side.nodes[0]
            r, held = self._held(net.replica(ref), side), self._decided_in(ref, side)
            d = held[reunion_slot(other.cluster)]
            cut = oracle.causal_vector(r.dag.find, certificate_ops(d.certificate))
            decided = oracle.decided_within(held, cut)
            self.records[side.name] = self._record_of(side, x, y, cut, decided)
            self.held[side.name] = cut
        return auto

    def _resolve(self, x: Side, y: Side) -> None:
        """Before the sides meet: the winner checks the other side's decisions alone (from its
        genesis), and the report computed from the two sides' states (lineage.py) must hold
        exactly what the oracle predicts from the simulator's record."""
        net = self.net
        voters = {s.name: len(net.agreement(s.nodes[0]).membership().voters) for s in (x, y)}
        kept_lin = winner(x.lineage, y.lineage, voters[x.name], voters[y.name])
        expected = oracle.expected_winner(x.lineage, y.lineage, voters[x.name], voters[y.name])
        if kept_lin != expected:
            raise net.fail(f"resolution: {kept_lin.cluster_id.hex()[:8]} won, not expected")
        kept, lost = (x, y) if kept_lin.cluster_id == x.cluster else (y, x)
        decisions = {s.name: net.decisions(s.nodes[0]) for s in (x, y)}
        for s, other in ((x, y), (y, x)):
            net.verify_all(decisions[s.name], s.genesis, f"{s.name}'s checked by {other.name}")
            learned = net.learned_at[(s.cluster, s.nodes[0])]
            held = {k: value_key(d.value) for k, d in decisions[s.name].items()}
            unlearned = sorted(set(learned) - set(held))
            if unlearned:  # the watch told of them before the node's own vote was durable
                net.finding(f"{s.name} learned {unlearned}, then a crash lost the deciding vote")
                for slot in unlearned:
                    del learned[slot]
            if held != learned:
                raise net.fail(f"record: {s.name}'s decisions differ from what it learned")
        snaps = {s.name: net.snapshot(s.nodes[0]) for s in (x, y)}
        bases = {s.name: self._base(s, x, y) for s in (x, y)}
        conflicts = slot_conflicts(
            (kept.lineage, decisions[kept.name]), (lost.lineage, decisions[lost.name])
        )
        conflicts += row_conflicts(
            (x.lineage, snaps[x.name], bases[x.name]), (y.lineage, snaps[y.name], bases[y.name])
        )
        self.records = {s.name: self._record_of(s, x, y) for s in (x, y)}
        self.held = {s.name: net.replica(s.nodes[0]).version_vector() for s in (x, y)}
        report = oracle.expected_report(self.records[kept.name], self.records[lost.name])
        got = {entry_of(c) for c in conflicts}
        if got != report.entries or len(conflicts) != len(report.entries):
            raise net.fail(f"conflict report: got {sorted(got)}, expected {sorted(report.entries)}")
        self.kept, self.report = kept, report

    def _merge(self, x: Side, y: Side) -> int:
        """Every node's coordinator has joined (or joins) the other lineage's DAG; on the
        kept side the coordinators write the report once they can compute it (from the two
        lineages held, reunion_report) and late entries as later decisions come; a crash
        and restart joins again from the node's store. Every node must reach one op set,
        one state and the report, which must be the oracle's. Returns ms (from the sides'
        decided merges until all is settled)."""
        net = self.net
        merged_at = net.time_ms
        both = sorted(x.nodes + y.nodes)
        pair = {x.cluster, y.cluster}
        lost = y if self._winner() is x else x
        marker = (report_key(lost.cluster),)

        def merged() -> bool:  # its own lineage (home, maybe) and the other one joined
            return all(
                all(net.joined(n, c) for c in pair - {net.cluster[n].cluster_id})
                and net.replica(n).row(INTERNAL, marker) is not None
                for n in both
            )

        if self.config.crashes:  # a restart re-joins the other lineage from its store
            victim = net.rng.choice(both)
            at = net.time_ms + net.rng.randint(10, 500)
            net.at(at, "crash", victim)
            net.at(at + net.rng.randint(0, 1_000), "restart", victim)
        net.settle(both, "the merged cluster", merged, one_lineage=False)
        report = self._check_report(x, y)
        self._check_writers()
        self._check_home(x, y)
        self._check_merge(x, y, report)
        return net.time_ms - merged_at

    # -------------------------------------------------------------- the report
    def _record_of(
        self,
        side: Side,
        x: Side,
        y: Side,
        cut: dict[NodeId, int] | None = None,
        decided: dict[str, bytes] | None = None,
    ) -> SideRecord:
        """What the side's reference node held, for the oracle: now, or (cut) the writes
        and decisions inside the cut it decided merge at."""
        ref = side.nodes[0]
        r = self._held(self.net.replica(ref), side)  # the side's lineage, wherever ref is
        if side.fork_vector is None:  # the parent: 'before the fork' is inside the child's vector
            child = y if side is x else x
            vector = child.fork_vector or {}

            def pre_fork(w: Write) -> bool:
                return w.op.seq <= vector.get(w.op.author, 0)
        else:

            def pre_fork(w: Write) -> bool:
                return w.fork

        writes = self.net.writes
        if cut is None:
            latest = oracle.latest_writes(writes, {side.cluster}, lambda w: r.dag.holds(w.op.id))
        else:
            latest = oracle.latest_writes(  # held (a crash may have lost it) and inside
                writes,
                {side.cluster},
                lambda w: r.dag.holds(w.op.id) and w.op.seq <= cut.get(w.op.author, 0),
            )
        learned = dict(self.net.learned_at[(side.cluster, ref)]) if decided is None else decided
        return SideRecord(side.cluster, learned, latest, pre_fork)

    def _base(self, side: Side, x: Side, y: Side) -> Rows:
        """Rows at the fork: a seceded side's right after its fork copy; the parent's from
        its ops inside the child's fork vector (not its rows at the split by wall time)."""
        if side.base is not None:
            return side.base
        child = y if side is x else x
        assert child.fork_vector is not None
        return oracle.rows_within(self.net.replica(side.nodes[0]).log(), child.fork_vector)

    def _check_report(self, x: Side, y: Side) -> Report:
        """The report a node computes from the two lineages it holds (reunion_report, what
        the kept side's coordinators wrote) against the oracle; with the late entries the
        kept lineage's later decisions add (late_slot_conflicts), what every node's
        conflicts table must hold."""
        net = self.net
        r = net.replica(self._winner().nodes[0])
        got = reunion_report(r, *r.lineages().values())  # type: ignore[arg-type]
        if got is None:
            raise net.fail("termination: the report cannot be computed once merged")
        report = self.report = self._joined_report(x, y)
        entries = {entry_of(c) for c in got.entries}
        extra, missing = entries - report.entries, report.entries - entries
        records = self.records.values()
        diagnosed = not missing and oracle.superseded_apart(extra, records, net.writes)
        if got.kept != self._winner().cluster or (entries != report.entries and not diagnosed):
            raise net.fail(
                f"conflict report from the logs: got {sorted(entries)}, "
                f"expected {sorted(report.entries)}"
            )
        if extra:  # the report lists a write its own side had superseded before the fork
            net.finding(f"report from the logs: entries for superseded writes {sorted(extra)}")
            authors = dict(report.authors)
            for c in got.entries:
                if c.kind == "row":
                    authors[c.key] = (c.kept_author, c.lost_author)
            report = Report(frozenset(entries), authors)
        late = late_slot_conflicts(r, *r.lineages().values())  # type: ignore[arg-type]
        self.late_entries = len(late)
        report = self.report = Report(report.entries | {entry_of(c) for c in late}, report.authors)
        return report

    def _check_writers(self) -> None:
        """Only nodes of the kept lineage wrote report entries or markers (their
        coordinators' WriteReport and WriteLateEntries), and at least one did."""
        net, kept = self.net, self._winner()
        if not net.report_ops:
            raise net.fail("report writers: none")
        for writer, cluster, _ in net.report_ops:
            if cluster != kept.cluster:
                raise net.fail(f"report writers: {writer[:8]} wrote from another lineage "
                               f"than the kept side {kept.name}")

    def _check_home(self, x: Side, y: Side) -> None:
        """Once the report about a seceded side is written (its parent kept), each of its
        nodes still a voter of the parent has moved home into it (ReturnHome); the others
        stay in their seceded lineage, told once (NotReturning). No one else moved."""
        net = self.net
        a = self.sides["A"]
        child = y if a is x else x if a is y else None
        home = set()
        if child is not None and self._winner() is a:
            voters = net.agreement(a.nodes[0]).membership().voters
            home = {n for n in child.nodes if n in voters}
            for n in child.nodes:
                now = net.cluster[n].cluster_id
                if now != (a.cluster if n in home else child.cluster):
                    raise net.fail(f"home: {n[:8]} is in {now.hex()[:8]}")
            if set(child.nodes) - home != net.not_returning & set(child.nodes):
                raise net.fail("home: NotReturning not told to the non-voters alone")
            for n in home:  # a voter of the parent again, its own chain continued
                if not net.replica(n).is_member_now():
                    raise net.fail(f"home: {n[:8]} moved home but may not write there")
        if set(net.returned) != home:
            raise net.fail(f"home: moved {sorted(n[:8] for n in net.returned)}")

    def _joined_report(self, x: Side, y: Side) -> Report:
        """The oracle once the DAGs are joined: the parent's decisions also count those its
        ops up to the child's fork point complete (votes only the child held at the split)."""
        a, kept = self.sides["A"], self._winner()
        if a in (x, y):
            child = y if a is x else x
            held = self._held(self.net.replica(kept.nodes[0]), a)
            held.ledger.catch_up()
            decided = {d.slot: d for d in held.ledger.decided_items()}
            vector = dict(self.held[a.name])
            for n, seq in (child.fork_vector or {}).items():
                vector[n] = max(vector.get(n, 0), seq)
            old = self.records[a.name]
            completed = oracle.decided_within(decided, vector)
            self.records[a.name] = replace(old, decided={**completed, **old.decided})
        lost = y if kept is x else x
        return oracle.expected_report(self.records[kept.name], self.records[lost.name])

    # -------------------------------------------------------------- checks of the merge
    def _check_merge(self, x: Side, y: Side, report: Report) -> None:
        """Once merged: no write or decision lost without a report entry; every node holds
        the oracle's rows and report (_check_merged)."""
        net = self.net
        both = sorted(x.nodes + y.nodes)
        r = net.replica(both[0])
        held = [r, *r.lineages().values()]
        merged = oracle.latest_writes(
            net.writes, {x.cluster, y.cluster}, lambda w: any(h.dag.holds(w.op.id) for h in held)
        )
        lost = oracle.silent_losses(self.records.values(), merged, report)
        if lost:
            raise net.fail("merge: a write silently lost: " + "; ".join(lost))
        in_x, in_y = (net.decided_keys(self._held(r, s)) for s in (x, y))
        overridden = oracle.silent_overrides(in_x, in_y, report)
        if overridden:  # votes cast after the join on a ballot it brought
            net.finding("merge: a decision silently overridden: " + "; ".join(overridden))
        final = oracle.expected_rows(merged)
        for n in both:
            self._check_merged(n, x, y, report, final)

    def _decided_in(self, node_id: NodeId, side: Side) -> dict[str, Decision]:
        """The decisions of side's lineage held by a node: its own, or (once it moved home
        to the parent) the seceded lineage it joined there."""
        ledger = self._held(self.net.replica(node_id), side).ledger
        ledger.catch_up()
        return {d.slot: d for d in ledger.decided_items()}

    @staticmethod
    def _held(r: AgreementReplica, side: Side) -> AgreementReplica:
        """The node's replica of side's lineage: its own, or the one it joined."""
        held = r if r.cluster_id == side.cluster else r.lineages().get(side.cluster)
        assert isinstance(held, AgreementReplica), f"lineage {side.name} is held"
        return held

    def _check_merged(self, node_id: NodeId, x: Side, y: Side, report: Report, final: dict) -> None:
        net = self.net
        net.check_node(node_id, net.cluster[node_id])
        r = net.replica(node_id)
        # Both DAGs, whole: the other lineage's vector here equals its own nodes' vectors.
        for side in (x, y):
            home = self._held(net.replica(side.nodes[0]), side)
            held = r if r.cluster_id == side.cluster else r.lineages().get(side.cluster)
            if held is None or held.version_vector() != home.version_vector():
                raise net.fail(f"joined DAG at {node_id[:8]}: lineage {side.name} differs")
            if held is not r:
                assert isinstance(held, AgreementReplica)
                self._check_joined(node_id, held, side)
        got = {k: v["value"] for k, v in r.rows("kv").items()}
        if got != final:
            raise net.fail(f"merged rows at {node_id[:8]}: {got} != {final}")
        rows = r.rows("conflicts").values()
        table = {
            (
                v["kind"],
                v["name"],
                tuple(decode(v["row_key"])),  # type: ignore[arg-type]
                v["column_name"],
                value_key(decode(v["kept"])),  # type: ignore[arg-type]
                value_key(decode(v["lost"])),  # type: ignore[arg-type]
            )
            for v in rows
        }
        if table != report.entries:
            raise net.fail(f"conflicts table at {node_id[:8]}: {sorted(table)}")
        for v in rows:
            key = tuple(decode(v["row_key"]))  # type: ignore[arg-type]
            if v["kind"] == "row" and (v["kept_author"], v["lost_author"]) != report.authors[key]:
                raise net.fail(f"conflicts table at {node_id[:8]}: authors of {key}")

    def _check_joined(self, node_id: NodeId, held: AgreementReplica, side: Side) -> None:
        """A joined lineage's own ledger (it lagged the side's membership changes while
        apart) decides what the side's nodes decided, under the side's membership chain."""
        net = self.net
        ledger = held.ledger
        ledger.catch_up()
        decisions = {d.slot: d for d in ledger.decided_items()}
        who = f"{side.name} joined at {node_id[:8]}"
        chain = net.verify_all(decisions, side.genesis, who)
        if chain != ledger.memberships:
            raise net.fail(f"membership chain ({who}): the ledger's differs")
        home = self._decided_in(side.nodes[0], side)
        if {s: value_key(d.value) for s, d in decisions.items()} != {
            s: value_key(d.value) for s, d in home.items()
        }:
            raise net.fail(f"decisions ({who}) differ from {side.name}'s own")

    def _split_one_side(self) -> int:
        """Writes made before the split that one side held at its fork and another did not."""
        net = self.net
        a = net.replica(self.sides["A"].nodes[0])
        count = 0
        for w in net.writes:
            if w.cluster != net.genesis.cluster_id or not w.value.startswith(b"pre"):
                continue
            held = [w.op.seq <= (s.fork_vector or {}).get(w.op.author, 0) for s in self.seceded]
            if len({*held, a.dag.holds(w.op.id)}) > 1:
                count += 1
        return count
