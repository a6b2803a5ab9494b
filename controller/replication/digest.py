"""Elliptic-curve multiset hash (ECMH) on edwards25519: a digest of a set, updatable by +/-."""

from __future__ import annotations

from nacl.bindings import (
    crypto_core_ed25519_add,
    crypto_core_ed25519_from_uniform,
    crypto_core_ed25519_sub,
)

from .identity import hash32

__all__ = ["IDENTITY_POINT", "Ecmh", "point_of"]

IDENTITY_POINT = b"\x01" + b"\x00" * 31  # the neutral element: digest of the empty set


def point_of(element: bytes, person: bytes = b"synod-ecmh") -> bytes:
    """Hash an element to a point (Elligator 2 via libsodium's from_uniform)."""
    return crypto_core_ed25519_from_uniform(hash32(element, person=person))


class Ecmh:
    """Sum of the points of a multiset's elements; the digest of A ∪ B is digest(A) + digest(B).

    Insertion order never matters (the group is commutative), so two holders of equal
    multisets hold equal 32 bytes, however they got there.
    """

    __slots__ = ("value",)

    def __init__(self, value: bytes = IDENTITY_POINT) -> None:
        self.value = value

    def add(self, point: bytes) -> None:
        self.value = crypto_core_ed25519_add(self.value, point)

    def sub(self, point: bytes) -> None:
        self.value = crypto_core_ed25519_sub(self.value, point)

    def copy(self) -> Ecmh:
        return Ecmh(self.value)
