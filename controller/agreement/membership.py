"""Memberships: numbered voter sets, changed one voter at a time by deciding `membership/<n>`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.replication import Genesis, NodeId, node_id_of

from .errors import Reason, Refused
from .quorum import majority

__all__ = [
    "DECOMMISSIONED",
    "EQUIVOCATION",
    "LEAVE_REASONS",
    "LEAVE_SLOT",
    "RELEASE_SLOT",
    "Membership",
    "membership_slot",
    "membership_version_of",
    "check_change",
    "departed_after",
    "plan_leave",
    "plan_release",
]

MEMBERSHIP = "membership"
# Names the API answers by building the next membership itself (never decided as such;
# the change goes to membership/<n+1>): an operator's removal, and a release (0070).
LEAVE_SLOT = "membership/leave"
RELEASE_SLOT = "membership/release"
EQUIVOCATION = "equivocation"  # the voter signed two ops for one (author, seq), or two votes
# The operator says the voter will never come back, not even as a seceded side to reunite
# with: the ops it might need for a reunion report may then be compacted (decision 0070).
DECOMMISSIONED = "decommissioned"
LEAVE_REASONS = (EQUIVOCATION, DECOMMISSIONED)  # why a voter was removed, when one is named
EVIDENCE_OPS_MAX = 4  # op ids a removal may cite (one proof is a pair)
RELEASED_MAX = 16  # former voters one release may name
_BASE_KEYS = frozenset({"version", "voters", "roles"})
_REASON_KEYS = _BASE_KEYS | {"reason", "evidence"}
_KEY_SETS = (_BASE_KEYS, _REASON_KEYS, _REASON_KEYS | {"released"})


def membership_slot(version: int) -> str:
    return f"{MEMBERSHIP}/{version}"


def membership_version_of(slot: str) -> int | None:
    """n for 'membership/n', else None."""
    kind, _, rest = slot.partition("/")
    if kind != MEMBERSHIP or not rest.isdigit():
        return None
    return int(rest)


@dataclass(frozen=True)
class Membership:
    """Voters in force from `version` on: node id -> Ed25519 public key, and their roles.

    Version 0 comes from the genesis; version n is the value decided in `membership/n`
    by a majority of the voters of version n-1. A removal may say why (`reason`, one of
    LEAVE_REASONS) and cite the ops that prove it (`evidence`, op ids): a record for
    whoever reads the chain later, not a condition an acceptor checks (decision 0017).

    A *release* keeps the voters as they are and names former voters that are gone for
    good (`released`, reason DECOMMISSIONED): they no longer pin compaction (decision
    0070, "Releasing a departed voter's pin"). `departed` is not part of the value: the
    ledger derives it from the chain (departed_after), so that an acceptor can check a
    release against it.
    """

    version: int
    voters: Mapping[NodeId, bytes]
    roles: Mapping[NodeId, str]  # role of each voter when it joined (the policy may override)
    reason: str = ""  # why the change from version-1 was made ("" = not said)
    evidence: tuple[bytes, ...] = ()  # op ids that prove the reason
    released: tuple[NodeId, ...] = ()  # former voters released for good (a release only)
    # Voters removed with no reason for good, not released since and not voters again:
    # they pin compaction at their last op. Derived from the chain, not decided.
    departed: frozenset[NodeId] = field(default=frozenset(), compare=False)

    @property
    def quorum(self) -> int:
        return majority(len(self.voters))

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> Membership:
        return cls(0, dict(genesis.member_ids), {})

    def joined(self, public_key: bytes, role: str = "node") -> Membership:
        node = node_id_of(public_key)
        return Membership(
            self.version + 1, {**self.voters, node: public_key}, {**self.roles, node: role}
        )

    def left(self, node: NodeId, reason: str = "", evidence: tuple[bytes, ...] = ()) -> Membership:
        voters = {n: k for n, k in self.voters.items() if n != node}
        roles = {n: r for n, r in self.roles.items() if n != node}
        return Membership(self.version + 1, voters, roles, reason, tuple(evidence))

    def releasing(self, nodes: tuple[NodeId, ...]) -> Membership:
        """The release of departed voters `nodes` (sorted, so every proposer makes one value)."""
        return Membership(
            self.version + 1, dict(self.voters), dict(self.roles), DECOMMISSIONED, (),
            tuple(sorted(set(nodes))),
        )

    def to_value(self) -> dict:
        value: dict[str, Any] = {
            "version": self.version,
            "voters": {n: k for n, k in sorted(self.voters.items())},
            "roles": {n: r for n, r in sorted(self.roles.items())},
        }
        if self.reason:  # absent otherwise: a plain change encodes as it always did
            value["reason"] = self.reason
            value["evidence"] = list(self.evidence)
        if self.released:
            value["released"] = list(self.released)
        return value

    @classmethod
    def from_value(cls, value: Any) -> Membership:
        ok = (
            isinstance(value, dict)
            and set(value) in _KEY_SETS
            and type(value["version"]) is int
            and isinstance(value["voters"], dict)
            and isinstance(value["roles"], dict)
            and all(isinstance(k, bytes) and len(k) == 32 for k in value["voters"].values())
            and all(isinstance(r, str) for r in value["roles"].values())
        )
        if not ok:
            raise Refused(
                Reason.BAD_MEMBERSHIP,
                "membership is {version, voters, roles[, reason, evidence[, released]]}",
            )
        voters = dict(value["voters"])
        if any(node_id_of(k) != n for n, k in voters.items()):
            raise Refused(Reason.BAD_MEMBERSHIP, "a voter id does not match its key")
        if not set(value["roles"]) <= set(voters):
            raise Refused(Reason.BAD_MEMBERSHIP, "a role for a non-voter")
        reason, evidence = value.get("reason", ""), value.get("evidence", [])
        if "reason" in value:
            _check_reason(reason, evidence)
        released = value.get("released", [])
        if "released" in value:
            _check_released(reason, released)
        return cls(
            value["version"], voters, dict(value["roles"]), reason, tuple(evidence),
            tuple(released),
        )


def _check_released(reason: str, released: Any) -> None:
    if reason != DECOMMISSIONED:
        raise Refused(Reason.BAD_MEMBERSHIP, f"released: only with reason {DECOMMISSIONED}")
    ok = (
        isinstance(released, list)
        and 1 <= len(released) <= RELEASED_MAX
        and all(isinstance(n, str) and n for n in released)
        and released == sorted(set(released))
    )
    if not ok:
        raise Refused(
            Reason.BAD_MEMBERSHIP, f"released: 1 to {RELEASED_MAX} distinct node ids, sorted"
        )


def _check_reason(reason: Any, evidence: Any) -> None:
    if reason not in LEAVE_REASONS:
        raise Refused(Reason.BAD_MEMBERSHIP, f"reason: one of {', '.join(LEAVE_REASONS)}")
    if reason == DECOMMISSIONED:
        if evidence != []:
            raise Refused(Reason.BAD_MEMBERSHIP, "evidence: none for a decommissioned voter")
        return
    ok = (
        isinstance(evidence, list)
        and 1 <= len(evidence) <= EVIDENCE_OPS_MAX
        and all(isinstance(i, bytes) and len(i) == 32 for i in evidence)
        and len(set(evidence)) == len(evidence)
    )
    if not ok:
        raise Refused(Reason.BAD_MEMBERSHIP, f"evidence: 1 to {EVIDENCE_OPS_MAX} distinct op ids")


def departed_after(previous: Membership, new: Membership) -> frozenset[NodeId]:
    """The departed voters once `new` follows `previous` (see Membership.departed): a
    removal with no reason adds the voter removed; a removal for equivocation or for
    good does not; a release takes the voters it names out; a voter again is not one."""
    out = set(previous.departed)
    if not new.reason:
        out |= set(previous.voters) - set(new.voters)
    out -= set(new.released)
    return frozenset(out - set(new.voters))


def check_change(current: Membership, value: Any) -> Membership:
    """The next membership must add or remove exactly one voter and keep at least one,
    or be a release: the same voters and roles, naming departed voters of `current`.

    One at a time, so that every majority of the old voters intersects every majority
    of the new ones (DESIGN §3; a release keeps the voters, so its majorities are the
    old ones); only a removal may name a reason. Raises Refused(BAD_MEMBERSHIP).
    """
    new = Membership.from_value(value)
    if new.version != current.version + 1:
        raise Refused(Reason.BAD_MEMBERSHIP, f"version {new.version} after {current.version}")
    if new.released:
        _check_release(current, new)
        return new
    if not new.voters:
        raise Refused(Reason.BAD_MEMBERSHIP, "no voters left")
    old, now = set(current.voters), set(new.voters)
    if len(old ^ now) != 1:
        raise Refused(Reason.BAD_MEMBERSHIP, "exactly one voter joins or leaves")
    if any(current.voters[n] != new.voters[n] for n in old & now):
        raise Refused(Reason.BAD_MEMBERSHIP, "a voter's key changed")
    if new.reason and len(now) > len(old):
        raise Refused(Reason.BAD_MEMBERSHIP, "a reason names why a voter leaves, not joins")
    return new


def _check_release(current: Membership, new: Membership) -> None:
    """A release names only voters this node's chain holds as departed (removed with no
    reason for good, not released yet, not voters again) and changes nothing else."""
    if dict(new.voters) != dict(current.voters) or dict(new.roles) != dict(current.roles):
        raise Refused(Reason.BAD_MEMBERSHIP, "released: a release keeps the voters and roles")
    for node in new.released:
        if node in current.voters:
            raise Refused(Reason.BAD_MEMBERSHIP, f"released: {node[:16]} is a voter")
        if node not in current.departed:
            raise Refused(
                Reason.BAD_MEMBERSHIP,
                f"released: {node[:16]} is not a departed voter (never a voter, removed "
                "for good or for equivocation, or released already)",
            )


def _resolve(chain: Mapping[int, Membership], name: str) -> NodeId:
    """The node `name` names: a node id, or a prefix of 8+ characters of exactly one node
    that was a voter of some membership of the chain."""
    known = sorted({n for m in chain.values() for n in m.voters})
    hits = [n for n in known if n == name or (len(name) >= 8 and n.startswith(name))]
    if len(hits) != 1:
        what = "no" if not hits else f"{len(hits)}"
        raise Refused(
            Reason.BAD_MEMBERSHIP,
            f"{name!r} names {what} node{'s' if hits else ''} of this cluster's voters, "
            f"past or present (an id, or a prefix of 8+ characters)",
        )
    return hits[0]


def plan_leave(chain: Mapping[int, Membership], name: str, for_good: bool) -> Membership:
    """The next membership without voter `name` (an operator's removal); for good: it may
    not come back, not even as a seceded side (reason DECOMMISSIONED: no pin)."""
    current = chain[max(chain)]
    node = _resolve(chain, name)
    if node not in current.voters:
        hint = (" (it pins compaction: `synod members forget` releases it)"
                if node in current.departed else "")
        raise Refused(Reason.BAD_MEMBERSHIP,
                      f"{node[:16]} is not a voter of membership {current.version}{hint}")
    if len(current.voters) == 1:
        raise Refused(Reason.BAD_MEMBERSHIP, f"{node[:16]} is the last voter")
    return current.left(node, DECOMMISSIONED if for_good else "")


def plan_release(chain: Mapping[int, Membership], names: list[str]) -> Membership:
    """The release of former voters `names`, gone for good (decision 0070); refused with
    the reason when one is a voter or does not pin compaction."""
    current = chain[max(chain)]
    nodes = sorted({_resolve(chain, name) for name in names})
    if not nodes or len(nodes) > RELEASED_MAX:
        raise Refused(Reason.BAD_MEMBERSHIP, f"name 1 to {RELEASED_MAX} former voters")
    for node in nodes:
        if node in current.voters:
            raise Refused(
                Reason.BAD_MEMBERSHIP,
                f"{node[:16]} is a voter of membership {current.version}: remove it first "
                "(`synod members remove NODE --for-good` releases nothing to forget later)",
            )
        if node not in current.departed:
            raise Refused(
                Reason.BAD_MEMBERSHIP,
                f"{node[:16]} pins nothing: it was removed for good or for equivocation, or "
                "released already",
            )
    new = current.releasing(tuple(nodes))
    check_change(current, new.to_value())  # what every acceptor will check
    return new
