"""Hybrid logical clock packed in one integer: wall milliseconds << 16 | logical counter."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LOGICAL_BITS", "HybridClock", "hlc_wall_ms", "hlc_pack"]

LOGICAL_BITS = 16


def hlc_pack(wall_ms: int, logical: int = 0) -> int:
    return (wall_ms << LOGICAL_BITS) | logical


def hlc_wall_ms(hlc: int) -> int:
    return hlc >> LOGICAL_BITS


@dataclass
class HybridClock:
    """The usual HLC rules on a packed integer.

    Packing makes the order a plain integer order, and a logical counter that overflows
    simply carries into the wall part, which stays monotonic. `max_skew_ms` bounds how far
    ahead of our wall clock a remote timestamp may be and still be observed.
    """

    max_skew_ms: int = 60_000
    last: int = 0

    def send(self, now_ms: int) -> int:
        """Timestamp for a local event: strictly above every timestamp seen so far."""
        self.last = max(self.last + 1, hlc_pack(now_ms))
        return self.last

    def too_far_ahead(self, hlc: int, now_ms: int) -> bool:
        return hlc_wall_ms(hlc) > now_ms + self.max_skew_ms

    def observe(self, remote: int, now_ms: int) -> None:
        """Take a remote timestamp into account (caller checked it is not too far ahead)."""
        self.last = max(self.last, remote, hlc_pack(now_ms))
