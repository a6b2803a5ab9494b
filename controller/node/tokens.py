"""Bearer tokens with roles: format, hashing, and their rows in the reserved `internal` table."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import IntEnum

from controller.replication import decode, encode
from controller.replication.reserved import TOKEN_PREFIX as ROW_PREFIX
from controller.replication.reserved import token_key

__all__ = [
    "Role",
    "TOKEN_PREFIX",
    "TokenError",
    "TokenRecord",
    "token_key",
    "new_token",
    "parse_token",
    "record_from_row",
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


class TokenError(Exception):
    """A token that is malformed, unknown or revoked; the message says which."""


@dataclass(frozen=True)
class TokenRecord:
    id: str
    role: Role
    digest: bytes  # BLAKE2b of the secret: the secret itself is never stored
    description: str
    created_ms: int
    revoked: bool = False

    def to_row(self) -> bytes:
        return encode(
            {
                "role": self.role.label,
                "hash": self.digest,
                "description": self.description,
                "created_ms": self.created_ms,
                "revoked": self.revoked,
            }
        )

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.digest, _digest(secret))


def _digest(secret: str) -> bytes:
    return hashlib.blake2b(secret.encode(), digest_size=32, person=b"synod-token").digest()


def new_token(role: Role, description: str, now_ms: int) -> tuple[str, TokenRecord]:
    """A fresh bearer token string and the record to store for it."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    record = TokenRecord(token_id, role, _digest(secret), description, now_ms)
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
        )
    except Exception:  # a corrupt row must not take the node down: it grants nothing
        return None
