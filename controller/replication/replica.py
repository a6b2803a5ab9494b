"""The Replica: validates, applies and syncs ops, and hands back effects (sans-I/O)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import nacl.exceptions

from .crdt import RowKey, RowState, Tables, row_version_bytes
from .dag import Dag, Past
from .digest import Ecmh, point_of, points_of
from .encoding import check_plain, decode, encode
from .errors import Reason, Rejected, ReplicationError, UsageError
from .hlc import HybridClock
from .identity import Genesis, Identity, NodeId, hash32, open_signed
from .messages import Message, OpBatch, Outbound, SyncRequest
from .op import (
    OP_ID_PERSON,
    Body,
    CustomBody,
    Op,
    OpId,
    RowMutation,
    RowsBody,
    check_custom_kind,
    check_rows_body,
    decode_op,
    sign_op,
)
from .op import op_signing_message as _signing_message
from .policy import INVITE, Policy, StaticPolicy
from .schema import DEFAULT_SCHEMA, Schema, Value
from .vectors import VectorDeltas

__all__ = [
    "Config",
    "Upsert",
    "Delete",
    "Mutation",
    "RowUpdate",
    "Compaction",
    "Behind",
    "Ready",
    "Replica",
    "RandomSource",
    "Verify",
]

Verify = Literal["all", "sample", "none"]


class RandomSource(Protocol):
    """What the replica needs from a random.Random (injected, so runs replay from a seed)."""

    def random(self) -> float: ...

    def sample(self, population: Sequence[Any], k: int) -> list[Any]: ...


@dataclass(frozen=True)
class Config:
    """Bounds and intervals. Every queue and batch has a named bound."""

    push_fanout: int = 3  # peers each new local op is pushed to at once
    sync_interval_ms: int = 200  # anti-entropy with one random peer this often
    gap_request_interval_ms: int = 50  # least time between gap-triggered requests to one peer
    sync_batch_ops_max: int = 512
    sync_batch_bytes_max: int = 1 << 20
    message_bytes_max: int = 8 << 20
    op_bytes_max: int = 1 << 20
    mutations_max: int = 10_000  # row mutations in one op
    parents_max: int = 16  # heads referenced by one op, besides the author's previous op
    pending_ops_max: int = 10_000  # ops waiting for parents
    future_ops_max: int = 1_000  # ops held because their hlc is too far ahead
    evidence_ops_max: int = 1_024
    wants_max: int = 64  # ops asked for by id in one sync request
    max_skew_ms: int = 60_000  # how far ahead of our clock an op's hlc may be


@dataclass(frozen=True)
class Upsert:
    """Set columns of a row, creating it (other columns NULL) if it is absent or deleted."""

    table: str
    key: tuple[Value, ...]
    values: Mapping[str, Value] = field(default_factory=dict)


@dataclass(frozen=True)
class Delete:
    table: str
    key: tuple[Value, ...]


Mutation = Upsert | Delete


@dataclass(frozen=True)
class RowUpdate:
    """A row's new materialised state: values when alive (None when deleted) and merge meta."""

    table: str
    key: tuple[Value, ...]
    values: dict[str, Value] | None
    meta: bytes  # canonical encoding of RowState.to_plain()


@dataclass(frozen=True)
class Compaction:
    """What a compaction changed (decision 0070), persisted in the same transaction as the
    Ready's ops: delete the logged ops of each author up to `base[author]`, write `rows`
    (the checkpoint's rows that changed since the last compaction: table, key, merge meta,
    ECMH point) and keep `record` (Replica.compaction_record's encoding) for recover().
    `archive` is what a subclass moves out of memory onto disk with this compaction
    (key, value: an agreement ledger's settled decisions, decision 0103); a store keeps
    every entry it was ever given and answers `archived(key)`."""

    base: Mapping[NodeId, int]
    rows: tuple[tuple[str, tuple, bytes, bytes], ...]
    record: bytes
    archive: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class Behind:
    """A peer's answer said it pruned ops this replica lacks (decision 0070): sync cannot
    bring them (their effect survives only in the checkpoint the peer was compacted to),
    so the node must start again from a snapshot of that checkpoint plus what it holds
    above it (controller/node/snapshot.py). `base` is the peer's pruned cut, as it claims
    it: only a checked snapshot is trusted."""

    peer: NodeId
    base: Mapping[NodeId, int]


@dataclass(frozen=True)
class Ready:
    """Effects to carry out, in this order:

    1. persist ops (append to the log, in order), evidence and rows (replace_rows first
       clears every materialised row) in ONE transaction, and make it durable;
    2. only then send messages, deliver ops to observers in order, and ack `acked` writes;
       `behind` (a peer pruned ops this replica lacks) asks the node for a snapshot;
    3. call advance(ready).
    """

    ops: tuple[Op, ...] = ()
    evidence: tuple[Op, ...] = ()
    rows: tuple[RowUpdate, ...] = ()
    replace_rows: bool = False
    messages: tuple[Outbound, ...] = ()
    acked: tuple[OpId, ...] = ()
    compaction: Compaction | None = None
    behind: Behind | None = None

    def __bool__(self) -> bool:
        return any(
            (self.ops, self.evidence, self.rows, self.replace_rows, self.messages, self.acked,
             self.compaction, self.behind)
        )


class Replica:
    """One node's copy of the replicated database.

    Inputs: write()/emit() (local changes), receive() (peer messages), tick() (time passes).
    Outputs: ready() -> Ready (see its docstring for the order), then advance().
    Queries: rows(), row(), version_vector(), state_digest(), op_digest(), counters.
    Faults of peers are counted under counters[reason], never raised; misuse raises UsageError.
    """

    def __init__(
        self,
        identity: Identity,
        genesis: Genesis,
        rng: RandomSource,
        *,
        config: Config | None = None,
        policy: Policy | None = None,
        schema: Schema = DEFAULT_SCHEMA,
        peers: Iterable[NodeId] | None = None,
    ) -> None:
        self.identity = identity
        self.node_id = identity.node_id
        self.genesis = genesis
        self.cluster_id = genesis.cluster_id
        self.config = config or Config()
        self.policy: Policy = policy or StaticPolicy.from_genesis(genesis)
        # Optional hook (ObservingPolicy): the policy sees every op as it joins the log.
        self._observe = getattr(self.policy, "observe", None)
        self.schema = schema
        self.rng = rng
        self.clock = HybridClock(self.config.max_skew_ms)
        self.counters: Counter[str] = Counter()
        self.dag = Dag(self.config.pending_ops_max, self.config.evidence_ops_max)
        self.tables = Tables(schema)
        members = genesis.member_ids if peers is None else peers
        self.peers: list[NodeId] = sorted(p for p in members if p != self.node_id)
        self._verify_keys: dict[NodeId, bytes] = {}  # public keys the policy gave
        self._future: list[Op] = []
        self._future_ids: set[OpId] = set()
        self._next_sync_ms: int | None = None
        self._last_request_ms: dict[NodeId, int] = {}
        self._sent: dict[NodeId, tuple[int, dict[NodeId, int]]] = {}  # peer -> (expiry, seqs)
        self._digest = Ecmh()
        self._row_points: dict[RowKey, bytes] = {}
        self._digest_dirty: set[RowKey] = set()
        # encode(row.to_plain()) of dirty rows, made by ready() for their RowUpdate and
        # reused by state_digest(); dropped when the row changes again.
        self._dirty_meta: dict[RowKey, bytes] = {}
        self._opset = Ecmh()
        self._opset_pending: list[OpId] = []
        # effects accumulated for the next Ready
        self._out_ops: list[Op] = []
        self._out_evidence: list[Op] = []
        self._out_rows: dict[RowKey, None] = {}
        self._out_replace = False
        self._out_messages: list[Outbound] = []
        self._out_acked: list[OpId] = []
        # This node's highest own seq whose Ready was carried out (committed): an effect
        # that depends on an own op (a decision counting our vote) waits for it.
        self.durable_seq = 0
        self._in_flight_own = 0
        self._in_flight = False
        # Joined lineages (after a decided merge): cluster id -> a replica of that lineage
        # whose applied ops also join this replica's tables and op set (join_lineage).
        self._lineages: dict[bytes, Replica] = {}
        self._host: Replica | None = None
        # Compaction (decision 0070): the rows at the pruned checkpoint (a fork found later
        # rebuilds the tables from them), and each peer's vector as its last sync request
        # reported it (what it holds, for peers that author no ops).
        self._base_rows: dict[RowKey, RowState] = {}
        self._base_points: dict[RowKey, bytes] | None = None  # read back by recover()
        self._pruned_opset = Ecmh()  # the ids of the pruned ops
        self._out_compaction: Compaction | None = None
        self._out_behind: Behind | None = None
        self._record_extra = b""  # the subclass's extra of the last compaction record
        self._named_dirty = False  # a named op adopted: the record is written again
        self.peer_vectors: dict[NodeId, dict[NodeId, int]] = {}
        # Peers sent vector deltas (vectors.py); None: every peer (the simulators). The node
        # daemon fills a set from its peers' hellos: older code refuses the longer messages.
        self.delta_peers: set[NodeId] | None = None
        self._vectors = VectorDeltas()

    # ------------------------------------------------------------------ local changes
    def write(self, mutations: Sequence[Mutation], now_ms: int) -> Op:
        """Group-commit local row changes into one signed op, applied here at once.

        Several mutations of one row coalesce in order. Acknowledge the op to clients
        when a later Ready lists its id in `acked` (after it is durable).
        """
        if not mutations:
            raise UsageError("write needs at least one mutation")
        try:
            body = RowsBody(tuple(self._plan(mutations)))
        except Rejected as exc:
            raise UsageError(str(exc)) from None
        return self._author(body, now_ms)

    def emit(self, kind: str, data: Any, now_ms: int) -> Op:
        """Author an op with a body the core does not interpret (e.g. kind 'vote')."""
        try:
            check_custom_kind(kind)
        except Rejected as exc:
            raise UsageError(str(exc)) from None
        try:
            check_plain(data)
        except Rejected as exc:
            raise UsageError(f"data must be plain CBOR: {exc}") from None
        return self._author(CustomBody(kind, data), now_ms)

    def _plan(self, mutations: Sequence[Mutation]) -> list[RowMutation]:
        plan: dict[RowKey, tuple[int, dict[str, Value]]] = {}
        for m in mutations:
            table = self.schema.table(m.table)
            key = table.check_key(m.key)
            rk = (m.table, key)
            if rk in plan:
                cl, values = plan[rk]
            else:
                row = self.tables.get(m.table, key)
                cl, values = (row.cl if row else 0), {}
            if isinstance(m, Upsert):
                given = table.check_values(m.values)
                if cl % 2 == 1:
                    values = {**values, **given}
                else:  # (re)create: every value column, so older lives cannot show through
                    cl += 1
                    values = {c.name: None for c in table.value_columns} | given
            elif cl % 2 == 1:
                cl, values = cl + 1, {}
            plan[rk] = (cl, values)
        return [RowMutation(t, k, cl, v) for (t, k), (cl, v) in plan.items() if cl > 0]

    def _author(self, body: Body, now_ms: int) -> Op:
        if self._host is not None:
            raise UsageError("a joined lineage is read-only: write through its host replica")
        seq = self.dag.last_seq(self.node_id) + 1
        parents = self.dag.choose_parents(self.node_id, self.config.parents_max)
        try:  # what a peer (and our own recovery) would refuse is never signed
            if isinstance(body, RowsBody):
                check_rows_body(body, self.config.mutations_max)
            self._check_policy(self.node_id, body, Past(self.dag, parents))
        except Rejected as exc:
            self.counters["refused_own"] += 1
            raise UsageError(f"peers would refuse this op: {exc}") from None
        hlc = self.clock.send(now_ms)
        for p in parents:  # hlc must not be below any parent's, whatever our wall clock says
            hlc = max(hlc, self.dag.find(p).hlc + 1)  # type: ignore[union-attr]
        self.clock.last = hlc
        op = sign_op(self.identity, self.cluster_id, seq, hlc, parents, body)
        if len(op.raw) > self.config.op_bytes_max:
            raise UsageError(f"op of {len(op.raw)} bytes exceeds op_bytes_max")
        self._apply(op)
        self._out_acked.append(op.id)
        for peer in self._sample(self._reachable_peers(), self.config.push_fanout):
            self._send(peer, OpBatch(self.cluster_id, self.node_id, (op.raw,)))
        return op

    # ------------------------------------------------------------------ peer input
    def receive(self, message: Message, now_ms: int) -> None:
        """Handle one decoded peer message (decode_message); faults are counted."""
        if message.cluster_id != self.cluster_id:
            joined = self._lineages.get(message.cluster_id)
            if joined is None:  # an unrelated cluster, or a lineage not joined (no merge)
                self.counters[Reason.WRONG_CLUSTER] += 1
                return
            joined.receive(message, now_ms)  # verified under its own cluster id and policy
            return
        sender = message.sender
        if message.resync:  # it could not rebuild our last vector: send it whole next time
            self._vectors.resync(sender)
        vector = self._whole_vector(message)
        if isinstance(message, SyncRequest):
            self._answer(message, vector, now_ms)
            return
        for pair in zip(message.evidence[::2], message.evidence[1::2], strict=True):
            self._receive_evidence(*pair)
        for raw in message.ops:
            self._receive_op(raw, now_ms)
        if sender not in self.peers:
            return
        if message.base is not None and self._lacks(message.base):
            self.counters["below_peer_checkpoint"] += 1
            self._out_behind = Behind(sender, dict(message.base))
        again = False
        if message.vector is not None:  # an answer to our request: one exchange, driven by us
            # A vector we could not rebuild: push back from the older one we hold, and ask
            # again at once (with resync, so the answer's vector comes whole).
            again = vector is None or message.resync
            if vector is None:
                vector = self._vectors.held(sender)
            # Push back first, so the peer has applied it when our next request arrives.
            pushed_all = True if vector is None else self._push_back(sender, vector, now_ms)
            again = again or message.more or not pushed_all
        if again or (self.dag.pending and self._may_request(sender, now_ms)):
            self._request(sender, now_ms)

    def receive_op(self, raw: bytes, now_ms: int) -> Reason | None:
        """Offer one op's bytes (e.g. from a client relay); returns the rejection, if any."""
        return self._receive_op(raw, now_ms)

    def _receive_op(self, raw: bytes, now_ms: int) -> Reason | None:
        try:
            if len(raw) > self.config.op_bytes_max:
                raise Rejected(Reason.TOO_LARGE, f"op of {len(raw)} bytes")
            op_id = hash32(raw, person=OP_ID_PERSON)
            if self._known(op_id):  # cheap: no decode for repeats
                raise Rejected(Reason.DUPLICATE)
            cfg = self.config
            op = decode_op(raw, self.schema, cfg.parents_max, cfg.mutations_max, op_id)
            self._accept(op, now_ms, verify=True)
        except Rejected as exc:
            self.counters[exc.reason] += 1
            return exc.reason
        return None

    def _known(self, op_id: OpId) -> bool:
        return self.dag.holds(op_id) or op_id in self.dag.pending or op_id in self._future_ids

    def _verify(self, op: Op) -> None:
        key = self._verify_keys.get(op.author)
        if key is None:
            key = self.policy.public_key(op.author)
            if key is None:
                raise Rejected(Reason.UNKNOWN_AUTHOR, op.author)
            if len(key) != 32:  # what VerifyKey refused before: a policy's bad key
                raise nacl.exceptions.ValueError("The key must be exactly 32 bytes long")
            self._verify_keys[op.author] = key
        if not open_signed(key, _signing_message(self.cluster_id, op.unsigned), op.signature):
            raise Rejected(Reason.BAD_SIGNATURE, repr(op))

    def _accept(self, op: Op, now_ms: int, verify: bool) -> None:
        """Validate op and apply it, buffer it, or keep it as evidence; raise Rejected."""
        dag = self.dag
        if self._known(op.id):
            raise Rejected(Reason.DUPLICATE)
        if verify:
            self._verify(op)
        if self.clock.too_far_ahead(op.hlc, now_ms):
            if len(self._future) >= self.config.future_ops_max:
                raise Rejected(Reason.FUTURE_FULL, repr(op))
            self._future.append(op)
            self._future_ids.add(op.id)
            self.counters["held_future"] += 1
            return
        if dag.below_base(op.author, op.seq):  # inside a pruned checkpoint: applied there
            if op.id in dag.waiting and dag.at(op.author, op.seq) is None:
                self._adopt_named(op)
                return
            self.counters["below_checkpoint"] += 1
            return
        held = dag.at(op.author, op.seq)
        if held is not None:  # same (author, seq), different bytes: signed proof of a fork
            self._equivocation(held, op)
            raise Rejected(Reason.EQUIVOCATION, repr(op))
        missing = [p for p in op.parents if not dag.holds(p)]
        if missing:
            evicted = dag.buffer(op, missing)
            self.counters["buffered"] += 1
            if evicted is not None:
                self.counters[Reason.BUFFER_FULL] += 1
            return
        self._check_and_apply(op)
        self._wake(op.id)

    def _adopt_named(self, op: Op) -> None:
        """A pruned op that a buffered op names as a parent: an op authored by a node that
        was below our pruned cut when it wrote (decision 0070, snapshot catch-up). Kept,
        like the pruned ops logged ops named at the pruning, and written into the
        compaction record with the next Ready (a store reopened from its tail needs it);
        the waiting op is then checked as usual. Its signature was checked; that it is
        the op pruned at (author, seq) rests on the author not having forked there."""
        self.dag.adopt_named(op)
        self.counters["named_adopted"] += 1
        self._named_dirty = True
        self._wake(op.id)

    def _check_and_apply(self, op: Op) -> None:
        """Checks that need the parents present; then apply (or keep a forked op)."""
        dag = self.dag
        held = dag.at(op.author, op.seq)
        if held is not None:
            self._equivocation(held, op)
            raise Rejected(Reason.EQUIVOCATION, repr(op))
        parents = [dag.find(p) for p in op.parents]
        own = parents[0] if op.seq > 1 else None
        if own is not None and (own.author != op.author or own.seq != op.seq - 1):
            raise Rejected(Reason.BAD_PARENTS, "parents[0] is not the author's previous op")
        others = parents[1:] if op.seq > 1 else parents
        if any(p.author == op.author for p in others):  # type: ignore[union-attr]
            raise Rejected(Reason.BAD_PARENTS, "an older own op listed as a head")
        if own is not None and op.hlc <= own.hlc:
            raise Rejected(Reason.HLC_REGRESSION, repr(op))
        if any(op.hlc < p.hlc for p in others):  # type: ignore[union-attr]
            raise Rejected(Reason.HLC_REGRESSION, repr(op))
        self._check_policy(op.author, op.body, Past(dag, op.parents))
        if own is not None and (
            dag.last_seq(op.author) != op.seq - 1
            or (prev := dag.at(op.author, op.seq - 1)) is None
            or prev.id != own.id
        ):
            # The previous op is evidence, not our log: this op continues a forked branch.
            if dag.keep_evidence(op):
                self._out_evidence.append(op)
            return
        self.clock.observe(op.hlc, 0)
        self._apply(op)

    def _check_policy(self, author: NodeId, body: Body, past: Past) -> None:
        """The policy's verdict on an op, in its causal past: the same at the author (before
        it signs) as at every receiver and at recovery."""
        if not self.policy.is_member(author, past):
            raise Rejected(Reason.NOT_MEMBER, author)
        if isinstance(body, RowsBody):
            for table in sorted({m.table for m in body.mutations}):
                if not self.policy.can_write(author, table, past):
                    raise Rejected(Reason.FORBIDDEN, f"{author} may not write {table}")
        elif not self.policy.can_emit(author, body.kind, past):
            raise Rejected(Reason.FORBIDDEN, f"{author} may not emit {body.kind}")

    def _wake(self, op_id: OpId) -> None:
        queue = [op_id]
        while queue:  # iterative: a long chain of waiters must not exhaust the stack
            for child in self.dag.woken_by(queue.pop()):
                try:
                    self._check_and_apply(child)
                except Rejected as exc:
                    self.counters[exc.reason] += 1
                    self._drop_waiters(child.id, exc.reason)
                    continue
                queue.append(child.id)

    def _drop_waiters(self, op_id: OpId, reason: Reason) -> None:
        """Descendants of an invalid op can never be applied: reject them too."""
        queue = [op_id]
        while queue:
            for waiter in self.dag.waiting.pop(queue.pop(), ()):
                if waiter in self.dag.pending:
                    self.dag.unbuffer(waiter)
                    self.counters[reason] += 1
                    queue.append(waiter)

    def _apply(self, op: Op) -> None:
        self.dag.append(op)
        self.counters["applied"] += 1
        if self._observe is not None:
            self._observe(op)
        self._out_ops.append(op)
        self._opset_pending.append(op.id)
        if isinstance(op.body, RowsBody) and not self.dag.excluded(op):
            self._merge(op)
        if self._host is not None:
            self._host._absorb(self, op)

    def _merge(self, op: Op) -> None:
        merge, out_rows, dirty = self.tables.merge, self._out_rows, self._digest_dirty
        metas = self._dirty_meta
        for m in op.body.mutations:  # type: ignore[union-attr]
            if merge(m, op.hlc, op.author):
                rk = (m.table, m.key)
                out_rows[rk] = None
                dirty.add(rk)
                if metas:
                    metas.pop(rk, None)

    # ------------------------------------------------------------------ equivocation
    def _equivocation(self, held: Op, other: Op) -> None:
        dag = self.dag
        if dag.keep_evidence(other):
            self._out_evidence.append(other)
        self._wake(other.id)  # ops that name the other branch as parent may now proceed
        if dag.note_fork(held.author, held.seq, held.id, other.id):
            self._rebuild_tables()

    def _receive_evidence(self, raw_a: bytes, raw_b: bytes) -> None:
        try:
            cfg = self.config
            a, b = (
                decode_op(r, self.schema, cfg.parents_max, cfg.mutations_max)
                for r in (raw_a, raw_b)
            )
            if (a.author, a.seq) != (b.author, b.seq) or a.id == b.id:
                raise Rejected(Reason.BAD_EVIDENCE, "not two ops for one (author, seq)")
            self._verify(a)
            self._verify(b)
        except Rejected:
            self.counters[Reason.BAD_EVIDENCE] += 1
            return
        known = self.dag.forks.get(a.author)
        if known is not None and known <= a.seq:
            return
        for op in (a, b):
            if not self.dag.holds(op.id) and self.dag.keep_evidence(op):
                self._out_evidence.append(op)
                self._wake(op.id)
        self.counters["evidence_learned"] += 1
        if self.dag.note_fork(a.author, a.seq, a.id, b.id):
            self._rebuild_tables()

    def _rebuild_tables(self) -> None:
        """Recompute all rows from the log (after a fork excluded some ops): from the rows
        at the pruned checkpoint, if any, then the ops held."""
        self.tables.clear()
        for (table, key), row in self._base_rows.items():
            copy = self.tables.rows[table][key] = RowState()
            copy.cl, copy.cols = row.cl, dict(row.cols)
        for op in self.dag.tail():
            if isinstance(op.body, RowsBody) and not self.dag.excluded(op):
                for m in op.body.mutations:
                    self.tables.merge(m, op.hlc, op.author)
        for joined in self._lineages.values():
            for op in joined.log():
                if isinstance(op.body, RowsBody) and not joined.dag.excluded(op):
                    for m in op.body.mutations:
                        self.tables.merge(m, op.hlc, op.author)
        self._row_points.clear()
        self._digest = Ecmh()
        self._digest_dirty = {(t, k) for t, k, _ in self.tables.all_rows()}
        self._dirty_meta.clear()
        self._out_rows = dict.fromkeys(self._digest_dirty)
        self._out_replace = True
        self.counters["rebuilds"] += 1
        if self._host is not None:  # a fork in a joined lineage: the host's rows too
            self._host._rebuild_tables()

    # ------------------------------------------------------------------ sync
    def tick(self, now_ms: int) -> None:
        """Let time pass: release held future ops, run anti-entropy when it is due."""
        if self._future:
            due = [op for op in self._future if not self.clock.too_far_ahead(op.hlc, now_ms)]
            self._future = [op for op in self._future if op not in due]
            self._future_ids.difference_update(op.id for op in due)
            for op in due:
                try:
                    self._accept(op, now_ms, verify=False)
                except Rejected as exc:
                    self.counters[exc.reason] += 1
        if self._next_sync_ms is None:
            self._next_sync_ms = now_ms + int(self.rng.random() * self.config.sync_interval_ms)
        if now_ms >= self._next_sync_ms and self.peers:
            self._next_sync_ms = now_ms + self.config.sync_interval_ms
            self._request(self._sample(self._reachable_peers(), 1)[0], now_ms)
        for joined in self._lineages.values():
            joined.tick(now_ms)

    def sync_with(self, peer: NodeId, now_ms: int) -> None:
        """Start an anti-entropy exchange with peer now (the node daemon may call this)."""
        self._request(peer, now_ms)

    def _may_request(self, peer: NodeId, now_ms: int) -> bool:
        last = self._last_request_ms.get(peer)
        return last is None or now_ms - last >= self.config.gap_request_interval_ms

    def _request(self, peer: NodeId, now_ms: int) -> None:
        self._last_request_ms[peer] = now_ms
        wants = tuple(self.dag.wanted(self.config.wants_max))
        self._send(
            peer,
            SyncRequest(
                self.cluster_id, self.node_id, self.dag.vector(), wants, dict(self.dag.forks)
            ),
        )

    def _batch(
        self, peer: NodeId, vector: Mapping[NodeId, int], ops: list[bytes], now_ms: int
    ) -> bool:
        """Append to ops what peer lacks, in causal order, within bounds; True if more.

        Ops sent to the peer in the last sync_interval_ms count as held by it, so two
        exchanges that cross in flight do not send the same ops twice; after that the
        hint expires and anything lost in transit is sent again.
        """
        cfg = self.config
        have = dict(vector)
        hint = self._sent.get(peer)
        if hint is not None and hint[0] > now_ms:
            for author, seq in hint[1].items():
                if seq > have.get(author, 0):
                    have[author] = seq
        else:
            hint = (now_ms + cfg.sync_interval_ms, {})
            self._sent[peer] = hint
        sent = hint[1]
        size = sum(len(r) for r in ops)
        for op in self.dag.missing_for(have):
            if len(ops) >= cfg.sync_batch_ops_max or size + len(op.raw) > cfg.sync_batch_bytes_max:
                return True
            ops.append(op.raw)
            size += len(op.raw)
            sent[op.author] = op.seq
        return False

    def _lacks(self, base: Mapping[NodeId, int]) -> bool:
        """Does this replica lack ops inside a peer's pruned cut?"""
        vector = self.dag.vector()
        return any(vector.get(a, 0) < s for a, s in base.items())

    def _whole_vector(self, message: Message) -> dict[NodeId, int] | None:
        """The whole vector a message carries (rebuilt from a delta); None when it carries
        none, or a delta this replica cannot rebuild (vectors.py)."""
        if message.vector is None:
            return None
        if message.sender in self.peers:
            whole = self._vectors.incoming(
                message.sender, message.vector, message.vector_base, message.vector_hash)
            if whole is None:
                self.counters["vector_resync"] += 1  # a delta on a vector we do not hold
            return whole
        return None if message.vector_base else dict(message.vector)  # not remembered

    def send_whole_vector(self, peer: NodeId) -> None:
        """Send peer the next vector whole (e.g. on a new link: the old one may have lost
        what it carried)."""
        self._vectors.resync(peer)

    def last_vector(self, peer: NodeId) -> dict[NodeId, int] | None:
        """The last whole vector a message from peer carried (rebuilt from deltas)."""
        return self._vectors.held(peer)

    def _answer(self, req: SyncRequest, vector: dict[NodeId, int] | None, now_ms: int) -> None:
        base = None
        if vector is not None:
            if req.sender in self.peers:
                self.peer_vectors[req.sender] = vector
            if self.dag.lacks_pruned(vector):
                # It lacks ops pruned here (decision 0070): say so, with the pruned cut, so
                # it can fetch a snapshot; the ops above the cut are sent as usual. Only to
                # a peer that takes the newer layouts: older code refuses the field.
                self.counters["snapshot_needed"] += 1
                if self.delta_peers is None or req.sender in self.delta_peers:
                    base = dict(self.dag.base)
        else:  # a delta we could not rebuild: batch from the older vector, report nothing
            vector = self._vectors.held(req.sender)
        wanted = (self.dag.find(w) for w in req.wants[: self.config.wants_max])
        ops = [op.raw for op in wanted if op is not None]
        more = False if vector is None else self._batch(req.sender, vector, ops, now_ms)
        evidence: list[bytes] = []
        for author, seq in sorted(self.dag.forks.items()):
            theirs = req.forks.get(author)
            if theirs is None or theirs > seq:
                for op_id in self.dag.fork_proof[author]:
                    proof = self.dag.find(op_id)
                    assert proof is not None
                    evidence.append(proof.raw)
        vector = self.dag.vector()
        answer = OpBatch(
            self.cluster_id, self.node_id, tuple(ops), vector, more, tuple(evidence), base
        )
        self._send(req.sender, answer)

    def _push_back(self, peer: NodeId, vector: Mapping[NodeId, int], now_ms: int) -> bool:
        """After an answer: send the peer one batch of what it lacks; True if that was all."""
        ops: list[bytes] = []
        more = self._batch(peer, vector, ops, now_ms)
        if ops:
            self._send(peer, OpBatch(self.cluster_id, self.node_id, tuple(ops)))
        return not more

    def _send(self, peer: NodeId, message: Message) -> None:
        changes: dict[str, Any] = {}
        if message.vector is not None and (self.delta_peers is None or peer in self.delta_peers):
            entries, base, digest = self._vectors.outgoing(peer, message.vector)
            changes.update(vector=entries, vector_base=base, vector_hash=digest)
        if peer in self._vectors.resync_due:  # it sent us a delta: it takes the flag
            self._vectors.resync_due.discard(peer)
            changes["resync"] = True
        if changes:
            message = replace(message, **changes)
        self._out_messages.append(Outbound(peer, message))

    def _sample(self, population: list[NodeId], k: int) -> list[NodeId]:
        return self.rng.sample(population, min(k, len(population)))

    # ------------------------------------------------------------------ effects
    def has_ready(self) -> bool:
        return bool(
            self._out_ops
            or self._out_evidence
            or self._out_rows
            or self._out_replace
            or self._out_messages
            or self._out_acked
            or self._out_compaction is not None
            or self._out_behind is not None
            or self._named_dirty
        )

    def ready(self) -> Ready:
        """Collect the effects so far (see Ready for the order); then call advance()."""
        if self._in_flight:
            raise UsageError("ready() called again before advance()")
        if self._named_dirty:  # the record must name the adopted ops (_adopt_named)
            self._named_dirty = False
            held = self._out_compaction
            self._out_compaction = Compaction(
                dict(self.dag.base), held.rows if held is not None else (),
                self.compaction_record(self._record_extra),
                held.archive if held is not None else (),
            )
        rows = []
        tables, schema = self.tables.rows, self.schema
        dirty, metas = self._digest_dirty, self._dirty_meta
        for rk in self._out_rows:
            table, key = rk
            row = tables[table].get(key)
            assert row is not None, rk
            meta = encode(row.to_plain())
            if rk in dirty:
                metas[rk] = meta
            values = row.values(schema.table(table).value_names) if row.cl % 2 == 1 else None
            rows.append(RowUpdate(table, key, values, meta))
        rd = Ready(
            tuple(self._out_ops),
            tuple(self._out_evidence),
            tuple(rows),
            self._out_replace,
            tuple(self._out_messages),
            tuple(self._out_acked),
            self._out_compaction,
            self._out_behind,
        )
        self._out_ops, self._out_evidence, self._out_rows = [], [], {}
        self._out_replace, self._out_messages, self._out_acked = False, [], []
        self._out_compaction, self._out_behind = None, None
        self._in_flight = True
        me = self.node_id
        self._in_flight_own = max((op.seq for op in rd.ops if op.author == me), default=0)
        return rd

    def advance(self, ready: Ready) -> None:
        """Confirm that ready's effects were carried out."""
        if not self._in_flight:
            raise UsageError("advance() without ready()")
        self._in_flight = False
        self.durable_seq = max(self.durable_seq, self._in_flight_own)

    # ------------------------------------------------------------------ membership
    def set_peers(self, peers: Iterable[NodeId]) -> None:
        """Replace the nodes this replica pushes to and syncs with (e.g. after a join).

        Which authors' ops are accepted is the policy's business, not this list's.
        """
        self.peers = sorted({p for p in peers if p != self.node_id})
        self._vectors.set_peers(self.peers)

    # The peers the node has a working link to (None: not told, every peer). Pushes and
    # anti-entropy pick among these, so a node whose only link is a hub (an edge site's
    # node, linked to the cloud's) syncs with the hub every round, not with a random
    # member it cannot reach: 1 round in N-1 reached it before (decision 0097).
    reachable: frozenset[NodeId] | None = None

    def set_reachable(self, peers: Iterable[NodeId] | None) -> None:
        """Tell which peers the node can reach now (None: all of them)."""
        self.reachable = None if peers is None else frozenset(peers)

    def _reachable_peers(self) -> list[NodeId]:
        """The peers to push to and sync with: the reachable ones, or every peer when
        none is (a node alone keeps trying them all, as before it was told anything)."""
        if self.reachable is None:
            return self.peers
        return [p for p in self.peers if p in self.reachable] or self.peers

    def is_member_now(self, node_id: NodeId | None = None) -> bool:
        """Would an op authored now by node_id (default: this node) pass the membership
        check everywhere? A node that is not must not write: every op built on a refused
        op is refused too."""
        author = self.node_id if node_id is None else node_id
        parents = self.dag.choose_parents(author, self.config.parents_max)
        return self.policy.is_member(author, Past(self.dag, parents))

    # ------------------------------------------------------------------ joined lineages
    def join_lineage(self, other: Replica) -> None:
        """Join another lineage's op DAG to this one (after a merge decided elsewhere).

        `other` is a replica of that lineage on this node (same schema, e.g. recovered
        from this node's store of that lineage). From now on its applied row ops merge
        into this replica's tables by the CRDT rules, its op ids count in op_digest(), and
        receive() hands it the messages of its cluster id, so its ops are verified under
        their own cluster id and checked against their own lineage's policy. It never
        authors (write/emit raise). The caller drives its ready()/advance() cycle with
        that lineage's store, and joins it again after a restart. The replication layer
        does not decide whether a merge is allowed: the agreement layer gates this call.
        """
        if other.cluster_id == self.cluster_id or other.cluster_id in self._lineages:
            raise UsageError("that lineage is this replica's own or already joined")
        if other._host is not None or other._lineages or self._host is not None:
            raise UsageError("lineages join one level deep")
        if other.schema.names != self.schema.names:
            raise UsageError("a joined lineage must have the same schema")
        other._host = self
        self._lineages[other.cluster_id] = other
        for op in other.log():
            self._absorb(other, op)

    def lineages(self) -> dict[bytes, Replica]:
        """Joined lineages by cluster id (drive each one's ready()/advance())."""
        return dict(self._lineages)

    def _absorb(self, source: Replica, op: Op) -> None:
        """A joined lineage applied op: it joins our op set and, for rows, our tables."""
        self._opset_pending.append(op.id)
        self.clock.last = max(self.clock.last, op.hlc)
        if isinstance(op.body, RowsBody) and not source.dag.excluded(op):
            self._merge(op)

    # ------------------------------------------------------------------ queries
    def version_vector(self) -> dict[NodeId, int]:
        return self.dag.vector()

    def op_count(self) -> int:
        """Number of ops in the log (pruned ones included)."""
        return self.dag.pruned + len(self.dag.ops)

    def forks(self) -> dict[NodeId, int]:
        """Authors proven to equivocate, with the lowest forked seq (their ops from it on
        are kept but never change the tables)."""
        return dict(self.dag.forks)

    def op(self, op_id: OpId) -> Op | None:
        return self.dag.find(op_id)

    def log(self) -> list[Op]:
        """The applied ops held, in log order (a causal order); pruned ones are gone."""
        return list(self.dag.tail())

    def rows(self, table: str) -> dict[tuple, dict[str, Value]]:
        """Alive rows of a table: primary key -> non-key column values."""
        return dict(self.tables.alive(table))

    def row(self, table: str, key: tuple) -> dict[str, Value] | None:
        self.schema.table(table)
        r = self.tables.get(table, tuple(key))
        if r is None or not r.alive:
            return None
        return r.values(tuple(c.name for c in self.schema.table(table).value_columns))

    def state_digest(self) -> bytes:
        """ECMH over all row versions (tombstones included); 32 bytes.

        Folds the rows changed since the last fold in one pass: each changed row's old
        point out, its new point in (one point per row version, however many ops wrote it)."""
        self._fold_rows(len(self._digest_dirty))
        return self._digest.value

    def op_digest(self) -> bytes:
        """ECMH over the ids of the logged ops; 32 bytes."""
        self._fold_opset(len(self._opset_pending))
        return self._opset.value

    def fold_digests(self, points_max: int) -> int:
        """Fold at most points_max points of the digests' pending work (op ids logged, rows
        changed) ahead of a digest request; returns how many points are still pending.

        The digests are the same whenever they are folded. A node that calls this when idle
        (during a partition, say) makes the digests asked for after a heal pay only for what
        the heal brought (decision 0099)."""
        if points_max < 0:
            raise UsageError("points_max is not negative")
        done = self._fold_opset(points_max)
        self._fold_rows(points_max - done)
        return len(self._digest_dirty) + len(self._opset_pending)

    def _fold_opset(self, limit: int) -> int:
        pending = self._opset_pending
        if not pending or limit <= 0:
            return 0
        batch = pending[:limit]
        del pending[:limit]
        self._opset.update(points_of(batch, person=b"synod-opset"))
        return len(batch)

    def _fold_rows(self, limit: int) -> None:
        dirty = self._digest_dirty
        if not dirty or limit <= 0:
            return
        if limit >= len(dirty):
            batch, self._digest_dirty = list(dirty), set()
        else:  # any subset: the sum does not depend on the order of folding
            batch = [dirty.pop() for _ in range(limit)]
        points, tables, metas = self._row_points, self.tables.rows, self._dirty_meta
        old = [p for p in map(points.get, batch) if p is not None]
        versions = []
        for rk in batch:
            table, key = rk
            row = tables[table].get(key)
            assert row is not None, rk
            versions.append(row_version_bytes(table, key, row, metas.pop(rk, None)))
        new = points_of(versions)
        points.update(zip(batch, new, strict=True))
        self._digest.update(new, old)
        # ready() keeps encodings of dirty rows only, so none outlives the dirty set
        assert self._digest_dirty or not metas, "kept row encodings of clean rows"

    # ------------------------------------------------------------------ recovery
    @classmethod
    def recover(
        cls,
        identity: Identity,
        genesis: Genesis,
        rng: RandomSource,
        log: Iterable[bytes],
        evidence: Iterable[bytes] = (),
        *,
        verify: Verify = "all",
        sample_every: int = 16,
        compaction: tuple[bytes, Iterable[tuple[str, tuple, bytes, bytes]]] | None = None,
        **kwargs: Any,
    ) -> Replica:
        """Rebuild a replica from its stored log (in log order) and evidence.

        Checks the hash links, seq contiguity, hlc order and policy of every op, and the
        signatures of all ops, every `sample_every`-th op ('sample'), or none. Raises
        LogError naming the position of the first bad op. Produces no effects.

        `compaction` is a store's (record, checkpoint rows) after a compaction: the log is
        then the tail above it (signatures of what the record holds are checked unless
        verify is 'none'; a bad record is a LogError at position -2).
        """
        replica = cls(identity, genesis, rng, **kwargs)
        cfg = replica.config
        restored: list[Op] = []
        if compaction is not None:
            try:
                restored = replica._restore(compaction[0], compaction[1], verify != "none")
            except Rejected as exc:
                raise LogError(-2, exc) from None
        # Evidence first: a logged op may name the other branch of a fork as a parent
        # (it was applied once that branch arrived as evidence); forks are noted after.
        kept: list[Op] = []
        for raw in evidence:
            try:
                op = decode_op(raw, replica.schema, cfg.parents_max, cfg.mutations_max)
                replica._verify(op)
            except Rejected as exc:
                raise LogError(-1, exc) from None
            replica.dag.keep_evidence(op)
            kept.append(op)
        for position, raw in enumerate(log):
            try:
                op = decode_op(raw, replica.schema, cfg.parents_max, cfg.mutations_max)
                check_sig = verify == "all" or (verify == "sample" and position % sample_every == 0)
                if check_sig:
                    replica._verify(op)
                if any(not replica.dag.holds(p) for p in op.parents):
                    raise Rejected(Reason.BAD_PARENTS, "a parent is not earlier in the log")
                if replica.dag.at(op.author, op.seq) is not None:
                    raise Rejected(Reason.EQUIVOCATION, "two logged ops for one (author, seq)")
                replica.dag.evidence.pop(op.id, None)  # logged after all: not evidence
                replica._check_and_apply(op)
                if replica.dag.at(op.author, op.seq) is not op:
                    raise Rejected(Reason.BAD_PARENTS, "logged op does not extend its chain")
            except Rejected as exc:
                raise LogError(position, exc) from None
        first: dict[tuple[NodeId, int], OpId] = {}
        for op in kept:
            held = replica.dag.at(op.author, op.seq)
            other = held.id if held is not None else first.setdefault((op.author, op.seq), op.id)
            if other != op.id:
                replica.dag.note_fork(op.author, op.seq, other, op.id)
        if replica.dag.forks:
            replica._rebuild_tables()
        if verify != "none":
            try:
                for op in restored:
                    replica._verify(op)
            except Rejected as exc:
                raise LogError(-2, exc) from None
        last_own = replica.dag.at(replica.node_id, replica.dag.last_seq(replica.node_id))
        if last_own is not None:
            replica.clock.last = max(replica.clock.last, last_own.hlc)
            replica.durable_seq = last_own.seq  # a logged op was stored
        replica._out_ops, replica._out_evidence, replica._out_rows = [], [], {}
        replica._out_replace, replica._out_acked = False, []
        replica.counters.clear()
        return replica

    def compact(
        self,
        cut: Mapping[NodeId, int],
        rows: Mapping[RowKey, RowState],
        *,
        points: Mapping[RowKey, bytes] | None = None,
        extra: bytes = b"",
        archive: tuple[tuple[str, bytes], ...] = (),
    ) -> list[OpId]:
        """Forget the ops inside cut, whose rows are `rows` (the state at an agreed checkpoint
        every peer holds: the caller decides that; decision 0070). Returns the pruned ids.

        `rows` are kept as given (never changed here: copied before a rebuild merges into
        them); `points` are their ECMH points (computed here when missing). A fork found
        later below the cut excludes the author from the cut on. The next Ready carries a
        Compaction for the store; `extra` is kept in its record for a subclass
        (_restore_extra), and `archive` goes to the store with it (Compaction.archive).
        Pruned ops that _retain() wants stay readable (dag.retained)."""
        dag = self.dag
        cut = {a: s for a, s in cut.items() if s > dag.base.get(a, 0)}
        if not cut:
            return []
        vector = dag.vector()
        if any(vector.get(a, 0) < s for a, s in cut.items()):
            raise UsageError("compact: the cut holds ops this replica lacks")
        old_rows, self._base_rows = self._base_rows, dict(rows)
        self.op_digest()  # fold the ids waiting for the op digest: they would pile up
        gone = dag.prune(dict(cut))
        self._fold_pruned_opset(gone)
        retain = self._retain
        kept = {i: op for i, op in dag.retained.items() if retain(op)}
        kept.update((op.id, op) for op in gone if retain(op))
        dag.retained = kept
        changed: dict[RowKey, tuple[str, tuple, bytes, bytes]] = {}
        if self._out_compaction is not None:  # two compactions before one Ready
            changed = {(t, k): (t, k, m, p) for t, k, m, p in self._out_compaction.rows}
            archive = (*self._out_compaction.archive, *archive)
        for rk, row in self._base_rows.items():
            if old_rows.get(rk) is not row:
                point = points.get(rk) if points is not None else None
                if point is None:
                    point = point_of(row_version_bytes(rk[0], rk[1], row))
                changed[rk] = (rk[0], rk[1], encode(row.to_plain()), point)
        self._record_extra = extra
        self._out_compaction = Compaction(
            dict(dag.base), tuple(changed.values()), self.compaction_record(extra), archive
        )
        self.counters["pruned"] += len(gone)
        return [op.id for op in gone]

    def _fold_pruned_opset(self, gone: list[Op]) -> None:
        """Add the pruned ids to the pruned op-set digest, from whichever side is smaller:
        the pruned ops, or the whole set (op_digest, just folded) less the ops still held."""
        person = b"synod-opset"
        if len(gone) <= len(self.dag.ops):
            for op in gone:
                self._pruned_opset.add(point_of(op.id, person=person))
            return
        acc = self._opset.copy()
        for op_id in self.dag.ops:
            acc.sub(point_of(op_id, person=person))
        self._pruned_opset = acc

    def _retain(self, op: Op) -> bool:
        """Must this pruned op stay readable (and be stored with the compaction)? The
        invitations a policy still reads; subclasses add what they need (their votes)."""
        return isinstance(op.body, CustomBody) and op.body.kind == INVITE

    def compaction_record(self, extra: bytes = b"") -> bytes:
        """What recover() needs besides the checkpoint's rows and the tail of the log: per
        author the seqs pruned and its last pruned op (the frontier), the other pruned ops
        logged ops name (Dag.named), the pruned halves of fork proofs, the forks, how many
        ops were pruned, their op-set digest, the retained ops, and the subclass's
        `extra`."""
        dag = self.dag
        return encode(
            {
                "base": dict(sorted(dag.base.items())),
                "frontier": [op.raw for _, op in sorted(dag.frontier.items())],
                "named": [op.raw for op in dag.named()],
                "proofs": [op.raw for op in dag.proofs()],
                "forks": dict(sorted(dag.forks.items())),
                "fork_proof": {a: list(p) for a, p in sorted(dag.fork_proof.items())},
                "pruned": dag.pruned,
                "opset": self._pruned_opset.value,
                "retained": [op.raw for op in dag.retained.values()],
                "extra": extra,
            }
        )

    def _restore(
        self, record: bytes, base_rows: Iterable[tuple[str, tuple, bytes, bytes]], verify: bool
    ) -> list[Op]:
        """Start from a compaction read back from a store (recover(), before the tail)."""
        try:
            plain = decode(record)
            base, pruned, opset = plain["base"], plain["pruned"], plain["opset"]
            forks, fork_proof, extra = plain["forks"], plain["fork_proof"], plain["extra"]
            raws = {k: plain[k] for k in ("frontier", "named", "proofs", "retained")}
        except Exception as exc:
            raise Rejected(Reason.MALFORMED, f"compaction record: {exc!r}"[:200]) from None
        if not (
            isinstance(base, dict) and all(isinstance(a, str) and type(n) is int and n > 0
                                           for a, n in base.items())
            and type(pruned) is int and isinstance(opset, bytes) and len(opset) == 32
            and isinstance(extra, bytes) and isinstance(forks, dict)
            and all(isinstance(a, str) and type(n) is int and n > 0 for a, n in forks.items())
            and isinstance(fork_proof, dict) and set(fork_proof) == set(forks)
            and all(isinstance(p, list) and len(p) == 2
                    and all(isinstance(i, bytes) and len(i) == 32 for i in p) and p[0] != p[1]
                    for p in fork_proof.values())
            and all(isinstance(v, list) and all(isinstance(r, bytes) for r in v)
                    for v in raws.values())
        ):
            raise Rejected(Reason.MALFORMED, "compaction record: bad shape")
        cfg, dag = self.config, self.dag
        ops = {
            k: [decode_op(r, self.schema, cfg.parents_max, cfg.mutations_max) for r in v]
            for k, v in raws.items()
        }
        for op in ops["retained"]:
            dag.retained[op.id] = op
            if self._observe is not None:
                self._observe(op)
            self._restore_retained(op)
        for op in ops["frontier"] + ops["named"] + ops["proofs"]:
            if op.seq > base.get(op.author, 0):
                raise Rejected(Reason.BAD_PARENTS, f"kept op {op!r} above the pruned cut")
        # The frontier is each pruned author's last op, exactly: later ops name it.
        if sorted((op.author, op.seq) for op in ops["frontier"]) != sorted(base.items()):
            raise Rejected(Reason.BAD_PARENTS, "compaction record: the frontier is not one "
                           "op per pruned author at its pruned seq")
        dag.restore(base, ops["frontier"], ops["named"], ops["proofs"], pruned)
        dag.forks = dict(forks)
        dag.fork_proof = {a: (p[0], p[1]) for a, p in fork_proof.items()}
        points: dict[RowKey, bytes] = {}
        names = set(self.schema.names)
        for i, (table, key, meta, point) in enumerate(base_rows):
            if table not in names or not isinstance(point, bytes) or len(point) != 32:
                raise Rejected(Reason.MALFORMED, f"checkpoint row {i}: table or point")
            try:
                if not all(isinstance(k, int | float | str | bytes | bool) or k is None
                           for k in key):
                    raise ValueError("a key value that is not a scalar")
                rk = (table, tuple(key))
                row = RowState.from_plain(decode(meta))
                check_plain(list(rk[1]))
            except Exception as exc:  # noqa: BLE001 - stored or received bytes
                raise Rejected(Reason.MALFORMED, f"checkpoint row {i}: {exc!r}"[:200]) from None
            self._base_rows[rk] = row
            live = self.tables.rows[table][rk[1]] = RowState()
            live.cl, live.cols = row.cl, dict(row.cols)
            if verify:  # the sum is checked against the certified checkpoint by the caller
                point = point_of(row_version_bytes(table, rk[1], row))
            points[rk] = point
            self._digest.add(point)
        self._row_points = dict(points)
        self._base_points = points
        self._pruned_opset = Ecmh(opset)
        self._opset = Ecmh(opset)
        self._record_extra = extra
        more = self._restore_extra(extra)
        # Signatures are checked once the evidence and the tail are read too (recover): a
        # voter's key comes from a decided membership whose votes may be anywhere in them.
        return [op for k in ("retained", "frontier", "named", "proofs") for op in ops[k]] + more

    def _restore_retained(self, op: Op) -> None:
        """A retained op read back by recover() (subclasses index their votes here)."""

    def _restore_extra(self, extra: bytes) -> list[Op]:
        """The `extra` of the compaction record read back by recover(); returns the ops it
        carries, for recover() to verify."""
        return []

    def rematerialise(self) -> None:
        """Ask for every row to be written afresh (when the stored tables disagree)."""
        self._out_rows = {(t, k): None for t, k, _ in self.tables.all_rows()}
        self._out_replace = True


class LogError(ReplicationError):
    """A stored log failed verification; position is its index in the log (-1: evidence)."""

    def __init__(self, position: int, cause: Rejected) -> None:
        where = {-1: "evidence", -2: "compaction record"}.get(position, f"op #{position}")
        super().__init__(f"{where}: {cause}")
        self.position = position
        self.cause = cause


__all__ += ["LogError"]
