"""Checkpoints and in-memory compaction across 3 real node processes (decision 0070):
the voters decide checkpoints by themselves, prune the ops below a stable one, keep
taking writes and agreeing on one state — also after a node is killed with SIGKILL and
restarts from its store."""

from __future__ import annotations

import contextlib
import signal
import sqlite3

import pytest
from synod.v1 import northbound_pb2 as nb

from controller.node.codec import value_pb
from controller.replication import decode, encode

from .harness import wait_for

pytestmark = pytest.mark.cluster

CONFIG = """
[agreement]
checkpoint_ops = 40
compact = true
"""


def _put(cluster, i: int, start: int, count: int) -> None:
    with cluster.client(i) as c:
        for k in range(start, start + count):
            row = nb.Row(table="kv", key=[value_pb(f"k{k % 25}")])
            row.values["value"].CopyFrom(value_pb(f"v{k}".encode()))
            c.call(c.rows.Put, nb.PutRequest(rows=[row]))


def _status(cluster, i: int):
    with cluster.client(i) as c:
        return c.call(c.cluster.GetStatus, nb.GetStatusRequest())


def _counter(status, name: str) -> int:
    return sum(v for k, v in status.counters.items() if k.endswith(name))


def _slots(cluster, i: int, prefix: str) -> list:
    with cluster.client(i, timeout_s=5) as c:
        req = nb.WatchSlotsRequest(prefix=prefix)
        out = []
        try:
            for slot in c.slots.WatchSlots(req, timeout=1, metadata=c.metadata):
                out.append(slot)
        except Exception:  # noqa: BLE001 - the stream ends by its deadline
            pass
        return out


def _same_state(cluster, n: int = 3) -> bool:
    statuses = [_status(cluster, i) for i in range(n)]
    return len({s.state_digest for s in statuses}) == 1 and len({s.ops for s in statuses}) == 1


def test_checkpoints_prune_and_the_cluster_goes_on(make_cluster, tmp_path):
    config = tmp_path / "compact.toml"
    config.write_text(CONFIG)
    cluster = make_cluster(3, seed=7, extra_args=["--config", str(config)])
    _put(cluster, 0, 0, 60)
    _put(cluster, 1, 60, 60)
    assert wait_for(lambda: all(_counter(_status(cluster, i), "pruned") > 0
                                for i in range(3)), 60), [
        dict(_status(cluster, i).counters) for i in range(3)]
    assert wait_for(lambda: _same_state(cluster), 30)
    assert _slots(cluster, 0, "checkpoint/"), "no checkpoint decided"
    # Each node re-executed itself under the system allocator (decision 0102), so the
    # pages of pruned ops go back to the system.
    for n in cluster.nodes:
        environ = open(f"/proc/{n.proc.pid}/environ", "rb").read().split(b"\0")
        assert b"PYTHONMALLOC=malloc" in environ
    # A node killed with SIGKILL restarts from its compacted store (the checkpoint's rows
    # plus the tail of the log) and the cluster converges again, writes included.
    ops_before = _status(cluster, 2).ops
    cluster.nodes[2].signal(signal.SIGKILL)
    cluster.nodes[2].proc.wait(10)
    logged, has_record = _stored(cluster.nodes[2].data / "store.db")
    assert has_record and logged < ops_before, (logged, ops_before)
    _put(cluster, 0, 120, 30)
    cluster.nodes[2].start()
    _put(cluster, 2, 150, 30)
    assert wait_for(lambda: _same_state(cluster), 60)
    assert _status(cluster, 0).ops >= 180


def _stored(path) -> tuple[int, bool]:
    """(ops in the store's log, whether it holds a compaction record), read-only."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        logged = conn.execute("SELECT count(*) FROM _synod_ops").fetchone()[0]
        record = conn.execute("SELECT 1 FROM _synod_meta WHERE key = 'compaction'").fetchone()
    return logged, record is not None


def _archived(path, slot: str) -> bool:
    """Whether the store's archive holds slot's certificate (decision 0103), read-only."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        got = conn.execute("SELECT 1 FROM _synod_archive WHERE key = ?",
                           (f"slot:{slot}",)).fetchone()
    return got is not None


def test_a_node_joining_a_compacted_cluster_starts_from_a_snapshot(make_cluster, tmp_path):
    """The three founders pruned their logs; a fourth node joins, fetches the checkpoint
    they were compacted to (checked against its certificate), then only the tail by sync,
    and holds the same state as everyone."""
    config = tmp_path / "compact.toml"
    config.write_text(CONFIG)
    cluster = make_cluster(3, seed=11, extra_args=["--config", str(config)])
    with cluster.client(0) as c:  # decided before the first checkpoint's cut
        req = nb.ProposeRequest(slot="alloc/early", value=encode("kept"), timeout_ms=8000)
        assert c.call(c.slots.Propose, req).decided
    _put(cluster, 0, 0, 90)
    assert wait_for(lambda: all(_counter(_status(cluster, i), "pruned") > 0
                                for i in range(3)), 60)
    # Settled below the cut, the decision left memory for each store's archive (0103).
    assert wait_for(lambda: all(_archived(n.data / "store.db", "alloc/early")
                                for n in cluster.nodes), 60)
    node = cluster.join_node(via=1, extra_args=["--config", str(config)])
    assert wait_for(lambda: _same_state(cluster, 4), 60)
    log = node.log.read_text()
    assert "fetched from a peer" in log, log[-2000:]
    logged, has_record = _stored(node.data / "store.db")
    assert has_record and logged < _status(cluster, 3).ops
    # The snapshot carried it: the joiner answers it, though it never held its votes.
    assert _archived(node.data / "store.db", "alloc/early")
    with cluster.client(3) as c:
        slot = c.call(c.slots.GetSlot, nb.GetSlotRequest(slot="alloc/early"))
    assert slot.decided and decode(slot.value) == "kept"
    # It writes, and its writes reach everyone.
    _put(cluster, 3, 1000, 10)
    assert wait_for(lambda: _same_state(cluster, 4), 60)
