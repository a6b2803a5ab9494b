"""The agreement engine: acceptor and proposer of Paxos per slot, driven over a replica."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from controller.replication import NodeId, OpId, Rejected
from controller.replication import UsageError as ReplicationUsageError
from controller.replication.encoding import check_plain
from controller.replication.identity import hash32
from controller.replication.schema import SCHEMA_VERSION

from .certificate import Decision, certificate_ops
from .checkpoint import CHECKPOINT, Checkpoints, checkpoint_number_of, checkpoint_slot
from .errors import Reason, Refused, UsageError
from .ledger import Indexed, Ledger
from .lifecycle import LIFECYCLE, check_lifecycle, lifecycle_of, lifecycle_slot
from .membership import (
    EQUIVOCATION,
    Membership,
    check_change,
    membership_slot,
    membership_version_of,
)
from .messages import (
    Accept,
    Accepted,
    Ballot,
    Prepare,
    Promise,
    Refuse,
    VoteMessage,
    check_slot,
    slot_kind,
    to_body,
)
from .placement import PLACEMENT, check_placement, placement_of, placement_slot
from .policy import AgreementReplica
from .quorum import VoteResult, vote_result
from .rbac import AccessPolicy, check_policy, policy_slot, policy_version_of
from .upgrade import SCHEMA, check_schema, members_behind, schema_slot, schema_value

__all__ = ["AgreementConfig", "Agreement", "Expulsion", "Outcome", "Proposal", "Status", "Watch"]


@dataclass(frozen=True)
class AgreementConfig:
    """Times and bounds of the proposer; none of them matters for safety."""

    retry_ms: int = 600  # start a new ballot when one made no progress for this long
    backoff_ms_min: int = 20  # random back-off between ballots: uniform in [0, cap],
    backoff_ms_max: int = 1_600  # cap = min(max, min * 2**attempt)
    timeout_ms: int = 10_000  # default time a proposal may take before "no quorum reachable"
    proposals_max: int = 256  # live local proposals
    deferred_max: int = 1_024  # votes held until the membership they name is known
    # Proven equivocators (decision 0017): propose removing a voter the evidence names.
    expel_equivocators: bool = True
    expel_attempts_max: int = 3  # proposals per offender per membership version
    expel_retry_ms: int = 2_000  # after an attempt that ended without removing the offender
    # Agreed checkpoints (decision 0070): a voter proposes `checkpoint/<n>` once this many
    # ops were added since the latest one (0: never by count), or this long after it when
    # any op was (0: never by time). Voters take turns by a per-n rank: the k-th waits
    # k * checkpoint_stagger_ms after it first found one due, so one usually proposes.
    checkpoint_ops: int = 0
    checkpoint_ms: int = 0
    checkpoint_stagger_ms: int = 2_000
    # The most ops above the previous checkpoint one covers (at least checkpoint_ops):
    # computing a checkpoint's state costs every voter about 0.2 ms an op (Checkpoints.next).
    checkpoint_ops_max: int = 20_000
    # Prune the ops below the latest decided checkpoint once it is stable (decision 0070).
    compact: bool = False
    # Schema versions (decision 0037): the newest this node reads; it proposes the next
    # `schema/<v>` up to that once every member reads it (Agreement.members_read).
    schema_version: int = SCHEMA_VERSION


class Status(StrEnum):
    DECIDED = "decided"  # value is the decided value (maybe another proposer's)
    NO_QUORUM = "no_quorum"  # timed out: no majority answered; nothing was decided here
    REFUSED = "refused"  # refused locally before any vote (reason says why)


@dataclass(frozen=True)
class Outcome:
    slot: str
    status: Status
    value: Any = None
    reason: str = ""


@dataclass
class Proposal:
    """A handle on one local proposal; outcome is set once it is decided, refused or timed out."""

    slot: str
    value: Any
    deadline_ms: int
    outcome: Outcome | None = None
    ballot: Ballot | None = None
    phase: str = "wait"  # wait -> prepare -> accept -> (wait ...)
    next_ms: int = 0
    attempts: int = 0
    best_answers: int = 0
    refusals: dict[NodeId, str] = field(default_factory=dict)  # voter -> its latest reason

    @property
    def done(self) -> bool:
        return self.outcome is not None


@dataclass
class Expulsion:
    """This node's attempts to remove one proven equivocator (decision 0017)."""

    evidence: tuple[OpId, ...]  # the first proof this node learned: two op ids
    mv: int = -1  # the membership version the counts below belong to
    attempts: int = 0  # proposals started under mv
    next_ms: int = 0  # no new attempt before this
    proposal: Proposal | None = None  # the latest attempt
    noted: bool = False  # a give-up under mv was counted


@dataclass
class Watch:
    """Decisions of slots starting with prefix, in the order this node learned them."""

    prefix: str
    decisions: list[Decision] = field(default_factory=list)

    def drain(self) -> list[Decision]:
        out, self.decisions = self.decisions, []
        return out


def _refusals_said(refusals: Mapping[NodeId, str]) -> str:
    """'; refused by 2 voters (lease_held)': why the voters that answered said no."""
    if not refusals:
        return ""
    reasons = ", ".join(sorted(set(refusals.values())))
    return f"; refused by {len(refusals)} voter{'s' if len(refusals) > 1 else ''} ({reasons})"


class Agreement:
    """One node's agreement: inputs step(now_ms) and propose(); effects leave as replica ops.

    Call step() after every replica input (receive, tick, write); then drive the replica's
    Ready as usual. Votes are ops, so they are durable before they are sent (the Ready
    order), and the acceptor state is read back from the node's own ops after a restart.
    """

    def __init__(
        self,
        replica: AgreementReplica,
        rng: Any,
        config: AgreementConfig | None = None,
    ) -> None:
        self.replica = replica
        self.node_id: NodeId = replica.node_id
        self.rng = rng
        self.config = config or AgreementConfig()
        self.ledger: Ledger = replica.ledger
        self.ledger.catch_up()  # a recovered log is history: react only to what comes next
        self.ledger.fresh.clear()
        self.ledger.decisions.clear()
        self.counters: Counter[str] = Counter()
        self.proposals: list[Proposal] = []
        self.watches: list[Watch] = []
        self._deferred: list[Indexed] = []
        self._refused: set[tuple[str, Ballot, str]] = set()
        self.expulsions: dict[NodeId, Expulsion] = {}  # proven equivocators, by author
        self._conflicts_seen = 0  # ledger.conflicts looked at (recovered ones count too)
        self._now_ms = 0
        self._held: list[Decision] = []  # decided, waiting for our votes to be durable
        self.checkpoints = Checkpoints(replica, self.ledger)
        self.checkpoints.restore()  # a compacted store: its checkpoint is the floor again
        self._checkpoint: Proposal | None = None  # our live checkpoint proposal
        self._checkpoint_due: tuple[int, int] | None = None  # (n, since ms) once one is due
        self._checkpoint_at: int | None = None  # when the latest was noticed (or we started)
        self._checkpoint_n = 0
        # Set by the node while it holds another lineage (a seceded side, a parent, one met):
        # a reunion report needs both sides' ops from the fork on (decision 0070).
        self.compaction_paused = False
        # Set by the node: what each member said it reads in its peer hello, by node id (0
        # or left out: not said yet; decision 0037). None: nothing is known, so this node
        # never proposes a schema version, and as an acceptor it refuses one.
        self.members_read: Callable[[], Mapping[NodeId, int]] | None = None
        # The version a write waited for (the node sets it when one is refused): a cluster
        # that never writes a newer table never spends a slot on it.
        self.upgrade_wanted = 1
        self._schema: Proposal | None = None
        self._schema_next_ms = 0
        # How long this node has not heard from each member, on its own monotonic clock
        # (the node sets it before each step: `heard`); placement checks read it (0081 §3).
        self._silence_ms: dict[NodeId, int] = {}
        self._sync_peers()

    # ------------------------------------------------------------------ queries
    def decided(self, slot: str) -> Decision | None:
        """The slot's decision, once every vote of this node it counts is durable (a crash
        before that would lose the vote, and the decision with it)."""
        self.ledger.catch_up()
        d = self.ledger.decided(slot)
        return d if d is not None and self._durable(d) else None

    def _durable(self, d: Decision) -> bool:
        rec = self.ledger.slots.get(d.slot)
        if rec is None or rec.durable:
            return True  # None: archived, settled inside a stable cut (decision 0103)
        durable, me = self.replica.durable_seq, self.node_id
        if any(op.author == me and op.seq > durable for op in certificate_ops(d.certificate)):
            return False
        rec.durable = True
        return True

    def release(self) -> None:
        """Hand out what waited for this node's votes to be durable: call after the
        replica's Ready was carried out (step() does it too)."""
        if self._held:
            held, self._held = self._held, []
            for d in held:
                if not self._durable(d):
                    self._held.append(d)
                    continue
                for w in self.watches:
                    if d.slot.startswith(w.prefix):
                        w.decisions.append(d)
        for p in self.proposals:
            if not p.done:
                d = self.decided(p.slot)
                if d is not None:
                    p.outcome = Outcome(p.slot, Status.DECIDED, d.value)
        self.proposals = [p for p in self.proposals if not p.done]

    def membership(self) -> Membership:
        return self.ledger.membership

    def policy(self) -> AccessPolicy:
        return self.ledger.policy

    def decisions(self, prefix: str = "", newest: int | None = None) -> list[Decision]:
        """Every decision handed out here for slots starting with prefix, by slot name: the
        one query surface for decisions, gated like decided() (this node's votes durable).
        With `newest`, of the archived ones (decision 0103) only that many, the last
        archived: for a view that shows the latest few."""
        self.ledger.catch_up()
        held = self.ledger.decided_items(prefix, newest)
        return sorted((d for d in held if self._durable(d)), key=lambda d: d.slot)

    def decision_pages(self, prefix: str = "", page: int = 500) -> Iterator[list[Decision]]:
        """decisions(prefix) in pages, for a caller that hands them out between other
        work (the archive is read a page at a time): the archived ones by slot, then those
        held in memory, by slot. Those held are taken first, so a slot archived while the
        pages are read is handed out once."""
        self.ledger.catch_up()
        held = sorted((d for d in self.ledger.held_decisions(prefix) if self._durable(d)),
                      key=lambda d: d.slot)
        names = {d.slot for d in held}
        after = ""
        while True:
            batch = self.ledger.archived_decisions(prefix, after, page)
            if not batch:
                break
            after = batch[-1].slot
            fresh = [d for d in batch if d.slot not in names]
            if fresh:
                yield fresh
        if held:
            yield held

    def watch(self, prefix: str = "", include_decided: bool = True) -> Watch:
        w = Watch(prefix)
        if include_decided:
            w.decisions.extend(self.decisions(prefix))
        self.watches.append(w)
        return w

    # ------------------------------------------------------------------ proposing
    def propose(
        self, slot: str, value: Any, now_ms: int, timeout_ms: int | None = None
    ) -> Proposal:
        """Start proposing value for slot; the handle's outcome is set by a later step()."""
        check_slot(slot)
        try:
            check_plain(value)
        except Rejected as exc:
            raise UsageError(f"value must be plain CBOR: {exc}") from None
        p = self._add_proposal(slot, value, now_ms, timeout_ms)
        self.step(now_ms)
        return p

    def _add_proposal(self, slot: str, value: Any, now_ms: int, timeout_ms: int | None) -> Proposal:
        """Register a proposal (refused at once if a local check fails); step() drives it."""
        live = [p for p in self.proposals if not p.done]
        if len(live) >= self.config.proposals_max:
            raise UsageError(f"more than {self.config.proposals_max} live proposals")
        timeout = self.config.timeout_ms if timeout_ms is None else timeout_ms
        p = Proposal(slot, value, now_ms + timeout, next_ms=now_ms)
        self.proposals = [*live, p]
        try:
            if self.ledger.decided(slot) is None:  # decided: the answer is its value anyway
                self._check_local(slot, value, self.node_id)
        except Refused as exc:
            p.outcome = Outcome(slot, Status.REFUSED, None, f"{exc.reason.value}: {exc.detail}")
            self.counters[exc.reason] += 1
        return p

    def propose_join(
        self, public_key: bytes, now_ms: int, role: str = "node", **kw: Any
    ) -> Proposal:
        """Add a voter: it becomes one when `membership/<n>` is decided, not before."""
        m = self.ledger.membership
        value = m.joined(public_key, role).to_value()
        return self.propose(membership_slot(m.version + 1), value, now_ms, **kw)

    def propose_leave(self, node: NodeId, now_ms: int, **kw: Any) -> Proposal:
        """Remove a voter. step() proposes a proven equivocator's removal by itself (0017)."""
        m = self.ledger.membership
        return self.propose(membership_slot(m.version + 1), m.left(node).to_value(), now_ms, **kw)

    def propose_policy(self, policy: AccessPolicy, now_ms: int, **kw: Any) -> Proposal:
        return self.propose(policy_slot(policy.version), policy.to_value(), now_ms, **kw)

    # ------------------------------------------------------------------ the loop
    def step(self, now_ms: int) -> None:
        """React to new votes in the log, learn decisions, and drive local proposals."""
        ledger = self.ledger
        self._now_ms = now_ms
        ledger.catch_up()
        mv_before = ledger.mv
        rounds = 0
        while ledger.fresh:
            rounds += 1
            assert rounds < 10_000, "votes must not breed votes without end"
            batch, ledger.fresh = ledger.fresh, []
            for item in batch:
                self._react(item)
            ledger.catch_up()
        if ledger.decisions:
            self._held.extend(ledger.decisions)
            ledger.decisions = []
        self.release()
        if ledger.mv != mv_before:
            self._sync_peers()
            deferred, self._deferred = self._deferred, []
            for item in deferred:
                self._react(item)
            ledger.catch_up()
        if self.config.expel_equivocators:
            self._expel(now_ms)
        if self.config.checkpoint_ops or self.config.checkpoint_ms:
            self._maybe_checkpoint(now_ms)
        if self.members_read is not None:
            self._maybe_upgrade(now_ms)
        self._drive(now_ms)

    def heard(self, silence_ms: Mapping[NodeId, int]) -> None:
        """Input: for each member, the ms since this node last heard from it (any message),
        on this node's monotonic clock. A member left out counts as just heard: a voter
        that knows nothing of an owner never lets another node take its service."""
        assert all(type(v) is int and v >= 0 for v in silence_ms.values()), "ms since, >= 0"
        self._silence_ms = dict(silence_ms)

    def decided_schema(self) -> int:
        """The newest schema version decided (1 when none was: the tables before 0037)."""
        version = 1
        while self.ledger.decided(schema_slot(version + 1)) is not None:
            version += 1
        return version

    def others_read(self) -> dict[NodeId, int]:
        """What every member but this node said it reads (decision 0037): the voters in
        force and whoever else the node names, 0 for one not heard from. What a proposer
        checks: it proposes only once it has heard every member read the version."""
        said = self.heard_read()
        members = set(self.ledger.membership.voters) | set(said)
        return {n: said.get(n, 0) for n in sorted(members - {self.node_id})}

    def heard_read(self) -> dict[NodeId, int]:
        """What the members this node has heard said they read. What an acceptor checks:
        a member heard reading less refuses the version; one not heard does not block it,
        since in a star of sites an edge never hears the other edges (decision 0037)."""
        said = {} if self.members_read is None else dict(self.members_read())
        said.pop(self.node_id, None)
        return said

    def _maybe_upgrade(self, now_ms: int) -> None:
        """Propose the next schema version once a write waits for it and every member
        reads it (decision 0037)."""
        if self._schema is not None and not self._schema.done:
            return
        if now_ms < self._schema_next_ms or self.node_id not in self.ledger.membership.voters:
            return
        nxt = self.decided_schema() + 1
        assert self.members_read is not None
        if nxt > min(self.upgrade_wanted, self.config.schema_version):
            return
        if members_behind(nxt, self.others_read()):
            return  # an acceptor would refuse it too (member_behind)
        if len([p for p in self.proposals if not p.done]) >= self.config.proposals_max:
            return
        # After one that ended undecided (another voter's won, or no quorum), wait a
        # proposal's time: a refusing acceptor must not make this a loop.
        self._schema_next_ms = now_ms + self.config.timeout_ms
        self._schema = self._add_proposal(schema_slot(nxt), schema_value(nxt), now_ms, None)
        self.counters["schema_proposals"] += 1

    def _maybe_checkpoint(self, now_ms: int) -> None:
        """Propose the next checkpoint when one is due and it is this voter's turn."""
        cps, cfg = self.checkpoints, self.config
        latest = cps.latest()
        if self._checkpoint_at is None:
            self._checkpoint_at = now_ms
        if latest != self._checkpoint_n:
            self._checkpoint_n, self._checkpoint_at = latest, now_ms
            cps.advance()
        if cfg.compact and not self.compaction_paused and cps.base_n > cps.final_n:
            pruned = cps.compact()
            if pruned:
                self.counters["compactions"] += 1
                self.counters["ops_pruned"] += pruned
        if self._checkpoint is not None and not self._checkpoint.done:
            return
        voters = self.ledger.membership.voters
        if self.node_id not in voters:
            return
        since = cps.ops_since()
        due = (cfg.checkpoint_ops and since >= cfg.checkpoint_ops) or (
            cfg.checkpoint_ms and since > 0 and now_ms - self._checkpoint_at >= cfg.checkpoint_ms
        )
        n = latest + 1
        if not due:
            self._checkpoint_due = None
            return
        if self._checkpoint_due is None or self._checkpoint_due[0] != n:
            self._checkpoint_due = (n, now_ms)
        rank = sorted(voters, key=lambda v: hash32(f"{n}:{v}".encode())).index(self.node_id)
        if now_ms < self._checkpoint_due[1] + rank * cfg.checkpoint_stagger_ms:
            return
        cp = cps.next(max(cfg.checkpoint_ops_max, cfg.checkpoint_ops))
        if cp is None:
            return
        self._checkpoint = self._add_proposal(checkpoint_slot(cp.n), cp.to_value(), now_ms, None)
        self.counters["checkpoint_proposals"] += 1

    def _sync_peers(self) -> None:
        voters = set(self.ledger.membership.voters) - {self.node_id}
        self.replica.peers = sorted(voters | (set(self.replica.peers) - {self.node_id}))

    # ------------------------------------------------------------------ acceptor
    def _react(self, item: Indexed) -> None:
        msg, author = item.msg, item.op.author
        if not isinstance(msg, Prepare | Accept):
            return
        ledger = self.ledger
        if ledger.decided(msg.slot) is not None and not self._votes_late(msg):
            return  # the proposer learns the decision from the DAG
        if self.node_id not in ledger.membership.voters:
            return
        b = msg.ballot
        if b.mv > ledger.mv:
            if len(self._deferred) < self.config.deferred_max:
                self._deferred.append(item)
            self.counters[Reason.MEMBERSHIP_AHEAD] += 1
            return
        try:
            if b.mv < ledger.mv:
                raise Refused(Reason.STALE_MEMBERSHIP, f"{b.mv} < {ledger.mv}")
            version = membership_version_of(msg.slot)
            if version is not None and version != b.mv + 1:
                raise Refused(Reason.BAD_MEMBERSHIP, f"{msg.slot} under membership {b.mv}")
            if b.mv in ledger.frozen and version is None:
                raise Refused(Reason.CHANGE_PENDING, f"membership/{b.mv + 1} accepted")
            promised = ledger.promised.get(msg.slot)
            if isinstance(msg, Prepare):
                if promised is not None and b <= promised:
                    raise Refused(Reason.BALLOT_TOO_LOW, str(promised))
                self._check_proposer(msg.slot, author)
                last = ledger.slots[msg.slot].highest_vote_below(b)
                self._emit(Promise(msg.slot, b, last))
            else:
                if promised is not None and b < promised:
                    raise Refused(Reason.BALLOT_TOO_LOW, str(promised))
                self._check_local(msg.slot, msg.value, author)
                self._emit(Accepted(msg.slot, b, msg.value))
        except Refused as exc:
            self.counters[exc.reason] += 1
            key = (msg.slot, b, type(msg).__name__)
            if key not in self._refused:
                self._refused.add(key)
                self._emit(
                    Refuse(msg.slot, b, exc.reason.value, ledger.promised.get(msg.slot), ledger.mv)
                )

    def _votes_late(self, msg: Prepare | Accept) -> bool:
        """Accept a decided checkpoint once more if this voter has not voted for it: the
        others prune only below a cut every voter authored an op above (Checkpoints.stable),
        and a voter that learnt the checkpoint only once it was decided, and writes
        nothing, would otherwise hold every other node's compaction back for ever. The
        vote is for the decided value, so it changes no decision."""
        if not isinstance(msg, Accept) or slot_kind(msg.slot) != CHECKPOINT:
            return False
        decision = self.ledger.decided(msg.slot)
        if decision is None or msg.value != decision.value:
            return False
        record = self.ledger.slots.get(msg.slot)
        if record is None:
            return False  # archived: settled inside a stable cut, every voter is past it
        voted = any(
            self.node_id in by for votes in record.accepted.values() for by in votes.values())
        return not voted

    def _check_proposer(self, slot: str, author: NodeId) -> None:
        if slot_kind(slot) in (CHECKPOINT, SCHEMA):  # the voters' own, whatever the policy
            if author not in self.ledger.membership.voters:
                raise Refused(Reason.FORBIDDEN, f"{author[:8]} is not a voter: not {slot}")
            return
        if not self.ledger.policy.can_propose(author, slot_kind(slot)):
            raise Refused(Reason.FORBIDDEN, f"{author[:8]} may not propose {slot_kind(slot)}")

    def _check_local(self, slot: str, value: Any, proposer: NodeId) -> None:
        """Checks of a value that do not depend on the ballot (proposer and acceptor)."""
        self._check_proposer(slot, proposer)
        ledger = self.ledger
        version = membership_version_of(slot)
        if version is not None:
            previous = ledger.memberships.get(version - 1)
            if previous is None:
                raise Refused(Reason.MEMBERSHIP_AHEAD, f"membership {version - 1} unknown")
            check_change(previous, value)
        pversion = policy_version_of(slot)
        if pversion is not None:
            current = ledger.policies.get(pversion - 1)
            if current is None:
                raise Refused(Reason.BAD_POLICY, f"policy v{pversion - 1} unknown here")
            check_policy(current, value, proposer, frozenset(ledger.membership.voters))
        n = checkpoint_number_of(slot)
        if n is not None:
            self.checkpoints.check(n, value)
        elif slot_kind(slot) == CHECKPOINT:
            raise Refused(Reason.BAD_CHECKPOINT, f"{slot}: not checkpoint/<n>, n >= 1")
        if slot_kind(slot) == SCHEMA:
            check_schema(slot, value, self.config.schema_version, self.decided_schema(),
                         self.heard_read())
        if slot_kind(slot) == PLACEMENT:
            before = self._decided_before(placement_of(slot), placement_slot)
            check_placement(slot, value, before, frozenset(ledger.membership.voters),
                            self._silence_ms, self.node_id)
        if slot_kind(slot) == LIFECYCLE:
            check_lifecycle(slot, value, self._decided_before(lifecycle_of(slot),
                                                              lifecycle_slot))

    def _decided_before(self, where: tuple[str, int] | None, slot_of) -> Any:
        """The value decided here for the previous number of a numbered slot (name, n): None
        for n = 1, an unparsed slot, or a previous one not decided here."""
        if where is None or where[1] <= 1:
            return None
        d = self.ledger.decided(slot_of(where[0], where[1] - 1))
        return None if d is None else d.value

    def _emit(self, msg: VoteMessage) -> None:
        if self.node_id not in self.ledger.membership.voters:
            # Every peer (and our own recovery) would reject the op as NOT_MEMBER.
            self.counters[Reason.NOT_VOTER] += 1
            return
        kind, data = to_body(msg)
        try:
            self.replica.emit(kind, data, self._now_ms)
        except ReplicationUsageError:  # the replica would not sign what peers refuse
            self.counters[Reason.FORBIDDEN] += 1
            return
        self.ledger.catch_up()

    # ------------------------------------------------------------------ equivocators
    def _learn_evidence(self) -> None:
        """Note every author the replica or the ledger holds proof against (first proof kept)."""
        # The replica's fork proofs are not public API yet (docs: limits); the pair it
        # sends to peers in sync answers is the one cited. Proofs are sorted so that
        # peers that learned them in another order propose the same value.
        proofs = self.replica.dag.fork_proof
        for author in sorted(self.replica.forks()):
            if author not in self.expulsions:
                self.expulsions[author] = Expulsion(tuple(sorted(proofs[author])))
        conflicts = self.ledger.conflicts
        for c in conflicts[self._conflicts_seen :]:
            if c.author not in self.expulsions:
                self.expulsions[c.author] = Expulsion(tuple(sorted(c.ops)))
        self._conflicts_seen = len(conflicts)

    def _expel(self, now_ms: int) -> None:
        """Propose removing a proven equivocator that is still a voter (decision 0017).

        One membership change at a time: nothing while a local proposal for the next
        membership slot is live; offenders in id order, so that every honest voter
        proposes the same removal first; at most expel_attempts_max attempts per offender
        per membership version, expel_retry_ms apart. A change decided in between (maybe
        another's) opens a new version, and the offender, if still a voter, is tried again.
        """
        self._learn_evidence()
        m = self.ledger.membership
        if not self.expulsions or self.node_id not in m.voters:
            return  # only voters propose; a removed node authors nothing
        slot = membership_slot(m.version + 1)
        live = [p for p in self.proposals if not p.done]
        if any(p.slot == slot for p in live) or len(live) >= self.config.proposals_max:
            return  # the slot is in use here (or no room): try again once that ends
        cfg = self.config
        for offender, e in sorted(self.expulsions.items()):
            if offender == self.node_id or offender not in m.voters:
                continue  # never ourselves; a non-voter has nothing to lose
            if len(m.voters) < 2:
                continue  # never below one voter (unreachable: we and it are both voters)
            if e.mv != m.version:  # a new membership: a fresh budget
                e.mv, e.attempts, e.next_ms, e.noted, e.proposal = m.version, 0, now_ms, False, None
            elif e.proposal is not None and e.proposal.done:  # ended without removing it
                e.next_ms, e.proposal = now_ms + cfg.expel_retry_ms, None
            if now_ms < e.next_ms:
                continue
            give_up = ""
            if not self.ledger.policy.can_propose(self.node_id, slot_kind(slot)):
                give_up = "expel_forbidden"  # our role may not propose membership changes
            elif e.attempts >= cfg.expel_attempts_max:
                give_up = "expel_given_up"
            if give_up:
                if not e.noted:
                    e.noted = True
                    self.counters[give_up] += 1
                continue
            value = m.left(offender, EQUIVOCATION, e.evidence).to_value()
            e.proposal = self._add_proposal(slot, value, now_ms, None)
            e.attempts += 1
            self.counters["expel_proposed"] += 1
            return  # one membership change at a time

    # ------------------------------------------------------------------ proposer
    def _drive(self, now_ms: int) -> None:
        for p in self.proposals:
            if not p.done:
                self._drive_one(p, now_ms)
        self.proposals = [p for p in self.proposals if not p.done]

    def _drive_one(self, p: Proposal, now_ms: int) -> None:
        ledger = self.ledger
        decision = ledger.decided(p.slot)
        if decision is not None:
            if self._durable(decision):
                p.outcome = Outcome(p.slot, Status.DECIDED, decision.value)
            return  # else: once our vote is durable (release)
        if self.node_id not in ledger.membership.voters:
            p.outcome = Outcome(p.slot, Status.REFUSED, None, "not_voter: no longer a member")
            return
        if now_ms >= p.deadline_ms:
            count = len(ledger.membership.voters)
            p.outcome = Outcome(
                p.slot,
                Status.NO_QUORUM,
                None,
                f"no quorum reachable: at best {p.best_answers} of {count} voters answered"
                + _refusals_said(p.refusals),
            )
            self.counters[Reason.NO_QUORUM] += 1
            return
        if p.phase == "wait":
            if now_ms >= p.next_ms:
                self._start_ballot(p, now_ms)
            return
        b = p.ballot
        assert b is not None
        rec = ledger.slots.get(p.slot)
        voters = ledger.memberships[b.mv].voters
        refusals = rec.refusals.get(b, {}) if rec else {}
        refused = set(refusals)
        p.refusals.update((a, r.reason) for a, r in refusals.items() if a in voters)
        if p.phase == "prepare":
            promises = {
                a: m for a, m in (rec.promises.get(b, {}) if rec else {}).items() if a in voters
            }
            p.best_answers = max(p.best_answers, len(promises))
            result = vote_result(voters, promises, refused)
            if result is VoteResult.WON:
                reported = [m.last for m in promises.values() if m.last is not None]
                value = max(reported, key=lambda v: v.ballot).value if reported else p.value
                self._emit(Accept(p.slot, b, value))
                p.phase, p.next_ms = "accept", now_ms + self.config.retry_ms
                return
        else:
            accepted = set()
            for group in (rec.accepted.get(b, {}) if rec else {}).values():
                accepted |= set(group)
            result = vote_result(voters, accepted, refused)
        stale = b.mv != ledger.mv
        if result is VoteResult.LOST or stale or now_ms >= p.next_ms:
            self._back_off(p, now_ms, immediately=stale)

    def _start_ballot(self, p: Proposal, now_ms: int) -> None:
        ledger = self.ledger
        version = membership_version_of(p.slot)
        if version is not None and version != ledger.mv + 1:
            # Not yet (behind: wait for sync) or never (a later one is in force).
            if version <= ledger.mv:
                p.outcome = Outcome(p.slot, Status.REFUSED, None, "membership version passed")
                return
            p.next_ms = now_ms + self.config.retry_ms
            return
        rec = ledger.slots.get(p.slot)
        round_ = (rec.round_max if rec else 0) + 1
        if p.ballot is not None:
            round_ = max(round_, p.ballot.round + 1)
        p.ballot = Ballot(ledger.mv, round_, self.node_id)
        p.phase, p.next_ms = "prepare", now_ms + self.config.retry_ms
        p.attempts += 1
        self._emit(Prepare(p.slot, p.ballot))

    def _back_off(self, p: Proposal, now_ms: int, immediately: bool = False) -> None:
        cfg = self.config
        cap = min(cfg.backoff_ms_max, cfg.backoff_ms_min * 2 ** min(p.attempts, 16))
        p.phase = "wait"
        p.next_ms = now_ms if immediately else now_ms + int(self.rng.random() * cap)
        self.counters["back_off"] += 1
        if immediately:
            self._start_ballot(p, now_ms)
