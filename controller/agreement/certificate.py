"""Decision certificates: a majority of signed `accepted` ops for one ballot, verified alone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.replication import DEFAULT_SCHEMA, Config, Op, Rejected, decode_op
from controller.replication.identity import verify_signature
from controller.replication.op import op_signing_message

from .errors import Reason, Refused
from .membership import Membership
from .messages import ACCEPTED, Accepted, Ballot, from_body, value_key

__all__ = ["Certificate", "Decision", "certificate_ops", "certificate_voters", "verify_certificate"]


@dataclass(frozen=True)
class Certificate:
    """The signed `accepted` ops (raw bytes) of a majority of the voters of ballot.mv."""

    slot: str
    ballot: Ballot
    value: Any
    ops: tuple[bytes, ...]

    def to_plain(self) -> list:
        return [self.slot, self.ballot.to_plain(), self.value, list(self.ops)]

    @classmethod
    def from_plain(cls, plain: Any) -> Certificate:
        if not (isinstance(plain, list) and len(plain) == 4 and isinstance(plain[3], list)):
            raise Refused(Reason.BAD_CERTIFICATE, "certificate is [slot, ballot, value, ops]")
        return cls(plain[0], Ballot.from_plain(plain[1]), plain[2], tuple(plain[3]))


@dataclass(frozen=True)
class Decision:
    slot: str
    value: Any
    certificate: Certificate


def verify_certificate(
    cert: Certificate,
    cluster_id: bytes,
    membership_of: Callable[[int], Membership | None],
) -> None:
    """Check a certificate with no other state than the memberships; raise Refused.

    Every op must be a validly signed `accepted` for cert's slot, ballot and value, by a
    distinct voter of the membership the ballot names, and there must be a majority of them.
    """
    membership = membership_of(cert.ballot.mv)
    if membership is None:
        raise Refused(Reason.BAD_CERTIFICATE, f"membership {cert.ballot.mv} unknown")
    want = value_key(cert.value)
    cfg = Config()
    authors: set[str] = set()
    for raw in cert.ops:
        try:
            op = decode_op(raw, DEFAULT_SCHEMA, cfg.parents_max, cfg.mutations_max)
            vote = from_body(op.body.kind, getattr(op.body, "data", None))
        except (Rejected, Refused) as exc:
            raise Refused(Reason.BAD_CERTIFICATE, f"undecodable vote: {exc}") from None
        key = membership.voters.get(op.author)
        if key is None:
            raise Refused(Reason.BAD_CERTIFICATE, f"{op.author[:8]} is not a voter")
        if not verify_signature(key, op_signing_message(cluster_id, op.unsigned), op.signature):
            raise Refused(Reason.BAD_CERTIFICATE, f"bad signature by {op.author[:8]}")
        ok = (
            op.body.kind == ACCEPTED
            and isinstance(vote, Accepted)
            and vote.slot == cert.slot
            and vote.ballot == cert.ballot
            and value_key(vote.value) == want
        )
        if not ok:
            raise Refused(Reason.BAD_CERTIFICATE, "a vote for another slot, ballot or value")
        authors.add(op.author)
    if len(authors) < membership.quorum:
        raise Refused(Reason.BAD_CERTIFICATE, f"{len(authors)} of {len(membership.voters)} voters")


def certificate_ops(cert: Certificate) -> list[Op]:
    """The certificate's vote ops, decoded (check it with verify_certificate first)."""
    cfg = Config()
    try:
        return [decode_op(r, DEFAULT_SCHEMA, cfg.parents_max, cfg.mutations_max) for r in cert.ops]
    except Rejected as exc:
        raise Refused(Reason.BAD_CERTIFICATE, f"undecodable vote: {exc}") from None


def certificate_voters(cert: Certificate) -> set[str]:
    """The authors of a certificate's votes (check it with verify_certificate first)."""
    return {op.author for op in certificate_ops(cert)}
