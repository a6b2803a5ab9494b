"""Real `synod node` processes under kill -9, pauses and partitions, with a checker.

Workload: writers put distinct keys with `local` or `quorum` acknowledgement on random
nodes. Nemesis (seeded): kill -9 and restart, SIGSTOP/SIGCONT, isolate one node through
its link proxies and heal. Checks afterwards: every acknowledged write is on every node,
digests are equal, no process leaked. (Slots are not checked: agreement is not in the node
yet.) Short by default; `--long` runs a longer 5-node schedule.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest
from synod.v1 import northbound_pb2 as nb

from controller.node.client import ClientError
from controller.node.codec import value_pb

from .harness import Cluster, wait_for

pytestmark = pytest.mark.cluster


class Workload:
    def __init__(self, cluster: Cluster, writers: int) -> None:
        self.cluster = cluster
        self.acked: dict[str, tuple[int, str]] = {}  # key -> (node index, ack level)
        self.failed = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(w,), daemon=True)
                        for w in range(writers)]

    def _run(self, w: int) -> None:
        rng = self.cluster.rng.__class__(w)
        clients = {}
        n = 0
        while not self.stop.is_set():
            i = rng.randrange(self.cluster.n)
            level = rng.choice(["local", "quorum"])
            key = f"w{w}-{n}"
            n += 1
            client = clients.get(i) or clients.setdefault(i, self.cluster.client(i, 2))
            row = nb.Row(table="kv", key=[value_pb(key)], values={"value": value_pb(b"x")})
            ack = nb.ACK_QUORUM if level == "quorum" else nb.ACK_LOCAL
            try:
                client.call(client.rows.Put, nb.PutRequest(rows=[row], ack=ack,
                                                           timeout_ms=1000), timeout_s=2)
            except ClientError:
                with self.lock:
                    self.failed += 1
                time.sleep(0.05)
                continue
            with self.lock:
                self.acked[key] = (i, level)
        for c in clients.values():
            c.close()

    def __enter__(self) -> Workload:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def _keys(cluster: Cluster, i: int) -> set[str]:
    with cluster.client(i) as c:
        r = c.call(c.rows.Query, nb.QueryRequest(sql="SELECT key FROM kv", row_limit=10_000))
        return {row.values[0].text_value for row in r.rows}


def _digest(cluster: Cluster, i: int) -> bytes:
    with cluster.client(i) as c:
        return c.call(c.cluster.GetDigest, nb.GetDigestRequest()).state_digest


def _check(cluster: Cluster, work: Workload, timeout_s: float) -> None:
    assert wait_for(lambda: len({_digest(cluster, i) for i in range(cluster.n)}) == 1,
                    timeout_s), "digests did not converge"
    want = set(work.acked)
    for i in range(cluster.n):
        missing = want - _keys(cluster, i)
        some = sorted(missing)[:3]
        assert not missing, (f"node {i} lacks {len(missing)} acknowledged writes, e.g. {some} "
                             f"(taken by {[work.acked[k] for k in some]})")


def _schedule(cluster: Cluster, work: Workload, rounds: int, step_s: float) -> list[str]:
    history = []
    rng = cluster.rng
    for _ in range(rounds):
        kind = rng.choice(["kill", "pause", "partition"])
        i = rng.randrange(cluster.n)
        node = cluster.nodes[i]
        history.append(f"{kind} n{i}")
        if kind == "kill":
            node.kill()
            time.sleep(step_s)
            node.start()
        elif kind == "pause":
            node.signal(signal.SIGSTOP)
            time.sleep(step_s)
            node.signal(signal.SIGCONT)
        else:
            cluster.isolate(i)
            # the cut-off side keeps taking writes at `local`
            with cluster.client(i) as c:
                row = nb.Row(table="kv", key=[value_pb(f"isolated-{len(history)}")],
                             values={"value": value_pb(b"i")})
                c.call(c.rows.Put, nb.PutRequest(rows=[row]))
                work.acked[f"isolated-{len(history)}"] = (i, "local")
            time.sleep(step_s)
            cluster.heal()
        time.sleep(step_s / 2)
    return history


def test_three_nodes_survive_kill_pause_partition(make_cluster):
    cluster = make_cluster(3)
    with Workload(cluster, writers=3) as work:
        time.sleep(1)
        history = _schedule(cluster, work, rounds=4, step_s=1.5)
        time.sleep(0.5)
    print(f"nemesis: {history}; acked {len(work.acked)} writes, {work.failed} not acked")
    assert len(work.acked) > 50
    levels = {level for _, level in work.acked.values()}
    assert levels == {"local", "quorum"}
    _check(cluster, work, timeout_s=30)


def test_killed_node_catches_up_after_restart(make_cluster):
    cluster = make_cluster(3)
    cluster.nodes[2].kill()
    with cluster.client(0) as c:
        for k in range(200):
            row = nb.Row(table="kv", key=[value_pb(f"k{k}")], values={"value": value_pb(b"v")})
            c.call(c.rows.Put, nb.PutRequest(rows=[row], ack=nb.ACK_QUORUM))
    cluster.nodes[2].start()
    assert wait_for(lambda: len(_keys(cluster, 2)) >= 200, 20)
    assert wait_for(lambda: len({_digest(cluster, i) for i in range(3)}) == 1, 20)


@pytest.mark.slow
def test_five_nodes_long_nemesis(make_cluster):
    cluster = make_cluster(5)
    with Workload(cluster, writers=6) as work:
        history = _schedule(cluster, work, rounds=20, step_s=2.0)
    print(f"nemesis: {history}; acked {len(work.acked)} writes, {work.failed} not acked")
    _check(cluster, work, timeout_s=60)
