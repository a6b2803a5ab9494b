"""The lineage coordinator: what a node decides about other lineages, sans I/O (issue 11).

Events in (`meet`, `restart`, `joined_lineage`, `join_refused`, `propose_refused`, `tick`,
`tick_joined`), frozen actions out; the node's `Keeper` (controller/node/lineages.py)
carries them out (disk, stores, proposals, writes) and reports back what happened.
No clock, no randomness, no I/O: time comes in as `now_ms`, the facts a decision needs
(decided reunion slots, policy, rows present, computed reports) come in as a `View`.

Order of the actions a call returns, stated once: carry them out in the order given; a
`JoinLineage` is answered with `joined_lineage` or `join_refused` before `tick_joined` is called
for the same round (the Keeper's round: `tick`, carry out, `tick_joined`, carry out).

Which decisions the node (Keeper) and the reunion simulator (controller/sim/
reunion_story.py, reunion_net.py) make the same way today, read from both:

- *Relate and propose*: both relate the two lineages (`relate`/`check_reunion`) and ask
  `auto_reunion_value(policy, relation)`; `merge` is proposed in `reunion_slot(other)` by
  a voter of this side. The Keeper proposes only for a met, undecided lineage, once per
  `retry_ms` and never while its proposal runs; the simulator proposes once by script (and
  also when the policy says nothing, standing in for an operator).
- *Join once merge is decided*: both join the other DAG (`Replica.join_lineage`) only after
  this side decided `merge` (the simulator checks a join before that is refused), and join
  again after a restart (Keeper.rejoin; ReunionNet._start joins its `partner` again).
- *Write the report*: both compute `reunion_report(mine, other)` from the two DAGs held,
  and only a node of the kept lineage (`report.kept`) writes its entries (the Keeper adds
  the report marker row; the simulator's winner writes the entries alone).
- *Late entries*: both add `late_slot_conflicts` entries once the report exists (the
  Keeper whenever its ledger learns a new decision, the simulator once after settling).

Only in the Keeper (the simulator scripts or skips these): meeting a lineage through a
peer's Hello or a kv genesis row, and announcing it to this lineage's other nodes
(`genesis/<id>` rows); ignoring our own seceded voters that still answer with the parent;
the write permissions and `is_member_now` gates; returning home to the parent once the
report about this side is written. Only in the simulator: the oracle checks. Not here
yet (still in controller/node/server.py and the simulator's script): seceding itself and
its fork copy (both write `report.fork_copy_writes`), and moving home (`on_return`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.replication import Genesis, NodeId
from controller.replication.reserved import INTERNAL

from .lineage import CONFLICTS, MERGE, Lineage, auto_reunion_value, lineage_of, relate, reunion_slot
from .rbac import AccessPolicy

REPORT_TABLE = CONFLICTS.name

__all__ = [
    "Action",
    "AnnounceGenesis",
    "JoinLineage",
    "KeepGenesis",
    "LineageCoordinator",
    "NotReturning",
    "ProposeReunion",
    "ReturnHome",
    "View",
    "WriteLateEntries",
    "WriteReport",
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
