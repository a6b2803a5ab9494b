"""The lineage coordinator: what a node decides about other lineages, sans I/O (issue 11).

Events in (`meet`, `restart`, `joined_lineage`, `join_refused`, `propose_refused`, `tick`,
`tick_joined`), frozen actions out; the node's `Keeper` (controller/node/lineages.py)
carries them out (disk, stores, proposals, writes) and reports back what happened.
No clock, no randomness, no I/O: time comes in as `now_ms`, the facts a decision needs
(decided reunion slots, policy, rows present, computed reports) come in as a `View`.

Order of the actions a call returns, stated once: carry them out in the order given; a
`JoinLineage` is answered with `joined_lineage` or `join_refused` before `tick_joined` is called
for the same round (the Keeper's round: `tick`, carry out, `tick_joined`, carry out).

One code path: the node's Keeper (controller/node/lineages.py) and the reunion simulator
(controller/sim/reunion_net.py, driven by reunion_story.py) both hold one coordinator per
node, rebuilt at every start from the lineages the node keeps; both build its View with
`read_view`, call `tick` then `tick_joined` in every round, and carry out each action with
the same writes (`announce_mutations`, `report_mutations`, `late_mutations`). The founder
of a seceded lineage writes the fork copy when `fork_copy_due` says so
(report.fork_copy_writes), in both. Opening a lineage is
`plan_secession` (the founder) and `check_notice` (each other seceding voter), in both.
`ReturnHome` is carried out by a move: the node's server moves its directories and starts
again; the simulator flushes the node and starts it again in the parent. What only one
side does: the node meets lineages through peers' Hello (the simulator scripts the Hello
of the reunited pair), and only the simulator runs the oracle's checks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.replication import Genesis, Identity, NodeId, RowUpdate, Upsert, encode
from controller.replication.reserved import GENESIS_PREFIX, INTERNAL, genesis_key, report_key

from .engine import Agreement
from .errors import AgreementError
from .lineage import (
    CONFLICTS,
    MERGE,
    Lineage,
    auto_reunion_value,
    conflict_mutations,
    lineage_of,
    relate,
    reunion_slot,
    secede,
)
from .membership import Membership
from .messages import value_key
from .policy import AgreementReplica
from .rbac import AccessPolicy
from .report import Report, late_slot_conflicts, overlap_fixes, reunion_report

REPORT_TABLE = CONFLICTS.name

__all__ = [
    "Action",
    "AnnounceGenesis",
    "ReportCache",
    "SecessionRefused",
    "JoinLineage",
    "KeepGenesis",
    "LineageCoordinator",
    "NotReturning",
    "ProposeReunion",
    "ReturnHome",
    "View",
    "WriteLateEntries",
    "WriteReport",
    "announce_mutations",
    "check_notice",
    "plan_secession",
    "announced_geneses",
    "fork_copy_due",
    "held_announcements",
    "late_mutations",
    "read_view",
    "report_mutations",
    "reunion_decisions",
]


# ---------------------------------------------------------------------- actions
@dataclass(frozen=True)
class KeepGenesis:
    """A lineage met for the first time: remember it (on disk) and its members."""

    genesis: Genesis


@dataclass(frozen=True)
class AnnounceGenesis:
    """Write kv `genesis/<id>` rows so this lineage's other nodes meet these lineages too."""

    geneses: tuple[Genesis, ...]


@dataclass(frozen=True)
class ProposeReunion:
    """Propose `merge` in `slot` (the policy's auto_merge covers the relation)."""

    cluster_id: bytes
    slot: str


@dataclass(frozen=True)
class JoinLineage:
    """This side decided merge: open the other lineage's replica and join its DAG."""

    genesis: Genesis


@dataclass(frozen=True)
class WriteReport:
    """This node's lineage is the kept one: write `report`'s entries and its marker."""

    cluster_id: bytes
    report: Any


@dataclass(frozen=True)
class WriteLateEntries:
    """The report exists and this lineage learned a decision: add late entries, if any."""

    cluster_id: bytes


@dataclass(frozen=True)
class ReturnHome:
    """The report of the reunion with the parent is written: move home into it."""

    genesis: Genesis


@dataclass(frozen=True)
class NotReturning:
    """Home is the parent, but this node is no longer one of its voters (told once)."""

    cluster_id: bytes
    why: str


Action = (
    KeepGenesis
    | AnnounceGenesis
    | ProposeReunion
    | JoinLineage
    | WriteReport
    | WriteLateEntries
    | ReturnHome
    | NotReturning
)


# ---------------------------------------------------------------------- the facts
@dataclass(frozen=True)
class View:
    """What the node holds at a tick, read by the Keeper from its replicas.

    decided: per lineage met, its reunion slot's decision here (True merge, False another
    value); absent: undecided. announced: lineages whose genesis row exists. reported:
    lineages whose report marker exists (this lineage's own id: the report about us).
    busy: lineages with a proposal in flight. reports: per joined lineage without a
    marker, the computed report (None: not computable yet). parent_voters: the voters of
    the joined parent's replica."""

    policy: AccessPolicy
    voter: bool = False
    member_now: bool = False
    decided: Mapping[bytes, bool] = field(default_factory=dict)
    decided_count: int = 0
    announced: frozenset[bytes] = frozenset()
    reported: frozenset[bytes] = frozenset()
    busy: frozenset[bytes] = frozenset()
    reports: Mapping[bytes, Any] = field(default_factory=dict)
    parent_voters: frozenset[NodeId] = frozenset()
    homeward: bool = False  # the node can move home (a server is there to do it)


# ---------------------------------------------------------------------- the core
class LineageCoordinator:
    """Secession/reunion decisions of one node of lineage `genesis` (module docstring)."""

    def __init__(
        self,
        genesis: Genesis,
        me: NodeId,
        held: Mapping[bytes, Genesis],
        *,
        retry_ms: int = 5_000,
    ) -> None:
        self.genesis = genesis
        self.me = me
        self.mine: Lineage = lineage_of(genesis)
        self.retry_ms = retry_ms
        self.held: dict[bytes, Genesis] = {c: g for c, g in held.items() if c != genesis.cluster_id}
        # Met: in contact now, or decided about: only those are proposed about, so a
        # seceded side does not vote on its parent before they meet again.
        self.met: dict[bytes, Genesis] = {}
        self.joined: set[bytes] = set()
        self.join_refusals: dict[bytes, str] = {}
        self.propose_refusals: dict[bytes, str] = {}
        self.proposed_at: dict[bytes, int] = {}
        self.returning = False
        self._not_returning_told = False
        self._announce: set[bytes] = set()
        self._late_seen: dict[bytes, int] = {}

    @property
    def idle(self) -> bool:
        """No lineage met or joined: tick and tick_joined would return nothing."""
        return not self.met and not self.joined

    # -------------------------------------------------------------- events
    def meet(self, genesis: Genesis, via: NodeId = "") -> list[Action]:
        """A peer (`via`) answered Hello with `genesis`, or a kv genesis row arrived. A voter
        of our own secession that has not moved yet answers with our parent: no meeting."""
        cid = genesis.cluster_id
        if cid == self.genesis.cluster_id or cid in self.met:
            return []
        if via in self.genesis.member_ids and cid == self.mine.parent:
            return []
        out: list[Action] = []
        if cid not in self.held:
            self.held[cid] = genesis
            out.append(KeepGenesis(genesis))
        self.met[cid] = genesis
        self._announce.add(cid)
        return out

    def restart(self, decided: Mapping[bytes, bool]) -> list[Action]:
        """On start: every held lineage decided about is met; join again where merge."""
        out: list[Action] = []
        for cid, g in sorted(self.held.items()):
            if cid in decided:
                self.met[cid] = g
            if cid not in self.joined and decided.get(cid) and cid not in self.join_refusals:
                out.append(JoinLineage(g))
        return out

    def joined_lineage(self, cluster_id: bytes) -> None:
        self.joined.add(cluster_id)

    def join_refused(self, cluster_id: bytes, why: str) -> None:
        """Not retried (until a restart of the node)."""
        self.join_refusals[cluster_id] = why

    def propose_refused(self, cluster_id: bytes, why: str) -> bool:
        """The proposal was refused: retried after retry_ms. True: a new reason (tell it)."""
        new = self.propose_refusals.get(cluster_id) != why
        self.propose_refusals[cluster_id] = why
        return new

    # -------------------------------------------------------------- the round
    def tick(self, now_ms: int, view: View) -> list[Action]:
        """Announce lineages met; join where this side decided merge; propose merge where
        the policy says so and no proposal runs or was tried within retry_ms."""
        out: list[Action] = []
        todo = [c for c in sorted(self._announce) if c not in view.announced]
        self._announce.clear()
        if todo and view.policy.can_write(self.me, INTERNAL) and view.member_now:
            out.append(AnnounceGenesis(tuple(self.met[c] for c in todo)))
        for cid, g in sorted(self.met.items()):
            if cid in self.joined:
                continue
            decided = view.decided.get(cid)
            if decided:
                if cid not in self.join_refusals:
                    out.append(JoinLineage(g))
            elif decided is None and self._may_propose(cid, g, now_ms, view):
                self.proposed_at[cid] = now_ms
                out.append(ProposeReunion(cid, reunion_slot(cid)))
        return out

    def tick_joined(self, view: View) -> list[Action]:
        """For each joined lineage: write the report (kept side) or late entries once it is
        written; go home to the parent once the report about this side is written."""
        out: list[Action] = []
        for cid in sorted(self.joined):
            out += self._report(cid, view)
            out += self._return(cid, view)
        return out

    def _may_propose(self, cid: bytes, g: Genesis, now_ms: int, view: View) -> bool:
        relation = relate(self.mine, lineage_of(g))
        if auto_reunion_value(view.policy, relation) != MERGE or not view.voter:
            return False
        at = self.proposed_at.get(cid)
        return at is None or (cid not in view.busy and now_ms >= at + self.retry_ms)

    def _report(self, cid: bytes, view: View) -> list[Action]:
        if cid in view.reported:
            if self._late_seen.get(cid) == view.decided_count:
                return []
            self._late_seen[cid] = view.decided_count
            if not view.member_now or not view.policy.can_write(self.me, REPORT_TABLE):
                return []
            return [WriteLateEntries(cid)]
        report = view.reports.get(cid)
        if report is None or report.kept != self.genesis.cluster_id:
            return []  # not computable yet, or the other side's nodes write it
        policy = view.policy
        if not (policy.can_write(self.me, REPORT_TABLE) and policy.can_write(self.me, INTERNAL)):
            return []
        if not view.member_now:
            return []
        return [WriteReport(cid, report)]

    def _return(self, cid: bytes, view: View) -> list[Action]:
        if self.returning or not view.homeward or self.mine.parent != cid:
            return []
        if self.genesis.cluster_id not in view.reported:
            return []
        if self.me not in view.parent_voters:
            if self._not_returning_told:
                return []
            self._not_returning_told = True
            return [NotReturning(cid, "not a voter")]
        self.returning = True
        return [ReturnHome(self.met[cid])]


# ---------------------------------------------------------------------- reading the facts
# What the node's Keeper and the reunion simulator both read from a node's replicas to
# build a View, and what they both write to carry out an action: one definition each.
def reunion_decisions(agreement: Agreement, cids: Iterable[bytes]) -> dict[bytes, bool]:
    """This side's reunion decisions about `cids` (True: merge); undecided ones left out.
    Agreement.decided is gated: a decision whose deciding vote is not durable is absent."""
    out: dict[bytes, bool] = {}
    for cid in cids:
        d = agreement.decided(reunion_slot(cid))
        if d is not None:
            out[cid] = value_key(d.value) == value_key(MERGE)
    return out


class ReportCache:
    """The reunion report with each joined lineage: a function of both logs and the
    decisions, so computed again only when one of them grew (not every round while the
    side that does not write it stays joined)."""

    def __init__(self) -> None:
        self._cache: dict[bytes, tuple[tuple[int, int, int], Report | None]] = {}

    def __call__(
        self, mine: AgreementReplica, other: AgreementReplica, decided_count: int
    ) -> Report | None:
        stamp = (mine.op_count(), other.op_count(), decided_count)
        cached = self._cache.get(other.cluster_id)
        if cached is None or cached[0] != stamp:
            cached = self._cache[other.cluster_id] = (stamp, reunion_report(mine, other))
        return cached[1]


def read_view(
    core: LineageCoordinator,
    replica: AgreementReplica,
    agreement: Agreement,
    *,
    joined: bool = False,
    busy: frozenset[bytes] = frozenset(),
    homeward: bool = False,
    reports: ReportCache | None = None,
) -> View:
    """The facts for `tick`, or (joined) for `tick_joined`: the reports of joined lineages
    without a marker are computed only then (they are not cheap)."""
    row = replica.row
    ledger = agreement.ledger
    found: dict[bytes, Any] = {}
    parent_voters: frozenset[NodeId] = frozenset()
    for cid, other in replica.lineages().items() if joined else ():
        assert isinstance(other, AgreementReplica)
        if row(INTERNAL, (report_key(cid),)) is None:
            found[cid] = (reports or ReportCache())(replica, other, ledger.decided_count)
        if cid == core.mine.parent:
            parent_voters = frozenset(other.ledger.membership.voters)
    cids = [*core.met, replica.cluster_id]
    return View(
        policy=agreement.policy(),
        voter=core.me in agreement.membership().voters,
        member_now=replica.is_member_now(),
        decided=reunion_decisions(agreement, core.met),
        decided_count=ledger.decided_count,
        announced=frozenset(c for c in core.met if row(INTERNAL, (genesis_key(c),)) is not None),
        reported=frozenset(c for c in cids if row(INTERNAL, (report_key(c),)) is not None),
        busy=busy,
        reports=found,
        parent_voters=parent_voters,
        homeward=homeward,
    )


def announced_geneses(rows: Iterable[RowUpdate]) -> list[bytes]:
    """Raw geneses announced in a Ready's row updates (kv `genesis/<id>`): lineages to meet."""
    out: list[bytes] = []
    for row in rows:
        if row.table == INTERNAL and str(row.key[0]).startswith(GENESIS_PREFIX):
            raw = (row.values or {}).get("value")
            if isinstance(raw, bytes) and raw:
                out.append(raw)
    return out


def held_announcements(replica: AgreementReplica) -> list[bytes]:
    """Raw geneses the replica's kv `genesis/<id>` rows hold (met again on start)."""
    out: list[bytes] = []
    for (key,), values in sorted(replica.rows(INTERNAL).items(), key=lambda kv: str(kv[0])):
        raw = values.get("value")
        if str(key).startswith(GENESIS_PREFIX) and isinstance(raw, bytes) and raw:
            out.append(raw)
    return out


def fork_copy_due(genesis: Genesis, me: bytes, own_seq: int) -> bytes | None:
    """The parent's cluster id when this node (public key `me`) must write the fork copy
    now: it founded a seceded lineage and has written nothing in it yet (decision 0018);
    else None. The copy itself: report.fork_copy_writes."""
    parent = lineage_of(genesis).parent
    if parent is None or genesis.founder != me or own_seq > 0:
        return None
    return parent


# ---------------------------------------------------------------------- what actions write
def announce_mutations(geneses: Iterable[Genesis]) -> list[Upsert]:
    """AnnounceGenesis: kv `genesis/<id>` rows."""
    return [Upsert(INTERNAL, (genesis_key(g.cluster_id),), {"value": g.raw}) for g in geneses]


def report_mutations(cluster_id: bytes, report: Report) -> list[Upsert]:
    """WriteReport: the report's entries and its marker row, in one op."""
    value = encode({"entries": len(report.entries), "kept": report.kept.hex()})
    return [
        *conflict_mutations(report.entries),
        *overlap_fixes(report.entries),  # the older of two running copies stops (0081 §4)
        Upsert(INTERNAL, (report_key(cluster_id),), {"value": value}),
    ]


def late_mutations(mine: AgreementReplica, other: AgreementReplica) -> list[Upsert]:
    """WriteLateEntries: entries for kept-lineage slots decided after the report (see
    late_slot_conflicts) that the conflicts table does not hold yet."""
    rows = mine.rows(CONFLICTS.name)
    todo = [e for e in late_slot_conflicts(mine, other) if (e.id,) not in rows]
    return conflict_mutations(todo)


# ---------------------------------------------------------------------- opening a lineage
class SecessionRefused(AgreementError):
    """A secession (or a notice to join one) that cannot be taken; the message says why."""


def plan_secession(
    identity: Identity,
    genesis: Genesis,
    membership: Membership,
    policy: AccessPolicy,
    vector: Mapping[NodeId, int],
    voters: Iterable[str],
    confirmed_by: str,
    now_ms: int,
) -> Genesis:
    """The genesis of the lineage `identity` founds with `voters` (ids or unique prefixes
    of 8+ characters; the founder always secedes) out of `genesis`, forked at `vector`,
    with the parent's access policy. Checked: confirmed by an operator, each name one
    voter, and a minority of `membership` (a majority decides without seceding)."""
    if not confirmed_by.strip():
        raise SecessionRefused("a secession must be confirmed by an operator (confirmed_by)")
    staying: set[NodeId] = set()
    for v in [*voters, identity.node_id]:
        hits = [n for n in membership.voters if n.startswith(v)] if len(v) >= 8 else []
        if len(hits) != 1:
            names = ", ".join(sorted(n[:12] for n in membership.voters))
            raise SecessionRefused(
                f"{v!r} is not one voter of membership {membership.version} (voters: {names})"
            )
        staying.add(hits[0])
    if len(staying) >= membership.quorum:
        raise SecessionRefused(
            f"{len(staying)} of {len(membership.voters)} voters are a majority: they decide "
            "without seceding (secession is for a minority cut off from the rest)"
        )
    access = policy.to_value()
    access.pop("version", None)
    return secede(
        identity,
        genesis,
        membership.voters,
        sorted(staying),
        vector,
        now_ms,
        confirmed_by=confirmed_by.strip(),
        access=access,
    )


def check_notice(current: Genesis, new: Genesis, me: NodeId, caller: NodeId) -> None:
    """May this node (of `current`) move into `new`, as told by `caller`, another seceding
    voter? SecessionRefused says why not."""
    lin = lineage_of(new)
    if lin.parent != current.cluster_id:
        raise SecessionRefused(
            f"the new lineage {new.cluster_id.hex()[:16]} did not secede from this node's "
            f"cluster {current.cluster_id.hex()[:16]}"
        )
    if not lin.confirmed_by:
        raise SecessionRefused("the secession carries no operator confirmation")
    if me not in new.member_ids:
        raise SecessionRefused(f"this node {me} is not among the seceding voters")
    if caller not in new.member_ids:
        raise SecessionRefused(f"the caller {caller} is not among the seceding voters")
