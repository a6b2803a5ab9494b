"""Secession and reunion inside the node: other lineages on disk, meeting them, joining
their DAGs once this side decided `merge`, and writing the conflict report (decision 0018).

On disk, beside the node's own `genesis.cbor` and `store.db`:

    lineages/<cluster id>/genesis.cbor   another lineage this node met or came from
    lineages/<cluster id>/members.cbor   its members' keys when known (the parent's)
    lineages/<cluster id>/store.db       this node's store of it (the parent's old store
                                         after a secession; created when a merge joins it)
    moving.cbor                          a move in progress (the genesis of the lineage
                                         the node moves into): finished on start

The `Keeper` runs inside the engine's round (one task owns every replica): it relates
lineages met through peers' Hello, proposes `merge` when the access policy's `auto_merge`
covers the relation, joins the other DAG once `reunion/<other>` is decided `merge` here
(again after every restart), drives each joined replica's Ready with its own store, and
has a node of the kept lineage write the report (controller.agreement.report). Once the
report is written, a node of a lineage that seceded from the other one *returns home*: the
parent becomes its own lineage again (it is still one of the parent's voters, with its old
chain in the parent's store) and its seceded lineage stays joined, read-only. From then on
every slot is decided by the parent's voters, the seceded ones among them.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.agreement import (
    Agreement,
    AgreementReplica,
    Proposal,
    Refused,
    coordinator,
    lineage_of,
    relate,
    reunion_slot,
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
    View,
    WriteLateEntries,
    WriteReport,
    announce_mutations,
    held_announcements,
    late_mutations,
    read_view,
    report_mutations,
    reunion_decisions,
)
from controller.agreement.lineage import MERGE, Lineage
from controller.agreement.report import Report
from controller.replication import (
    DEFAULT_SCHEMA,
    Genesis,
    Identity,
    Message,
    NodeId,
    decode,
    decode_genesis,
    encode,
)
from controller.replication.errors import Rejected
from controller.replication.reserved import INTERNAL, report_key
from controller.store import SqliteStore

from .datadir import DataDir, DataDirError, make_dirs
from .datadir import write_atomic as _write_atomic
from .errors import NodeBaseError

__all__ = [
    "NODE_SCHEMA",
    "Keeper",
    "LineageError",
    "begin_move",
    "check_notice",
    "finish_move",
    "held_lineages",
    "keep_genesis",
    "lineage_dir",
]

log = logging.getLogger("synod.lineage")

NODE_SCHEMA = with_conflicts_table(DEFAULT_SCHEMA)


class LineageError(NodeBaseError):
    """A secession or lineage that cannot be taken; the message says why."""


# ---------------------------------------------------------------------- on disk
def lineage_dir(d: DataDir, cluster_id: bytes) -> Path:
    return d.path / "lineages" / cluster_id.hex()


def keep_genesis(d: DataDir, genesis: Genesis, members: dict[NodeId, bytes] | None = None) -> None:
    """Remember another lineage (and its members' keys, when known)."""
    path = lineage_dir(d, genesis.cluster_id)
    if not (path / "genesis.cbor").exists():
        _write_atomic(path / "genesis.cbor", genesis.raw)
    if members:
        _write_atomic(path / "members.cbor", encode(dict(sorted(members.items()))))


def held_lineages(d: DataDir) -> dict[bytes, Genesis]:
    """Every other lineage this node keeps on disk, by cluster id."""
    root = d.path / "lineages"
    out: dict[bytes, Genesis] = {}
    if not root.is_dir():
        return out
    for sub in sorted(root.iterdir()):
        f = sub / "genesis.cbor"
        if not f.exists():
            continue
        try:
            g = decode_genesis(f.read_bytes())
        except (Rejected, OSError) as exc:
            raise DataDirError(f"{f}: invalid genesis: {exc}") from None
        if g.cluster_id.hex() != sub.name:
            raise DataDirError(f"{f}: holds cluster {g.cluster_id.hex()}, not {sub.name}")
        out[g.cluster_id] = g
    return out


def _members_of(d: DataDir, genesis: Genesis) -> dict[NodeId, bytes]:
    out = dict(genesis.member_ids)
    f = lineage_dir(d, genesis.cluster_id) / "members.cbor"
    if f.exists():
        try:
            out.update(decode(f.read_bytes()))
        except Exception as exc:  # noqa: BLE001 - a damaged file is named, never fatal later
            raise DataDirError(f"{f}: unreadable: {exc}") from None
    return out


def begin_move(
    d: DataDir, current: Genesis, target: Genesis, members: dict[NodeId, bytes] | None = None
) -> None:
    """Record a move into `target` (a new seceded lineage, or home to the parent); the
    node's store must be closed before finish_move carries it out."""
    keep_genesis(d, current, members)
    keep_genesis(d, target)
    _write_atomic(d.path / "moving.cbor", target.raw)


def finish_move(d: DataDir) -> Genesis | None:
    """Finish a recorded move (idempotent; also after a crash half-way): the current
    lineage's genesis, store and join bundle go under lineages/<its id>/, the target's
    store (if this node has one, e.g. the parent's) comes out of lineages/<target id>/,
    and the target's genesis becomes the node's. Returns the target, or None."""
    marker = d.path / "moving.cbor"
    if not marker.exists():
        return None
    try:
        target = decode_genesis(marker.read_bytes())
    except Rejected as exc:
        raise DataDirError(f"{marker}: invalid genesis: {exc}") from None
    current = d.genesis()
    if current is not None and current.cluster_id != target.cluster_id:
        away, home = lineage_dir(d, current.cluster_id), lineage_dir(d, target.cluster_id)
        keep_genesis(d, current)
        names = ("store.db", "store.db-wal", "store.db-shm", "join.cbor")
        for name in names:
            src, dst = d.path / name, away / name
            if src.exists() and not dst.exists():
                os.replace(src, dst)
        for name in names:
            src, dst = home / name, d.path / name
            if src.exists() and not dst.exists():
                os.replace(src, dst)
        _write_atomic(d.genesis_file, target.raw)
    marker.unlink()
    return target


def check_notice(current: Genesis, new: Genesis, me: NodeId, caller: NodeId) -> None:
    """May this node move into `new`, as told by `caller`? LineageError says why not."""
    try:
        coordinator.check_notice(current, new, me, caller)
    except coordinator.SecessionRefused as exc:
        raise LineageError(str(exc)) from None


# ---------------------------------------------------------------------- the keeper
@dataclass
class _Joined:
    replica: AgreementReplica
    store: SqliteStore


class Keeper:
    """Other lineages of one node, driven from the engine's round (see module docstring):
    the decisions are the LineageCoordinator's (controller.agreement.coordinator); the
    Keeper builds its View, carries out its actions and reports back what happened."""

    def __init__(
        self,
        d: DataDir,
        identity: Identity,
        replica: AgreementReplica,
        agreement: Agreement,
        open_lineage: Callable[[SqliteStore, Genesis], AgreementReplica],
        *,
        propose_timeout_ms: int = 10_000,
        retry_ms: int = 5_000,
    ) -> None:
        self.d = d
        self.identity = identity
        self.replica = replica
        self.agreement = agreement
        self.open_lineage = open_lineage
        self.propose_timeout_ms = propose_timeout_ms
        # On disk (the parent after a secession, lineages met before): their nodes may
        # say Hello.
        self.core = LineageCoordinator(
            replica.genesis, identity.node_id, held_lineages(d), retry_ms=retry_ms
        )
        self.members: dict[bytes, dict[NodeId, bytes]] = {
            cid: _members_of(d, g) for cid, g in self.core.held.items()
        }
        # A reunion needs both sides' ops from the fork on: no pruning while another
        # lineage is held (decision 0070).
        agreement.compaction_paused = bool(self.core.held)
        self.joined: dict[bytes, _Joined] = {}
        self._reports = ReportCache()
        self.proposals: dict[bytes, Proposal] = {}
        self.counters: dict[str, int] = {}
        self.on_change: Callable[[], None] = lambda: None  # members changed (set by engine)
        # move home into the parent lineage (set by the server; called once)
        self.on_return: Callable[[Genesis], None] | None = None

    @property
    def held(self) -> dict[bytes, Genesis]:
        return self.core.held

    @property
    def met(self) -> dict[bytes, Genesis]:
        return self.core.met

    @property
    def mine(self) -> Lineage:
        return self.core.mine

    @property
    def returning(self) -> bool:
        return self.core.returning

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    # -------------------------------------------------------------- inputs
    def meet(self, raw: bytes, via: NodeId = "") -> None:
        """A peer (`via`) answered Hello with its genesis, or a kv genesis row arrived:
        note another lineage (checked; the coordinator decides whether it is a meeting)."""
        if not raw:
            return
        try:
            g = decode_genesis(raw)
        except Rejected:
            self._count("lineage_bad_genesis")
            return
        if g.cluster_id in self.core.met:
            return
        before = len(self.core.met)
        for action in self.core.meet(g, via):
            self._carry_out(action, 0)
        if len(self.core.met) == before:
            return
        self._count("lineages_met")
        log.info(
            "met lineage %s (%s): %s; reunion is decided in %s",
            g.cluster_id.hex()[:16],
            g.name,
            relate(self.mine, lineage_of(g)).value,
            reunion_slot(g.cluster_id),
        )
        self.on_change()

    def peer_keys(self) -> dict[NodeId, bytes]:
        """Keys of every node of the other lineages held: they may say Hello."""
        out: dict[NodeId, bytes] = {}
        for cid, members in self.members.items():
            out.update(members)
            j = self.joined.get(cid)
            if j is not None:
                out.update(j.replica.ledger.membership.voters)
        return out

    def extra_peers(self) -> set[NodeId]:
        """Nodes of joined lineages: pushed to and synced with, as our own members."""
        out: set[NodeId] = set()
        for cid in self.joined:
            out.update(self.members.get(cid, {}))
            out.update(self.joined[cid].replica.ledger.membership.voters)
        return out

    # -------------------------------------------------------------- the round
    def _view(self, joined: bool = False) -> View:
        busy = frozenset(c for c, p in self.proposals.items() if not p.done)
        return read_view(
            self.core,
            self.replica,
            self.agreement,
            joined=joined,
            busy=busy,
            homeward=self.on_return is not None,
            reports=self._reports,
        )

    def rejoin(self) -> None:
        """On start: meet the lineages announced in kv rows, and join again every lineage
        this side decided to merge with."""
        for raw in held_announcements(self.replica):
            self.meet(raw)
        for action in self.core.restart(reunion_decisions(self.agreement, self.core.held)):
            self._carry_out(action, 0)

    def step(self, now_ms: int) -> None:
        """Announce lineages met, join where this side decided merge, propose merge where
        policy says so (the coordinator's tick); then write the report of a joined lineage
        once both decisions are held, and go home once ours is written (tick_joined)."""
        if self.core.idle:
            return
        for action in self.core.tick(now_ms, self._view()):
            self._carry_out(action, now_ms)
        if self.core.joined:
            for action in self.core.tick_joined(self._view(joined=True)):
                self._carry_out(action, now_ms)

    def _carry_out(self, action: Action, now_ms: int) -> None:
        match action:
            case KeepGenesis(genesis=g):
                keep_genesis(self.d, g)
                self.members[g.cluster_id] = dict(g.member_ids)
                self.agreement.compaction_paused = True
            case AnnounceGenesis(geneses=gs):
                self.replica.write(announce_mutations(gs), now_ms)
            case ProposeReunion():
                self._propose(action, now_ms)
            case JoinLineage(genesis=g):
                self._join(g)
            case WriteReport():
                self._write_report(action.cluster_id, action.report, now_ms)
            case WriteLateEntries(cluster_id=cid):
                self._late(cid, now_ms)
            case NotReturning(cluster_id=cid):
                log.warning(
                    "not returning to %s: this node is no longer one of its voters "
                    "(join it again with `synod join`)",
                    cid.hex()[:16],
                )
            case ReturnHome(genesis=g):
                assert self.on_return is not None
                self._count("lineage_returns")
                log.info("reunion with %s done: returning home to it", g.cluster_id.hex()[:16])
                self.on_return(g)

    def _propose(self, action: ProposeReunion, now_ms: int) -> None:
        cid, slot = action.cluster_id, action.slot
        self.proposals.pop(cid, None)
        try:
            p = self.agreement.propose(slot, MERGE, now_ms, self.propose_timeout_ms)
        except Exception as exc:  # noqa: BLE001 - refused: logged once, not retried blindly
            if self.core.propose_refused(cid, str(exc)):
                log.warning("not proposing %s=merge: %s", slot, exc)
            return
        self._count("reunion_auto_proposals")
        log.info(
            "proposing %s=merge (policy auto_merge=%s)", slot, self.agreement.policy().auto_merge
        )
        self.proposals[cid] = p

    def _join(self, g: Genesis) -> None:
        cid = g.cluster_id
        path = lineage_dir(self.d, cid)
        make_dirs(path)
        store = SqliteStore(path / "store.db", NODE_SCHEMA)
        try:
            other = self.open_lineage(store, g)
            self.replica.join_lineage(other)
        except (Refused, Rejected, DataDirError) as exc:
            store.close()
            self.core.join_refused(cid, f"join: {exc}")
            log.warning("cannot join lineage %s: %s", cid.hex()[:16], exc)
            self._count("reunion_join_refused")
            return
        except Exception:
            store.close()
            raise
        self.joined[cid] = _Joined(other, store)
        self.core.joined_lineage(cid)
        self._count("lineages_joined")
        log.info(
            "joined lineage %s (%s): %d ops held; both DAGs now replicate here",
            cid.hex()[:16],
            g.name,
            other.op_count(),
        )
        self.on_change()

    def _late(self, cid: bytes, now_ms: int) -> None:
        """Add report entries for kept-lineage slots decided after the report (see
        late_slot_conflicts); the coordinator asks once per new decision learned."""
        todo = late_mutations(self.replica, self.joined[cid].replica)
        if not todo:
            return
        self.replica.write(todo, now_ms)
        self._count("reunion_late_entries")
        log.info("reunion with %s: %d late report entries", cid.hex()[:16], len(todo))

    def set_peers(self, own: set[NodeId]) -> None:
        everyone = own | self.extra_peers()
        self.replica.set_peers(everyone)
        for j in self.joined.values():
            j.replica.set_peers(everyone)

    def _write_report(self, cid: bytes, report: Report, now_ms: int) -> None:
        self.replica.write(report_mutations(cid, report), now_ms)
        self._count("reunion_reports")
        log.info(
            "reunion with %s: conflict report written (%d entries)",
            cid.hex()[:16],
            len(report.entries),
        )

    async def drive(
        self, loop: asyncio.AbstractEventLoop, send: Callable[[str, Message], None]
    ) -> None:
        """Carry out each joined lineage's Ready with its store: durable, then sent."""
        for j in self.joined.values():
            while j.replica.has_ready():
                rd = j.replica.ready()
                if rd.ops or rd.rows or rd.evidence or rd.replace_rows:
                    await loop.run_in_executor(None, j.store.commit, rd)
                for out in rd.messages:
                    send(out.to, out.message)
                j.replica.advance(rd)

    def close(self) -> None:
        for j in self.joined.values():
            j.store.close()
        self.joined.clear()

    # -------------------------------------------------------------- queries
    def info(self) -> list[dict[str, Any]]:
        out = []
        for cid, g in sorted(self.met.items()):
            d = self.agreement.decided(reunion_slot(cid))
            out.append(
                {
                    "genesis": g,
                    "relation": relate(self.mine, lineage_of(g)).value,
                    "slot": reunion_slot(cid),
                    "decided": "" if d is None else str(d.value),
                    "joined": cid in self.joined,
                    # written by a node of the kept lineage: ours, or theirs about us
                    "reported": any(
                        self.replica.row(INTERNAL, (report_key(c),)) is not None
                        for c in (cid, self.replica.cluster_id)
                    ),
                }
            )
        return out
