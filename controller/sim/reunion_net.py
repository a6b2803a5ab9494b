"""The reunion simulator's world: its config, nodes with one store per lineage, and per-node checks.

A node carries its cluster (genesis) and one store per cluster; a message is tagged with the
cluster it was sent in and reaches only a node of that cluster, or one that joined it (a
handshake compares ids). The story (reunion_story.py) drives it act by act.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from controller.agreement import (
    Agreement,
    AgreementConfig,
    AgreementReplica,
    Decision,
    Membership,
    Proposal,
    Refused,
    verify_certificate,
    with_conflicts_table,
)
from controller.agreement.coordinator import (
    Action,
    AnnounceGenesis,
    JoinLineage,
    KeepGenesis,
    LineageCoordinator,
    NotReturning,
    ProposeReunion,
    ReportCache,
    ReturnHome,
    WriteLateEntries,
    WriteReport,
    announce_mutations,
    announced_geneses,
    held_announcements,
    late_mutations,
    read_view,
    report_mutations,
    reunion_decisions,
)
from controller.agreement.lineage import MERGE
from controller.agreement.messages import value_key
from controller.replication import (
    DEFAULT_SCHEMA,
    Config,
    Genesis,
    Identity,
    NodeId,
    Op,
    Rejected,
    RowState,
    Upsert,
    decode_genesis,
    encode_message,
    make_genesis,
)
from controller.store import MemoryStore

from . import reunion_oracle as oracle
from .agreement import replay_command
from .net import SimNet, SimNode
from .reunion_oracle import Rows, Write

__all__ = [
    "FORK_COPIES",
    "SCHEMA",
    "ReunionNet",
    "ReunionSimConfig",
    "ReunionSimFailure",
]

SCHEMA = with_conflicts_table(DEFAULT_SCHEMA)
FORK_COPIES = ("oldest", "now")
MODULE = "controller.sim.reunion"  # what a replay command runs


@dataclass(frozen=True)
class ReunionSimConfig:
    """Everything a run depends on; from_seed derives it all from one integer."""

    seed: int
    nodes: int = 3  # voters of the original cluster
    seceders: int = 1  # voters of the (first) seceding side (fewer than half)
    keys: int = 4  # row keys every side writes (few, so that writes collide)
    writes: int = 6  # row writes per side per phase
    contested: int = 2  # slots both reuniting sides decide, with different values
    one_sided: int = 1  # slots only one side proposes
    duelers: int = 1  # proposers per slot and side
    auto_merge: bool = True  # policy auto_merge='related', else an operator votes merge
    crashes: int = 1  # crashes (and restarts) while apart
    drop: float = 0.05
    duplicate: float = 0.05
    delay_ms_max: int = 40
    # A second seceding side of this many voters (0: none): the two seceded sides are
    # siblings, and they (not the parent) reunite, by an operator's vote on each side.
    siblings: int = 0
    joins: int = 0  # spares the parent side adds as voters while apart (membership/<n>)
    leaves: int = 0  # seceded voters the parent side removes from its membership while apart
    lagging: bool = False  # a voter of the parent is cut off for part of the time apart
    split_ms: int = 1_000  # when the partition starts: writes and slots are still in flight
    # hlc of the seceded founder's copy of the parent's rows: 'oldest' (below every parent
    # version, so at the merge it never beats one) or 'now' (decision 0016's fork copy).
    fork_copy: str = "oldest"
    # Version vectors as deltas (decision 0101). Off by default: the seeds the tests pin
    # were found with whole vectors, and a resync's extra exchange moves every later event;
    # tests/agreement/test_reunion_sim.py sweeps seeds with it on.
    vector_deltas: bool = False
    # A finding (a fault another layer is diagnosed with, ReunionNet.finding) fails the run;
    # False lists them in the result's findings instead, and the run goes on.
    strict: bool = True
    phase_ms: int = 2_000
    quiet_ms_max: int = 20_000
    tick_ms: int = 50

    def __post_init__(self) -> None:
        half = (self.nodes - 1) // 2  # the largest side that is fewer than half
        ok = (
            1 <= self.seceders <= half
            and 0 <= self.siblings <= half
            and self.seceders + self.siblings < self.nodes
            and 0 <= self.leaves <= self.seceders
            and not (self.siblings and (self.joins or self.leaves))
            and 0 < self.split_ms
            and self.fork_copy in FORK_COPIES
        )
        if not ok:
            raise ValueError(f"inconsistent reunion config: {self}")

    @classmethod
    def from_seed(cls, seed: int, **overrides: Any) -> ReunionSimConfig:
        rng = random.Random(f"reunion-config-{seed}")
        nodes = rng.choice([3, 4, 5])
        derived: dict[str, Any] = dict(
            nodes=nodes,
            seceders=rng.randint(1, (nodes - 1) // 2),
            keys=rng.randint(2, 8),
            writes=rng.randint(1, 10),
            contested=rng.randint(0, 3),
            one_sided=rng.randint(0, 2),
            duelers=rng.randint(1, 2),
            auto_merge=rng.random() < 0.5,
            crashes=rng.randint(0, 2),
            drop=rng.choice([0.0, 0.05, 0.2]),
            duplicate=rng.choice([0.0, 0.1]),
            delay_ms_max=rng.choice([5, 40, 120]),
        )
        derived["split_ms"] = rng.randint(100, 2_000)
        # The sibling story is asked for (siblings=N), not derived; in it the parent's
        # membership does not change.
        if not overrides.get("siblings"):
            derived["joins"] = rng.randint(0, 1)
            derived["leaves"] = rng.randint(0, overrides.get("seceders", derived["seceders"]))
            derived["lagging"] = rng.random() < 0.5
        derived.update(overrides)
        return cls(seed=seed, **derived)


class ReunionSimFailure(AssertionError):
    """A check failed; the message starts with the seed and the replay command."""


class ReunionNet(SimNet[ReunionSimConfig]):
    """The nodes of one cluster (founders, and spares that may join it) on the seeded net,
    each with one store per lineage it belongs to; the record the oracle reads (writes
    made, values proposed, decisions learned); and the checks of one node's state."""

    def __init__(self, config: ReunionSimConfig) -> None:
        super().__init__(config)
        total = config.nodes + config.joins
        ids = [Identity.from_seed(self.rng.randbytes(32)) for _ in range(total)]
        founders = ids[: config.nodes]
        self.auto = "related" if config.auto_merge else "never"
        access = {"roles": {i.node_id: "admin" for i in founders}, "auto_merge": self.auto}
        self.genesis = make_genesis(
            founders[0], "reunion", [i.public_key for i in founders], 0, {"access": access}
        )
        self.nodes = {i.node_id: SimNode(i) for i in ids}
        self.founders = [i.node_id for i in founders]
        self.spares = [i.node_id for i in ids[config.nodes :]]  # in A, not voters (yet)
        self.replica_config = Config(push_fanout=total, sync_interval_ms=150)
        self.agreement_config = AgreementConfig(retry_ms=500, timeout_ms=4_000)
        self.proposed_in: dict[tuple[bytes, str], set[bytes]] = {}
        self.learned_in: dict[tuple[bytes, str], tuple[bytes, NodeId]] = {}
        self.learned_at: dict[tuple[bytes, NodeId], dict[str, bytes]] = {}
        self.proposals: list[tuple[NodeId, Proposal]] = []
        self.writes: list[Write] = []
        self.restarts = 0
        self.cluster: dict[NodeId, Genesis] = {}
        self.stores: dict[tuple[NodeId, bytes], MemoryStore] = {}
        # Each node's lineage coordinator (controller.agreement.coordinator, the object the
        # node's Keeper drives), rebuilt at every start from what the node keeps "on disk":
        # the other lineages it holds (held). What it did, for the checks: the lineages it
        # proposed merge with by policy, and the report ops it wrote.
        self.cores: dict[NodeId, LineageCoordinator] = {}
        self.held: dict[NodeId, dict[bytes, Genesis]] = {}
        self.reunion_proposals: dict[NodeId, dict[bytes, Proposal]] = {}
        self.report_caches: dict[NodeId, ReportCache] = {}
        self.auto_proposed: set[tuple[NodeId, bytes]] = set()
        self.report_ops: list[tuple[NodeId, bytes, Op]] = []  # writer, its lineage, op
        self.returned: dict[NodeId, int] = {}  # moved home to the parent (at ms)
        self.not_returning: set[NodeId] = set()  # told NotReturning (no longer a voter)
        self._verified: set[tuple] = set()  # certificates verified, with their membership
        self.findings: list[str] = []
        for node in self.nodes.values():
            self.move(node, self.genesis)
        self.at(0, "tick")

    # -------------------------------------------------------------- nodes and lineages
    def move(self, node: SimNode, genesis: Genesis) -> None:
        """(Re)start a node in a cluster, on that cluster's store of the node; the cluster
        it leaves is kept as another lineage (as begin_move keeps it on disk)."""
        if node.replica is not None:
            self.crash(node)
        old = self.cluster.get(node.id)
        if old is not None and old.cluster_id != genesis.cluster_id:
            self.held.setdefault(node.id, {})[old.cluster_id] = old
        self.cluster[node.id] = genesis
        key = (node.id, genesis.cluster_id)
        node.store = self.stores.setdefault(key, MemoryStore(node.id, SCHEMA))
        self._start(node)

    def _start(self, node: SimNode) -> None:
        node.incarnation += 1
        rng = random.Random(f"{self.config.seed}-{node.id}-{node.incarnation}")
        node.replica = self._recover(node, self.cluster[node.id], rng)
        node.agreement = Agreement(node.replica, rng, self.agreement_config)
        node.watch = node.agreement.watch("")
        self._learn(node)
        # The node's Keeper on start (Keeper.rejoin): meet the lineages announced in kv
        # rows, join again the ones this side decided to merge with.
        core = self.cores[node.id] = LineageCoordinator(
            self.cluster[node.id], node.id, self.held.get(node.id, {})
        )
        self.reunion_proposals[node.id] = {}
        self.report_caches[node.id] = ReportCache()
        for raw in held_announcements(node.replica):
            self.meet(node, raw)
        for action in core.restart(reunion_decisions(node.agreement, core.held)):
            self._carry_out(node, action)
        self.pump(node)

    def _recover(self, node: SimNode, genesis: Genesis, rng: random.Random) -> AgreementReplica:
        """This node's replica of a lineage, from its store of that lineage (a seceded
        node's store of the parent holds the parent's ops up to the split)."""
        store = self.stores.setdefault((node.id, genesis.cluster_id), MemoryStore(node.id, SCHEMA))
        store.init(genesis)
        stored = store.load()
        replica = AgreementReplica.recover(
            node.identity,
            genesis,
            rng,
            stored.log,
            stored.evidence,
            verify="sample",
            config=self.replica_config,
            peers=sorted(self.nodes),
            schema=SCHEMA,
        )
        replica.delta_peers = None if self.config.vector_deltas else set()
        return replica

    def shadow(self, node: SimNode, genesis: Genesis) -> AgreementReplica:
        """The node's replica of another lineage, from its store of it (to join it)."""
        rng = random.Random(f"{self.config.seed}-{node.id}-{node.incarnation}-joined")
        return self._recover(node, genesis, rng)

    # -------------------------------------------------------------- the lineage coordinator
    def meet(self, node: SimNode, genesis: Genesis | bytes, via: NodeId = "") -> None:
        """The node meets another lineage: a peer's Hello (via) or a kv genesis row (raw)."""
        if isinstance(genesis, bytes):
            try:
                genesis = decode_genesis(genesis)
            except Rejected as exc:
                raise self.fail(f"lineage: {node.id[:8]} read a bad genesis row: {exc}") from None
        for action in self.cores[node.id].meet(genesis, via):
            self._carry_out(node, action)

    def lineage_round(self, node: SimNode) -> None:
        """The node's Keeper in its engine's round: the coordinator's tick, then (joined)
        tick_joined, each action carried out as the Keeper does, from one View each."""
        r, a, core = node.replica, node.agreement, self.cores[node.id]
        assert r is not None and a is not None
        if core.idle:
            return
        busy = frozenset(c for c, p in self.reunion_proposals[node.id].items() if not p.done)
        for action in core.tick(self.now(), read_view(core, r, a, busy=busy)):
            self._carry_out(node, action)
        if core.joined:
            view = read_view(
                core, r, a, joined=True, reports=self.report_caches[node.id], homeward=True
            )
            for action in core.tick_joined(view):
                self._carry_out(node, action)
                if isinstance(action, ReturnHome):
                    return  # the node started again, in the parent
        self.pump(node)

    def _carry_out(self, node: SimNode, action: Action) -> None:
        r, core = node.replica, self.cores[node.id]
        assert r is not None
        match action:
            case KeepGenesis(genesis=g):
                self.held.setdefault(node.id, {})[g.cluster_id] = g
            case AnnounceGenesis(geneses=gs):
                r.write(announce_mutations(gs), self.now())
            case ProposeReunion(cluster_id=cid, slot=slot):
                try:
                    p = self.propose(node.id, slot, MERGE, self.agreement_config.timeout_ms)
                except Refused as exc:
                    core.propose_refused(cid, str(exc))
                    return
                if p is not None:
                    self.reunion_proposals[node.id][cid] = p
                    self.auto_proposed.add((node.id, cid))
            case JoinLineage(genesis=g):
                try:
                    r.join_lineage(self.shadow(node, g))
                except Refused as exc:  # the node logs it and never retries: a stuck merge
                    raise self.fail(f"join of {g.name} at {node.id[:8]} refused: {exc}") from None
                core.joined_lineage(g.cluster_id)
            case WriteReport(cluster_id=cid, report=report):
                op = r.write(report_mutations(cid, report), self.now())
                self.report_ops.append((node.id, r.cluster_id, op))
            case WriteLateEntries(cluster_id=cid):
                other = r.lineages()[cid]
                assert isinstance(other, AgreementReplica)
                todo = late_mutations(r, other)
                if todo:
                    self.report_ops.append((node.id, r.cluster_id, r.write(todo, self.now())))
            case ReturnHome(genesis=g):
                # As the node's server: stop cleanly (effects made durable), keep the
                # seceded lineage, start again in the parent on its store of it.
                self.returned[node.id] = self.time_ms
                self.flush(node)
                self.move(node, g)
            case NotReturning():
                self.not_returning.add(node.id)

    def joined(self, node_id: NodeId, cluster_id: bytes) -> bool:
        r = self.nodes[node_id].replica
        return r is not None and cluster_id in r.lineages()

    def durable(self, node: SimNode) -> None:
        """As the shared net; then, as the node's engine does, meet the lineages announced
        in the rows just stored."""
        rows = node.in_flight.rows if node.in_flight is not None else ()
        super().durable(node)
        if node.replica is not None:
            for raw in announced_geneses(rows):
                self.meet(node, raw)

    def pump(self, node: SimNode) -> None:
        """As the shared net; a joined lineage's effects are committed to the node's store
        of that lineage at once (it authors nothing, so only relays)."""
        super().pump(node)
        r = node.replica
        if r is None:
            return
        for cluster, joined in r.lineages().items():
            while joined.has_ready():
                rd = joined.ready()
                self.stores[(node.id, cluster)].commit(rd)
                for out in rd.messages:
                    self.send(node.id, out.to, encode_message(out.message), cluster)
                joined.advance(rd)

    def flush(self, node: SimNode) -> None:
        """Make the node's pending effects durable now (an operator waits for that)."""
        for _ in range(8):
            if node.in_flight is None:
                return
            self.durable(node)
        raise self.fail(f"flush: {node.id[:8]} keeps producing effects")

    def restart(self, node_id: NodeId) -> None:
        node = self.nodes[node_id]
        if node.replica is None:
            self.restarts += 1
            self._start(node)

    def _learn(self, node: SimNode) -> None:
        assert node.watch is not None
        cluster = self.cluster[node.id].cluster_id
        known = self.learned_at.setdefault((cluster, node.id), {})
        for d in node.watch.drain():
            key = value_key(d.value)
            first = self.learned_in.setdefault((cluster, d.slot), (key, node.id))
            if first[0] != key:
                raise self.fail(
                    f"agreement: {d.slot} decided {d.value!r} at {node.id[:8]}, "
                    f"another value at {first[1][:8]} (cluster {cluster.hex()[:8]})"
                )
            if key not in self.proposed_in.get((cluster, d.slot), set()):
                raise self.fail(f"validity: {d.slot} decided {d.value!r}, never proposed")
            known[d.slot] = key

    def _tag(self, src: NodeId) -> bytes:
        return self.cluster[src].cluster_id

    def _accepts(self, dst: NodeId, tag: bytes) -> bool:
        """A node takes messages of its cluster and of the lineages it joined."""
        return self.cluster[dst].cluster_id == tag or self.joined(dst, tag)

    def record(self, node: SimNode, op: Op, fork: bool = False) -> None:
        """Note the kv writes an op the simulator made carries (the oracle reads them)."""
        self.writes += oracle.writes_of(op, self.cluster[node.id].cluster_id, fork)

    # -------------------------------------------------------------- inputs
    def propose(self, node_id: NodeId, slot: str, value: Any, timeout_ms: int) -> Proposal | None:
        node = self.nodes[node_id]
        if node.agreement is None:
            return None
        cluster = self.cluster[node_id].cluster_id
        self.proposed_in.setdefault((cluster, slot), set()).add(value_key(value))
        p = node.agreement.propose(slot, value, self.now(), timeout_ms)
        self.proposals.append((node_id, p))
        self._learn(node)
        self.pump(node)
        return p

    def change(
        self, proposer: NodeId, change: str, subject: NodeId, timeout_ms: int
    ) -> Proposal | None:
        """Propose a join or leave of the parent's membership (Agreement.propose_join or
        propose_leave); None when it is already in force at the proposer."""
        node = self.nodes[proposer]
        a = node.agreement
        if a is None or (change == "join") == (subject in a.membership().voters):
            return None
        if change == "join":
            key = self.nodes[subject].identity.public_key
            p = a.propose_join(key, self.now(), timeout_ms=timeout_ms)
        else:
            p = a.propose_leave(subject, self.now(), timeout_ms=timeout_ms)
        cluster = self.cluster[proposer].cluster_id
        self.proposed_in.setdefault((cluster, p.slot), set()).add(value_key(p.value))
        self.proposals.append((proposer, p))
        self._learn(node)
        self.pump(node)
        return p

    def voting(self, side: list[NodeId], admins: bool = False) -> list[NodeId]:
        """Live nodes of side that are voters now (admins: founders only)."""
        return [
            n
            for n in side
            if (a := self.nodes[n].agreement) is not None
            and n in a.membership().voters
            and (not admins or n in self.founders)
        ]

    def _handle(self, kind: str, payload: Any) -> None:
        if self.handle_common(kind, payload):
            return
        if kind == "tick":
            for node in self.nodes.values():
                if node.replica is not None:
                    node.replica.tick(self.now())
                    self.step(node)
                    self.lineage_round(node)
            self.at(self.time_ms + self.config.tick_ms, "tick")
        elif kind == "write":
            self._write(*payload)
        elif kind == "propose":
            side, slot, value = payload
            live = self.voting(side)
            if live:
                self.propose(self.rng.choice(live), slot, value, self.rng.randint(1_000, 4_000))
        elif kind == "member":
            parent, change, subject = payload
            live = self.voting(parent, admins=True)
            if live:
                self.change(self.rng.choice(live), change, subject, self.rng.randint(1_000, 4_000))
        elif kind == "restart":
            self.restart(payload)

    def _write(self, side: list[NodeId], key: int, value: bytes) -> None:
        live = [n for n in side if (r := self.nodes[n].replica) is not None and r.is_member_now()]
        if not live:
            return
        node = self.nodes[self.rng.choice(live)]
        assert node.replica is not None
        op = node.replica.write([Upsert("kv", (f"k{key}",), {"value": value})], self.now())
        self.record(node, op)
        self.pump(node)

    # -------------------------------------------------------------- time
    def advance(self, until_ms: int, done: Callable[[], bool] | None = None) -> bool:
        """Run events up to until_ms, or until done() holds at a tick."""
        while self._events and self._events[0][0] <= until_ms:
            time_ms, _, kind, payload = heapq.heappop(self._events)
            self.time_ms = time_ms
            self._handle(kind, payload)
            if kind == "tick" and done is not None and done():
                return True
        self.time_ms = max(self.time_ms, until_ms)
        return done() if done is not None else True

    def settle(
        self,
        side: list[NodeId],
        what: str,
        extra: Callable[[], bool] | None = None,
        one_lineage: bool = True,
    ) -> None:
        """Wait (bounded) until the side's nodes are up and hold one op set and one state
        (and, in one lineage, one membership), and extra()."""
        facts: list[Callable[[AgreementReplica], Any]] = [
            AgreementReplica.state_digest,
            AgreementReplica.op_digest,
        ]
        if one_lineage:
            facts.append(lambda r: r.ledger.mv)

        def done() -> bool:
            reps = [self.nodes[n].replica for n in side]
            if any(r is None for r in reps):
                return False
            same = all(len({f(r) for r in reps if r}) == 1 for f in facts)
            return same and (extra is None or extra())

        if not self.advance(self.time_ms + self.config.quiet_ms_max, done):
            raise self.fail(f"termination: {what} not settled in {self.config.quiet_ms_max} ms")

    def done_proposals(self) -> bool:
        """Every proposal still owned by a live engine has ended (a crash drops the rest)."""
        live = [(self.nodes[w].agreement, p) for w, p in self.proposals]
        return all(p.done for a, p in live if a is not None and p in a.proposals)

    def all_decided(self, side: list[NodeId], slot: str) -> Callable[[], bool]:
        return lambda: self.done_proposals() and all(self.agreement(n).decided(slot) for n in side)

    # -------------------------------------------------------------- state
    def agreement(self, node_id: NodeId) -> Agreement:
        a = self.nodes[node_id].agreement
        assert a is not None, "the node is up"
        return a

    def replica(self, node_id: NodeId) -> AgreementReplica:
        r = self.nodes[node_id].replica
        assert r is not None, "the node is up"
        return r

    def snapshot(self, node_id: NodeId) -> Rows:
        rows = self.replica(node_id).tables.all_rows()
        return {(t, k): RowState.from_plain(row.to_plain()) for t, k, row in rows}

    def decisions(self, node_id: NodeId) -> dict[str, Decision]:
        a = self.agreement(node_id)
        return {d.slot: d for d in a.ledger.decided_items()}

    @staticmethod
    def decided_keys(replica: AgreementReplica) -> dict[str, bytes]:
        """Slot -> value key of every decision a replica's ledger holds."""
        replica.ledger.catch_up()
        return {d.slot: value_key(d.value) for d in replica.ledger.decided_items()}

    # -------------------------------------------------------------- checks
    def fail(self, what: str) -> ReunionSimFailure:
        cmd = replay_command(self.config, MODULE, ReunionSimConfig)
        return ReunionSimFailure(f"seed {self.config.seed}: {what}\n  replay: {cmd}")

    def finding(self, what: str) -> None:
        """A fault diagnosed in another layer: a failure (strict, the default), or listed in
        the result's findings (strict=False) while the run goes on."""
        if self.config.strict:
            raise self.fail(what)
        cmd = replay_command(replace(self.config, strict=True), MODULE, ReunionSimConfig)
        self.findings.append(f"seed {self.config.seed}: {what}\n  replay: {cmd}")

    def verify_all(
        self, decisions: dict[str, Decision], genesis: Genesis, who: str
    ) -> dict[int, Membership]:
        """Every certificate alone, against the membership chain rebuilt from the decided
        `membership/<n>` certificates (each verified against the one before)."""
        try:
            chain = oracle.verified_chain(decisions, genesis)
            for d in decisions.values():
                c, m = d.certificate, chain.get(d.certificate.ballot.mv)
                voters = tuple(sorted(m.voters.items())) if m else None
                seen = (genesis.cluster_id, c.slot, c.ballot, value_key(c.value), c.ops, voters)
                if seen not in self._verified:  # the same certificate on every node: once
                    verify_certificate(c, genesis.cluster_id, chain.get)
                    self._verified.add(seen)
        except Refused as exc:
            raise self.fail(f"certificate ({who}): {exc}") from None
        return chain

    def check_node(self, node_id: NodeId, genesis: Genesis) -> None:
        """No two quorums, every certificate verified, the ledger's membership chain is the
        one rebuilt from certificates, and every decision held is the one learned."""
        a = self.agreement(node_id)
        if a.ledger.counters["safety_violation"]:
            raise self.fail(f"agreement: two quorums for different values at {node_id[:8]}")
        decisions = self.decisions(node_id)
        chain = self.verify_all(decisions, genesis, node_id[:8])
        if chain != a.ledger.memberships:
            raise self.fail(f"membership chain at {node_id[:8]}: the ledger's differs")
        for slot, d in decisions.items():
            learned = self.learned_in.get((genesis.cluster_id, slot))
            if learned is None or learned[0] != value_key(d.value):
                raise self.fail(f"agreement: {slot} at {node_id[:8]} is {d.value!r}")
