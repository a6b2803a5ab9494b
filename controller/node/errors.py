"""The one base of the errors controller.node raises (STYLE.md habit 7: errors by fault)."""

from __future__ import annotations

__all__ = ["NodeBaseError"]


class NodeBaseError(Exception):
    """Base of every error raised by controller.node: catch this to catch them all.

    Each subclass says whose fault it is in its docstring (a client's request, a peer, the
    configuration or data directory, the node itself).
    """
