"""Agreement without epochs: Paxos per slot over the op DAG, membership, policy (sans-I/O).

A slot (`membership/3`, `policy/v8`, `master/<dpid>`, ...) is decided by single-decree
Paxos whose prepare/promise/accept/accepted messages are signed ops in the replicated DAG.
Ballots exist per slot only; the membership version is their most significant part.
"""

from .certificate import Certificate, Decision, verify_certificate
from .engine import Agreement, AgreementConfig, Outcome, Proposal, Status, Watch
from .errors import AgreementError, Reason, Refused, UsageError
from .ledger import Ledger
from .lineage import (
    CONFLICTS,
    ConflictEntry,
    Lineage,
    Relation,
    check_reunion,
    conflict_mutations,
    lineage_of,
    relate,
    reunion_slot,
    row_conflicts,
    secede,
    slot_conflicts,
    winner,
    with_conflicts_table,
)
from .membership import Membership, check_change, membership_slot, membership_version_of
from .messages import (
    ACCEPT,
    ACCEPTED,
    PREPARE,
    PROMISE,
    REFUSE,
    VOTE_KINDS,
    Accept,
    Accepted,
    Ballot,
    Prepare,
    Promise,
    Refuse,
    Vote,
    check_slot,
    from_body,
    slot_kind,
    to_body,
)
from .policy import AgreementPolicy, AgreementReplica
from .quorum import VoteResult, majority, vote_result
from .rbac import ROLES, AccessPolicy, check_policy, policy_slot, policy_version_of

__all__ = [
    "CONFLICTS",
    "ConflictEntry",
    "Lineage",
    "Relation",
    "check_reunion",
    "conflict_mutations",
    "lineage_of",
    "relate",
    "reunion_slot",
    "row_conflicts",
    "secede",
    "slot_conflicts",
    "winner",
    "with_conflicts_table",
    "ACCEPT",
    "ACCEPTED",
    "PREPARE",
    "PROMISE",
    "REFUSE",
    "ROLES",
    "VOTE_KINDS",
    "AccessPolicy",
    "Accept",
    "Accepted",
    "Agreement",
    "AgreementConfig",
    "AgreementError",
    "AgreementPolicy",
    "AgreementReplica",
    "Ballot",
    "Certificate",
    "Decision",
    "Ledger",
    "Membership",
    "Outcome",
    "Prepare",
    "Promise",
    "Proposal",
    "Reason",
    "Refuse",
    "Refused",
    "Status",
    "UsageError",
    "Vote",
    "VoteResult",
    "Watch",
    "check_change",
    "check_policy",
    "check_slot",
    "from_body",
    "majority",
    "membership_slot",
    "membership_version_of",
    "policy_slot",
    "policy_version_of",
    "slot_kind",
    "to_body",
    "verify_certificate",
    "vote_result",
]
