"""Peer messages of the sync protocol (values), and their canonical encoding."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .encoding import decode, encode
from .errors import Reason, Rejected
from .identity import NodeId
from .op import OpId
from .vectors import VECTOR_HASH_BYTES

__all__ = [
    "VersionVector",
    "SyncRequest",
    "OpBatch",
    "Message",
    "Outbound",
    "encode_message",
    "decode_message",
]

VersionVector = Mapping[NodeId, int]  # author -> highest seq held with no gap below it


@dataclass(frozen=True)
class SyncRequest:
    """'Here is what I hold; send me what I lack.' Answered by one OpBatch."""

    cluster_id: bytes
    sender: NodeId
    vector: VersionVector
    wants: tuple[OpId, ...] = ()  # ops asked for by id (missing parents of buffered ops)
    forks: Mapping[NodeId, int] = field(default_factory=dict)  # equivocators I know: lowest seq
    # Vector deltas (controller/replication/vectors.py): with vector_base, vector holds only
    # the entries changed since the vector of that hash; vector_hash names the whole one;
    # resync asks the receiver to send its whole vector next time.
    vector_base: bytes = b""
    vector_hash: bytes = b""
    resync: bool = False


@dataclass(frozen=True)
class OpBatch:
    """Ops in causal order (an eager push, or the answer to a SyncRequest).

    vector is the sender's version vector when it is an answer (so the receiver can push
    back what the sender lacks); more says the sender had more to send than fitted.
    evidence holds pairs of conflicting ops (flattened: a0, b0, a1, b1, …). base is the
    sender's pruned cut, set only in an answer to a requester that lacks ops pruned there:
    sync cannot bring those, it needs a snapshot (decision 0070). Encoded as an eighth
    field only when set, so every other message keeps its seven.
    """

    cluster_id: bytes
    sender: NodeId
    ops: tuple[bytes, ...]
    vector: VersionVector | None = None
    more: bool = False
    evidence: tuple[bytes, ...] = ()
    base: VersionVector | None = None
    vector_base: bytes = b""  # as in SyncRequest
    vector_hash: bytes = b""
    resync: bool = False


Message = SyncRequest | OpBatch


@dataclass(frozen=True)
class Outbound:
    to: NodeId
    message: Message


_SYNC, _OPS = 1, 2


def encode_message(msg: Message) -> bytes:
    if isinstance(msg, SyncRequest):
        plain = [_SYNC, msg.cluster_id, msg.sender, dict(msg.vector), list(msg.wants),
                 dict(msg.forks)]
        tail: list = []
    else:
        vector = None if msg.vector is None else dict(msg.vector)
        plain = [_OPS, msg.cluster_id, msg.sender, list(msg.ops), vector, msg.more,
                 list(msg.evidence)]
        tail = [None if msg.base is None else dict(msg.base)]
    if msg.vector_hash or msg.resync:  # only to peers that take them (an older one refuses)
        plain += tail + [msg.vector_base, msg.vector_hash, msg.resync]
    elif isinstance(msg, OpBatch) and msg.base is not None:
        plain += tail
    return encode(plain)


def _vector(v: object) -> dict[NodeId, int]:
    if not isinstance(v, dict) or not all(
        isinstance(k, str) and type(s) is int and s >= 0 for k, s in v.items()
    ):
        raise Rejected(Reason.MALFORMED, "vector is {node id: seq}")
    return v


def _byte_list(v: object, size: int | None = None) -> tuple[bytes, ...]:
    if not isinstance(v, list) or not all(
        isinstance(x, bytes) and (size is None or len(x) == size) for x in v
    ):
        raise Rejected(Reason.MALFORMED, "expected a list of byte strings")
    return tuple(v)


def decode_message(data: bytes, bytes_max: int) -> Message:
    """Decode a peer message, or raise Rejected (MALFORMED, TOO_LARGE)."""
    if len(data) > bytes_max:
        raise Rejected(Reason.TOO_LARGE, f"message of {len(data)} bytes")
    plain = decode(data)
    if not isinstance(plain, list) or not plain or plain[0] not in (_SYNC, _OPS):
        raise Rejected(Reason.MALFORMED, "unknown message")
    if len(plain) < 3 or not isinstance(plain[1], bytes) or not isinstance(plain[2], str):
        raise Rejected(Reason.MALFORMED, "message header")
    if plain[0] == _SYNC:
        if len(plain) not in (6, 9):
            raise Rejected(Reason.MALFORMED, "sync request has 6 or 9 fields")
        _, cluster_id, sender, vector, wants, forks = plain[:6]
        return SyncRequest(
            cluster_id, sender, _vector(vector), _byte_list(wants, 32), _vector(forks),
            *_delta_fields(plain[6:]),
        )
    # 7 fields; 8 with a pruned base (or null before delta fields); 11 with delta fields.
    if len(plain) not in (7, 8, 11) or not isinstance(plain[5], bool):
        raise Rejected(Reason.MALFORMED, "op batch has 7 fields (8 with a pruned base, 11 "
                                         "with vector delta fields)")
    _, cluster_id, sender, ops, vector, more, evidence = plain[:7]
    base = None
    if len(plain) > 7 and (plain[7] is not None or len(plain) == 8):
        base = _vector(plain[7])
    if base is not None and (not base or vector is None):
        raise Rejected(Reason.MALFORMED, "a pruned base, empty or outside an answer")
    evidence = _byte_list(evidence)
    if len(evidence) % 2:
        raise Rejected(Reason.MALFORMED, "evidence comes in pairs")
    return OpBatch(
        cluster_id,
        sender,
        _byte_list(ops),
        None if vector is None else _vector(vector),
        more,
        evidence,
        base,
        *_delta_fields(plain[8:]),
    )


def _delta_fields(extra: list) -> tuple[bytes, bytes, bool]:
    if not extra:
        return b"", b"", False
    base, digest, resync = extra
    sizes = (0, VECTOR_HASH_BYTES)
    if not (isinstance(base, bytes) and isinstance(digest, bytes) and len(base) in sizes
            and len(digest) in sizes and isinstance(resync, bool)):
        raise Rejected(Reason.MALFORMED, "vector delta fields: two hashes and a flag")
    if base and not digest:
        raise Rejected(Reason.MALFORMED, "a vector delta without the whole vector's hash")
    return base, digest, resync
