"""Slots, ballots and the five vote bodies (prepare, promise, accept, accepted, refuse)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from controller.replication import encode

from .errors import Reason, Refused

__all__ = [
    "PREPARE",
    "PROMISE",
    "ACCEPT",
    "ACCEPTED",
    "REFUSE",
    "VOTE_KINDS",
    "Ballot",
    "Vote",
    "Prepare",
    "Promise",
    "Accept",
    "Accepted",
    "Refuse",
    "VoteMessage",
    "slot_kind",
    "check_slot",
    "to_body",
    "from_body",
    "value_key",
]

PREPARE, PROMISE, ACCEPT, ACCEPTED, REFUSE = "prepare", "promise", "accept", "accepted", "refuse"
VOTE_KINDS = frozenset({PREPARE, PROMISE, ACCEPT, ACCEPTED, REFUSE})
_SLOT = re.compile(r"^[a-z][a-z0-9-]{0,31}(/[A-Za-z0-9._:-]{1,64}){0,4}$")


def check_slot(slot: Any) -> str:
    """A slot name is 'kind/part/...': lowercase kind, at most 4 parts (e.g. policy/v8)."""
    if not (isinstance(slot, str) and _SLOT.match(slot)):
        raise Refused(Reason.MALFORMED, f"bad slot name {slot!r}")
    return slot


def slot_kind(slot: str) -> str:
    return slot.split("/", 1)[0]


def slot_number(slot: str, kind: str, least: int = 1) -> int | None:
    """n for '<kind>/<n>' with n written canonically (no sign, no leading zero) and n >=
    least; else None."""
    head, _, rest = slot.partition("/")
    if head != kind or not rest.isdigit() or rest != str(int(rest)) or int(rest) < least:
        return None
    return int(rest)


def value_key(value: Any) -> bytes:
    """Values are plain CBOR (maybe unhashable): compare and group them by canonical bytes."""
    return encode(value)


@dataclass(frozen=True, order=True)
class Ballot:
    """Per-slot ballot. mv (the membership version it is sent under) orders first, so a
    ballot under a newer membership is above every ballot under an older one."""

    mv: int
    round: int
    node: str

    def to_plain(self) -> list:
        return [self.mv, self.round, self.node]

    @classmethod
    def from_plain(cls, plain: Any) -> Ballot:
        ok = (
            isinstance(plain, list)
            and len(plain) == 3
            and type(plain[0]) is int
            and type(plain[1]) is int
            and isinstance(plain[2], str)
            and plain[0] >= 0
            and plain[1] >= 1
        )
        if not ok:
            raise Refused(Reason.MALFORMED, "ballot is [mv, round, node]")
        return cls(plain[0], plain[1], plain[2])

    def __str__(self) -> str:
        return f"{self.mv}.{self.round}.{self.node[:6]}"


@dataclass(frozen=True)
class Vote:
    """An accepted (ballot, value): what a promise reports as the highest vote it holds."""

    ballot: Ballot
    value: Any


@dataclass(frozen=True)
class Prepare:
    slot: str
    ballot: Ballot


@dataclass(frozen=True)
class Promise:
    slot: str
    ballot: Ballot
    last: Vote | None  # the highest accepted vote below ballot the acceptor holds (any author)


@dataclass(frozen=True)
class Accept:
    slot: str
    ballot: Ballot
    value: Any


@dataclass(frozen=True)
class Accepted:
    slot: str
    ballot: Ballot
    value: Any


@dataclass(frozen=True)
class Refuse:
    """A no: names the reason, the acceptor's promised ballot and its membership version."""

    slot: str
    ballot: Ballot
    reason: str
    promised: Ballot | None
    mv: int


VoteMessage = Prepare | Promise | Accept | Accepted | Refuse


def to_body(msg: VoteMessage) -> tuple[str, dict]:
    """(kind, data) for Replica.emit."""
    data: dict[str, Any] = {"slot": msg.slot, "ballot": msg.ballot.to_plain()}
    if isinstance(msg, Prepare):
        return PREPARE, data
    if isinstance(msg, Promise):
        data["last"] = None if msg.last is None else [msg.last.ballot.to_plain(), msg.last.value]
        return PROMISE, data
    if isinstance(msg, Accept | Accepted):
        data["value"] = msg.value
        return (ACCEPT if isinstance(msg, Accept) else ACCEPTED), data
    data["reason"] = msg.reason
    data["promised"] = None if msg.promised is None else msg.promised.to_plain()
    data["mv"] = msg.mv
    return REFUSE, data


def from_body(kind: str, data: Any) -> VoteMessage:
    """Decode a vote body; raises Refused(MALFORMED)."""
    if kind not in VOTE_KINDS or not isinstance(data, dict):
        raise Refused(Reason.MALFORMED, f"{kind} body")
    keys = {
        PREPARE: {"slot", "ballot"},
        PROMISE: {"slot", "ballot", "last"},
        ACCEPT: {"slot", "ballot", "value"},
        ACCEPTED: {"slot", "ballot", "value"},
        REFUSE: {"slot", "ballot", "reason", "promised", "mv"},
    }[kind]
    if set(data) != keys:
        raise Refused(Reason.MALFORMED, f"{kind} has keys {sorted(keys)}")
    slot, ballot = check_slot(data["slot"]), Ballot.from_plain(data["ballot"])
    if kind == PREPARE:
        return Prepare(slot, ballot)
    if kind == PROMISE:
        last = data["last"]
        if last is None:
            return Promise(slot, ballot, None)
        if not (isinstance(last, list) and len(last) == 2):
            raise Refused(Reason.MALFORMED, "last is [ballot, value]")
        vote = Vote(Ballot.from_plain(last[0]), last[1])
        if not vote.ballot < ballot:
            raise Refused(Reason.MALFORMED, "a promise reports a vote below its ballot")
        return Promise(slot, ballot, vote)
    if kind in (ACCEPT, ACCEPTED):
        cls = Accept if kind == ACCEPT else Accepted
        return cls(slot, ballot, data["value"])
    promised = data["promised"]
    if not (isinstance(data["reason"], str) and type(data["mv"]) is int):
        raise Refused(Reason.MALFORMED, "refuse fields")
    return Refuse(
        slot,
        ballot,
        data["reason"],
        None if promised is None else Ballot.from_plain(promised),
        data["mv"],
    )
