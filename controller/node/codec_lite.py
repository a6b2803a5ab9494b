"""Small helpers the CLI uses on top of codec (kept apart so imports stay lazy)."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["json_plain", "pb", "plain", "value", "values"]


def pb():
    from synod.v1 import northbound_pb2

    return northbound_pb2


def plain(message) -> dict:
    from .client import to_plain

    return to_plain(message)


def value(v):
    from . import codec

    return codec.value_from_pb(v)


def json_plain(v):
    from . import codec

    return codec.json_plain(v)


def values(vs: Iterable) -> list:
    from . import codec

    return [codec.value_pb(v) for v in vs]
