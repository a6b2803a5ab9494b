"""Snapshot catch-up of a running node whose store holds a partial log below its peers'
pruned cut (decision 0070, part 3), across real node processes: a joined node restored
from a copy of its data made before the others compacted past it (with decided joins a
joined node is a voter, and the others prune only what every voter holds: a copy is how
a real node gets there). Its peers' sync answers tell it; it logs it, reopens from a
checked snapshot merged with what it holds, and ends with the others' state and every
acknowledged write. Writes made while below, and their parents pruned at the peers, are
tested in tests/node/test_snapshot_catch_up.py (an invited writer, which is no voter)."""

from __future__ import annotations

import shutil
import signal
import time

import pytest
from synod.v1 import northbound_pb2 as nb

from controller.node.codec import value_pb
from controller.node.datadir import init_data_dirs
from controller.node.pki import KeyPair

from .harness import NodeProcess, free_port, wait_for
from .test_compaction import CONFIG, _counter, _put, _same_state, _status, _stored

pytestmark = pytest.mark.cluster


def _files(data) -> list:
    return [p for p in data.iterdir() if p.name.startswith("store.db") or
            p.name == "history.cbor"]


def _value(cluster, i: int, key: str):
    with cluster.client(i) as c:
        got = c.call(c.rows.Get, nb.GetRequest(table="kv", key=[value_pb(key)]))
    return got


def _idle(cluster, n: int = 4) -> bool:
    """No node's op count moves for a second (no checkpoint vote still in flight)."""
    before = [_status(cluster, i).ops for i in range(n)]
    time.sleep(1)
    return before == [_status(cluster, i).ops for i in range(n)] and _same_state(cluster, n)


def test_a_node_restored_below_the_pruned_cut_catches_up_by_snapshot(make_cluster, tmp_path):
    config = tmp_path / "compact.toml"
    config.write_text(CONFIG)
    cluster = make_cluster(3, seed=13, extra_args=["--config", str(config)])
    node = cluster.join_node(via=1, extra_args=["--config", str(config)])
    _put(cluster, 0, 0, 20)
    assert wait_for(lambda: _same_state(cluster, 4), 60)
    # A copy of the joined node's data, made while it is stopped.
    node.signal(signal.SIGTERM)
    node.proc.wait(10)
    backup = tmp_path / "backup"
    backup.mkdir()
    for f in _files(node.data):
        shutil.copy2(f, backup / f.name)
    node.start()
    copied = _status(cluster, 3).ops
    # The others checkpoint and prune more ops than the copy holds: past what it holds.
    _put(cluster, 0, 20, 100)
    _put(cluster, 1, 120, 40)
    assert wait_for(lambda: all(_counter(_status(cluster, i), "pruned") > copied
                                for i in range(3)), 90), (copied, [
        dict(_status(cluster, i).counters) for i in range(4)])
    assert wait_for(lambda: _idle(cluster), 60)
    # The node comes back with the copy: a partial log, below the others' pruned cut.
    # (It is a voter: it must write nothing before it holds its own ops again, or it
    # would reuse their seqs; the cluster is idle, and the writes below wait for that.)
    node.signal(signal.SIGTERM)
    node.proc.wait(10)
    logged_copy, _ = _stored(backup / "store.db")
    assert logged_copy > 0
    for f in _files(node.data):
        f.unlink()
    for f in backup.iterdir():
        shutil.copy2(f, node.data / f.name)
    node.start()
    assert wait_for(lambda: "fetched from a peer" in node.log.read_text(), 60), \
        node.log.read_text()[-3000:]
    log = node.log.read_text()
    assert "pruned ops this node lacks" in log and "keeps" in log, log[-3000:]
    assert wait_for(lambda: _same_state(cluster, 4), 60), [
        dict(_status(cluster, i).counters) for i in range(4)]
    logged, has_record = _stored(node.data / "store.db")
    assert has_record and logged < _status(cluster, 3).ops
    # It writes again, and so do the others: every acknowledged write is everywhere.
    acked = [f"k{i}" for i in range(300, 310)] + [f"k{i}" for i in range(400, 410)]
    _put_keys(cluster, 3, acked[:10])
    _put_keys(cluster, 0, acked[10:])
    assert wait_for(lambda: _same_state(cluster, 4), 60)
    for i in range(4):
        status = _status(cluster, i)
        assert _counter(status, "equivocation") == 0, dict(status.counters)
        for k in acked:
            got = _value(cluster, i, k)
            assert got.found and got.row.values["value"] == value_pb(k.encode()), (i, k)


def _put_keys(cluster, i: int, keys: list[str]) -> None:
    with cluster.client(i) as c:
        for k in keys:
            row = nb.Row(table="kv", key=[value_pb(k)])
            row.values["value"].CopyFrom(value_pb(k.encode()))
            c.call(c.rows.Put, nb.PutRequest(rows=[row]))


def test_a_joiner_told_to_stop_while_fetching_its_first_snapshot_stops_at_once(make_cluster):
    """A node that joined and holds nothing fetches a snapshot before it opens its store;
    the fetch runs beside the event loop, so SIGTERM is answered at once, not after every
    peer was tried (5 s each for a peer that does not answer; its founders are down)."""
    cluster = make_cluster(3, seed=17)
    data = cluster.root / "late"
    ca = KeyPair((cluster.dirs[0] / "ca.key").read_bytes(),
                 (cluster.dirs[0] / "ca.crt").read_bytes())
    init_data_dirs([data], None, ca)
    peer_port = free_port()
    cluster.run_join(data, 0, peer_port)
    for node in cluster.nodes:
        node.stop()
    late = NodeProcess(len(cluster.nodes), data, free_port(), peer_port, [],
                       cluster.root / "late.log")
    cluster.nodes.append(late)  # stopped (killed if need be) with the rest
    late.start(wait_ready=False)
    assert wait_for(lambda: "fetching a first snapshot" in late.log_tail(20_000), 30), \
        late.log_tail()
    time.sleep(0.5)
    started = time.monotonic()
    late.signal(signal.SIGTERM)
    code = late.proc.wait(15)
    took = time.monotonic() - started
    assert code == 0, late.log_tail()
    assert took < 4.0, f"stopped {took:.1f} s after SIGTERM: {late.log_tail()}"
    assert "stops before it started" in late.log_tail(20_000)
