"""Storage adapters for the replicated database: SQLite for real, memory for simulation."""

from .memory import MemoryStore
from .port import Store, Stored, StoreError
from .recovery import open_replica, persist, stored_state_digest
from .sqlite import QueryLimitError, ReadOnlyQuery, SqliteStore

__all__ = [
    "MemoryStore",
    "QueryLimitError",
    "ReadOnlyQuery",
    "SqliteStore",
    "Store",
    "StoreError",
    "Stored",
    "open_replica",
    "persist",
    "stored_state_digest",
]
