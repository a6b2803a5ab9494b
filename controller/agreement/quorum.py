"""Quorum counting: majorities of a voter set, and the outcome of a vote so far (pure)."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from enum import Enum

__all__ = ["VoteResult", "majority", "vote_result"]


class VoteResult(Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def majority(voters: int) -> int:
    """Smallest number of voters that any other majority must intersect."""
    if voters < 1:
        raise ValueError("a vote needs at least one voter")
    return voters // 2 + 1


def vote_result(voters: Collection[str], yes: Iterable[str], no: Iterable[str]) -> VoteResult:
    """WON once a majority said yes; LOST once a majority can no longer say yes."""
    ayes = set(yes) & set(voters)
    nays = (set(no) & set(voters)) - ayes
    need = majority(len(voters))
    if len(ayes) >= need:
        return VoteResult.WON
    if len(voters) - len(nays) < need:
        return VoteResult.LOST
    return VoteResult.PENDING
