"""`synod node repair`: a log holding a poison op of the node's own (signed by a node before
issue 10's fix) is repaired without losing an acknowledged row."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
from synod.v1 import northbound_pb2 as nb

from controller.node.codec import value_pb
from controller.node.datadir import DataDir, init_data_dirs
from controller.node.lineages import NODE_SCHEMA
from controller.node.slots import open_node_replica
from controller.replication import Config, Upsert
from controller.store import SqliteStore, StoreError, persist

from .conftest import InProcessNode

SYNOD = [sys.executable, "-c", "from controller.cli import main; main()"]


def _poison(data) -> None:
    """Sign, as an old node would have, an op over mutations_max and one more after it."""
    d = DataDir(data)
    store = SqliteStore(d.store_file, NODE_SCHEMA)
    try:
        loose = Config(mutations_max=20_000)
        replica = open_node_replica(store, d.identity(), random.Random(1), d.genesis(),
                                    verify="none", config=loose, schema=NODE_SCHEMA)
        replica.write([Upsert("kv", (f"p{i}",), {"value": b"v"}) for i in range(10_001)],
                      2_000_000_000_000)
        replica.write([Upsert("kv", ("after",), {"value": b"acked"})], 2_000_000_000_001)
        persist(store, replica)
    finally:
        store.close()


def test_repair_takes_out_the_poison_op_and_keeps_every_acknowledged_row(tmp_path):
    d = tmp_path / "n"
    init_data_dirs([d], "poison")
    node = InProcessNode(d).start()
    try:
        with node.client() as c:
            row = nb.Row(table="kv", key=[value_pb("before")])
            row.values["value"].CopyFrom(value_pb(b"acked"))
            c.call(c.rows.Put, nb.PutRequest(rows=[row]))
    finally:
        node.stop()
    _poison(d)
    with pytest.raises(Exception, match="too_large: 10001 mutations"):
        InProcessNode(d).start()

    done = subprocess.run([*SYNOD, "node", "repair", "--data", str(d)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "dropped 2 own op(s)" in done.stdout
    assert "wrote 10002 row change(s) again" in done.stdout
    backups = list(d.glob("store.db.before-repair-*"))
    assert len(backups) == 1  # the store as it was, kept, private, with the poison op
    assert backups[0].stat().st_mode & 0o777 == 0o600
    kept = SqliteStore(backups[0], NODE_SCHEMA)
    try:
        with pytest.raises(StoreError, match="too_large: 10001 mutations"):
            open_node_replica(kept, DataDir(d).identity(), random.Random(1), DataDir(d).genesis(),
                              verify="none", schema=NODE_SCHEMA)
    finally:
        kept.close()

    node = InProcessNode(d).start()
    try:
        with node.client() as c:
            rows = c.call(c.rows.List, nb.ListRequest(table="kv")).rows
            keys = {r.key[0].text_value for r in rows}
            assert {"before", "after"} <= keys and len(keys) == 10_003
    finally:
        node.stop()
    again = subprocess.run([*SYNOD, "node", "repair", "--data", str(d)], capture_output=True,
                           text=True, timeout=120, check=False)
    assert again.returncode == 0 and "nothing to repair" in again.stdout
