"""Agreement without epochs: Paxos per slot over the op DAG, membership, policy (sans-I/O)."""
