"""Mininet topologies (cloud-edge, single, linear, tree) and the emulation scenario runner."""
