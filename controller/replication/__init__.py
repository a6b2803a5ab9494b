"""Replicated database core: signed op DAG, CRDT row merge, sync, digests (sans-I/O)."""
