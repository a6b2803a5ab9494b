"""Secession and reunion: lineages, which side wins, and the conflict report (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from controller.replication import (
    Column,
    Genesis,
    Identity,
    NodeId,
    RowState,
    Schema,
    Table,
    Upsert,
    encode,
    make_genesis,
)
from controller.replication.identity import hash32

from .certificate import Decision, certificate_voters, verify_certificate
from .errors import Reason, Refused, UsageError
from .membership import Membership
from .messages import value_key
from .rbac import AccessPolicy

__all__ = [
    "CONFLICTS",
    "ConflictEntry",
    "Lineage",
    "Relation",
    "ReunionVote",
    "auto_reunion_value",
    "conflict_mutations",
    "lineage_of",
    "relate",
    "reunion_slot",
    "row_conflicts",
    "secede",
    "slot_conflicts",
    "check_reunion",
    "winner",
    "with_conflicts_table",
]

CONFLICTS = Table(
    "conflicts",
    tuple(
        Column(n, t)
        for n, t in [
            ("id", "text"),
            ("kind", "text"),  # 'slot' or 'row'
            ("name", "text"),  # slot name or table name
            ("row_key", "blob"),  # CBOR of the row key ('' for slots)
            ("column_name", "text"),
            ("kept", "blob"),  # CBOR of the kept value
            ("kept_author", "text"),
            ("kept_hlc", "int"),
            ("kept_lineage", "text"),
            ("lost", "blob"),  # CBOR of the discarded value
            ("lost_author", "text"),
            ("lost_hlc", "int"),
            ("lost_lineage", "text"),
        ]
    ),
    ("id",),
)


def with_conflicts_table(schema: Schema) -> Schema:
    """The schema plus the replicated `conflicts` table (see the report in docs)."""
    if "conflicts" in schema.names:
        return schema
    return Schema((*(schema.table(n) for n in schema.names), CONFLICTS))


@dataclass(frozen=True)
class Lineage:
    """Where a cluster comes from: its root genesis, and the secessions that led to it."""

    cluster_id: bytes
    root: bytes  # cluster id of the first genesis of the line
    ancestors: tuple[bytes, ...]  # cluster ids from the root to the parent (empty: a root)
    fork_vector: Mapping[NodeId, int]  # the parent's ops held at the fork: {author: seq}
    left: tuple[NodeId, ...]  # voters of the parent that stayed behind
    confirmed_by: str = ""  # the operator who confirmed the secession

    @property
    def parent(self) -> bytes | None:
        return self.ancestors[-1] if self.ancestors else None


def lineage_of(genesis: Genesis) -> Lineage:
    info = genesis.policy.get("lineage") if isinstance(genesis.policy, dict) else None
    if info is None:
        return Lineage(genesis.cluster_id, genesis.cluster_id, (), {}, ())
    return Lineage(
        genesis.cluster_id,
        info["root"],
        tuple(info["ancestors"]),
        dict(info["fork_vector"]),
        tuple(info["left"]),
        info.get("confirmed_by", ""),
    )


def secede(
    founder: Identity,
    parent: Genesis,
    parent_voters: Mapping[NodeId, bytes],
    staying: list[NodeId],
    fork_vector: Mapping[NodeId, int],
    now_ms: int,
    *,
    confirmed_by: str,
    access: Any = None,
) -> Genesis:
    """Fork a new lineage for a side that must decide alone (an operator confirms it).

    The new genesis names its ancestors, the fork point (the parent's version vector on
    this side) and the voters that stayed behind; its voters are `staying` only, so the
    side can decide alone. Row state carries over from the parent's log up to the fork.
    """
    if not confirmed_by:
        raise UsageError("secession must be confirmed by an operator")
    if not staying or not set(staying) <= set(parent_voters):
        raise UsageError("the seceding voters must be voters of the parent")
    if founder.node_id not in staying:
        raise UsageError("the founder of the new lineage secedes with it")
    old = lineage_of(parent)
    info = {
        "root": old.root,
        "ancestors": [*old.ancestors, parent.cluster_id],
        "fork_vector": dict(sorted(fork_vector.items())),
        "left": sorted(set(parent_voters) - set(staying)),
        "confirmed_by": confirmed_by,
    }
    policy: dict[str, Any] = {"lineage": info}
    if access is not None:
        policy["access"] = access
    keys = [parent_voters[n] for n in staying]
    return make_genesis(founder, f"{parent.name}/seceded", keys, now_ms, policy)


class Relation(StrEnum):
    SAME = "same"
    A_FROM_B = "a_seceded_from_b"  # b is an ancestor of a
    B_FROM_A = "b_seceded_from_a"
    SIBLINGS = "siblings"  # a common ancestor, neither descends from the other
    UNRELATED = "unrelated"  # no common genesis


def relate(a: Lineage, b: Lineage) -> Relation:
    if a.cluster_id == b.cluster_id:
        return Relation.SAME
    if a.root != b.root:
        return Relation.UNRELATED
    if b.cluster_id in a.ancestors:
        return Relation.A_FROM_B
    if a.cluster_id in b.ancestors:
        return Relation.B_FROM_A
    return Relation.SIBLINGS


def reunion_slot(other: bytes) -> str:
    """The slot each side decides 'merge' or 'stay-apart' in, about the other cluster."""
    return f"reunion/{other.hex()[:32]}"


MERGE = "merge"
STAY_APART = "stay-apart"


@dataclass(frozen=True)
class ReunionVote:
    """One side's decided `reunion/<other cluster>` slot, with what is needed to check it alone:
    the side's lineage, the membership the certificate's ballot names and the access policy
    the slot was decided under."""

    lineage: Lineage
    decision: Decision
    membership: Membership
    policy: AccessPolicy


def _check_vote(vote: ReunionVote, other: Lineage) -> None:
    """The side decided `merge` about `other`, with a valid certificate and an admin's vote."""
    d, side = vote.decision, vote.lineage.cluster_id.hex()[:8]
    if d.slot != reunion_slot(other.cluster_id) or d.certificate.slot != d.slot:
        raise Refused(Reason.UNRELATED_CLUSTER, f"{side}: {d.slot} is not about this cluster")
    if value_key(d.value) != value_key(MERGE):
        raise Refused(Reason.UNRELATED_CLUSTER, f"{side} decided {d.value!r}")
    mv = d.certificate.ballot.mv
    membership = {mv: vote.membership}.get
    verify_certificate(d.certificate, vote.lineage.cluster_id, membership)
    if not any(vote.policy.role(v) == "admin" for v in certificate_voters(d.certificate)):
        raise Refused(Reason.UNRELATED_CLUSTER, f"{side}: no admin voted merge")


def check_reunion(
    a: Lineage, b: Lineage, votes: tuple[ReunionVote, ReunionVote] | None = None
) -> Relation:
    """Refuse a merge with an unrelated cluster unless each side decided `merge` about the
    other in its reunion slot with an admin among the certificate's voters."""
    relation = relate(a, b)
    if relation is Relation.UNRELATED:
        if votes is None:
            raise Refused(Reason.UNRELATED_CLUSTER, "no common genesis")
        va, vb = votes
        if (va.lineage.cluster_id, vb.lineage.cluster_id) != (a.cluster_id, b.cluster_id):
            raise UsageError("votes must be (a's, b's)")
        _check_vote(va, b)
        _check_vote(vb, a)
    return relation


def auto_reunion_value(policy: AccessPolicy, relation: Relation) -> str | None:
    """What a side proposes by itself in `reunion/<other>` when it meets another lineage:
    `merge` when its policy's `auto_merge` covers the relation, else nothing (people vote)."""
    if policy.auto_merge == "related" and relation in (Relation.A_FROM_B, Relation.B_FROM_A):
        return MERGE
    return None


def winner(a: Lineage, b: Lineage, a_voters: int, b_voters: int) -> Lineage:
    """The documented rule: the older lineage (the one the other seceded from) wins; between
    siblings or unrelated clusters, more voters, then the smaller cluster id."""
    relation = relate(a, b)
    if relation is Relation.A_FROM_B:
        return b
    if relation is Relation.B_FROM_A:
        return a
    return min((a, b), key=lambda x: (-(a_voters if x is a else b_voters), x.cluster_id))


@dataclass(frozen=True)
class ConflictEntry:
    """One overridden decision or one discarded concurrent column write."""

    kind: str  # 'slot' or 'row'
    name: str  # slot or table
    key: tuple  # row key (() for a slot)
    column: str
    kept: Any
    kept_author: str
    kept_hlc: int
    lost: Any
    lost_author: str
    lost_hlc: int
    kept_lineage: bytes
    lost_lineage: bytes

    @property
    def id(self) -> str:
        return hash32(encode([self.kind, self.name, list(self.key), self.column])).hex()[:32]


def _decision_meta(d: Decision) -> tuple[str, int]:
    return d.certificate.ballot.node, d.certificate.ballot.round


def slot_conflicts(
    kept: tuple[Lineage, Mapping[str, Decision]], lost: tuple[Lineage, Mapping[str, Decision]]
) -> list[ConflictEntry]:
    """Slots decided on both sides with different values: the winner's stands."""
    (kl, kd), (ll, ld) = kept, lost
    out = []
    for slot in sorted(set(kd) & set(ld)):
        a, b = kd[slot], ld[slot]
        if value_key(a.value) != value_key(b.value):
            (ka, kh), (la, lh) = _decision_meta(a), _decision_meta(b)
            out.append(
                ConflictEntry(
                    "slot",
                    slot,
                    (),
                    "",
                    a.value,
                    ka,
                    kh,
                    b.value,
                    la,
                    lh,
                    kl.cluster_id,
                    ll.cluster_id,
                )
            )
    return out


Rows = Mapping[tuple[str, tuple], RowState]


def row_conflicts(
    a: tuple[Lineage, Rows, Rows], b: tuple[Lineage, Rows, Rows]
) -> list[ConflictEntry]:
    """Columns both sides wrote since their fork with different values.

    Each side is (lineage, rows now, rows at its fork point); a column was written since
    the fork when its version differs from the fork's. The CRDT order (cl, hlc, author)
    keeps the larger version; the other one is reported.
    """
    (al, arows, abase), (bl, brows, bbase) = a, b
    out = []
    for rk in sorted(set(arows) & set(brows), key=repr):
        ra, rb = arows[rk], brows[rk]
        a0, b0 = abase.get(rk), bbase.get(rk)
        for column in sorted(set(ra.cols) & set(rb.cols)):
            va, vb = ra.cols[column], rb.cols[column]
            if a0 is not None and a0.cols.get(column) == va:
                continue  # side a did not write it since the fork
            if b0 is not None and b0.cols.get(column) == vb:
                continue
            if va.value == vb.value:
                continue
            (kv, kl), (lv, ll) = sorted([(va, al), (vb, bl)], key=lambda x: x[0].order)[::-1]
            out.append(
                ConflictEntry(
                    "row",
                    rk[0],
                    rk[1],
                    column,
                    kv.value,
                    kv.author,
                    kv.hlc,
                    lv.value,
                    lv.author,
                    lv.hlc,
                    kl.cluster_id,
                    ll.cluster_id,
                )
            )
    return out


def conflict_mutations(entries: list[ConflictEntry]) -> list[Upsert]:
    """Rows for the replicated `conflicts` table (written by the surviving lineage)."""
    return [
        Upsert(
            "conflicts",
            (e.id,),
            {
                "kind": e.kind,
                "name": e.name,
                "row_key": encode(list(e.key)),
                "column_name": e.column,
                "kept": encode(e.kept),
                "kept_author": e.kept_author,
                "kept_hlc": e.kept_hlc,
                "kept_lineage": e.kept_lineage.hex(),
                "lost": encode(e.lost),
                "lost_author": e.lost_author,
                "lost_hlc": e.lost_hlc,
                "lost_lineage": e.lost_lineage.hex(),
            },
        )
        for e in entries
    ]
