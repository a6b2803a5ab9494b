"""Deterministic CBOR (RFC 8949 §4.2, via cbor2 canonical mode): the wire and hash format."""

from __future__ import annotations

from typing import Any

import cbor2

from .errors import Reason, Rejected

__all__ = ["encode", "decode", "check_plain"]

_PLAIN_SCALARS = (int, str, bytes, float, bool, type(None))
_DEPTH_MAX = 32


def encode(value: Any) -> bytes:
    """Canonical bytes of a plain value (ints, strings, bytes, floats, bools, None, lists, maps).

    Tuples encode as arrays. Equal values always give equal bytes, across runs and machines.
    """
    return cbor2.dumps(value, canonical=True)


def decode(data: bytes) -> Any:
    """Decode canonical bytes; anything else (trailing bytes, non-shortest forms, unsorted maps,
    tags, indefinite lengths) is rejected, so one value has exactly one accepted encoding."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise Rejected(Reason.MALFORMED, "not bytes")
    data = bytes(data)
    try:
        value = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types; all mean the same to us
        raise Rejected(Reason.MALFORMED, f"undecodable: {type(exc).__name__}") from None
    check_plain(value)
    try:
        again = cbor2.dumps(value, canonical=True)
    except Exception:
        raise Rejected(Reason.MALFORMED, "unencodable value") from None
    if again != data:
        raise Rejected(Reason.MALFORMED, "not canonical")
    return value


def check_plain(value: Any, depth: int = 0) -> None:
    """Reject anything but the plain CBOR data model (no tags, sets, dates, bignum objects)."""
    if depth > _DEPTH_MAX:
        raise Rejected(Reason.MALFORMED, "nested too deeply")
    if depth == _DEPTH_MAX:  # its items are too deep: let the general rule say so
        _check_other(value, depth)
        return
    kind = type(value)
    if kind is list:
        for item in value:
            if type(item) not in _EXACT_SCALARS:  # most items: no call, same verdict
                check_plain(item, depth + 1)
    elif kind is dict:
        for key, item in value.items():
            if type(key) not in _KEY_TYPES:
                _check_key(key)
            if type(item) not in _EXACT_SCALARS:
                check_plain(item, depth + 1)
    elif kind not in _EXACT_SCALARS:
        _check_other(value, depth)


# Exact types decided without isinstance; anything else (subclasses) takes the general rule.
_EXACT_SCALARS = frozenset(_PLAIN_SCALARS)
_KEY_TYPES = frozenset((str, int))


def _check_key(key: Any) -> None:
    if not isinstance(key, str | int) or isinstance(key, bool):
        raise Rejected(Reason.MALFORMED, "map key not text or int")


def _check_other(value: Any, depth: int) -> None:
    """The general rule, for values whose exact type is none of the plain ones."""
    if isinstance(value, list):
        for item in value:
            check_plain(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_key(key)
            check_plain(item, depth + 1)
    elif not isinstance(value, _PLAIN_SCALARS):
        raise Rejected(Reason.MALFORMED, f"unsupported type {type(value).__name__}")
