"""Ops: the signed, hash-identified unit of change, with its canonical encoding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .encoding import decode, encode
from .errors import Reason, Rejected, UsageError
from .identity import Identity, NodeId, hash32
from .reserved import check_internal_row
from .schema import INTERNAL, Schema, Value

__all__ = [
    "OpId",
    "RowMutation",
    "RowsBody",
    "CustomBody",
    "Body",
    "Op",
    "ROWS",
    "sign_op",
    "check_custom_kind",
    "check_mutation_count",
    "check_rows_body",
    "decode_op",
    "op_signing_message",
    "OP_ID_PERSON",
]

OpId = bytes  # 32 bytes: BLAKE2b-256 of the op's canonical bytes
ROWS = "rows"
OP_ID_PERSON = b"synod-op"
KIND_CHARS_MAX = 64  # a custom body's kind
_SIGN_PREFIX = b"synod-op\x00"


@dataclass(frozen=True)
class RowMutation:
    """One row's change inside an op: its causal length and the columns it sets.

    cl odd: the row is alive at that length (values are set; all value columns when the
    author (re)created the row). cl even: the row is deleted (values empty).
    """

    table: str
    key: tuple[Value, ...]
    cl: int
    values: dict[str, Value]

    def to_plain(self) -> list:
        return [self.table, list(self.key), self.cl, self.values]


@dataclass(frozen=True)
class RowsBody:
    mutations: tuple[RowMutation, ...]

    kind = ROWS

    def to_plain(self) -> list:
        return [ROWS, [m.to_plain() for m in self.mutations]]


@dataclass(frozen=True)
class CustomBody:
    """A body the replication core does not interpret (votes, membership, …): kind + data."""

    kind: str
    data: Any  # any plain CBOR value

    def to_plain(self) -> list:
        return [self.kind, self.data]


Body = RowsBody | CustomBody


@dataclass(frozen=True)
class Op:
    """A signed change. parents[0] is the author's previous op when seq > 1."""

    author: NodeId
    seq: int
    hlc: int
    parents: tuple[OpId, ...]
    body: Body
    signature: bytes
    raw: bytes  # canonical wire bytes: encode([unsigned, signature])
    unsigned: bytes  # canonical bytes the signature covers (after the domain prefix)
    id: OpId

    def __repr__(self) -> str:
        return f"Op({self.author[:8]}#{self.seq} {self.body.kind} id={self.id.hex()[:12]})"


def op_signing_message(cluster_id: bytes, unsigned: bytes) -> bytes:
    """What the author signs: a domain prefix, the cluster id (no replay across clusters)."""
    return _SIGN_PREFIX + cluster_id + unsigned


def sign_op(
    identity: Identity,
    cluster_id: bytes,
    seq: int,
    hlc: int,
    parents: tuple[OpId, ...],
    body: Body,
) -> Op:
    """Build and sign an op (used by the replica for its own writes)."""
    if seq < 1:
        raise UsageError("seq counts from 1")
    plain = [identity.node_id, seq, hlc, list(parents), body.to_plain()]
    unsigned = encode(plain)
    signature = identity.sign(op_signing_message(cluster_id, unsigned))
    raw = encode([unsigned, signature])
    return Op(identity.node_id, seq, hlc, parents, body, signature, raw, unsigned, _op_id(raw))


def _op_id(raw: bytes) -> OpId:
    return hash32(raw, person=OP_ID_PERSON)


def decode_op(
    raw: bytes, schema: Schema, parents_max: int, mutations_max: int, op_id: OpId | None = None
) -> Op:
    """Decode and structurally validate an op (not its signature, not its dependencies).

    `op_id` is the op's id when the caller hashed raw already (_op_id(raw)); it is not
    checked here, so pass only what was computed from these very bytes."""
    raw = bytes(raw) if isinstance(raw, bytearray | memoryview) else raw
    outer = _split_outer(raw)
    if outer is None:  # not the canonical [bytes, 64 bytes]: the general decoder says why
        outer = decode(raw)
        if not (isinstance(outer, list) and len(outer) == 2):
            raise Rejected(Reason.MALFORMED, "op is [unsigned, signature]")
        if not (
            isinstance(outer[0], bytes) and isinstance(outer[1], bytes) and len(outer[1]) == 64
        ):
            raise Rejected(Reason.MALFORMED, "op is [unsigned, signature]")
    unsigned, signature = outer
    fields = decode(unsigned)
    if not (isinstance(fields, list) and len(fields) == 5):
        raise Rejected(Reason.MALFORMED, "op has 5 fields")
    author, seq, hlc, parents, body = fields
    if not (isinstance(author, str) and len(author) == 32 and _is_lower_hex(author)):
        raise Rejected(Reason.MALFORMED, "author is a node id")
    if not (type(seq) is int and 1 <= seq < 2**63 and type(hlc) is int and 0 <= hlc < 2**63):
        raise Rejected(Reason.MALFORMED, "seq and hlc are positive int64")
    if not (
        isinstance(parents, list) and all(isinstance(p, bytes) and len(p) == 32 for p in parents)
    ):
        raise Rejected(Reason.MALFORMED, "parents are op ids")
    if len(parents) > parents_max + 1:
        raise Rejected(Reason.TOO_LARGE, f"{len(parents)} parents")
    # parents[0] is the author's own previous op (seq > 1); the others are sorted and unique.
    others = parents[1:] if seq > 1 else parents
    if seq > 1 and not parents:
        raise Rejected(Reason.BAD_PARENTS, "seq > 1 without the previous op")
    if any(a >= b for a, b in zip(others, others[1:], strict=False)):
        raise Rejected(Reason.BAD_PARENTS, "parents not sorted and unique")
    if seq > 1 and parents[0] in others[1:]:
        raise Rejected(Reason.BAD_PARENTS, "previous op listed twice")
    return Op(
        author,
        seq,
        hlc,
        tuple(parents),
        _decode_body(body, schema, mutations_max),
        signature,
        raw,
        unsigned,
        _op_id(raw) if op_id is None else op_id,
    )


def _split_outer(raw: bytes) -> tuple[bytes, bytes] | None:
    """(unsigned, signature) when raw is exactly the canonical CBOR of [bytes, 64 bytes]
    (what decode() followed by the shape check accepts), else None.

    A canonical byte string header is the shortest one: 0x40+n below 24, then 0x58 n,
    0x59 n16, 0x5a n32. The signature's header is 0x58 0x40."""
    if type(raw) is not bytes or len(raw) < 68 or raw[0] != 0x82:
        return None
    head = raw[1]
    if head < 0x58:
        if head < 0x40:
            return None
        n, start = head - 0x40, 2
    elif head == 0x58:
        n, start = raw[2], 3
        if n < 24:
            return None
    elif head == 0x59:
        n, start = int.from_bytes(raw[2:4], "big"), 4
        if n < 0x100:
            return None
    elif head == 0x5A:
        n, start = int.from_bytes(raw[2:6], "big"), 6
        if n < 0x10000:
            return None
    else:
        return None
    end = start + n
    if len(raw) != end + 66 or raw[end] != 0x58 or raw[end + 1] != 0x40:
        return None
    return raw[start:end], raw[end + 2 :]


_HEX_DIGITS = frozenset("0123456789abcdef")


def _is_lower_hex(s: str) -> bool:
    return _HEX_DIGITS.issuperset(s)


def _decode_body(body: Any, schema: Schema, mutations_max: int) -> Body:
    if not (isinstance(body, list) and len(body) == 2 and isinstance(body[0], str)):
        raise Rejected(Reason.MALFORMED, "body is [kind, data]")
    kind, data = body
    if kind != ROWS:
        check_custom_kind(kind)
        return CustomBody(kind, data)
    if not isinstance(data, list):
        raise Rejected(Reason.BAD_BODY, "rows body is a list")
    check_mutation_count(len(data), mutations_max)
    mutations = []
    for m in data:
        if not (isinstance(m, list) and len(m) == 4):
            raise Rejected(Reason.BAD_BODY, "mutation is [table, key, cl, values]")
        name, key, cl, values = m
        table = schema.table(name)
        mutations.append(RowMutation(name, table.check_key(key), cl, table.check_values(values)))
    body = RowsBody(tuple(mutations))
    check_rows_body(body, mutations_max)
    return body


def check_custom_kind(kind: str) -> None:
    """The one rule for a custom body's kind (a receiver's and the author's)."""
    if kind == ROWS or not kind or len(kind) > KIND_CHARS_MAX:
        raise Rejected(Reason.BAD_BODY, f"body kind is 1..{KIND_CHARS_MAX} characters, not 'rows'")


def check_mutation_count(count: int, mutations_max: int) -> None:
    """The one bound on row mutations per op (a receiver's and the author's)."""
    if count > mutations_max:
        raise Rejected(
            Reason.TOO_LARGE, f"{count} mutations in one op (mutations_max={mutations_max})"
        )


def check_rows_body(body: RowsBody, mutations_max: int) -> None:
    """What every node checks of a rows body beyond the schema's types, with the same
    verdict at the author (before it signs) as at every receiver and at recovery."""
    check_mutation_count(len(body.mutations), mutations_max)
    seen = set()
    for m in body.mutations:
        if not (type(m.cl) is int and 1 <= m.cl < 2**63):
            raise Rejected(Reason.BAD_BODY, "causal length is a positive int")
        if m.cl % 2 == 0 and m.values:
            raise Rejected(Reason.BAD_BODY, "a delete sets no values")
        if (m.table, m.key) in seen:
            raise Rejected(Reason.BAD_BODY, "one mutation per row per op")
        seen.add((m.table, m.key))
        if m.table == INTERNAL and m.cl % 2 == 1:
            why = check_internal_row(m.key[0], m.values)
            if why is not None:
                raise Rejected(Reason.BAD_BODY, why)
