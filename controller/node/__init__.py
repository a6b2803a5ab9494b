"""The node daemon: replication, agreement, storage and the gRPC APIs in one process."""
