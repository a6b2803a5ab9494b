"""Deterministic simulation of many replicas on a faulty network, in one process."""

from .harness import Cluster, SimConfig, SimFailure, SimResult, run_seed

__all__ = ["Cluster", "SimConfig", "SimFailure", "SimResult", "run_seed"]
