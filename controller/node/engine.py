"""The node's driver: feeds the replica its inputs, carries out its effects, in one task.

One asyncio task owns the Replica. Everything else (gRPC handlers, peer links) only enqueues
inputs and awaits futures. Each round: take queued peer messages and client writes (all
writes of a round become ONE signed op: group commit), tick, then carry out Ready in its
stated order — commit to the store (in a worker thread, so gRPC keeps serving), then send
messages, notify watchers, acknowledge writes — and advance().
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from controller.agreement import Agreement, Decision, Proposal, Refused, Status
from controller.agreement import UsageError as AgreementUsageError
from controller.agreement.coordinator import announced_geneses
from controller.replication import (
    Genesis,
    Invitation,
    Message,
    Mutation,
    OpBatch,
    Replica,
    RowUpdate,
    Schema,
    SyncRequest,
    UsageError,
    Value,
    parse_invitation,
)
from controller.replication.reserved import INTERNAL, peer_of_key
from controller.replication.schema import SCHEMA_VERSION, TABLES_SINCE
from controller.store import SqliteStore

from .errors import NodeBaseError
from .metrics import Metrics

__all__ = [
    "BelowCheckpoint",
    "Digest",
    "Engine",
    "EngineEvent",
    "MemberInvited",
    "MembersChanged",
    "Outgoing",
    "PeerAddress",
    "EngineError",
    "NoQuorum",
    "NotMember",
    "QuorumTimeout",
    "SlotRefused",
    "SlotWatcher",
    "Watcher",
    "WriteRefused",
    "WriteResult",
]

log = logging.getLogger("synod.node")


class EngineError(NodeBaseError):
    """The node cannot take the request now (queue full, stopping); the message says why."""


class NotMember(EngineError):
    """This node may not author ops yet (it joined but its invitation has not arrived)."""


class WriteRefused(EngineError):
    """The write breaks a limit every peer enforces (op size, rows per op, a reserved row's
    shape): nothing was signed; the message names the limit."""


class SchemaNotDecided(EngineError):
    """A write to a table added in a schema version not decided yet (decision 0037):
    nothing was signed; a member that does not read the table would refuse the op."""


class NoQuorum(EngineError):
    """A proposal timed out: no majority of the voters answered; it decided nothing."""


class SlotRefused(EngineError):
    """A proposal refused before any vote (bad slot or value, forbidden, not a voter)."""


class QuorumTimeout(EngineError):
    def __init__(self, result: WriteResult, timeout_ms: int) -> None:
        super().__init__(
            f"written locally as op {result.op_id} (seq {result.seq}) but only "
            f"{result.holders} member(s) held it after {timeout_ms} ms; it keeps replicating"
        )
        self.result = result


@dataclass
class WriteResult:
    op_id: str
    seq: int
    holders: int = 1
    ack: str = "local"


@dataclass(frozen=True)
class Outgoing:
    """A message for a peer, durable here before it is handed out."""

    peer: str
    message: Message


@dataclass(frozen=True)
class MemberInvited:
    """An invitation op was applied: the invited node may be dialed (decision 0030)."""

    invitation: Invitation


@dataclass(frozen=True)
class PeerAddress:
    """A reserved `peer/<node id>` row gave a node's peer address (a decided join)."""

    node_id: str
    address: str


@dataclass(frozen=True)
class MembersChanged:
    """The members (and so the quorum) changed: a decided membership or an invitation."""


@dataclass(frozen=True)
class BelowCheckpoint:
    """A peer answered that it pruned ops this node lacks (Ready.behind): sync cannot
    bring them; the server catches up from a snapshot (decision 0070)."""

    peer: str
    base: dict[str, int]


EngineEvent = Outgoing | MemberInvited | PeerAddress | MembersChanged | BelowCheckpoint


@dataclass(frozen=True)
class Digest:
    """The node's state digest, op-set digest and op count (equal digests: equal state)."""

    state: bytes
    ops: bytes
    count: int


@dataclass
class _Write:
    mutations: list[Mutation]
    future: asyncio.Future
    seq: int = 0
    op_id: str = ""
    custom: tuple[str, Any] | None = None  # (kind, data): an op of its own, not grouped


@dataclass(eq=False)
class Watcher:
    """A subscriber to row changes; cut (overflowed=True) when its queue fills."""

    accepts: Callable[[RowUpdate], bool]
    queue: asyncio.Queue
    overflowed: bool = False
    reason: str = ""


@dataclass(eq=False)
class SlotWatcher:
    """A subscriber to decisions of slots starting with prefix (None in the queue: cut)."""

    prefix: str
    queue: asyncio.Queue
    reason: str = ""


@dataclass
class _Propose:
    slot: str
    value: Any
    timeout_ms: int
    future: asyncio.Future
    proposal: Proposal | None = None


@dataclass
class _Inbound:
    sender: str
    messages: list[Message]
    future: asyncio.Future


@dataclass
class _Quorum:
    seq: int
    future: asyncio.Future
    result: WriteResult = field(default_factory=lambda: WriteResult("", 0))


IDLE_FOLD_POINTS = 48  # digest points folded per idle round (~37 us each here)


def now_ms() -> int:
    return int(time.time() * 1000)


class Engine:
    def __init__(
        self,
        replica: Replica,
        store: SqliteStore,
        metrics: Metrics,
        *,
        tick_interval_ms: int = 20,
        pending_writes_max: int = 50_000,
        group_commit_rows_max: int = 5_000,
        inbound_max: int = 1_024,
        agreement: Agreement | None = None,
    ) -> None:
        self.replica = replica
        self.agreement = agreement
        self.keeper: Any = None  # lineages.Keeper: other lineages (set by the server)
        self.trimmer: Any = None  # memory.Trimmer: after pruning (set by the server)
        self.slot_watchers: set[SlotWatcher] = set()
        self._proposals_in: list[_Propose] = []
        self._proposing: list[_Propose] = []
        self._decisions = agreement.watch("", include_decided=False) if agreement else None
        self._mv = agreement.membership().version if agreement else 0
        self.store = store
        self.metrics = metrics
        self.node_id = replica.node_id
        self.members: dict[str, bytes] = {}
        # What each peer said it reads in its hello (decision 0037); see members_read.
        self.peer_schema: dict[str, int] = {}
        if agreement is not None:
            agreement.members_read = self.members_read
        self.quorum_size = 1
        # (node id, peer address) from a kv row "peer/<node id>" (a decided join); set by server
        self._subscribers: list[Callable[[EngineEvent], None]] = []
        self._update_members()
        self.tick_interval_ms = tick_interval_ms
        self.pending_writes_max = pending_writes_max
        self.group_commit_rows_max = group_commit_rows_max
        self.inbound_max = inbound_max
        self.peer_vectors: dict[str, dict[str, int]] = {}
        self.last_seen: dict[str, float] = {}
        self.watchers: set[Watcher] = set()
        self._writes: list[_Write] = []
        self._pending_rows = 0
        self._inbound: list[_Inbound] = []
        self._quorum: list[tuple[int, int, _Quorum]] = []  # a heap by seq
        self._quorum_order = itertools.count()  # ties broken by arrival, never by _Quorum
        self._quorum_dead = 0  # answered by a timeout, still in the heap
        self._sync_with: set[str] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task | None = None
        self.started = time.monotonic()
        # Commits on a thread of their own: nothing else (users' SQL, other work on the
        # loop's default executor) can hold it while a write waits to be durable.
        self._commits = ThreadPoolExecutor(1, thread_name_prefix="synod-commit")

    # ------------------------------------------------------------------ events
    def subscribe(self, handler: Callable[[EngineEvent], None]) -> None:
        """Receive the engine's events (messages to send, members, peer addresses), in
        the order the round produces them; handlers must not block."""
        self._subscribers.append(handler)

    def _emit(self, event: EngineEvent) -> None:
        for handler in self._subscribers:
            handler(event)

    def send(self, peer: str, message: Message) -> None:
        """A message for a peer leaves as an Outgoing event (the links carry it)."""
        self._emit(Outgoing(peer, message))

    # ------------------------------------------------------------------ inputs
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="engine")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        try:
            if self._task is not None:
                await asyncio.wait_for(self._task, 10)
        finally:
            self._commits.shutdown(wait=False)

    async def write(self, mutations: list[Mutation], ack: str, timeout_ms: int) -> WriteResult:
        """Queue validated mutations; return once durable here (and held by a quorum)."""
        if self._stopping:
            raise EngineError("node is stopping")
        self.check_schema({m.table for m in mutations})
        if self._pending_rows + len(mutations) > self.pending_writes_max:
            self.metrics.inc("writes_refused|queue_full")
            raise EngineError(f"write queue full ({self.pending_writes_max} rows pending)")
        started = time.perf_counter()
        w = _Write(mutations, asyncio.get_running_loop().create_future())
        self._writes.append(w)
        self._pending_rows += len(mutations)
        self._wake.set()
        result: WriteResult = await w.future
        if ack == "quorum" and result.holders < self.quorum_size:
            loop = asyncio.get_running_loop()
            q = _Quorum(result.seq, loop.create_future(), result)
            heapq.heappush(self._quorum, (q.seq, next(self._quorum_order), q))
            self._check_quorum()
            # One timer per waiting write (wait_for + shield cost a task and two futures).
            timer = loop.call_later(timeout_ms / 1000, self._quorum_expired, q, timeout_ms)
            try:
                await q.future
            finally:
                timer.cancel()
                if q.future.cancelled():  # the caller went away
                    self._quorum_dead += 1
        result.ack = ack
        self.metrics.observe(f"write_{ack}", time.perf_counter() - started)
        return result

    async def emit(self, kind: str, data: Any) -> WriteResult:
        """Author one op with a custom body; return once it is durable here."""
        if self._stopping:
            raise EngineError("node is stopping")
        w = _Write([], asyncio.get_running_loop().create_future(), custom=(kind, data))
        self._writes.append(w)
        self._wake.set()
        return await w.future

    async def propose(self, slot: str, value: Any, timeout_ms: int) -> Any:
        """Propose value for slot; return the decided value (maybe another proposer's).

        Raises NoQuorum when no majority answered before timeout_ms (nothing decided by
        this proposal), SlotRefused when refused before any vote.
        """
        if self.agreement is None:
            raise SlotRefused("the agreement layer is off on this node (agreement.enabled)")
        if self._stopping:
            raise EngineError("node is stopping")
        item = _Propose(slot, value, timeout_ms, asyncio.get_running_loop().create_future())
        self._proposals_in.append(item)
        self._wake.set()
        started = time.perf_counter()
        # The agreement engine answers at its own deadline; this one only guards the wait.
        value = await asyncio.wait_for(item.future, timeout_ms / 1000 + 5)
        self.metrics.observe("propose", time.perf_counter() - started)
        return value

    def decided(self, slot: str) -> Decision | None:
        return None if self.agreement is None else self.agreement.decided(slot)

    def decisions(self, prefix: str = "", newest: int | None = None) -> list[Decision]:
        """Every decision handed out here for slots starting with prefix, by slot name
        (only once this node's own votes in it are durable: Agreement.decisions); with
        `newest`, only that many of the archived ones."""
        return [] if self.agreement is None else self.agreement.decisions(prefix, newest)

    def decision_pages(self, prefix: str = "") -> Iterator[list[Decision]]:
        """decisions(prefix) a page at a time (Agreement.decision_pages)."""
        if self.agreement is not None:
            yield from self.agreement.decision_pages(prefix)

    async def deliver(self, sender: str, messages: list[Message]) -> dict[str, int]:
        """Hand peer messages to the replica; return our vector once they are durable."""
        if len(self._inbound) >= self.inbound_max:
            self.metrics.inc("peer_refused|inbound_full")
            raise EngineError("inbound queue full")
        item = _Inbound(sender, messages, asyncio.get_running_loop().create_future())
        self._inbound.append(item)
        self._wake.set()
        return await item.future

    def note_vector(self, peer: str, vector: dict[str, int]) -> None:
        self.peer_vectors[peer] = vector
        self.last_seen[peer] = time.monotonic()
        if self._quorum:
            self._check_quorum()

    def request_sync(self, peer: str) -> None:
        self._sync_with.add(peer)
        self._wake.set()

    _reachable: frozenset[str] | None = None  # None: not told (the replica tries every peer)

    def set_reachable(self, peers: Iterable[str]) -> None:
        """The members a peer link reaches now (controller/node/peers.py says so when a link
        comes up or goes down); the next round hands it to the replica (decision 0097)."""
        self._reachable = frozenset(peers)
        self._wake.set()

    def _update_members(self) -> None:
        """Members (and so the quorum) come from the policy: founders plus invited nodes."""
        members = getattr(self.replica.policy, "members", None)
        if callable(members):
            self.members = dict(members())
        else:
            self.members = dict(self.replica.genesis.member_ids)
        self.quorum_size = len(self.members) // 2 + 1
        if self.keeper is not None:
            self.keeper.set_peers(set(self.members))
        else:
            self.replica.set_peers(self.members)
        self._emit(MembersChanged())

    def set_keeper(self, keeper: Any) -> None:
        """Hold other lineages (controller.node.lineages.Keeper), driven in each round."""
        self.keeper = keeper
        keeper.on_change = self._update_members
        self._update_members()

    def members_read(self) -> dict[str, int]:
        """What each other member this node has heard said it reads in its peer hello (0:
        older code, which says nothing of it; decision 0037). A proposer waits for every
        member to be heard; an acceptor refuses for a member heard behind."""
        return {n: self.peer_schema[n] for n in self.members
                if n != self.node_id and n in self.peer_schema}

    def schema_reads(self) -> int:
        """The newest schema version this node reads (SCHEMA_VERSION unless a test lowers it)."""
        return SCHEMA_VERSION if self.agreement is None else self.agreement.config.schema_version

    def members_on_older_code(self) -> list[str]:
        """Members whose hello to this node did not say they take this version's peer
        messages (vector deltas), or that have not said hello: older code, as far as this
        node can tell (decision 0070, releases)."""
        newer = self.replica.delta_peers
        if newer is None:
            return []
        return sorted(n for n in self.members if n != self.node_id and n not in newer)

    def note_vector_deltas(self, node_id: str, takes: bool) -> None:
        """What a peer's hello said: it takes sync messages with vector deltas or not (older
        code refuses them; decision 0101)."""
        peers = self.replica.delta_peers
        if peers is not None:
            if takes:
                peers.add(node_id)
            else:
                peers.discard(node_id)
        # A hello comes with a new link: what was sent on the old one may be lost, so the
        # next vector goes whole rather than as a delta the peer may not be able to rebuild.
        self.replica.send_whole_vector(node_id)

    def decided_schema(self) -> int:
        """The newest schema version decided (1 without agreement: no new table is written)."""
        return 1 if self.agreement is None else self.agreement.decided_schema()

    def check_schema(self, tables) -> None:
        """SchemaNotDecided unless every table may be written under the decided schema."""
        decided = None
        for table in tables:
            since = TABLES_SINCE.get(table)
            if since is None:
                continue
            if decided is None:
                decided = self.decided_schema()
            if since > decided:
                if self.agreement is not None:  # ask for it: proposed once every member reads it
                    self.agreement.upgrade_wanted = max(self.agreement.upgrade_wanted, since)
                    self._wake.set()
                raise SchemaNotDecided(
                    f"table {table} is written once schema/{since} is decided (proposed now; "
                    f"decided once every member runs a Synod that reads it; decided here: "
                    f"{decided})"
                )

    def peer_keys(self) -> dict[str, bytes]:
        """Nodes that may call or answer us: members, and nodes of lineages we hold."""
        if self.keeper is None:
            return self.members
        return {**self.keeper.peer_keys(), **self.members}

    def _admit(self, inv: Invitation) -> None:
        self._update_members()
        log.info("node %s invited (peer address %s)", inv.node_id, inv.address or "-")
        self.metrics.inc("members_invited")
        if inv.node_id != self.node_id:
            self._emit(MemberInvited(inv))
        if self._quorum:
            self._check_quorum()

    def holders(self, seq: int) -> int:
        me = self.node_id
        return 1 + sum(1 for v in self.peer_vectors.values() if v.get(me, 0) >= seq)

    def _check_quorum(self) -> None:
        """Answer the quorum writes a majority now holds. Held counts grow with seq going
        down, so the waiting writes (a heap by seq) are answered from the lowest seq up to
        the highest seq held by quorum_size nodes (this one holds all of its own)."""
        me, waiting = self.node_id, self._quorum
        held = sorted((v.get(me, 0) for v in self.peer_vectors.values()), reverse=True)
        need = self.quorum_size - 1  # peers that must hold a seq besides this node
        if need <= 0:
            top = float("inf")
        else:
            top = held[need - 1] if need <= len(held) else 0
        while waiting and waiting[0][0] <= top:
            _, _, q = heapq.heappop(waiting)
            if not q.future.done():
                q.result.holders = 1 + sum(1 for x in held if x >= q.seq)
                q.future.set_result(None)
        if self._quorum_dead * 2 > len(waiting):  # timed out or cancelled: drop them
            self._quorum = [x for x in waiting if not x[2].future.done()]
            heapq.heapify(self._quorum)
            self._quorum_dead = 0

    def _quorum_expired(self, q: _Quorum, timeout_ms: int) -> None:
        if q.future.done():
            return
        q.result.holders = self.holders(q.seq)
        self.metrics.inc("quorum_timeouts")
        q.future.set_exception(QuorumTimeout(q.result, timeout_ms))
        self._quorum_dead += 1

    # ------------------------------------------------------------------ the loop
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.tick_interval_ms / 1000)
            except TimeoutError:
                pass
            self._wake.clear()
            stopping = self._stopping
            try:
                await self._round(loop)
            except Exception:  # the store failed: stop serving rather than lie about durability
                log.exception("engine round failed; the node stops")
                self._fail_all(EngineError("node failed; see its log"))
                raise
            if stopping:
                self._fail_all(EngineError("node is stopping"))
                return

    async def _round(self, loop: asyncio.AbstractEventLoop) -> None:
        replica, t = self.replica, now_ms()
        inbound, self._inbound = self._inbound, []
        for item in inbound:
            for msg in item.messages:
                replica.receive(msg, t)  # first: it rebuilds a vector sent as a delta
                self._observe(item.sender, msg)
        writes = self._take_writes()
        if writes and not replica.is_member_now():
            self._refuse(writes)
            writes = []
        for group in writes:
            self._author(group, t)
        syncs, self._sync_with = self._sync_with, set()
        for peer in syncs:
            replica.sync_with(peer, t)
        if self._reachable is not None and replica.reachable != self._reachable:
            replica.set_reachable(self._reachable)
        replica.tick(t)
        if self.agreement is not None:
            self._step_agreement(t)
        if self.keeper is not None:
            self.keeper.step(t)
        while replica.has_ready():
            rd = replica.ready()
            if rd.ops or rd.rows or rd.evidence or rd.replace_rows or rd.compaction:
                started = time.perf_counter()
                await loop.run_in_executor(self._commits, self.store.commit, rd)
                self.metrics.observe("commit", time.perf_counter() - started)
            for out in rd.messages:
                self.send(out.to, out.message)
            self._notify(rd.rows, rd.replace_rows)
            for row in rd.rows:
                if row.table == INTERNAL:
                    node_id = peer_of_key(row.key[0])
                    address = (row.values or {}).get("value")
                    if node_id and isinstance(address, bytes) and node_id != self.node_id:
                        self._emit(PeerAddress(node_id, address.decode(errors="replace")))
            if self.keeper is not None:
                for raw in announced_geneses(rd.rows):
                    self.keeper.meet(raw)
            if rd.behind is not None:
                self.metrics.inc("below_peer_checkpoint")
                self._emit(BelowCheckpoint(rd.behind.peer, dict(rd.behind.base)))
            self.metrics.inc("ops_stored", len(rd.ops))
            for op in rd.ops:
                if op.body.kind != "rows":
                    inv = parse_invitation(op)
                    if inv is not None:
                        self._admit(inv)
            replica.advance(rd)
            if rd.compaction is not None and self.trimmer is not None:
                self.trimmer.pruned()  # the pruned ops are freed: hand the pages back
        if self.keeper is not None:
            await self.keeper.drive(loop, self.send)
        vector = replica.version_vector()
        for item in inbound:
            if not item.future.done():
                item.future.set_result(vector)
        for group in writes:
            for w in group:
                if not w.future.done():
                    w.future.set_result(WriteResult(w.op_id, w.seq, self.holders(w.seq)))
        if self.agreement is not None:
            self.agreement.release()  # decisions that waited for our votes to be durable
            self._answer_proposals()
        if not inbound and not writes and not self._writes and not self._inbound:
            # An idle round folds a little of the digests' pending work (~1-2 ms), so the
            # digests asked for after a heal pay only for what the heal brought (0099).
            replica.fold_digests(IDLE_FOLD_POINTS)
            if self.trimmer is not None:
                self.trimmer.maybe()  # a trim held back by its interval

    def _step_agreement(self, t: int) -> None:
        """Start queued proposals and step the agreement engine (votes become replica ops,
        carried out by this round's Ready: durable before sent)."""
        agreement = self.agreement
        assert agreement is not None
        agreement.heard(self.silence_ms())
        incoming, self._proposals_in = self._proposals_in, []
        for item in incoming:
            try:
                item.proposal = agreement.propose(item.slot, item.value, t, item.timeout_ms)
            except (AgreementUsageError, Refused) as exc:
                self.metrics.inc("proposals_refused")
                if not item.future.done():
                    item.future.set_exception(SlotRefused(f"proposal refused: {exc}"))
                continue
            self.metrics.inc("proposals")
            self._proposing.append(item)
        agreement.step(t)
        mv = agreement.membership().version
        if mv != self._mv:
            self._mv = mv
            log.info("membership %d decided: %d voters", mv, len(agreement.membership().voters))
            self._update_members()
            if self._quorum:
                self._check_quorum()

    def silence_ms(self) -> dict[str, int]:
        """Ms since this node last heard from each voter (any message; since this process
        started for one never heard): the placement checks' input (decision 0081 §3)."""
        assert self.agreement is not None
        now = time.monotonic()
        return {n: int((now - self.last_seen.get(n, self.started)) * 1000)
                for n in self.agreement.membership().voters if n != self.node_id}

    def _answer_proposals(self) -> None:
        """Answer finished proposals and tell slot watchers, once the round is durable."""
        still = []
        for item in self._proposing:
            p = item.proposal
            assert p is not None
            if p.outcome is None:
                still.append(item)
                continue
            if item.future.done():
                continue
            o = p.outcome
            if o.status is Status.DECIDED:
                item.future.set_result(o.value)
            elif o.status is Status.NO_QUORUM:
                self.metrics.inc("proposals_no_quorum")
                item.future.set_exception(NoQuorum(f"{o.slot}: {o.reason}"))
            else:
                self.metrics.inc("proposals_refused")
                item.future.set_exception(SlotRefused(f"{o.slot}: refused: {o.reason}"))
        self._proposing = still
        assert self._decisions is not None
        for d in self._decisions.drain():
            self.metrics.inc("slot_decisions")
            for w in list(self.slot_watchers):
                if d.slot.startswith(w.prefix):
                    try:
                        w.queue.put_nowait(d)
                    except asyncio.QueueFull:
                        w.reason = "slot watcher fell behind; watch again"
                        self.slot_watchers.discard(w)
                        self.metrics.inc("watchers_cut")
                        while not w.queue.empty():
                            w.queue.get_nowait()
                        w.queue.put_nowait(None)

    def _refuse(self, writes: list[list[_Write]]) -> None:
        self.metrics.inc("writes_refused|not_member", sum(len(g) for g in writes))
        exc = NotMember(
            f"node {self.node_id} is not a member yet: it has not received the decided "
            "membership (or invitation) that admits it (still catching up after "
            "`synod join`?); retry shortly"
        )
        for group in writes:
            for w in group:
                if not w.future.done():
                    w.future.set_exception(exc)

    def _take_writes(self) -> list[list[_Write]]:
        writes, self._writes, self._pending_rows = self._writes, [], 0
        groups: list[list[_Write]] = []
        size = self.group_commit_rows_max
        for w in writes:
            if w.custom is not None:  # an op of its own; rows after it start a new group
                groups.append([w])
                size = self.group_commit_rows_max
                continue
            if not groups or size + len(w.mutations) > self.group_commit_rows_max:
                groups.append([])
                size = 0
            groups[-1].append(w)
            size += len(w.mutations)
        return groups

    def _author(self, group: list[_Write], t: int) -> None:
        if group[0].custom is not None:
            w = group[0]
            try:
                op = self.replica.emit(*w.custom, t)
            except UsageError as exc:
                w.future.set_exception(WriteRefused(f"op refused: {exc}"))
                return
            w.seq, w.op_id = op.seq, op.id.hex()
            return
        try:
            op = self.replica.write([m for w in group for m in w.mutations], t)
        except UsageError as exc:
            if len(group) > 1:  # one bad or oversized write must not sink the others
                for w in group:
                    self._author([w], t)
                return
            group[0].future.set_exception(WriteRefused(f"write refused: {exc}"))
            return
        self.metrics.inc("rows_written", sum(len(w.mutations) for w in group))
        for w in group:
            w.seq, w.op_id = op.seq, op.id.hex()

    def _observe(self, sender: str, msg: Message) -> None:
        """Peers' vectors, seen in passing, tell us which of our ops they hold."""
        vector = msg.vector if isinstance(msg, SyncRequest | OpBatch) else None
        if vector is not None and msg.vector_hash:  # a delta: the whole vector the replica
            vector = self.replica.last_vector(sender)  # rebuilt (or the last it had)
        if vector is not None and msg.cluster_id != self.replica.cluster_id:
            vector = None  # another lineage's vector (joined): says nothing of our ops
            self.last_seen[sender] = time.monotonic()
        if vector is not None:
            self.note_vector(sender, dict(vector))
        else:
            self.last_seen[sender] = time.monotonic()

    def _notify(self, rows: tuple[RowUpdate, ...], replaced: bool) -> None:
        if not self.watchers:
            return
        for w in list(self.watchers):
            if replaced:
                self._cut(w, "the node rebuilt its tables; list and watch again")
                continue
            for row in rows:
                if w.accepts(row):
                    try:
                        w.queue.put_nowait(row)
                    except asyncio.QueueFull:
                        self._cut(w, "watcher fell behind; list and watch again")
                        break

    def _cut(self, w: Watcher, reason: str) -> None:
        w.overflowed, w.reason = True, reason
        self.watchers.discard(w)
        self.metrics.inc("watchers_cut")
        try:
            w.queue.put_nowait(None)
        except asyncio.QueueFull:
            pass

    def _fail_all(self, exc: Exception) -> None:
        for w in self._writes:
            if not w.future.done():
                w.future.set_exception(exc)
        for item in self._inbound:
            if not item.future.done():
                item.future.set_exception(exc)
        for _, _, q in self._quorum:
            if not q.future.done():
                q.future.set_exception(exc)
        for item in [*self._proposals_in, *self._proposing]:
            if not item.future.done():
                item.future.set_exception(exc)
        for w in self.slot_watchers:
            w.reason = str(exc)
            with contextlib.suppress(asyncio.QueueFull):
                w.queue.put_nowait(None)
        self._writes, self._inbound, self._quorum = [], [], []
        self._proposals_in, self._proposing = [], []

    # ------------------------------------------------------------------ queries
    # What servicers and links may ask; only the engine's own round touches the replica.
    def uptime_s(self) -> float:
        return time.monotonic() - self.started

    @property
    def cluster_id(self) -> bytes:
        return self.replica.cluster_id

    @property
    def genesis(self) -> Genesis:
        return self.replica.genesis

    @property
    def schema(self) -> Schema:
        return self.replica.schema

    @property
    def mutations_max(self) -> int:
        """Row mutations one op may carry: one write is one op."""
        return self.replica.config.mutations_max

    def row(self, table: str, key: tuple) -> dict[str, Value] | None:
        return self.replica.row(table, key)

    def rows(self, table: str) -> dict[tuple, dict[str, Value]]:
        return self.replica.rows(table)

    def version_vector(self) -> dict[str, int]:
        return self.replica.version_vector()

    def digest(self) -> Digest:
        r = self.replica
        return Digest(r.state_digest(), r.op_digest(), r.op_count())

    def forks(self) -> dict[str, int]:
        """Equivocating authors and the seq at which each forked."""
        return self.replica.forks()

    def counters(self) -> dict[str, int]:
        return dict(self.replica.counters)

    def invitations(self, node_id: str) -> list[Invitation]:
        """The invitations this node holds for node_id, oldest first (decision 0030)."""
        return list(getattr(self.replica.policy, "invitations", {}).get(node_id, []))
