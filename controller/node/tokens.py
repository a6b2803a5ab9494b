"""Bearer tokens with roles: format, hashing, and their rows in the reserved `internal` table."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum

from controller.replication import decode, encode
from controller.replication.reserved import TOKEN_PREFIX as ROW_PREFIX
from controller.replication.reserved import token_key

from .errors import NodeBaseError

__all__ = [
    "Role",
    "TOKEN_PREFIX",
    "TokenError",
    "TokenRecord",
    "token_key",
    "expiry_ms",
    "new_token",
    "parse_token",
    "record_from_row",
    "utc_text",
]

TOKEN_PREFIX = "synod_"


class Role(IntEnum):
    """Ordered: each role may do everything the ones below it may."""

    VIEWER = 1  # reads: status, rows, SQL
    OPERATOR = 2  # also writes rows, reports from controller and agent
    ADMIN = 3  # also tokens, policy, membership

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.upper()]
        except KeyError:
            raise TokenError(f"unknown role {name!r}: choose viewer, operator or admin") from None

    @property
    def label(self) -> str:
        return self.name.lower()


class TokenError(NodeBaseError):
    """A token that is malformed, unknown or revoked; the message says which."""


@dataclass(frozen=True)
class TokenRecord:
    id: str
    role: Role
    digest: bytes  # BLAKE2b of the secret: the secret itself is never stored
    description: str
    created_ms: int
    revoked: bool = False
    expires_ms: int = 0  # UTC ms after which the token no longer authenticates; 0: never

    def to_row(self) -> bytes:
        row = {
            "role": self.role.label,
            "hash": self.digest,
            "description": self.description,
            "created_ms": self.created_ms,
            "revoked": self.revoked,
        }
        if self.expires_ms:  # a token without expiry keeps the row it had before expiry
            row["expires_ms"] = self.expires_ms
        return encode(row)

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.digest, _digest(secret))

    def expired(self, now_ms: int) -> bool:
        return bool(self.expires_ms) and now_ms >= self.expires_ms


def utc_text(ms: int) -> str:
    """A UTC time for people: 2030-01-31T12:00:00Z."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def expiry_ms(text: str, now_ms: int) -> int:
    """When a token given `--expires text` at now_ms expires, in UTC ms: a duration
    (90m, 12h, 30d, 2w) or an ISO date or time (2030-01-31, 2030-01-31T12:00:00Z; a time
    without zone is UTC). TokenError for anything else or a time not in the future."""
    text = text.strip()
    m = _DURATION.match(text.lower())
    if m:
        delta = timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
        at = now_ms + int(delta.total_seconds() * 1000)
    else:
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise TokenError(
                f"expiry {text[:40]!r}: give a duration (90m, 12h, 30d, 2w) or an ISO date "
                "or time (2030-01-31, 2030-01-31T12:00:00Z)"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        at = int(when.timestamp() * 1000)
    if at <= now_ms:
        raise TokenError(f"expiry {utc_text(at)} is not in the future")
    return at


def _digest(secret: str) -> bytes:
    return hashlib.blake2b(secret.encode(), digest_size=32, person=b"synod-token").digest()


def new_token(
    role: Role, description: str, now_ms: int, expires_ms: int = 0
) -> tuple[str, TokenRecord]:
    """A fresh bearer token string and the record to store for it."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    record = TokenRecord(token_id, role, _digest(secret), description, now_ms,
                         expires_ms=expires_ms)
    return f"{TOKEN_PREFIX}{token_id}.{secret}", record


def parse_token(token: str) -> tuple[str, str]:
    """(id, secret) of a bearer token string, or TokenError."""
    if not token.startswith(TOKEN_PREFIX) or "." not in token:
        raise TokenError("malformed token: expected synod_<id>.<secret>")
    token_id, _, secret = token[len(TOKEN_PREFIX) :].partition(".")
    if len(token_id) != 16 or not secret or len(secret) > 128:
        raise TokenError("malformed token: expected synod_<id>.<secret>")
    return token_id, secret


def record_from_row(key: str, value: bytes | None) -> TokenRecord | None:
    """Decode an `internal` row written by to_row (None if it is not a valid token row)."""
    if not key.startswith(ROW_PREFIX) or value is None:
        return None
    try:
        plain = decode(value)
        return TokenRecord(
            key[len(ROW_PREFIX) :],
            Role.parse(plain["role"]),
            plain["hash"],
            plain.get("description", ""),
            plain.get("created_ms", 0),
            bool(plain.get("revoked", False)),
            int(plain.get("expires_ms", 0)),  # rows from before expiry have none: never
        )
    except Exception:  # a corrupt row must not take the node down: it grants nothing
        return None
