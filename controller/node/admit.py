"""Admitting a node that asked to join (the member's side of `synod join`): a use case of
the engine, kept out of the gRPC servicer.

With agreement on and a policy that lets nodes propose membership, the member proposes
`membership/<n+1>` = the voters plus the new key until a decided membership holds it
(decision 0033) and records the new node's peer address in the reserved `internal` table;
otherwise it signs an invitation op (decision 0030). Asking again answers the same.
A node whose code reads less than the schema version decided is not admitted (0037).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from controller.agreement import membership_slot
from controller.replication import INVITE, Upsert, encode, invitation_data
from controller.replication.reserved import INTERNAL, peer_key

from .engine import Engine, SlotRefused
from .join import JoinBundle, JoinRequest

__all__ = ["JoinRefused", "admit", "decided_joins"]

JOIN_ATTEMPTS_MAX = 3  # membership changes that may win the slot before we give up
JOIN_TIMEOUT_MS_MAX = 8_000


class JoinRefused(SlotRefused):
    """The joiner may not be admitted now (it reads an older schema than the cluster
    decided); nothing was proposed or signed for it."""


def check_reads(engine: Engine, req: JoinRequest) -> None:
    """JoinRefused unless req's node reads the schema version decided here (decision 0037):
    it would refuse every op writing a newer table, and replication with it would stop."""
    decided = engine.decided_schema()
    if req.reads < decided:
        raise JoinRefused(
            f"node {req.node_id} reads schema up to {req.reads}; the cluster decided "
            f"schema/{decided}: upgrade Synod on that node first"
        )


def decided_joins(engine: Engine) -> bool:
    """Join by a decided `membership/<n+1>` when the agreement layer runs and the policy in
    force lets this node propose membership changes; else by invitation (0030)."""
    agreement = engine.agreement
    return agreement is not None and agreement.policy().can_propose(engine.node_id, "membership")


async def admit(engine: Engine, req: JoinRequest, by: str, peers: Sequence[str]) -> JoinBundle:
    """Admit req's node (asked for by token `by`); the bundle it needs to start: the
    genesis, the join's id, this member's id, the peer addresses to dial and the schema
    version decided (the joiner checks it again: one may be decided while it waits)."""
    check_reads(engine, req)
    if decided_joins(engine):
        join_id = await _by_vote(engine, req)
    else:
        join_id = await _by_invitation(engine, req, by)
    others = tuple(a for a in peers if a != req.address)
    return JoinBundle(engine.genesis, join_id, engine.node_id, others, engine.decided_schema())


async def _by_invitation(engine: Engine, req: JoinRequest, by: str) -> bytes:
    if req.node_id in engine.genesis.member_ids:
        return b""  # a founder: nothing to admit
    invites = engine.invitations(req.node_id)
    if invites and invites[-1].address == req.address:
        return invites[-1].op_id  # joining again: the invitation stands
    result = await engine.emit(INVITE, invitation_data(req.key, req.address, by))
    return bytes.fromhex(result.op_id)


async def _by_vote(engine: Engine, req: JoinRequest) -> bytes:
    """The join's id: the hash of the first decided membership that holds the key (the
    same on every member)."""
    agreement = engine.agreement
    assert agreement is not None
    if req.node_id in engine.genesis.member_ids:
        return b""  # a founder: nothing to decide
    timeout = min(agreement.config.timeout_ms, JOIN_TIMEOUT_MS_MAX)
    joined, attempts = joined_in(agreement, req.node_id), 0
    while joined is None:
        if attempts == JOIN_ATTEMPTS_MAX:
            raise SlotRefused("membership kept changing under the join; try again")
        attempts += 1
        check_reads(engine, req)  # schema/<v> may have been decided since the last attempt
        m = agreement.membership()
        value = m.joined(req.key, "node").to_value()
        await engine.propose(membership_slot(m.version + 1), value, timeout)
        joined = joined_in(agreement, req.node_id)
    key = (peer_key(req.node_id),)
    row = engine.row(INTERNAL, key)
    if row is None or row.get("value") != req.address.encode():
        await engine.write([Upsert(INTERNAL, key, {"value": req.address.encode()})], "local", 0)
    return joined


def joined_in(agreement, node_id: str) -> bytes | None:
    """The id of the first decided membership that holds node_id (None: not a voter)."""
    for version, m in sorted(agreement.ledger.memberships.items()):
        if version > 0 and node_id in m.voters:
            return hashlib.blake2b(encode(m.to_value()), digest_size=32).digest()
    return None
