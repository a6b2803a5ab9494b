"""The node's read-only web view: topology, mastership, partitions and the cluster, live."""

from .server import WebServer, tls_context

__all__ = ["WebServer", "tls_context"]
