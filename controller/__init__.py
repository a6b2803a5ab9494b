"""Synod: a partition-tolerant, decentralised SDN control plane for cloud-edge sites."""

__version__ = "0.1.0"
__all__ = ["__version__"]
