"""The ledger: everything agreement knows, derived from the replica's op log alone.

It indexes vote ops as the replica applies them (in log order, a causal order), counts
certificates, follows the membership and policy chains, and answers causal-past queries
(which membership and policy were in force for an op) through per-op version vectors.
Because it is a pure function of the log, it survives restarts by construction.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from controller.replication import CustomBody, Genesis, NodeId, Op, OpId, decode, encode
from controller.replication.dag import Dag

from .certificate import Certificate, Decision, certificate_ops
from .errors import Reason, Refused
from .membership import Membership, departed_after, membership_version_of
from .messages import (
    VOTE_KINDS,
    Accept,
    Accepted,
    Ballot,
    Prepare,
    Promise,
    Refuse,
    Vote,
    VoteMessage,
    from_body,
    value_key,
)
from .rbac import AccessPolicy, policy_version_of

__all__ = ["Archive", "ConflictingVotes", "Ledger", "LogSource", "SlotRecord", "Indexed"]

ARCHIVE_KEY = "slot:"  # a settled decision's key in the store's archive: this + the slot
ARCHIVE_CACHE = 1024  # archive answers (found or not) kept in memory, least recent out


class Archive(Protocol):
    """Where settled decisions go (decision 0103): the node's store (its _synod_archive
    table), kept for good; the ledger reads them back on demand."""

    def archived(self, key: str) -> bytes | None: ...

    def archived_items(self, prefix: str = "", newest: int | None = None, after: str = "",
                       limit: int | None = None) -> Iterator[tuple[str, bytes]]: ...


class LogSource(Protocol):
    """What the ledger reads from a replica: its log (ids in order) and ops by id."""

    def op(self, op_id: OpId) -> Op | None: ...


@dataclass(frozen=True)
class Indexed:
    """A vote op the ledger has indexed, for the engine to react to."""

    op: Op
    msg: VoteMessage


@dataclass(frozen=True)
class ConflictingVotes:
    """Evidence: one author's two accepted votes in one ballot, for different values."""

    author: NodeId
    slot: str
    ballot: Ballot
    ops: tuple[OpId, OpId]  # the vote indexed first, then the one that contradicts it


@dataclass
class SlotRecord:
    """All votes seen for one slot (mutable, owned by the ledger)."""

    prepares: dict[Ballot, Op] = field(default_factory=dict)
    promises: dict[Ballot, dict[NodeId, Promise]] = field(default_factory=dict)
    accepts: dict[Ballot, Any] = field(default_factory=dict)
    # ballot -> value key -> author -> op
    accepted: dict[Ballot, dict[bytes, dict[NodeId, Op]]] = field(default_factory=dict)
    values: dict[bytes, Any] = field(default_factory=dict)
    refusals: dict[Ballot, dict[NodeId, Refuse]] = field(default_factory=dict)
    round_max: int = 0
    decided: Decision | None = None
    durable: bool = False  # the engine saw every vote of this node in it durable

    def highest_vote_below(self, ballot: Ballot) -> Vote | None:
        below = [b for b in self.accepted if b < ballot]
        if not below:
            return None
        top = max(below)
        key = next(iter(self.accepted[top]))
        return Vote(top, self.values[key])


class Ledger:
    def __init__(self, genesis: Genesis, node_id: NodeId) -> None:
        self.genesis = genesis
        self.node_id = node_id
        self.memberships: dict[int, Membership] = {0: Membership.from_genesis(genesis)}
        access = genesis.policy.get("access") if isinstance(genesis.policy, dict) else None
        self.policies: dict[int, AccessPolicy] = {
            0: AccessPolicy.from_value(access or {}, "genesis.policy.access")
        }
        self.slots: dict[str, SlotRecord] = {}
        self.keys: dict[NodeId, bytes] = dict(genesis.member_ids)
        self.counters: Counter[str] = Counter()
        self.conflicts: list[ConflictingVotes] = []  # evidence against their authors, in log order
        self.fresh: list[Indexed] = []  # indexed since the engine last looked
        self.decisions: list[Decision] = []  # decided since the engine last looked
        self.promised: dict[str, Ballot] = {}  # this node's acceptor state, from its own ops
        self.frozen: set[int] = set()  # mv where this node accepted membership/mv+1
        self.decided_count = 0  # slots decided so far (cheap change detection for callers)
        self._vectors: dict[OpId, dict[NodeId, int]] = {}
        self._certificates: dict[str, frozenset[bytes]] = {}  # decided slot -> its vote ops
        self._log: Dag | None = None
        self._source: LogSource | None = None
        self._cursor = 0
        self._evidence: Mapping[OpId, Op] | None = None
        self._evidence_seen: set[OpId] = set()
        self._evidence_mark: tuple[int, OpId | None] = (0, None)
        # Settled decisions moved out of `slots` (decision 0103): in the archive, or on
        # their way there (archived here, the compaction carrying them not yet stored).
        self.archive: Archive | None = None
        self.archived_count = 0
        self._archiving: dict[str, Decision] = {}
        self._archive_cache: OrderedDict[str, Decision | None] = OrderedDict()
        self._taken: dict[str, tuple[SlotRecord, Ballot | None]] = {}  # by the last archiving

    # ------------------------------------------------------------------ feeding
    def bind(self, dag: Dag, source: LogSource, evidence: Mapping[OpId, Op] | None = None) -> None:
        """Read the replica's log (its DAG's, by absolute position: pruning keeps them) and
        ops through source; and the votes among the ops it keeps as evidence (a forked
        author's other branch): every node counts the same votes once both branches reach
        it, so an equivocator that keeps voting does not split the learners."""
        self._log, self._source, self._evidence = dag, source, evidence

    def catch_up(self) -> None:
        """Index every op the replica applied since the last call (idempotent, cheap)."""
        dag, source = self._log, self._source
        if dag is None or source is None:
            return
        while self._cursor < dag.log_end():
            for position, op_id in dag.log_from(self._cursor):
                self._cursor = position + 1
                if op_id is None:  # pruned: the engine catches up before it compacts
                    continue
                op = source.op(op_id)
                assert op is not None
                self._index(op)

        evidence = self._evidence
        if evidence:
            mark = (len(evidence), next(reversed(evidence)))
            if mark != self._evidence_mark:
                self._evidence_mark = mark
                for op_id, op in list(evidence.items()):
                    if op_id not in self._evidence_seen:
                        self._evidence_seen.add(op_id)
                        self.counters["evidence_ops_read"] += 1
                        self._index(op)

    def forget(self, op_ids: Iterable[OpId], keep: Iterable[OpId] = ()) -> None:
        """Pruned ops (decision 0070): drop their memoised vectors, but those of `keep`
        (the frontier: later ops may name them as parents)."""
        kept = set(keep)
        vectors = self._vectors
        for op_id in op_ids:
            if op_id not in kept:
                vectors.pop(op_id, None)

    def retains(self, op: Op) -> bool:
        """Must this vote op, pruned below a checkpoint, still be indexed by a ledger
        rebuilt from the store (decision 0070)? The votes of a slot not decided here (this
        node's acceptor state, a quorum in progress), a decided slot's certificate, every
        accepted vote of a decided membership or policy, and both halves of conflicting
        votes (evidence against their author)."""
        if not isinstance(op.body, CustomBody) or op.body.kind not in VOTE_KINDS:
            return False
        if any(op.id in c.ops for c in self.conflicts):
            return True
        try:
            msg = from_body(op.body.kind, op.body.data)
        except Refused:
            return False
        rec = self.slots.get(msg.slot)
        if rec is None:
            return self._archived(msg.slot) is None  # archived: its certificate is stored
        if rec.decided is None:
            return True
        if msg.slot.startswith("checkpoint/"):
            # Only the newest checkpoint's certificate is needed (the compaction record
            # carries it); keeping each one would grow the record with history.
            return False
        if isinstance(msg, Accepted) and (
            membership_version_of(msg.slot) is not None or policy_version_of(msg.slot) is not None
        ):
            # decided_in() counts any ballot's quorum inside an op's past: keep them all, or
            # an op checked once against one quorum would be checked again against another
            return True
        raws = self._certificates.get(msg.slot)
        if raws is None:
            raws = self._certificates[msg.slot] = frozenset(rec.decided.certificate.ops)
        return op.raw in raws

    def restore(self, op: Op) -> None:
        """Index a vote op read back with a compaction (in log order, before the tail)."""
        self._index(op)

    def restore_vectors(self, vectors: Mapping[OpId, Mapping[NodeId, int]]) -> None:
        """The causal-past vectors of the frontier (the last pruned op of each author),
        read back with a compaction: later ops name them as parents, and their pasts are
        gone (Ledger.vector would answer a gap)."""
        for op_id, vector in vectors.items():
            self._vectors[op_id] = dict(vector)

    def _index(self, op: Op) -> None:
        if not isinstance(op.body, CustomBody) or op.body.kind not in VOTE_KINDS:
            return
        try:
            msg = from_body(op.body.kind, op.body.data)
        except Refused as exc:
            self.counters[exc.reason] += 1
            return
        rec = self.slots.get(msg.slot)
        if rec is None:
            archived = self._archived(msg.slot)
            if archived is not None:
                # A late vote for a settled slot (from above the cut it was archived at):
                # it changes no decision, and indexing it would bring the slot back. An
                # `accepted` contradicting its author's vote in the certificate is still
                # evidence of equivocation.
                self.counters["archived_slot_vote"] += 1
                if isinstance(msg, Accepted):
                    self._contradicts(op, msg, archived)
                return
            rec = self.slots[msg.slot] = SlotRecord()
        rec.round_max = max(rec.round_max, msg.ballot.round)
        if isinstance(msg, Prepare):
            rec.prepares.setdefault(msg.ballot, op)
        elif isinstance(msg, Promise):
            rec.promises.setdefault(msg.ballot, {})[op.author] = msg
            if msg.last is not None:
                rec.round_max = max(rec.round_max, msg.last.ballot.round)
        elif isinstance(msg, Accept):
            if op.author != msg.ballot.node:
                self.counters[Reason.NOT_PROPOSER] += 1
                return
            rec.accepts.setdefault(msg.ballot, msg.value)
        elif isinstance(msg, Accepted):
            self._accepted(op, msg, rec)
        elif isinstance(msg, Refuse):
            rec.refusals.setdefault(msg.ballot, {})[op.author] = msg
        if op.author == self.node_id and isinstance(msg, Promise | Accepted):
            self.promised[msg.slot] = max(self.promised.get(msg.slot, msg.ballot), msg.ballot)
            if isinstance(msg, Accepted) and membership_version_of(msg.slot) == msg.ballot.mv + 1:
                self.frozen.add(msg.ballot.mv)
        self.fresh.append(Indexed(op, msg))

    def _contradicts(self, op: Op, msg: Accepted, decision: Decision) -> None:
        """A late `accepted` for an archived slot against the certificate's votes: the same
        author, ballot and another value is the proof _accepted() would have found."""
        cert = decision.certificate
        if msg.ballot != cert.ballot or value_key(msg.value) == value_key(cert.value):
            return
        for vote in certificate_ops(cert):
            if vote.author == op.author:
                self.counters[Reason.CONFLICTING_VOTES] += 1
                proof = (vote.id, op.id)
                self.conflicts.append(ConflictingVotes(op.author, msg.slot, msg.ballot, proof))
                return

    def _accepted(self, op: Op, msg: Accepted, rec: SlotRecord) -> None:
        key = value_key(msg.value)
        by_value = rec.accepted.setdefault(msg.ballot, {})
        earlier = [v[op.author] for k, v in by_value.items() if k != key and op.author in v]
        if earlier:
            self.counters[Reason.CONFLICTING_VOTES] += 1
            proof = (earlier[0].id, op.id)
            self.conflicts.append(ConflictingVotes(op.author, msg.slot, msg.ballot, proof))
            return
        rec.values.setdefault(key, msg.value)
        by_value.setdefault(key, {})[op.author] = op
        self._count(msg.slot, rec, msg.ballot, key)

    def _count(self, slot: str, rec: SlotRecord, ballot: Ballot, key: bytes) -> None:
        if rec.decided is not None:
            if value_key(rec.decided.value) != key and self._quorum(ballot, rec, key):
                self.counters["safety_violation"] += 1  # never expected: the checks look here
            return
        votes = self._quorum(ballot, rec, key)
        if votes is None:
            return
        cert = Certificate(slot, ballot, rec.values[key], tuple(op.raw for op in votes))
        rec.decided = Decision(slot, rec.values[key], cert)
        self.decided_count += 1
        self.decisions.append(rec.decided)
        self._on_decided(slot, rec.values[key])

    def _quorum(self, ballot: Ballot, rec: SlotRecord, key: bytes) -> list[Op] | None:
        membership = self.memberships.get(ballot.mv)
        if membership is None:
            return None  # recounted when that membership is decided
        group = sorted(rec.accepted[ballot][key].items())
        votes = [op for a, op in group if a in membership.voters]
        return votes if len(votes) >= membership.quorum else None

    def _on_decided(self, slot: str, value: Any) -> None:
        version = membership_version_of(slot)
        if version is not None:
            try:
                new = Membership.from_value(value)
            except Refused as exc:
                self.counters[exc.reason] += 1
                return
            previous = self.memberships.get(version - 1)
            if previous is not None:  # decided in order: n's ballots name n - 1
                new = replace(new, departed=departed_after(previous, new))
            self.memberships[version] = new
            self.keys.update(new.voters)
            for other, rec in self.slots.items():  # votes that waited for this membership
                if rec.decided is None:
                    for ballot, groups in list(rec.accepted.items()):
                        if ballot.mv == version:
                            for key in list(groups):
                                self._count(other, rec, ballot, key)
            return
        pversion = policy_version_of(slot)
        if pversion is not None:
            try:
                self.policies[pversion] = AccessPolicy.from_value(value)
            except Refused as exc:
                self.counters[exc.reason] += 1

    # ------------------------------------------------------------------ current state
    @property
    def mv(self) -> int:
        return max(self.memberships)

    @property
    def membership(self) -> Membership:
        return self.memberships[self.mv]

    @property
    def policy(self) -> AccessPolicy:
        return self.policies[max(self.policies)]

    def slot(self, slot: str) -> SlotRecord | None:
        return self.slots.get(slot)

    def decided(self, slot: str) -> Decision | None:
        rec = self.slots.get(slot)
        if rec is not None:  # a held slot is never in the archive (_index)
            return rec.decided
        return self._archived(slot)

    def decided_items(self, prefix: str = "", newest: int | None = None) -> list[Decision]:
        """Every decision for slots starting with prefix: the archived ones (settled,
        older) by slot, then those held in memory in the order the ledger met them. With
        `newest`, only that many of the archived ones, the last archived (reading the
        whole archive costs a decode per decision: ~23 us)."""
        found: dict[str, Decision] = {}
        if self.archive is not None:
            for key, raw in self.archive.archived_items(ARCHIVE_KEY + prefix, newest):
                found[key[len(ARCHIVE_KEY):]] = _decision_of(raw)
        found.update(self._held_items(prefix))
        return list(found.values())

    def _held_items(self, prefix: str) -> Iterator[tuple[str, Decision]]:
        yield from ((s, d) for s, d in self._archiving.items() if s.startswith(prefix))
        for s, r in self.slots.items():
            if r.decided is not None and s.startswith(prefix):
                yield s, r.decided

    def held_decisions(self, prefix: str = "") -> list[Decision]:
        """The decisions for slots starting with prefix that are not (yet) in the archive."""
        return [d for _, d in self._held_items(prefix)]

    def archived_decisions(self, prefix: str, after: str, limit: int) -> list[Decision]:
        """A page of the archived decisions for slots starting with prefix: the first
        `limit` after slot `after` ("" for the first page), by slot."""
        if self.archive is None:
            return []
        after_key = ARCHIVE_KEY + after if after else ""
        return [_decision_of(raw) for _, raw in self.archive.archived_items(
            ARCHIVE_KEY + prefix, after=after_key, limit=limit)]

    # ------------------------------------------------------------------ archive (0103)
    def _archived(self, slot: str) -> Decision | None:
        d = self._archiving.get(slot)
        if d is not None or self.archive is None:
            return d
        cache = self._archive_cache
        if slot in cache:
            cache.move_to_end(slot)
            return cache[slot]
        raw = self.archive.archived(ARCHIVE_KEY + slot)
        d = None if raw is None else _decision_of(raw)
        cache[slot] = d
        if len(cache) > ARCHIVE_CACHE:
            cache.popitem(last=False)
        return d

    def settled(self, slot: str, rec: SlotRecord, cut: Mapping[NodeId, int]) -> bool:
        """May this decided slot leave memory for the archive, at a compaction to `cut`?
        Its certificate lies inside the cut (every vote of this node in it durable, every
        voter past it), and nothing reads its votes: not a membership or policy slot
        (decided_in() counts their votes in an op's past), not a checkpoint whose
        certificate is still above the cut (a late voter's vote, Agreement._votes_late)."""
        d = rec.decided
        if d is None or kept_in_memory(slot):
            return False
        if any(c.slot == slot for c in self.conflicts):
            return False  # evidence of equivocation in it: kept whole, it is re-read at start
        return all(cut.get(op.author, 0) >= op.seq for op in certificate_ops(d.certificate))

    def archive_settled(self, cut: Mapping[NodeId, int]) -> tuple[tuple[str, bytes], ...]:
        """Move the settled decisions (settled()) out of memory; returns the archive
        entries for the compaction that carries them to the store (none without an
        archive bound: then decisions stay in memory, as in the simulators' bare
        replicas). Until stored() is called they are answered from memory."""
        if self.archive is None:
            return ()
        out = []
        self._taken = {}
        for slot, rec in list(self.slots.items()):
            if not self.settled(slot, rec, cut):
                continue
            d = rec.decided
            assert d is not None
            self._taken[slot] = (rec, self.promised.get(slot))
            del self.slots[slot]
            self.promised.pop(slot, None)
            self._certificates.pop(slot, None)
            self._archive_cache.pop(slot, None)
            self._archiving[slot] = d
            out.append((ARCHIVE_KEY + slot, encode(d.certificate.to_plain())))
        self.archived_count += len(out)
        return tuple(out)

    def archive_carried(self) -> None:
        """The last archive_settled() went into a compaction: forget what unarchive() needs."""
        self._taken = {}

    def unarchive(self) -> None:
        """Undo the last archive_settled() (the compaction meant to carry it failed)."""
        for slot, (rec, promised) in self._taken.items():
            self.slots[slot] = rec
            if promised is not None:
                self.promised[slot] = promised
            self._archiving.pop(slot, None)
            self._archive_cache.pop(slot, None)
        self.archived_count -= len(self._taken)
        self._taken = {}

    def stored(self, entries: Iterable[tuple[str, bytes]]) -> None:
        """The store holds these archive entries now (the compaction was committed)."""
        for key, _ in entries:
            self._archiving.pop(key[len(ARCHIVE_KEY):], None)

    def public_key(self, node: NodeId) -> bytes | None:
        """Keys of every voter ever decided, and of nodes named in a proposed join."""
        return self.keys.get(node)

    def note_key(self, node: NodeId, key: bytes) -> None:
        self.keys.setdefault(node, key)

    # ------------------------------------------------------------------ causal past
    def vector(self, op_id: OpId) -> Mapping[NodeId, int]:
        """{author: highest seq} of op_id's causal past including itself (memoised).

        Only complete answers are memoised: an op kept as evidence may name parents this
        node does not hold (yet); a vector through such a gap is answered but not kept, or
        a later question would get the gap's answer forever and, for an op's permission
        check, a different one than at the nodes that hold the whole past.
        """
        known = self._vectors.get(op_id)
        if known is not None:
            return known
        assert self._source is not None
        partial: dict[OpId, dict[NodeId, int]] = {}  # through a gap: not memoised
        stack = [op_id]
        while stack:  # iterative post-order: deep chains must not exhaust the stack
            top = stack[-1]
            if top in self._vectors or top in partial:
                stack.pop()
                continue
            op = self._source.op(top)
            if op is None:
                partial[top] = {}
                stack.pop()
                continue
            todo = [p for p in op.parents if p not in self._vectors and p not in partial]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            merged: dict[NodeId, int] = {}
            complete = True
            for p in op.parents:
                pv = self._vectors.get(p)
                if pv is None:
                    pv, complete = partial[p], False
                for a, s in pv.items():
                    if s > merged.get(a, 0):
                        merged[a] = s
            merged[op.author] = max(merged.get(op.author, 0), op.seq)
            (self._vectors if complete else partial)[top] = merged
        done = self._vectors.get(op_id)
        return done if done is not None else partial[op_id]

    def past_vector(self, parents: tuple[OpId, ...]) -> dict[NodeId, int]:
        merged: dict[NodeId, int] = {}
        for p in parents:
            for a, s in self.vector(p).items():
                if s > merged.get(a, 0):
                    merged[a] = s
        return merged

    def decided_in(self, slot: str, past: Mapping[NodeId, int]) -> bool:
        """Is a certificate for slot wholly inside the causal past `past`?

        Any ballot's quorum of `accepted` for the decided value counts, not only the one
        this node happened to learn first: the answer must depend on the past alone, or
        two nodes that learned the decision through different ballots would disagree on
        the membership in force for one op (and one would refuse what the other applied).
        """
        rec = self.slots.get(slot)
        if rec is None or rec.decided is None:
            return False
        key = value_key(rec.decided.value)
        for ballot, by_value in rec.accepted.items():
            votes = by_value.get(key)
            membership = self.memberships.get(ballot.mv)
            if not votes or membership is None:
                continue
            inside = sum(
                1 for a, op in votes.items() if a in membership.voters and past.get(a, 0) >= op.seq
            )
            if inside >= membership.quorum:
                return True
        return False

    def membership_in(self, past: Mapping[NodeId, int]) -> Membership:
        for version in sorted(self.memberships, reverse=True):
            if version == 0 or self.decided_in(f"membership/{version}", past):
                return self.memberships[version]
        raise AssertionError("membership 0 is always in force")

    def policy_in(self, past: Mapping[NodeId, int]) -> AccessPolicy:
        for version in sorted(self.policies, reverse=True):
            if version == 0 or self.decided_in(f"policy/v{version}", past):
                return self.policies[version]
        raise AssertionError("policy 0 is always in force")


def kept_in_memory(slot: str) -> bool:
    """Memberships and policies are never archived: decided_in() counts their votes in an
    op's past, and a joiner verifies their chain from the genesis."""
    return membership_version_of(slot) is not None or policy_version_of(slot) is not None


def _decision_of(raw: bytes) -> Decision:
    """A decision read back from the archive (written by Ledger.archive_settled)."""
    cert = Certificate.from_plain(decode(raw))
    return Decision(cert.slot, cert.value, cert)
