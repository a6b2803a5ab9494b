"""Errors of the agreement layer: one base exception; refusals carry a reason code."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["AgreementError", "Reason", "Refused", "UsageError"]


class Reason(StrEnum):
    """Why an agreement input was refused. Each is counted; refusals sent to peers name one."""

    MALFORMED = "malformed"  # a vote body that does not decode
    BALLOT_TOO_LOW = "ballot_too_low"  # the acceptor promised a higher ballot
    STALE_MEMBERSHIP = "stale_membership"  # sent under an older membership than the acceptor's
    MEMBERSHIP_AHEAD = "membership_ahead"  # names a membership the acceptor does not know yet
    CHANGE_PENDING = "change_pending"  # acceptor accepted the next membership: frozen here
    NOT_VOTER = "not_voter"  # a vote from a node that is not a voter of the ballot's membership
    NOT_PROPOSER = "not_proposer"  # an accept signed by someone other than its ballot's owner
    FORBIDDEN = "forbidden"  # the author's role may not propose this slot kind
    BAD_MEMBERSHIP = "bad_membership"  # not exactly one voter added or removed, wrong version
    BAD_POLICY = "bad_policy"  # a policy value that does not validate
    LOCKOUT = "lockout"  # a policy that would leave no admin among the voters
    SELF_GRANT = "self_grant"  # a proposer raising its own role
    CONFLICTING_VOTES = "conflicting_votes"  # two accepted votes for one ballot, different values
    BAD_CERTIFICATE = "bad_certificate"  # a certificate that does not prove its decision
    UNRELATED_CLUSTER = "unrelated_cluster"  # reunion with no common genesis and no admin vote
    NO_MERGE = "no_merge"  # joining another lineage's ops without a decided merge about it
    NO_QUORUM = "no_quorum"  # the proposal timed out: no majority of voters answered
    DECIDED = "decided"  # the slot is already decided
    BAD_CHECKPOINT = "bad_checkpoint"  # a checkpoint whose chain or digests differ from ours
    CHECKPOINT_AHEAD = "checkpoint_ahead"  # a checkpoint whose cut or predecessor we lack
    SCHEMA_AHEAD = "schema_ahead"  # a schema version this node's code does not read
    BAD_SCHEMA = "bad_schema"  # a schema slot out of order, or naming other tables
    MEMBER_BEHIND = "member_behind"  # a schema version a member did not say it reads
    BAD_PLACEMENT = "bad_placement"  # a placement value or slot name that does not validate
    PLACEMENT_AHEAD = "placement_ahead"  # generation g while g - 1 is not decided here
    LEASE_HELD = "lease_held"  # a new owner while this voter still hears the old one
    BAD_LIFECYCLE = "bad_lifecycle"  # a service transition that does not validate or apply
    LIFECYCLE_AHEAD = "lifecycle_ahead"  # service/<name>/<n> while n - 1 is not decided here


class AgreementError(Exception):
    """Base of every error raised by controller.agreement."""


class Refused(AgreementError):
    """An input was refused; the fault is the peer's (or the proposal's), not the caller's."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


class UsageError(AgreementError):
    """The API was misused by the local caller (a programming error)."""
