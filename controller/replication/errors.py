"""Errors of the replication core: one base exception, rejections carry a reason code."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Reason", "ReplicationError", "Rejected", "UsageError"]


class Reason(StrEnum):
    """Why an input from a peer (or a stored op) was not applied. Each has a counter."""

    MALFORMED = "malformed"  # bytes that are not a canonical encoding of a valid value
    TOO_LARGE = "too_large"  # over a configured size bound
    WRONG_CLUSTER = "wrong_cluster"  # a message for another cluster
    UNKNOWN_AUTHOR = "unknown_author"  # no key known for the author
    BAD_SIGNATURE = "bad_signature"
    BAD_BODY = "bad_body"  # body does not fit the schema (table, column, type, key)
    BAD_PARENTS = "bad_parents"  # parents unsorted, own previous op missing or wrong
    HLC_REGRESSION = "hlc_regression"  # hlc below a parent's hlc
    NOT_MEMBER = "not_member"  # author not a member in the op's causal past
    FORBIDDEN = "forbidden"  # the policy refuses the write
    DUPLICATE = "duplicate"  # already held (harmless, counted)
    EQUIVOCATION = "equivocation"  # a second op for one (author, seq): kept as evidence
    BUFFER_FULL = "buffer_full"  # waiting for parents, but the buffer is at its bound
    FUTURE_FULL = "future_full"  # too far in the future, and the hold buffer is full
    BAD_EVIDENCE = "bad_evidence"  # an evidence pair that proves nothing


class ReplicationError(Exception):
    """Base of every error raised by controller.replication."""


class Rejected(ReplicationError):
    """An input was refused; the fault is the peer's (or the stored data's), not the caller's."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


class UsageError(ReplicationError):
    """The API was misused by the local caller (a programming error)."""
