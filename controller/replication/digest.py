"""Elliptic-curve multiset hash (ECMH) on edwards25519: a digest of a set, updatable by +/-."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from nacl.bindings import (
    crypto_core_ed25519_add,
    crypto_core_ed25519_from_uniform,
    crypto_core_ed25519_sub,
)

try:  # PyNaCl's cffi module: the same libsodium functions without the per-call checks
    from nacl._sodium import ffi as _ffi
    from nacl._sodium import lib as _lib
except ImportError:  # pragma: no cover - another PyNaCl layout: the public bindings do it
    _ffi = _lib = None

from .identity import hash32

__all__ = ["IDENTITY_POINT", "Ecmh", "point_of", "points_of"]

IDENTITY_POINT = b"\x01" + b"\x00" * 31  # the neutral element: digest of the empty set
_PERSON = b"synod-ecmh"


def point_of(element: bytes, person: bytes = _PERSON) -> bytes:
    """Hash an element to a point (Elligator 2 via libsodium's from_uniform)."""
    return crypto_core_ed25519_from_uniform(hash32(element, person=person))


def points_of(elements: Iterable[bytes], person: bytes = _PERSON) -> list[bytes]:
    """point_of for many elements: the same points, without PyNaCl's per-call wrapper.

    libsodium has no batched hash-to-curve: each element still costs one from_uniform
    (Elligator 2 plus a cofactor clearing and a point compression, about 20 µs here)."""
    if _lib is None:  # pragma: no cover
        return [point_of(e, person) for e in elements]
    blake2b, from_uniform = hashlib.blake2b, _lib.crypto_core_ed25519_from_uniform
    out = _ffi.new("unsigned char[32]")
    buf = _ffi.buffer(out)
    points = []
    for element in elements:
        if from_uniform(out, blake2b(element, digest_size=32, person=person).digest()) != 0:
            raise RuntimeError("crypto_core_ed25519_from_uniform failed")  # never, by libsodium
        points.append(buf[:])
    return points


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

    def update(self, added: Iterable[bytes] = (), removed: Iterable[bytes] = ()) -> None:
        """Add and subtract many points in one pass (the same sum as add/sub one by one).

        The accumulator stays in one C buffer; libsodium still decompresses both operands
        and compresses the result of every addition (it has no multi-point sum)."""
        if _lib is None:  # pragma: no cover
            for p in added:
                self.add(p)
            for p in removed:
                self.sub(p)
            return
        if len(self.value) != 32:
            raise ValueError("not an edwards25519 point")
        acc = _ffi.new("unsigned char[32]")
        _ffi.memmove(acc, self.value, 32)
        add, sub = _lib.crypto_core_ed25519_add, _lib.crypto_core_ed25519_sub
        for p in added:
            if len(p) != 32 or add(acc, acc, p) != 0:
                raise ValueError("not an edwards25519 point")
        for p in removed:
            if len(p) != 32 or sub(acc, acc, p) != 0:
                raise ValueError("not an edwards25519 point")
        self.value = _ffi.buffer(acc)[:]

    def copy(self) -> Ecmh:
        return Ecmh(self.value)
