"""Client authentication and fairness: bearer tokens -> role, per-client rate and in-flight
limits, so a flood from one client does not starve the others."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import NodeBaseError
from .tokens import (
    Role,
    TokenError,
    TokenRecord,
    parse_token,
    record_from_row,
    token_key,
    utc_text,
)

__all__ = ["Authenticator", "Denied", "TokenBucket"]


# A token made on another node reaches this one by sync: a node started a moment ago (or
# cut off from its peers) may not hold it yet. Said once, in the error itself.
UNKNOWN_HINT = (" (not known to this node: a wrong token, or one this node has not yet "
                "received from its peers)")


class Denied(NodeBaseError):
    """code is 'unauthenticated', 'permission_denied' or 'resource_exhausted'."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self.clock = rate_per_s, float(burst), clock
        self.tokens, self.last = float(burst), clock()

    def take(self, n: float = 1) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


@dataclass
class _Client:
    bucket: TokenBucket
    inflight: int = 0


class Authenticator:
    """Resolves tokens against the replicated kv table (read through `lookup`)."""

    clients_max = 10_000  # distinct clients tracked; beyond this the oldest are forgotten
    wall_clock = staticmethod(time.time)  # token expiry (UTC); `clock` is for rates

    def __init__(
        self,
        lookup: Callable[[str], bytes | None],
        rate_per_s: float,
        burst: int,
        inflight_max: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lookup = lookup
        self.rate_per_s, self.burst, self.inflight_max = rate_per_s, burst, inflight_max
        self.clock = clock
        self._clients: dict[str, _Client] = {}
        self._records: dict[str, tuple[bytes, TokenRecord | None]] = {}

    def record(self, token_id: str) -> TokenRecord | None:
        raw = self.lookup(token_key(token_id))
        if raw is None:
            return None
        cached = self._records.get(token_id)
        if cached is None or cached[0] != raw:
            cached = (raw, record_from_row(token_key(token_id), raw))
            self._records[token_id] = cached
        return cached[1]

    def authenticate(self, header: str | None, needed: Role) -> TokenRecord:
        if not header:
            raise Denied("unauthenticated", "missing 'authorization: Bearer <token>' metadata")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Denied("unauthenticated", "authorization must be 'Bearer <token>'")
        try:
            token_id, secret = parse_token(token.strip())
        except TokenError as exc:
            raise Denied("unauthenticated", str(exc)) from None
        record = self.record(token_id)
        if record is None or not record.matches(secret):
            raise Denied("unauthenticated", f"unknown token {token_id}{UNKNOWN_HINT}")
        if record.revoked:
            raise Denied("unauthenticated", f"token {token_id} is revoked")
        if record.expired(int(self.wall_clock() * 1000)):
            raise Denied("unauthenticated",
                         f"token {token_id} expired at {utc_text(record.expires_ms)}")
        if record.role < needed:
            raise Denied(
                "permission_denied",
                f"token {token_id} has role {record.role.label}; this needs {needed.label}",
            )
        return record

    def admit(self, client: str) -> None:
        """Count one call of client against its rate and in-flight bounds (or Denied)."""
        c = self._clients.get(client)
        if c is None:
            if len(self._clients) >= self.clients_max:
                self._clients.pop(next(iter(self._clients)))
            c = self._clients[client] = _Client(
                TokenBucket(self.rate_per_s, self.burst, self.clock)
            )
        if not c.bucket.take():
            raise Denied(
                "resource_exhausted", f"rate limit: {self.rate_per_s:g} calls/s per client"
            )
        if c.inflight >= self.inflight_max:
            raise Denied("resource_exhausted", f"more than {self.inflight_max} calls in flight")
        c.inflight += 1

    def release(self, client: str) -> None:
        c = self._clients.get(client)
        if c is not None and c.inflight > 0:
            c.inflight -= 1
