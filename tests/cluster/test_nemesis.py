"""Real `synod node` processes under kill -9, pauses and partitions, with a checker.

Workload: writers put distinct keys with `local` or `quorum` acknowledgement on random
nodes, and proposers race for agreement slots from different nodes. Nemesis (a fixed seed
per run, each schedule holding at least one kill -9 and restart, one SIGSTOP/SIGCONT and
one isolation through the link proxies and heal). Checks afterwards: every acknowledged
write is on every node, digests are equal, every node holds the same decision for every
slot, every decision a proposer was answered is that decision (none lost), no process
leaked. CI runs fixed seeds on 3 nodes and a short 5-node run; `--long` adds a 5-node,
20-round run.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest
from synod.v1 import northbound_pb2 as nb

from controller.node.client import ClientError
from controller.node.codec import value_pb
from controller.replication import decode, encode

from .harness import Cluster, wait_for

pytestmark = pytest.mark.cluster


class _Threads:
    """n threads running self._run(i) until the `with` block ends (joined, bounded)."""

    join_s = 15.0

    def __init__(self, cluster: Cluster, n: int) -> None:
        self.cluster = cluster
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(n)]

    def _run(self, i: int) -> None:
        raise NotImplementedError

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(self.join_s)


class Workload(_Threads):
    def __init__(self, cluster: Cluster, writers: int) -> None:
        self.acked: dict[str, tuple[int, str]] = {}  # key -> (node index, ack level)
        self.failed = 0
        super().__init__(cluster, writers)

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


class Proposers(_Threads):
    """Threads that race for slots `alloc/nemesis/<k>` from different nodes, each with its
    own value; record what each Propose answered as decided."""

    def __init__(self, cluster: Cluster, threads: int) -> None:
        self.decided: dict[str, set] = {}  # slot -> values proposers were answered
        self.refused = 0
        super().__init__(cluster, threads)

    def _run(self, t: int) -> None:
        k = 0
        while not self.stop.is_set():
            slot = f"alloc/nemesis/{k // 2}"  # two threads' turns land on each slot
            k += 1
            i = (t + k) % self.cluster.n
            try:
                with self.cluster.client(i, timeout_s=6) as c:
                    r = c.call(c.slots.Propose, nb.ProposeRequest(
                        slot=slot, value=encode(f"t{t}-n{i}"), timeout_ms=3_000))
            except ClientError:
                with self.lock:
                    self.refused += 1
                time.sleep(0.1)
                continue
            with self.lock:
                self.decided.setdefault(slot, set()).add(decode(r.value))


def _decisions(cluster: Cluster, i: int, slots) -> dict[str, object]:
    out = {}
    with cluster.client(i) as c:
        for slot in slots:
            s = c.call(c.slots.GetSlot, nb.GetSlotRequest(slot=slot))
            out[slot] = decode(s.value) if s.decided else None
    return out


def _check_slots(cluster: Cluster, props: Proposers, timeout_s: float) -> None:
    slots = sorted(props.decided)
    assert slots, "no proposal was decided"
    for slot, values in props.decided.items():
        assert len(values) == 1, f"{slot}: proposers were answered {values}"

    def agreed() -> bool:
        views = [_decisions(cluster, i, slots) for i in range(cluster.n)]
        return all(v == views[0] for v in views) and all(x is not None for x in views[0].values())

    assert wait_for(agreed, timeout_s), "nodes do not hold the same decision for every slot"
    held = _decisions(cluster, 0, slots)
    for slot, values in props.decided.items():
        assert {held[slot]} == values, f"{slot}: answered {values}, decided {held[slot]!r}"


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


FAULTS = ("kill", "pause", "partition")


def _schedule(cluster: Cluster, work: Workload, rounds: int, step_s: float) -> list[str]:
    """rounds >= 3 faults from the cluster's seed: every kind at least once, in seeded order."""
    assert rounds >= len(FAULTS)
    rng = cluster.rng
    kinds = [*FAULTS, *(rng.choice(FAULTS) for _ in range(rounds - len(FAULTS)))]
    rng.shuffle(kinds)
    history = []
    for kind in kinds:
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


def _run_nemesis(cluster: Cluster, writers: int, rounds: int, step_s: float) -> None:
    with Workload(cluster, writers=writers) as work, Proposers(cluster, threads=2) as props:
        time.sleep(1)
        history = _schedule(cluster, work, rounds=rounds, step_s=step_s)
        time.sleep(0.5)
    print(f"nemesis: {history}; acked {len(work.acked)} writes, {work.failed} not acked; "
          f"{len(props.decided)} slots decided, {props.refused} proposals not answered")
    assert {h.split()[0] for h in history} == set(FAULTS)
    assert len(work.acked) > 50
    levels = {level for _, level in work.acked.values()}
    assert levels == {"local", "quorum"}
    _check(cluster, work, timeout_s=30 + 10 * cluster.n)
    _check_slots(cluster, props, timeout_s=30)


@pytest.mark.parametrize("seed", [101, 202])
def test_three_nodes_survive_kill_pause_partition(make_cluster, seed):
    _run_nemesis(make_cluster(3, seed=seed), writers=3, rounds=4, step_s=1.5)


def test_five_nodes_survive_kill_pause_partition(make_cluster):
    _run_nemesis(make_cluster(5, seed=303), writers=4, rounds=3, step_s=1.5)


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
    _run_nemesis(make_cluster(5), writers=6, rounds=20, step_s=2.0)
