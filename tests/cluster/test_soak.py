"""A real-process soak (issue 12, decision 0070): three `synod node` processes that
checkpoint and compact while clients churn rows through the API, with a kill -9 and a
partition on the way; then a fresh node joins by snapshot.

Checked at the end: every acknowledged write holds on every node (last value per key),
equal digests and op counts, each node's log on disk bounded by the tail (not by the
history), each node's RSS flat from the first quarter on, and the joiner holding the same
state while its log holds only what came after the checkpoint.

The CI variant churns a few thousand ops; `--long` runs SYNOD_SOAK_OPS (default 1,000,000).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import threading
import time

import pytest
from synod.v1 import northbound_pb2 as nb

from controller.node.codec import value_pb

from .harness import wait_for

pytestmark = pytest.mark.cluster

KEYS = 500  # bounded key set: the live tables stay bounded, history grows


def _config(tmp_path, checkpoint_ops: int):
    path = tmp_path / "soak.toml"
    path.write_text(f"[agreement]\ncheckpoint_ops = {checkpoint_ops}\ncompact = true\n")
    return path


def _rss_mb(pid: int) -> float:
    """VmRSS of the node process and its children (the node runs in its own group)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _logged(path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT count(*) FROM _synod_ops").fetchone()[0]


def _disk_mb(data) -> float:
    """store.db and its WAL, in MB."""
    files = [data / "store.db", data / "store.db-wal"]
    return round(sum(f.stat().st_size for f in files if f.exists()) / 1e6, 1)


def _status(cluster, i: int):
    with cluster.client(i) as c:
        return c.call(c.cluster.GetStatus, nb.GetStatusRequest())


def _kv(cluster, i: int) -> dict[str, bytes]:
    with cluster.client(i, timeout_s=30) as c:
        r = c.call(c.rows.Query, nb.QueryRequest(sql="SELECT key, value FROM kv",
                                                 row_limit=KEYS * 2))
        return {row.values[0].text_value: row.values[1].blob_value for row in r.rows}


class Churn:
    """Writers, `per_node` per node, each its own keys (so the last acknowledged value per
    key is known): overwrites and some deletes, ACK_LOCAL, over one client connection
    each."""

    def __init__(self, cluster, per_node: int = 1) -> None:
        self.cluster = cluster
        self.per_node = per_node
        self.acked: dict[str, bytes | None] = {}
        self.lock = threading.Lock()
        self.done = 0
        self.refused = 0

    def run(self, ops: int, nodes: list[int]) -> None:
        per = ops // (len(nodes) * self.per_node)
        threads = [threading.Thread(target=self._writer, args=(i, w, per), daemon=True)
                   for i in nodes for w in range(self.per_node)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(3_600)

    def _writer(self, i: int, w: int, count: int) -> None:
        keys = KEYS // (3 * self.per_node)
        with self.cluster.client(i, timeout_s=10) as c:
            for k in range(count):
                key = f"n{i}-{w}-{k % keys}"
                value = f"{k}".encode()
                try:
                    if k % 11 == 5:
                        req = nb.DeleteRequest(table="kv", keys=[nb.KeyList(key=[value_pb(key)])],
                                               ack=nb.ACK_LOCAL)
                        c.call(c.rows.Delete, req)
                        value = None
                    else:
                        row = nb.Row(table="kv", key=[value_pb(key)])
                        row.values["value"].CopyFrom(value_pb(value))
                        c.call(c.rows.Put, nb.PutRequest(rows=[row], ack=nb.ACK_LOCAL))
                except Exception:  # noqa: BLE001 - the node may be down: not acknowledged
                    with self.lock:
                        self.refused += 1
                    continue
                with self.lock:
                    self.acked[key] = value
                    self.done += 1


def soak(make_cluster, tmp_path, ops: int, checkpoint_ops: int, per_node: int = 1) -> None:
    config = _config(tmp_path, checkpoint_ops)
    cluster = make_cluster(3, seed=5, extra_args=["--config", str(config)])
    churn = Churn(cluster, per_node)
    started = time.monotonic()
    rss: list[list[float]] = []
    quarter = ops // 4

    def sample() -> None:
        rss.append([_rss_mb(n.proc.pid) for n in cluster.nodes])
        logged = [_logged(n.data / "store.db") for n in cluster.nodes]
        print(f"soak {time.monotonic() - started:.0f} s: {churn.done:,} acknowledged writes, "
              f"RSS MB {rss[-1]}, ops in each log {logged}", flush=True)

    # 1st quarter, then kill -9 node 2 and restart it from its (compacted) store.
    churn.run(quarter, [0, 1, 2])
    sample()
    cluster.nodes[2].signal(signal.SIGKILL)
    cluster.nodes[2].proc.wait(10)
    churn.run(quarter // 2, [0, 1])
    cluster.nodes[2].start()
    churn.run(quarter - quarter // 2, [0, 1, 2])
    # 3rd quarter with node 1 cut off for half of it, then healed.
    cluster.isolate(1)
    churn.run(quarter // 2, [0, 2])
    cluster.heal()
    churn.run(quarter - quarter // 2, [0, 1, 2])
    sample()
    churn.run(ops - 3 * quarter, [0, 1, 2])
    sample()

    def same() -> bool:
        s = [_status(cluster, i) for i in range(3)]
        return len({x.state_digest for x in s}) == 1 and len({x.ops for x in s}) == 1

    assert wait_for(same, 120), [_status(cluster, i) for i in range(3)]
    for i in range(3):
        pruned = sum(v for k, v in _status(cluster, i).counters.items() if k.endswith("pruned"))
        assert pruned > 0, f"node {i} never compacted"
    want = {k: v for k, v in churn.acked.items() if v is not None}
    for i in range(3):
        assert _kv(cluster, i) == want, f"node {i} lost or changed acknowledged writes"
    total = _status(cluster, 0).ops
    for i in range(3):
        logged = _logged(cluster.nodes[i].data / "store.db")
        # The tail: ops since the stable checkpoint, a few checkpoints' worth at most.
        assert logged <= 4 * checkpoint_ops + 2_000, (i, logged, total)
    # RSS flat: from the first quarter to the end, growth bounded by a constant, not by ops.
    first, last = rss[0], rss[-1]
    for i in range(3):
        assert last[i] <= first[i] * 1.5 + 60, (i, rss)

    disk = [_disk_mb(n.data) for n in cluster.nodes]
    # A fresh node joins by snapshot and holds the same state; its log is only the tail.
    joining = time.monotonic()
    node = cluster.join_node(via=0, extra_args=["--config", str(config)])
    assert wait_for(lambda: _status(cluster, 3).state_digest == _status(cluster, 0).state_digest
                    and _status(cluster, 3).ops == _status(cluster, 0).ops, 120)
    joined_s = time.monotonic() - joining
    assert "fetched from a peer" in node.log.read_text()
    assert _logged(node.data / "store.db") < total
    assert _kv(cluster, 3) == want
    pruned = sum(v for k, v in _status(cluster, 0).counters.items() if k.endswith("pruned"))
    print(f"soak: {time.monotonic() - started:.0f} s, {churn.done:,} acknowledged writes "
          f"({churn.refused} refused while a node was down), {total:,} ops held and "
          f"{pruned:,} pruned at node 0, RSS MB per node {rss}, store on disk MB {disk}, "
          f"a fresh node joined (join, snapshot, equal digests) in {joined_s:.1f} s")


def test_soak_short(make_cluster, tmp_path):
    soak(make_cluster, tmp_path, ops=3_000, checkpoint_ops=300)


@pytest.mark.slow
def test_soak_long(make_cluster, tmp_path):
    # Several writers per node: one synchronous client per node takes ~200 writes/s here,
    # which would make a million ops an afternoon.
    soak(make_cluster, tmp_path, ops=int(os.environ.get("SYNOD_SOAK_OPS", "1000000")),
         checkpoint_ops=10_000, per_node=int(os.environ.get("SYNOD_SOAK_WRITERS", "4")))
