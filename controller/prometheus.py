"""A Prometheus registry for one process's collector (the node's or a controller's)."""

from __future__ import annotations

from typing import Any

__all__ = ["process_registry"]


def process_registry(collector: Any) -> Any:
    """A prometheus_client registry of `collector`'s families plus the process's own
    (process_*, python_*, gc); one per collector, so in-process test nodes do not mix.
    prometheus_client is imported here, on first use, not at start."""
    from prometheus_client import (
        CollectorRegistry,
        GCCollector,
        PlatformCollector,
        ProcessCollector,
    )

    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    GCCollector(registry=reg)
    return reg
