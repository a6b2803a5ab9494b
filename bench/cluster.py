"""Benchmark: a 3-node Synod cluster on loopback beside etcd, pysyncobj and the gRPC floor.

Run: .venv/bin/python bench/cluster.py [--quick] [--seconds S] [--heal-writes N]
     [--load-procs N] [--systems synod etcd pysyncobj floor] [--cells-only] [--rss-ops N N ...]

Measures, on this machine, in one run: write throughput and p50/p99 latency at `local` and
`quorum` acknowledgement with 1, 16 and 64 concurrent clients (asyncio gRPC clients in one
process, or split over --load-procs processes; 100-byte values, plaintext loopback for every
system); replication lag (until both followers hold a write, and until a watcher on each has
it), idle and while the most clients write; heal time after a partition with N writes on each
side. etcd runs as a throwaway 3-member cluster (Debian `etcd-server`),
driven over the same gRPC client. pysyncobj (`.venv/bin/pip install -e '.[bench]'`) runs as 3
processes with batched appends, its load generated inside the leader's process (no RPC per
write, no fsync), so its column is a reference, not a like-for-like comparison. `floor` is
one Python grpc.aio process answering Put at once (no auth, engine, disk or peers): the most
a Python node's API can take on this machine, measured beside the others.
--rss-ops measures a node's RSS after opening stores of that many ops and extrapolates to
1 million. Prints a table and JSON; figures are measured, never targets. A system asked for
(by default all of them) that could not run makes the run fail (exit status 1, naming it and
why), so no column is left silently empty.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
from synod.v1 import northbound_pb2 as nb
from synod.v1 import northbound_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.machine import describe  # noqa: E402
from controller.node.codec import value_pb  # noqa: E402
from controller.node.datadir import init_data_dirs  # noqa: E402

SYNOD = [sys.executable, "-c", "from controller.cli import main; main()"]
VALUE = b"v" * 100


def machine() -> dict:
    return describe("grpcio")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


# ---------------------------------------------------------------------------- load generator
async def drive(call, make_request, clients: int, seconds: float, raw: bool = False) -> dict:
    """clients concurrent callers for `seconds`; returns ops/s and latency percentiles (ms)."""
    lat: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    counter = iter(range(10**12))

    async def one() -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            req = make_request(next(counter))
            t = time.perf_counter()
            try:
                await call(req)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            lat.append((time.perf_counter() - t) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    if raw:
        return {"lat": lat, "errors": errors, "elapsed": elapsed}
    return {"ops_per_s": round(len(lat) / elapsed), "p50_ms": round(pct(lat, 50), 2),
            "p99_ms": round(pct(lat, 99), 2), "errors": errors}


def _load_worker(system: str, port: int, token: str, ack: int, clients: int, seconds: float,
                 start_at: float) -> tuple[list[float], int, float]:
    """One load-generator process: its latencies (ms), errors and elapsed seconds."""

    async def go() -> tuple[list[float], int, float]:
        await asyncio.sleep(max(0.0, start_at - time.time()))  # all processes start together
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            if system == "synod":
                stub = northbound_pb2_grpc.RowServiceStub(ch)
                md = [("authorization", f"Bearer {token}")]
                call, make = (lambda r: stub.Put(r, metadata=md, timeout=10)), synod_put(ack)
            else:
                put = ch.unary_unary("/etcdserverpb.KV/Put")
                call, make = (lambda r: put(r, timeout=10)), etcd_put
            r = await drive(call, make, clients, seconds, raw=True)
            return r["lat"], r["errors"], r["elapsed"]

    return asyncio.run(go())


def drive_procs(system: str, port: int, token: str, ack: int, clients: int, seconds: float,
                procs: int) -> dict:
    """The load from `procs` processes (clients split between them), so that one Python
    client process is not what limits the figures."""
    import concurrent.futures
    import multiprocessing

    procs = max(1, min(procs, clients))
    share = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    start_at = time.time() + 1.5  # time for the workers to import and connect
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(procs, mp_context=ctx) as pool:
        futures = [pool.submit(_load_worker, system, port, token, ack, n, seconds, start_at)
                   for n in share]
        parts = [f.result(timeout=seconds + 60) for f in futures]
    lat = [x for p in parts for x in p[0]]
    elapsed = max(p[2] for p in parts)
    return {"ops_per_s": round(len(lat) / elapsed), "p50_ms": round(pct(lat, 50), 2),
            "p99_ms": round(pct(lat, 99), 2), "errors": sum(p[1] for p in parts),
            "load_procs": procs}


# ---------------------------------------------------------------------------- synod
class SynodCluster:
    def __init__(self, root: Path, event_loop: str = "uvloop") -> None:
        self.event_loop = event_loop  # the nodes' [api] event_loop (decision 0104)
        self.dirs = [root / f"n{i}" for i in range(3)]
        init_data_dirs(self.dirs, "bench")
        self.token = (self.dirs[0] / "admin.token").read_text().strip()
        self.peer_ports = [free_port() for _ in range(3)]
        self.api_ports = [free_port() for _ in range(3)]
        self.procs: list[subprocess.Popen | None] = [None] * 3
        self.root = root

    def start(self, i: int, peers: list[str] | None = None) -> None:
        peers = peers if peers is not None else [
            f"127.0.0.1:{p}" for j, p in enumerate(self.peer_ports) if j != i]
        args = [*SYNOD, "node", "run", "--data", str(self.dirs[i]), "--insecure-loopback",
                "--api", f"127.0.0.1:{self.api_ports[i]}",
                "--peer-listen", f"127.0.0.1:{self.peer_ports[i]}"]
        for p in peers:
            args += ["--peer", p]
        cfg = self.root / f"n{i}.toml"
        cfg.write_text("[api]\nrate_per_s = 1000000.0\nburst = 1000000\n"
                       f"inflight_per_client_max = 100000\nevent_loop = \"{self.event_loop}\"\n"
                       "[log]\nlevel = \"warning\"\n")
        args += ["--config", str(cfg)]
        log = open(self.root / f"n{i}.log", "ab")  # noqa: SIM115
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        log.close()
        self.procs[i] = p
        line = p.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith(b"{"):
            raise RuntimeError(f"synod node {i} did not start; see {self.root}/n{i}.log")

    def start_all(self) -> None:
        for i in range(3):
            self.start(i)
        time.sleep(1.0)

    def stop(self, i: int) -> None:
        p = self.procs[i]
        if p and p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)

    def stop_all(self) -> None:
        for i in range(3):
            self.stop(i)

    def rss_mb(self) -> list[float]:
        out = []
        for p in self.procs:
            try:
                kb = [int(x.split()[1]) for x in Path(f"/proc/{p.pid}/status").read_text()
                      .splitlines() if x.startswith("VmRSS")][0]
                out.append(round(kb / 1024, 1))
            except (OSError, IndexError, AttributeError):
                out.append(float("nan"))
        return out

    def channel(self, i: int) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(f"127.0.0.1:{self.api_ports[i]}")


def synod_put(ack: int):
    def make(n: int) -> nb.PutRequest:
        row = nb.Row(table="kv", key=[value_pb(f"b{n}-{time.perf_counter_ns()}")],
                     values={"value": value_pb(VALUE)})
        return nb.PutRequest(rows=[row], ack=ack)
    return make


async def synod_writes(c: SynodCluster, clients: int, seconds: float, ack: int,
                       procs: int = 1) -> dict:
    if procs > 1 and clients > 1:
        return await asyncio.to_thread(drive_procs, "synod", c.api_ports[0], c.token, ack,
                                       clients, seconds, procs)
    md = [("authorization", f"Bearer {c.token}")]
    async with c.channel(0) as ch:
        stub = northbound_pb2_grpc.RowServiceStub(ch)
        return await drive(lambda r: stub.Put(r, metadata=md, timeout=10), synod_put(ack),
                           clients, seconds)


LAG_LOAD_S = 12.0  # how long the background load runs while lag is measured under load
LAG_POLL_S = 0.005  # how often the followers' version vectors are read


async def synod_lag(c: SynodCluster, writes: int, load_clients: int = 0,
                    procs: int = 1) -> dict:
    """Replication lag of writes to node 0: until nodes 1 and 2 both hold the write (their
    version vectors, read every LAG_POLL_S, reach the write's seq) and, idle, until a
    watcher on each of them has been sent it (Watch on kv).

    With load_clients, that many clients write to node 0 at the same time (local acks, from
    `procs` processes, for LAG_LOAD_S): the lag under load, as issue 14's target states it
    (at 64 clients). The measured writes then stop when the load's window ends. No watcher
    runs then: it would be sent every row of the load, and parsing those in this process
    slowed the polls to one every ~75 ms here, which made the figure this process's."""
    md = [("authorization", f"Bearer {c.token}")]
    load: dict = {}
    loader = None
    if load_clients:
        loader = threading.Thread(target=lambda: load.update(drive_procs(
            "synod", c.api_ports[0], c.token, nb.ACK_LOCAL, load_clients, LAG_LOAD_S,
            max(procs, 1))), daemon=True)
        loader.start()
        await asyncio.sleep(2.5)  # the load's processes start 1.5 s after the call
    seen: dict[str, list[float]] = {}
    started: dict[str, float] = {}
    seqs: dict[str, int] = {}
    acked: dict[str, float] = {}  # when node 0 acknowledged it (durable there)
    polls: list[tuple[float, int]] = []  # (time, the lower of the followers' seqs of node 0)
    finished = asyncio.Event()

    async def watch(i: int) -> None:
        async with c.channel(i) as ch:
            stub = northbound_pb2_grpc.RowServiceStub(ch)
            async for ev in stub.Watch(nb.WatchRequest(table="kv", changes_only=True),
                                       metadata=md):
                key = ev.row.key[0].text_value
                if key.startswith("lag-"):
                    seen.setdefault(key, []).append(time.perf_counter())

    async def poll(author: str) -> None:
        chans = [c.channel(i) for i in (1, 2)]
        try:
            stubs = [northbound_pb2_grpc.ClusterServiceStub(ch) for ch in chans]
            while not finished.is_set():
                sts = await asyncio.gather(*(s.GetStatus(nb.GetStatusRequest(), metadata=md,
                                                         timeout=5) for s in stubs))
                polls.append((time.perf_counter(),
                              min(st.version_vector.get(author, 0) for st in sts)))
                await asyncio.sleep(LAG_POLL_S)
        finally:
            for ch in chans:
                await ch.close()

    async with c.channel(0) as ch:
        status = await northbound_pb2_grpc.ClusterServiceStub(ch).GetStatus(
            nb.GetStatusRequest(), metadata=md, timeout=5)
    tasks = [] if load_clients else [asyncio.create_task(watch(i)) for i in (1, 2)]
    tasks.append(asyncio.create_task(poll(status.node_id)))
    await asyncio.sleep(0.5)
    until = time.perf_counter() + LAG_LOAD_S - 4.0
    async with c.channel(0) as ch:
        stub = northbound_pb2_grpc.RowServiceStub(ch)
        for n in range(writes):
            if loader is not None and time.perf_counter() > until:
                break  # the load's window is over: what was written is the sample
            key = f"lag-{n}"
            row = nb.Row(table="kv", key=[value_pb(key)], values={"value": value_pb(VALUE)})
            started[key] = time.perf_counter()
            seqs[key] = (await stub.Put(nb.PutRequest(rows=[row]), metadata=md, timeout=10)).seq
            acked[key] = time.perf_counter()
            await asyncio.sleep(0.005)
    top = max(seqs.values(), default=0)
    deadline = time.perf_counter() + 20
    while time.perf_counter() < deadline and not (
            (load_clients or all(len(seen.get(k, ())) == 2 for k in started))
            and polls and polls[-1][1] >= top):
        await asyncio.sleep(0.05)
    finished.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if loader is not None:
        await asyncio.to_thread(loader.join, LAG_LOAD_S + 90)
    held = []
    for k, seq in seqs.items():
        at = next((t for t, s in polls if s >= seq and t >= started[k]), None)
        if at is not None:
            held.append((at - started[k]) * 1000)
    watched = [(max(v) - started[k]) * 1000 for k, v in seen.items()
               if len(v) == 2 and k in started]
    acks = [(acked[k] - started[k]) * 1000 for k in acked]
    gaps = [(b[0] - a[0]) * 1000 for a, b in zip(polls, polls[1:], strict=False)]
    out = {"writes": len(started), "held_by_all": len(held), "p50_ms": round(pct(held, 50), 2),
           "p99_ms": round(pct(held, 99), 2),
           "poll_gap_ms": round(pct(gaps, 50), 1) if gaps else None,
           "ack_p50_ms": round(pct(acks, 50), 2), "ack_p99_ms": round(pct(acks, 99), 2),
           "watched_by_all": len(watched), "watch_p50_ms": round(pct(watched, 50), 2),
           "watch_p99_ms": round(pct(watched, 99), 2)}
    if load_clients:
        out["load"] = {"clients": load_clients, "ack": "local", **load}
    return out


async def synod_heal(c: SynodCluster, per_side: int) -> dict:
    """Partition {n0} | {n1, n2}, write on both sides, heal; time until digests are equal.

    The partition is made by restarting the nodes with peer lists that leave the other side
    out (no node dials across, so nothing crosses); healing restarts them with full lists.
    """
    md = [("authorization", f"Bearer {c.token}")]
    c.stop(0)
    c.start(0, peers=[])
    others = [f"127.0.0.1:{c.peer_ports[j]}" for j in (1, 2)]
    for j in (1, 2):
        c.stop(j)
        c.start(j, peers=[f"127.0.0.1:{c.peer_ports[k]}" for k in (1, 2) if k != j])
    time.sleep(0.5)

    async def write(i: int, prefix: str) -> None:
        async with c.channel(i) as ch:
            stub = northbound_pb2_grpc.RowServiceStub(ch)
            for start in range(0, per_side, 500):
                rows = [nb.Row(table="kv", key=[value_pb(f"{prefix}{n}")],
                               values={"value": value_pb(VALUE)})
                        for n in range(start, min(per_side, start + 500))]
                await stub.Put(nb.PutRequest(rows=rows), metadata=md, timeout=30)

    await asyncio.gather(write(0, "left-"), write(1, "right-"))
    t0 = time.perf_counter()
    c.stop(0)
    c.start(0, peers=others)
    for j in (1, 2):
        c.stop(j)
        c.start(j)
    restart_s = time.perf_counter() - t0
    healed = time.perf_counter()
    while time.perf_counter() - healed < 120:
        digests = set()
        for i in range(3):
            async with c.channel(i) as ch:
                stub = northbound_pb2_grpc.ClusterServiceStub(ch)
                d = await stub.GetDigest(nb.GetDigestRequest(), metadata=md, timeout=5)
                digests.add(d.state_digest)
        if len(digests) == 1:
            break
        await asyncio.sleep(0.05)
    return {"writes_per_side": per_side, "restart_s": round(restart_s, 2),
            "converged_s": round(time.perf_counter() - healed, 2), "converged": len(digests) == 1}


# ---------------------------------------------------------------------------- etcd
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def etcd_put(n: int) -> bytes:
    key = f"b{n}-{time.perf_counter_ns()}".encode()
    return b"\x0a" + _varint(len(key)) + key + b"\x12" + _varint(len(VALUE)) + VALUE


class EtcdCluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.client_ports = [free_port() for _ in range(3)]
        self.peer_ports = [free_port() for _ in range(3)]
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        initial = ",".join(f"e{i}=http://127.0.0.1:{p}" for i, p in enumerate(self.peer_ports))
        for i in range(3):
            log = open(self.root / f"etcd{i}.log", "ab")  # noqa: SIM115
            self.procs.append(subprocess.Popen([
                "etcd", "--name", f"e{i}", "--data-dir", str(self.root / f"etcd{i}"),
                "--listen-client-urls", f"http://127.0.0.1:{self.client_ports[i]}",
                "--advertise-client-urls", f"http://127.0.0.1:{self.client_ports[i]}",
                "--listen-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--log-level", "error"], stdout=log, stderr=log, start_new_session=True))
            log.close()

    async def wait_ready(self) -> None:
        for _ in range(100):
            try:
                await self.put(0)
                return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.2)
        raise RuntimeError("etcd did not come up")

    async def put(self, i: int) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.client_ports[i]}") as ch:
            call = ch.unary_unary("/etcdserverpb.KV/Put")
            await call(etcd_put(0), timeout=2)

    async def writes(self, clients: int, seconds: float, procs: int = 1) -> dict:
        # Writes go to a follower or the leader like Synod's go to one node; etcd forwards.
        if procs > 1 and clients > 1:
            return await asyncio.to_thread(drive_procs, "etcd", self.client_ports[0], "", 0,
                                           clients, seconds, procs)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.client_ports[0]}") as ch:
            call = ch.unary_unary("/etcdserverpb.KV/Put")
            return await drive(lambda r: call(r, timeout=10), etcd_put, clients, seconds)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)


# ---------------------------------------------------------------------------- gRPC floor
def serve_floor(port: int) -> None:
    """One Python process serving RowService.Put with an immediate answer: no auth, no
    engine, no disk. What any Python grpc.aio unary server reaches on this machine, the
    ceiling Synod's node (one such process taking the writes) cannot pass. On uvloop, as
    the node (decision 0104), where it can be imported."""

    class Floor(northbound_pb2_grpc.RowServiceServicer):
        async def Put(self, request, context):
            return nb.WriteResponse(op_id="0", seq=1, ack=request.ack, holders=1)

    async def go() -> None:
        server = grpc.aio.server()
        northbound_pb2_grpc.add_RowServiceServicer_to_server(Floor(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    try:
        import uvloop
    except ImportError:
        asyncio.run(go())
    else:
        uvloop.run(go())


async def floor_writes(tmp: Path, clients_list: list[int], seconds: float,
                       procs: int) -> dict:
    port = free_port()
    log = open(tmp / "floor.log", "ab")  # noqa: SIM115
    p = subprocess.Popen([sys.executable, "-c",
                          f"from bench.cluster import serve_floor; serve_floor({port})"],
                         cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
                         stderr=log, start_new_session=True)
    log.close()
    out: dict = {}
    try:
        if p.stdout.readline().strip() != b"ready":  # type: ignore[union-attr]
            return {"error": f"the floor server did not start; see {tmp}/floor.log"}
        for clients in clients_list:
            if procs > 1 and clients > 1:
                r = await asyncio.to_thread(drive_procs, "synod", port, "", nb.ACK_QUORUM,
                                            clients, seconds, procs)
            else:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                    stub = northbound_pb2_grpc.RowServiceStub(ch)
                    r = await drive(lambda req, stub=stub: stub.Put(req, timeout=10),
                                    synod_put(nb.ACK_QUORUM), clients, seconds)
            out[f"floor/{clients}"] = r
            print(f"grpc floor {clients:3} clients: {r}", file=sys.stderr)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
    return out


# ---------------------------------------------------------------------------- pysyncobj
PYSYNCOBJ_TICK_S = 0.002  # autoTickPeriod and appendEntriesPeriod: batches leave every 2 ms


def _pysyncobj_member(i: int, addrs: list[str], clients: int, seconds: float, results,
                      stop) -> None:
    """One pysyncobj member process; the one that becomes leader runs the load."""
    from pysyncobj import SyncObj, SyncObjConf  # type: ignore
    from pysyncobj.batteries import ReplDict  # type: ignore

    d = ReplDict()
    conf = SyncObjConf(dynamicMembershipChange=False, autoTickPeriod=PYSYNCOBJ_TICK_S,
                       appendEntriesPeriod=PYSYNCOBJ_TICK_S, appendEntriesUseBatch=True)
    node = SyncObj(addrs[i], [a for a in addrs if a != addrs[i]], consumers=[d], conf=conf)
    try:
        deadline = time.time() + 20
        while time.time() < deadline and node._getLeader() is None:
            time.sleep(0.05)
        time.sleep(0.5)  # let the followers settle behind the leader
        if not node._isLeader():
            stop.wait(seconds + 60)
            return
        lat: list[float] = []
        sem = threading.Semaphore(clients)
        lock = threading.Lock()
        stop_at = time.perf_counter() + seconds
        n = 0
        started = time.perf_counter()
        while time.perf_counter() < stop_at:
            if not sem.acquire(timeout=5):
                break
            t = time.perf_counter()

            def cb(_res, _err, t=t):
                with lock:
                    lat.append((time.perf_counter() - t) * 1000)
                sem.release()

            d.set(f"b{n}", VALUE, callback=cb)
            n += 1
        for _ in range(clients):
            sem.acquire(timeout=5)
        results.put((lat, time.perf_counter() - started))
    finally:
        node.destroy()


def pysyncobj_writes(clients: int, seconds: float) -> dict | str:
    """3 pysyncobj processes on loopback (ReplDict, batched appends every 2 ms); the
    leader's own process drives `clients` outstanding sets with callbacks."""
    import multiprocessing

    try:
        import pysyncobj  # type: ignore # noqa: F401
    except ImportError:
        return "not installed (.venv/bin/pip install pysyncobj)"
    ctx = multiprocessing.get_context("spawn")
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    results, stop = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_pysyncobj_member,
                         args=(i, addrs, clients, seconds, results, stop), daemon=True)
             for i in range(3)]
    for p in procs:
        p.start()
    try:
        lat, elapsed = results.get(timeout=seconds + 60)
    except Exception:  # noqa: BLE001 - no leader or a crashed member: say so in the table
        return "no result (no leader elected in time?)"
    finally:
        stop.set()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    return {"ops_per_s": round(len(lat) / elapsed), "p50_ms": round(pct(lat, 50), 2),
            "p99_ms": round(pct(lat, 99), 2), "errors": 0,
            "note": f"3 processes, in-memory log (no fsync, unlike Synod and etcd), batches every "
                    f"{PYSYNCOBJ_TICK_S * 1000:g} ms, load generated inside the leader's process"}


# ---------------------------------------------------------------------------- RSS vs ops
def build_store(data: Path, ops: int, batch: int = 1_000) -> None:
    """Append `ops` one-row ops (unique keys, 100-byte values) to node data dir's store,
    offline, as the founder node would have signed them."""
    import random as _random

    from controller.node.datadir import DataDir
    from controller.replication import Upsert
    from controller.store import SqliteStore, open_replica, persist

    d = DataDir(data)
    store = SqliteStore(d.store_file)
    try:
        replica = open_replica(store, d.identity(), _random.Random(1), d.genesis())
        now = int(time.time() * 1000) - ops  # one op per ms, ending now
        for n in range(replica.op_count(), ops):
            replica.write([Upsert("kv", (f"rss-{n}",), {"value": VALUE})], now + n)
            if n % batch == batch - 1:
                persist(store, replica)
        persist(store, replica)
    finally:
        store.close()


def rss_vs_ops(root: Path, counts: list[int]) -> dict:
    """RSS of a node that opened a store of N ops (one node, no peers), for each N."""
    out = {}
    root.mkdir(parents=True, exist_ok=True)
    for ops in counts:
        c = SynodCluster(root / f"rss{ops}")
        (root / f"rss{ops}").mkdir(exist_ok=True)
        t = time.perf_counter()
        build_store(c.dirs[0], ops)
        built_s = time.perf_counter() - t
        t = time.perf_counter()
        c.start(0, peers=[])
        start_s = time.perf_counter() - t
        time.sleep(1.0)
        out[ops] = {"rss_mb": c.rss_mb()[0], "build_s": round(built_s, 1),
                    "start_s": round(start_s, 1)}
        print(f"rss with {ops} ops: {out[ops]}", file=sys.stderr)
        c.stop_all()
        shutil.rmtree(root / f"rss{ops}", ignore_errors=True)
    if len(counts) >= 2:
        a, b = sorted(counts)[-2:]
        per_op_kb = (out[b]["rss_mb"] - out[a]["rss_mb"]) * 1024 / (b - a)
        base = out[b]["rss_mb"] - per_op_kb * b / 1024
        out["per_op_kb"] = round(per_op_kb, 2)
        out["extrapolated_1m_mb"] = round(base + per_op_kb * 1_000_000 / 1024)
    return out


# ---------------------------------------------------------------------------- main
async def run(args: argparse.Namespace) -> dict:
    out: dict = {"machine": machine(), "seconds_per_cell": args.seconds,
                 "load_procs": args.load_procs, "node_loop": args.node_loop, "synod": {},
                 "etcd": {}, "pysyncobj": {}}
    tmp = Path(tempfile.mkdtemp(prefix="synod-bench-"))
    if "synod" in args.systems:
        await run_synod(args, tmp, out)
    if args.rss_ops:
        out["synod"]["rss_vs_ops"] = rss_vs_ops(tmp / "rss", args.rss_ops)
    if "floor" in args.systems:
        out["floor"] = await floor_writes(tmp, args.clients, args.seconds, args.load_procs)
    if "etcd" not in args.systems:
        out["etcd"] = "not run (--systems)"
    elif shutil.which("etcd"):
        etcd = EtcdCluster(tmp)
        try:
            etcd.start()
            await etcd.wait_ready()
            for clients in args.clients:
                r = await etcd.writes(clients, args.seconds, args.load_procs)
                out["etcd"][f"quorum/{clients}"] = r
                print(f"etcd   quorum {clients:3} clients: {r}", file=sys.stderr)
        finally:
            etcd.stop()
    else:
        out["etcd"] = "etcd not found (apt-get install -y etcd-server etcd-client)"
    if "pysyncobj" not in args.systems:
        out["pysyncobj"] = "not run (--systems)"
    else:
        for clients in args.clients:
            r = pysyncobj_writes(clients, args.seconds)
            out["pysyncobj"][f"quorum/{clients}"] = r
            print(f"pysyncobj quorum {clients:3} clients: {r}", file=sys.stderr)
            if isinstance(r, str):
                break
    shutil.rmtree(tmp, ignore_errors=True)
    return out


async def run_synod(args: argparse.Namespace, tmp: Path, out: dict) -> None:
    synod = SynodCluster(tmp / "synod", args.node_loop)
    (tmp / "synod").mkdir(exist_ok=True)
    try:
        synod.start_all()
        for ack, name in ((nb.ACK_LOCAL, "local"), (nb.ACK_QUORUM, "quorum")):
            for clients in args.clients:
                r = await synod_writes(synod, clients, args.seconds, ack, args.load_procs)
                out["synod"][f"{name}/{clients}"] = r
                print(f"synod {name:6} {clients:3} clients: {r}", file=sys.stderr)
        if args.cells_only:
            return
        out["synod"]["lag"] = await synod_lag(synod, args.lag_writes)
        print(f"synod lag: {out['synod']['lag']}", file=sys.stderr)
        out["synod"]["lag_loaded"] = await synod_lag(synod, args.lag_writes, max(args.clients),
                                                     args.load_procs)
        print(f"synod lag under load: {out['synod']['lag_loaded']}", file=sys.stderr)
        out["synod"]["rss_mb"] = synod.rss_mb()
        out["synod"]["heal"] = await synod_heal(synod, args.heal_writes)
        print(f"synod heal: {out['synod']['heal']}", file=sys.stderr)
    finally:
        synod.stop_all()


def render(res: dict) -> str:
    m = res["machine"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_mb']} MB, "
             f"Python {m['python']}, grpcio {m['grpcio']}",
             f"3 nodes on loopback ({res.get('node_loop', 'uvloop')} event loop), 100-byte "
             f"values, load from {res.get('load_procs', 1)} asyncio gRPC client process(es)",
             "", f"{'system':10} {'ack':7} {'clients':>7} {'ops/s':>8} {'p50 ms':>8} "
             f"{'p99 ms':>8} {'vs etcd':>8}"]
    etcd = res["etcd"] if isinstance(res["etcd"], dict) else {}
    rows = [("synod", k, v) for k, v in res["synod"].items() if "/" in k]
    rows += [("etcd", k, v) for k, v in etcd.items()]
    if isinstance(res["pysyncobj"], dict):
        rows += [("pysyncobj", k, v) for k, v in res["pysyncobj"].items() if isinstance(v, dict)]
    rows += [("py-floor", k, v) for k, v in res.get("floor", {}).items() if isinstance(v, dict)]
    unlike = False
    for system, k, v in rows:
        ack, clients = k.split("/")
        base = etcd.get(f"quorum/{clients}", {}).get("ops_per_s")
        # etcd acknowledges at a quorum: only a quorum ack compares like with like.
        ratio = f"{v['ops_per_s'] / base:.2f}x" if base else "-"
        if base and ack != "quorum":
            ratio, unlike = ratio + "*", True
        lines.append(f"{system:10} {ack:7} {clients:>7} {v['ops_per_s']:>8} {v['p50_ms']:>8} "
                     f"{v['p99_ms']:>8} {ratio:>8}")
    if res.get("floor"):
        lines.append("py-floor: one Python grpc.aio process answering Put at once (no auth, "
                     "engine, disk or peers): the most a Python node's API can take here")
    if unlike:
        lines.append("* a local ack (durable on one node) against etcd's quorum writes: "
                     "not like for like")
    notes = [v.get("note") for v in (res["pysyncobj"] if isinstance(res["pysyncobj"], dict)
                                     else {}).values() if isinstance(v, dict)]
    if notes:
        lines.append(f"pysyncobj: {notes[0]}")
    for name in ("etcd", "pysyncobj"):
        if isinstance(res[name], str):
            lines.append(f"{name}: {res[name]}")
        elif isinstance(res[name], dict):
            for v in res[name].values():
                if isinstance(v, str):
                    lines.append(f"{name}: {v}")
                    break
    lag = res["synod"].get("lag", {})
    loaded = res["synod"].get("lag_loaded", {})
    load = loaded.get("load", {})
    heal = res["synod"].get("heal", {})
    lines += ["", "synod replication lag, write start -> held by both followers (their "
                  "vectors, polled; median gap between polls in brackets):",
              f"  idle: p50 {lag.get('p50_ms')} ms, p99 {lag.get('p99_ms')} ms over "
              f"{lag.get('held_by_all')} of {lag.get('writes')} writes "
              f"[{lag.get('poll_gap_ms')} ms]; streamed by a watcher on each: p50 "
              f"{lag.get('watch_p50_ms')} ms, p99 {lag.get('watch_p99_ms')} ms",
              f"  while {load.get('clients')} clients write {load.get('ops_per_s')} local-ack "
              f"ops/s to node 0: p50 {loaded.get('p50_ms')} ms, p99 {loaded.get('p99_ms')} ms "
              f"over {loaded.get('held_by_all')} of {loaded.get('writes')} writes "
              f"[{loaded.get('poll_gap_ms')} ms]; node 0's own ack of them p50 "
              f"{loaded.get('ack_p50_ms')} ms, p99 {loaded.get('ack_p99_ms')} ms",
              f"synod heal: {heal.get('writes_per_side')} writes per side, digests equal "
              f"{heal.get('converged_s')} s after the restart that healed the partition "
              f"(converged: {heal.get('converged')})",
              f"synod node RSS after the write runs: {res['synod'].get('rss_mb')} MB"]
    rss = res["synod"].get("rss_vs_ops")
    if rss:
        measured = ", ".join(f"{k} ops: {v['rss_mb']} MB" for k, v in rss.items()
                             if isinstance(v, dict))
        lines.append(f"synod node RSS by ops stored (measured): {measured}; "
                     f"{rss.get('per_op_kb')} KB per op, so about "
                     f"{rss.get('extrapolated_1m_mb')} MB at 1 million ops (extrapolated, linear)")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 s per cell, 1,000 heal writes")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--heal-writes", type=int, default=10_000)
    ap.add_argument("--lag-writes", type=int, default=200)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--load-procs", type=int, default=1,
                    help="client processes generating the load (clients split between them)")
    ap.add_argument("--systems", nargs="*", default=["synod", "etcd", "pysyncobj", "floor"],
                    choices=["synod", "etcd", "pysyncobj", "floor"],
                    help="floor: a Python gRPC server answering Put at once (no auth, engine "
                         "or disk), the ceiling of one Python process here")
    ap.add_argument("--rss-ops", type=int, nargs="*", default=[],
                    help="also measure node RSS after opening stores of these many ops "
                         "(two or more counts: extrapolated linearly to 1 million)")
    ap.add_argument("--node-loop", choices=["uvloop", "asyncio"], default="uvloop",
                    help="the Synod nodes' event loop ([api] event_loop; default uvloop)")
    ap.add_argument("--cells-only", action="store_true",
                    help="only the throughput/latency cells (no lag, heal, RSS)")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.heal_writes, args.lag_writes = 1.0, 1_000, 50
    res = asyncio.run(run(args))
    print(render(res))
    print(json.dumps(res))
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    (results / time.strftime("cluster-%Y%m%d-%H%M%S.json")).write_text(json.dumps(res, indent=2))
    missing = missing_peers(res, args.systems)
    if missing:
        sys.exit("bench/cluster.py: FAILED: no figures for " + "; ".join(missing))


def missing_peers(res: dict, systems: list[str]) -> list[str]:
    """Each system asked for whose column stayed empty or holds an error, with why."""
    out = []
    for name in ("etcd", "pysyncobj", "floor"):
        if name not in systems:
            continue
        got = res.get(name)
        if isinstance(got, str):
            out.append(f"{name} ({got})")
        elif not got:
            out.append(f"{name} (no result)")
        else:
            why = [v if isinstance(v, str) else v.get("error") for v in got.values()
                   if isinstance(v, str) or "error" in v]
            if why:
                out.append(f"{name} ({why[0]})")
    return out


if __name__ == "__main__":
    main()
