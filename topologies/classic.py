"""The topology registry: cloud-edge, Mininet's classic single, linear and tree, and a ring."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mininet.topo import LinearTopo, SingleSwitchTopo, Topo
from mininet.topolib import TreeTopo

from topologies.cloud_edge import CloudEdgeTopo

__all__ = ["TOPOLOGIES", "RingTopo", "TopologyError", "make_topo"]


class TopologyError(ValueError):
    """A topology name or size the user gave is not valid; the message says which."""


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TopologyError(f"{name} must be a whole number, got {value!r}")
    if value < 1:
        raise TopologyError(f"{name} must be at least 1, got {value}")
    return value


class RingTopo(Topo):
    """`size` switches in a ring (a loop: flooding switches would storm), one host each."""

    def build(self, size: int = 4) -> None:
        switches = [self.addSwitch(f"s{i}", dpid=f"{i:016x}") for i in range(1, size + 1)]
        for i, switch in enumerate(switches):
            self.addLink(self.addHost(f"h{i + 1}"), switch)
        if size > 1:
            for i in range(size if size > 2 else 1):
                self.addLink(switches[i], switches[(i + 1) % size])


def _ring(size: int = 4, **_: Any) -> Topo:
    return RingTopo(size=_positive("size", size))


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
    "ring": _ring,
}


def make_topo(name: str, size: int, **options: Any) -> Topo:
    """Build a topology by name, with a clear error for unknown names or bad sizes."""
    factory = TOPOLOGIES.get(name)
    if factory is None:
        raise TopologyError(
            f"unknown topology {name!r}: choose one of {', '.join(sorted(TOPOLOGIES))}"
        )
    return factory(size=size, **options)
