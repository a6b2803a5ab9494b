"""The topology registry: cloud-edge plus Mininet's classic single, linear and tree."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mininet.topo import LinearTopo, SingleSwitchTopo, Topo
from mininet.topolib import TreeTopo

from topologies.cloud_edge import CloudEdgeTopo

__all__ = ["TOPOLOGIES", "TopologyError", "make_topo"]


class TopologyError(ValueError):
    """A topology name or size the user gave is not valid; the message says which."""


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TopologyError(f"{name} must be a whole number, got {value!r}")
    if value < 1:
        raise TopologyError(f"{name} must be at least 1, got {value}")
    return value


def _single(size: int = 3, **_: Any) -> Topo:
    return SingleSwitchTopo(k=_positive("size", size))


def _linear(size: int = 3, **_: Any) -> Topo:
    return LinearTopo(k=_positive("size", size), n=1)


def _tree(size: int = 2, fanout: int = 2, **_: Any) -> Topo:
    return TreeTopo(depth=_positive("depth", size), fanout=_positive("fanout", fanout))


def _cloudedge(size: int = 3, **kw: Any) -> Topo:
    try:
        return CloudEdgeTopo(sites=_positive("sites", size), **kw)
    except ValueError as e:
        raise TopologyError(str(e)) from None


# name -> factory(size, **options). `size` is sites / switches / depth by topology.
TOPOLOGIES: dict[str, Callable[..., Topo]] = {
    "cloudedge": _cloudedge,
    "single": _single,
    "linear": _linear,
    "tree": _tree,
}


def make_topo(name: str, size: int, **options: Any) -> Topo:
    """Build a topology by name, with a clear error for unknown names or bad sizes."""
    factory = TOPOLOGIES.get(name)
    if factory is None:
        raise TopologyError(
            f"unknown topology {name!r}: choose one of {', '.join(sorted(TOPOLOGIES))}"
        )
    return factory(size=size, **options)
