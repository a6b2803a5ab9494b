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
    Proposal,
    Refused,
    auto_reunion_value,
    conflict_mutations,
    lineage_of,
    relate,
    reunion_slot,
    with_conflicts_table,
)
from controller.agreement.lineage import MERGE, Lineage
from controller.agreement.messages import value_key
from controller.agreement.report import late_slot_conflicts, reunion_report
from controller.replication import (
    DEFAULT_SCHEMA,
    Genesis,
    Identity,
    Message,
    NodeId,
    Replica,
    Upsert,
    decode,
    decode_genesis,
    encode,
)
from controller.replication.errors import Rejected
from controller.replication.reserved import INTERNAL, genesis_key, report_key
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
    lin = lineage_of(new)
    if lin.parent != current.cluster_id:
        raise LineageError(
            f"the new lineage {new.cluster_id.hex()[:16]} did not secede from this node's "
            f"cluster {current.cluster_id.hex()[:16]}"
        )
    if not lin.confirmed_by:
        raise LineageError("the secession carries no operator confirmation")
    if me not in new.member_ids:
        raise LineageError(f"this node {me} is not among the seceding voters")
    if caller not in new.member_ids:
        raise LineageError(f"the caller {caller} is not among the seceding voters")


# ---------------------------------------------------------------------- the keeper
@dataclass
class _Joined:
    replica: Replica
    store: SqliteStore


class Keeper:
    """Other lineages of one node, driven from the engine's round (see module docstring)."""

    def __init__(
        self,
        d: DataDir,
        identity: Identity,
        replica: Replica,
        agreement: Agreement,
        open_lineage: Callable[[SqliteStore, Genesis], Replica],
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
        self.retry_ms = retry_ms
        self.mine: Lineage = lineage_of(replica.genesis)
        # On disk (the parent after a secession, lineages met before): their nodes may
        # say Hello. Met: in contact now (a Hello, or a kv genesis row another node of
        # this lineage wrote when it met one), or decided about: only those are proposed
        # about, so a seceded side does not vote on its parent before they meet again.
        self.held: dict[bytes, Genesis] = held_lineages(d)
        self.held.pop(replica.cluster_id, None)
        self.met: dict[bytes, Genesis] = {}
        self.members: dict[bytes, dict[NodeId, bytes]] = {
            cid: _members_of(d, g) for cid, g in self.held.items()
        }
        self.joined: dict[bytes, _Joined] = {}
        self.proposals: dict[bytes, tuple[Proposal | None, int]] = {}  # None: refused
        self.refused: dict[bytes, str] = {}
        self.counters: dict[str, int] = {}
        self.on_change: Callable[[], None] = lambda: None  # members changed (set by engine)
        # move home into the parent lineage (set by the server; called once)
        self.on_return: Callable[[Genesis], None] | None = None
        self.returning = False
        self._announce: set[bytes] = set()  # met lineages whose genesis row to write
        self._late_seen: dict[bytes, int] = {}  # slots known when late entries were checked

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    # -------------------------------------------------------------- inputs
    def meet(self, raw: bytes, via: NodeId = "") -> None:
        """A peer (`via`) answered Hello with its genesis, or a kv genesis row arrived:
        note another lineage (checked). A voter of our own secession that has not moved
        yet answers with our parent: that is no meeting with the parent's side."""
        if not raw:
            return
        try:
            g = decode_genesis(raw)
        except Rejected:
            self._count("lineage_bad_genesis")
            return
        if g.cluster_id == self.replica.cluster_id or g.cluster_id in self.met:
            return
        if via in self.replica.genesis.member_ids and g.cluster_id == self.mine.parent:
            return
        relation = relate(self.mine, lineage_of(g))
        if g.cluster_id not in self.held:
            keep_genesis(self.d, g)
            self.held[g.cluster_id] = g
            self.members[g.cluster_id] = dict(g.member_ids)
        self.met[g.cluster_id] = g
        self._announce.add(g.cluster_id)
        self._count("lineages_met")
        log.info(
            "met lineage %s (%s): %s; reunion is decided in %s",
            g.cluster_id.hex()[:16],
            g.name,
            relation.value,
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
    def rejoin(self) -> None:
        """On start: join again every lineage this side decided to merge with."""
        for cid, g in sorted(self.held.items()):
            d = self.agreement.decided(reunion_slot(cid))
            if d is not None:
                self.met[cid] = g
            if cid not in self.joined and d is not None and value_key(d.value) == value_key(MERGE):
                self._join(g)

    def step(self, now_ms: int) -> None:
        """Join where this side decided merge; propose merge where policy says so; write
        the report of a joined lineage once both decisions are held."""
        self._write_genesis_rows(now_ms)
        for cid, g in sorted(self.met.items()):
            if cid in self.joined:
                continue
            d = self.agreement.decided(reunion_slot(cid))
            if d is not None and value_key(d.value) == value_key(MERGE):
                self._join(g)
            elif d is None:
                self._auto_propose(cid, g, now_ms)
        for cid in sorted(self.joined):
            self._report(cid, now_ms)
            self._return(cid)

    def _return(self, cid: bytes) -> None:
        """A seceded node goes home to the parent once the report of their reunion is
        written (by the parent's nodes): see the module docstring."""
        if self.returning or self.on_return is None or self.mine.parent != cid:
            return
        if self.replica.row(INTERNAL, (report_key(self.replica.cluster_id),)) is None:
            return
        parent = self.joined[cid].replica
        voters = parent.ledger.membership.voters
        if self.identity.node_id not in voters:
            if "return" not in self.refused:
                log.warning("not returning to %s: this node is no longer one of its voters "
                            "(join it again with `synod join`)", cid.hex()[:16])
                self.refused["return"] = "not a voter"
            return
        self.returning = True
        self._count("lineage_returns")
        log.info("reunion with %s done: returning home to it", cid.hex()[:16])
        self.on_return(self.met[cid])

    def _write_genesis_rows(self, now_ms: int) -> None:
        """Tell this lineage's other nodes of the lineages met here (kv genesis/<id>)."""
        todo = [c for c in sorted(self._announce)
                if self.replica.row(INTERNAL, (genesis_key(c),)) is None]
        self._announce.clear()
        me = self.identity.node_id
        if not todo or not self.agreement.policy().can_write(me, INTERNAL):
            return
        if not self.replica.is_member_now():
            return
        self.replica.write(
            [Upsert(INTERNAL, (genesis_key(c),), {"value": self.met[c].raw}) for c in todo], now_ms
        )

    def _auto_propose(self, cid: bytes, g: Genesis, now_ms: int) -> None:
        relation = relate(self.mine, lineage_of(g))
        policy = self.agreement.policy()
        if auto_reunion_value(policy, relation) != MERGE:
            return
        if self.identity.node_id not in self.agreement.membership().voters:
            return
        held = self.proposals.get(cid)
        busy = held is not None and held[0] is not None and not held[0].done
        if held is not None and (busy or now_ms < held[1] + self.retry_ms):
            return
        slot = reunion_slot(cid)
        try:
            p = self.agreement.propose(slot, MERGE, now_ms, self.propose_timeout_ms)
        except Exception as exc:  # noqa: BLE001 - refused: logged once, not retried blindly
            if self.refused.get(cid) != str(exc):
                log.warning("not proposing %s=merge: %s", slot, exc)
            self.refused[cid] = str(exc)
            self.proposals[cid] = (None, now_ms)
            return
        self._count("reunion_auto_proposals")
        log.info("proposing %s=merge (policy auto_merge=%s)", slot, policy.auto_merge)
        self.proposals[cid] = (p, now_ms)

    def _join(self, g: Genesis) -> None:
        cid = g.cluster_id
        if cid in self.refused and self.refused[cid].startswith("join:"):
            return
        path = lineage_dir(self.d, cid)
        make_dirs(path)
        store = SqliteStore(path / "store.db", NODE_SCHEMA)
        try:
            other = self.open_lineage(store, g)
            self.replica.join_lineage(other)  # type: ignore[call-arg]
        except (Refused, Rejected, DataDirError) as exc:
            store.close()
            self.refused[cid] = f"join: {exc}"
            log.warning("cannot join lineage %s: %s", cid.hex()[:16], exc)
            self._count("reunion_join_refused")
            return
        except Exception:
            store.close()
            raise
        self.joined[cid] = _Joined(other, store)
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
        late_slot_conflicts); checked when this lineage learns a new decision."""
        decided = self.agreement.ledger.decided_count
        if self._late_seen.get(cid) == decided:
            return
        self._late_seen[cid] = decided
        j = self.joined[cid]
        late = late_slot_conflicts(self.replica, j.replica)  # type: ignore[arg-type]
        rows = self.replica.rows("conflicts")
        todo = [e for e in late if (e.id,) not in rows]
        if not todo or not self.replica.is_member_now():
            return
        if not self.agreement.policy().can_write(self.identity.node_id, "conflicts"):
            return
        self.replica.write(conflict_mutations(todo), now_ms)
        self._count("reunion_late_entries")
        log.info("reunion with %s: %d late report entries", cid.hex()[:16], len(todo))

    def set_peers(self, own: set[NodeId]) -> None:
        everyone = own | self.extra_peers()
        self.replica.set_peers(everyone)
        for j in self.joined.values():
            j.replica.set_peers(everyone)

    def _report(self, cid: bytes, now_ms: int) -> None:
        marker = report_key(cid)
        if self.replica.row(INTERNAL, (marker,)) is not None:
            self._late(cid, now_ms)
            return
        j = self.joined[cid]
        report = reunion_report(self.replica, j.replica)  # type: ignore[arg-type]
        if report is None or report.kept != self.replica.cluster_id:
            return  # not computable yet, or the other side's nodes write it
        policy = self.agreement.policy()
        me = self.identity.node_id
        if not (policy.can_write(me, "conflicts") and policy.can_write(me, INTERNAL)):
            return
        if not self.replica.is_member_now():
            return
        value = encode({"entries": len(report.entries), "kept": report.kept.hex()})
        self.replica.write(
            [*conflict_mutations(report.entries), Upsert(INTERNAL, (marker,), {"value": value})],
            now_ms,
        )
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
