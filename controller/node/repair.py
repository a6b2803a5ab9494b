"""`synod node repair`: take a refused own op (a poison op) out of a stopped node's log."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from controller.replication import Config, InvitePolicy, Replica
from controller.store import SqliteStore
from controller.store.repair import RepairResult, repair_log

from .config import NodeConfig
from .datadir import DataDir
from .lineages import NODE_SCHEMA
from .slots import NodeReplica

__all__ = ["repair_node"]


def repair_node(cfg: NodeConfig, *, drop_votes: bool) -> tuple[Path | None, RepairResult]:
    """Repair the store of the node in cfg.data (the node must be stopped). Returns the
    backup of the store taken before any change (None when nothing needed repair)."""
    d = DataDir(Path(cfg.data))
    identity, genesis = d.identity(), d.genesis()
    if genesis is None:
        raise ValueError(f"{d.genesis_file}: missing; nothing to repair")
    core = Config(message_bytes_max=cfg.peer.message_bytes_max)

    def recover(log: tuple[bytes, ...], evidence: tuple[bytes, ...], compaction: Any) -> Replica:
        kwargs: dict = {"config": core, "schema": NODE_SCHEMA}
        cls: type[Replica] = NodeReplica
        if not cfg.agreement.enabled:
            cls, kwargs["policy"] = Replica, InvitePolicy.from_genesis(genesis)
        return cls.recover(identity, genesis, random.Random(), log, evidence,
                           verify="all", compaction=compaction, **kwargs)

    backup = d.store_file.with_name(f"store.db.before-repair-{time.strftime('%Y%m%dT%H%M%S')}")
    store = SqliteStore(d.store_file, NODE_SCHEMA)
    try:
        _, result = repair_log(store, recover, identity.node_id, core, NODE_SCHEMA,
                               drop_votes=drop_votes, now_ms=int(time.time() * 1000),
                               before_change=lambda: store.backup_to(backup))
    finally:
        store.close()
    return (backup if result.repaired else None), result
