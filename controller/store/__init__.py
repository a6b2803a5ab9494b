"""Storage adapters for the replicated database: SQLite for real, memory for simulation."""
