"""Soak benchmark (issue 12): memory, disk, open time and checkpoint cost under long churn.

Run: .venv/bin/python bench/soak.py [--ops 100000] [--checkpoint-ops 10000] [--compact]

Three voters (the node's own NodeReplica + Agreement, each over a SqliteStore in a temp
dir, so the disk figures are real) on a hand-pumped perfect network in this process: one
round is one message delay of 10 simulated ms, and --ops-per-round writes are spread over
the three nodes before each round. The churn is seeded: flows (3/4 of --keys) and kv rows
(1/4) are added, overwritten and deleted over a bounded key set, so the live tables stay
bounded and only history grows. Checkpoints are proposed by the voters by op count
(AgreementConfig.checkpoint_ops); with --compact each replica prunes the ops below the
latest stable checkpoint, in memory and in its store (decision 0070).

Every --every percent of the ops it prints the process's RSS (VmRSS after gc.collect();
all three nodes live in this process), the ops each replica still holds and has pruned,
checkpoints decided, the ledger's slot records and memoised vectors, the op ids waiting
for op_digest(), store.db + WAL on disk and the ops/s of the interval. At the end: the
state digests (equal on every node), the time and RSS to open node 0's store from disk
the way `synod node` does (a fresh interpreter: SqliteStore, open_node_replica with
verify="sample" and "all", Agreement, first step), and the cost of a checkpoint (CPU to
compute the state at the final cut, bytes of its value and of the vote ops that decided
the latest one). --tracemalloc names the allocation sites that grew from the first report
to the last (slow: diagnosis only). Then the time a node joining by snapshot takes with
node 0's checkpoint (serve, check against the certificate, install, open; no network).
Figures are measured and printed, never checked against targets; JSON goes to
bench/results/.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The repository's packages first: bench/controller.py (a script) would shadow `controller`.
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from controller.agreement import Agreement, AgreementConfig  # noqa: E402
from controller.agreement.checkpoint import Checkpoints, checkpoint_slot  # noqa: E402
from controller.node.datadir import GENESIS_POLICY  # noqa: E402
from controller.node.lineages import NODE_SCHEMA  # noqa: E402
from controller.node.slots import NodeReplica, open_node_replica  # noqa: E402
from controller.replication import (  # noqa: E402
    Config,
    Delete,
    Identity,
    Mutation,
    Upsert,
    decode_genesis,
    encode,
    make_genesis,
)
from controller.store import SqliteStore  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DELAY_MS = 10  # one round = one message delay, in simulated ms
VOTERS = 3
DPIDS = 24  # flows are spread over this many switches
KV_VALUE_BYTES = 100
SETTLE_ROUNDS_MAX = 5_000  # rounds without writes for the nodes to converge at the end
OPEN_TIMEOUT_S = 3_600  # one open of a store, in a child interpreter
TRACEMALLOC_TOP = 12


# ---------------------------------------------------------------------------- process figures
def proc_status_kb(field_name: str) -> int:
    """A field of /proc/self/status in kB (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def rss_mb() -> float:
    """Resident memory after a full collection, in MB."""
    gc.collect()
    return proc_status_kb("VmRSS") / 1024


def disk_bytes(db: Path) -> tuple[int, int]:
    """(store.db, store.db-wal) sizes; 0 for a file that is not there."""
    wal = db.with_name(db.name + "-wal")
    return (db.stat().st_size if db.exists() else 0, wal.stat().st_size if wal.exists() else 0)


# ---------------------------------------------------------------------------- the cluster
def identities(seed: int) -> list[Identity]:
    rng = random.Random(f"soak-ids-{seed}")
    return [Identity.from_seed(rng.randbytes(32)) for _ in range(VOTERS)]


def replica_config() -> Config:
    return Config()  # the node's defaults: push to every peer, anti-entropy every 200 ms


def agreement_config(checkpoint_ops: int, compact: bool) -> AgreementConfig:
    return AgreementConfig(checkpoint_ops=checkpoint_ops, compact=compact)


@dataclass
class SoakNode:
    identity: Identity
    store: SqliteStore
    replica: NodeReplica
    agreement: Agreement
    db: Path


@dataclass
class Cluster:
    """Three voters and a perfect network: one round delivers what the last one sent."""

    nodes: list[SoakNode]
    genesis_file: Path
    now_ms: int = 1_000_000
    in_flight: list[tuple[str, Any]] = field(default_factory=list)
    rounds: int = 0

    @classmethod
    def create(cls, root: Path, seed: int, checkpoint_ops: int, compact: bool) -> Cluster:
        ids = identities(seed)
        genesis = make_genesis(ids[0], "soak", [i.public_key for i in ids], 0, GENESIS_POLICY)
        genesis_file = root / "genesis"
        genesis_file.write_bytes(genesis.raw)
        nodes = []
        for k, ident in enumerate(ids):
            db = root / f"node{k}" / "store.db"
            db.parent.mkdir(parents=True)
            store = SqliteStore(db, NODE_SCHEMA)
            replica = open_node_replica(
                store, ident, random.Random(f"{seed}-replica-{k}"), genesis, verify="all",
                config=replica_config(), schema=NODE_SCHEMA,
            )
            agreement = Agreement(
                replica, random.Random(f"{seed}-agreement-{k}"),
                agreement_config(checkpoint_ops, compact),
            )
            nodes.append(SoakNode(ident, store, replica, agreement, db))
        return cls(nodes, genesis_file)

    def flush(self) -> None:
        """Each node steps, then carries out its Ready (commit, then send), as the node does."""
        for node in self.nodes:
            node.agreement.step(self.now_ms)
            while node.replica.has_ready():
                ready = node.replica.ready()
                node.store.commit(ready)
                self.in_flight.extend((out.to, out.message) for out in ready.messages)
                node.replica.advance(ready)
            node.agreement.release()

    def round(self) -> None:
        self.rounds += 1
        self.now_ms += DELAY_MS
        batch, self.in_flight = self.in_flight, []
        by_id = {n.identity.node_id: n for n in self.nodes}
        for to, message in batch:
            node = by_id[to]
            node.replica.receive(message, self.now_ms)
            node.agreement.step(self.now_ms)
        for node in self.nodes:
            node.replica.tick(self.now_ms)
        self.flush()

    def settled(self) -> bool:
        vectors = {tuple(sorted(n.replica.version_vector().items())) for n in self.nodes}
        digests = {n.replica.state_digest() for n in self.nodes}
        return len(vectors) == 1 and len(digests) == 1 and not self.in_flight

    def close(self) -> None:
        for node in self.nodes:
            node.store.close()


# ---------------------------------------------------------------------------- the churn
class Churn:
    """Seeded row changes over a bounded key set: flows added, overwritten and deleted
    (3/4 of the keys), kv rows overwritten and sometimes deleted (1/4). A delete of a row
    the writer does not hold alive becomes an upsert (an empty op would be refused)."""

    def __init__(self, seed: int, keys: int, rows_per_op: int) -> None:
        self.rng = random.Random(f"soak-churn-{seed}")
        self.flow_keys = max(1, keys * 3 // 4)
        self.kv_keys = max(1, keys - self.flow_keys)
        self.rows_per_op = rows_per_op

    def mutations(self, replica: NodeReplica) -> list[Mutation]:
        return [self._one(replica) for _ in range(self.rows_per_op)]

    def _one(self, replica: NodeReplica) -> Mutation:
        rng = self.rng
        pick = rng.random()
        if pick < 0.75:
            k = rng.randrange(self.flow_keys)
            key = (f"{k % DPIDS:016x}", f"flow-{k}")
            if pick < 0.15 and replica.row("flows", key) is not None:
                return Delete("flows", key)
            return Upsert("flows", key, {
                "table_id": 0,
                "priority": rng.randrange(1, 1_000),
                "match": f"ip,nw_dst=10.{k >> 8 & 255}.{k & 255}.0/24",
                "actions": f"output:{rng.randrange(1, 48)}",
                "cookie": rng.getrandbits(32),
                "idle_timeout": 0,
                "hard_timeout": 0,
            })
        k = rng.randrange(self.kv_keys)
        kv_key = (f"kv/{k}",)
        if pick > 0.95 and replica.row("kv", kv_key) is not None:
            return Delete("kv", kv_key)
        return Upsert("kv", kv_key, {"value": rng.randbytes(KV_VALUE_BYTES)})


# ---------------------------------------------------------------------------- one report
def ledger_vote_ops(node: SoakNode) -> int:
    """Vote ops the ledger's slot records still reference (pruned from the DAG or not)."""
    total = 0
    for rec in node.agreement.ledger.slots.values():
        total += len(rec.prepares)
        total += sum(len(a) for by_value in rec.accepted.values() for a in by_value.values())
    return total


def snapshot(cluster: Cluster, done: int, ops: int, interval_s: float, interval_ops: int) -> dict:
    nodes = cluster.nodes
    ledger = nodes[0].agreement.ledger
    db, wal = disk_bytes(nodes[0].db)
    return {
        "ops": done,
        "percent": round(100 * done / ops),
        "rss_mb": round(rss_mb(), 1),
        "tail": [len(n.replica.dag.ops) for n in nodes],
        "pruned": [n.replica.dag.pruned for n in nodes],
        "log_ops": nodes[0].replica.op_count(),  # user ops + vote ops, pruned included
        "checkpoints": nodes[0].agreement.checkpoints.latest(),
        "compacted_to": [n.agreement.checkpoints.final_n for n in nodes],
        "ledger_slots": len(ledger.slots),
        "archived_slots": ledger.archived_count,  # settled decisions moved to disk (0103)
        "ledger_vote_ops": ledger_vote_ops(nodes[0]),
        "ledger_vectors": len(ledger._vectors),  # memoised per-op vectors (decision 0070 §4)
        # Op ids applied since the last op_digest() (only a Digest query drains them).
        "opset_pending": len(nodes[0].replica._opset_pending),
        "store_db_bytes": db,
        "store_wal_bytes": wal,
        "ops_per_s": round(interval_ops / interval_s) if interval_s > 0 else None,
        "rounds": cluster.rounds,
    }


def print_snapshot(s: dict) -> None:
    print(
        f"{s['percent']:>4}% {s['ops']:>9,} ops | RSS {s['rss_mb']:>7.1f} MB | "
        f"tail {'/'.join(f'{t:,}' for t in s['tail'])} | "
        f"pruned {'/'.join(f'{p:,}' for p in s['pruned'])} | "
        f"checkpoints {s['checkpoints']} (compacted to {max(s['compacted_to'])}) | "
        f"ledger {s['ledger_slots']} slots ({s['archived_slots']} archived), "
        f"{s['ledger_vote_ops']} vote ops, "
        f"{s['ledger_vectors']:,} vectors | opset pending {s['opset_pending']:,} | "
        f"disk {s['store_db_bytes'] / 1e6:.1f} MB + wal {s['store_wal_bytes'] / 1e6:.1f} MB | "
        f"{s['ops_per_s'] or 0:,} ops/s",
        flush=True,
    )


# ---------------------------------------------------------------------------- checkpoint cost
def checkpoint_cost(node: SoakNode) -> dict:
    """CPU to compute the state at the final cut, as a proposer (from the latest decided
    checkpoint: what each checkpoint costs) and from the floor (the compacted checkpoint,
    or genesis without compaction: the whole history); the value's and the votes' bytes."""
    replica, cps = node.replica, node.agreement.checkpoints
    cut = replica.version_vector()
    out: dict[str, Any] = {"latest": cps.latest()}
    for name, base, base_n in (("incremental", cps.base, cps.base_n),
                               ("from_floor", cps.final, cps.final_n)):
        fresh = Checkpoints(replica, node.agreement.ledger)  # no memo: computes afresh
        fresh.base, fresh.base_n, fresh.final, fresh.final_n = base, base_n, cps.final, cps.final_n
        c0 = time.process_time()
        state = fresh.at(cut)
        cpu_s = time.process_time() - c0
        assert state is not None, "the node holds its own vector"
        out[name] = {"from_checkpoint": base_n, "ops": state.count - base.count,
                     "rows": len(state.rows), "cpu_ms": round(cpu_s * 1000, 1)}
    decided = cps.decided(cps.latest()) if cps.latest() else None
    if decided is not None:
        out["value_bytes"] = len(encode(decided.to_value()))
        rec = node.agreement.ledger.slots[checkpoint_slot(decided.n)]
        cert = rec.decided.certificate if rec.decided is not None else None
        votes = [op for op in rec.prepares.values()]
        votes += [op for by_value in rec.accepted.values() for a in by_value.values()
                  for op in a.values()]
        out["decided_votes_indexed"] = len(votes)
        out["certificate_bytes"] = len(encode(cert.to_plain())) if cert is not None else 0
    return out


# ---------------------------------------------------------------------------- opening a store
def measure_open(db: str, genesis_file: str, seed: int, node: int, verify: str,
                 checkpoint_ops: int, compact: bool, now_ms: int) -> None:
    """In a fresh interpreter: open a node's store as `synod node` does; print JSON."""
    ident = identities(seed)[node]
    genesis = decode_genesis(Path(genesis_file).read_bytes())
    rss0 = rss_mb()
    t0 = time.perf_counter()
    store = SqliteStore(db, NODE_SCHEMA)  # quick_check included, as the node opens it
    t1 = time.perf_counter()
    replica = open_node_replica(store, ident, random.Random(0), genesis, verify=verify,
                                config=replica_config(), schema=NODE_SCHEMA)
    t2 = time.perf_counter()
    agreement = Agreement(replica, random.Random(1), agreement_config(checkpoint_ops, compact))
    t3 = time.perf_counter()
    rss_opened = rss_mb()
    agreement.step(now_ms)  # the first step compacts a replica that could be (with --compact)
    t4 = time.perf_counter()
    print(json.dumps({
        "verify": verify,
        "log_ops": replica.op_count(),
        "sqlite_open_s": round(t1 - t0, 3),
        "open_replica_s": round(t2 - t1, 3),
        "agreement_s": round(t3 - t2, 3),
        "first_step_s": round(t4 - t3, 3),
        "total_s": round(t4 - t0, 3),
        "pruned_at_first_step": replica.dag.pruned,
        "rss_before_mb": round(rss0, 1),
        "rss_opened_mb": round(rss_opened, 1),
        "rss_after_step_mb": round(rss_mb(), 1),
        "rss_peak_mb": round(proc_status_kb("VmHWM") / 1024, 1),
    }))
    store.close()


def measure_join(db: str, genesis_file: str, seed: int, work: str) -> None:
    """In a fresh interpreter: what a node joining this cluster does with node 0's
    checkpoint (controller/node/snapshot.py): read it as a peer serves it, frame it in
    chunks and read them back, check it against its certificate, install it into a new
    store, then open that store as `synod node` does. The network is left out. JSON."""
    from controller.node import snapshot as snap

    genesis = decode_genesis(Path(genesis_file).read_bytes())
    joiner = Identity.from_seed(bytes([seed % 251 + 1]) * 31 + b"\xfe")
    t0 = time.perf_counter()
    got = snap.read_compaction(db)
    if got is None:
        print(json.dumps({"snapshot": False}))
        return
    parts = list(snap.chunks(*got))
    t1 = time.perf_counter()
    record, rows = snap.collect(iter(parts), snap.SNAPSHOT_BYTES_MAX)  # type: ignore[misc]
    replica = snap.check(record, rows, joiner, genesis, config=replica_config())
    t2 = time.perf_counter()
    store = SqliteStore(Path(work) / "joiner.db", NODE_SCHEMA)
    store.init(genesis)
    snap.install(store, replica, record, rows)
    t3 = time.perf_counter()
    opened = open_node_replica(store, joiner, random.Random(0), genesis, verify="all",
                               config=replica_config(), schema=NODE_SCHEMA)
    t4 = time.perf_counter()
    print(json.dumps({
        "snapshot": True,
        "rows": len(rows),
        "chunks": len(parts),
        "bytes": sum(p.ByteSize() for p in parts),
        "pruned_ops": opened.dag.pruned,
        "serve_s": round(t1 - t0, 3),
        "check_s": round(t2 - t1, 3),
        "install_s": round(t3 - t2, 3),
        "open_s": round(t4 - t3, 3),
        "total_s": round(t4 - t0, 3),
        "rss_peak_mb": round(proc_status_kb("VmHWM") / 1024, 1),
    }))
    store.close()


def join_in_child(cluster: Cluster, seed: int, root: Path) -> dict:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from bench.soak import measure_join; "
        "measure_join(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])"
    )
    work = Path(tempfile.mkdtemp(prefix="join-", dir=root))
    argv = [sys.executable, "-c", code, str(ROOT), str(cluster.nodes[0].db),
            str(cluster.genesis_file), str(seed), str(work)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=OPEN_TIMEOUT_S,
                          check=False, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"joining by snapshot failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def open_in_child(cluster: Cluster, seed: int, verify: str, args: argparse.Namespace) -> dict:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from bench.soak import measure_open; "
        "measure_open(sys.argv[2], sys.argv[3], int(sys.argv[4]), 0, sys.argv[5], "
        "int(sys.argv[6]), sys.argv[7] == '1', int(sys.argv[8]))"
    )
    argv = [sys.executable, "-c", code, str(ROOT), str(cluster.nodes[0].db),
            str(cluster.genesis_file), str(seed), verify, str(args.checkpoint_ops),
            "1" if args.compact else "0", str(cluster.now_ms)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=OPEN_TIMEOUT_S,
                          check=False, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"opening the store failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- the run
def site(traceback: tracemalloc.Traceback) -> str:
    """An allocation site, innermost frame first, paths relative to the repository."""
    frames = []
    for f in reversed(traceback):
        name = f.filename
        if name.startswith(str(ROOT) + os.sep):
            name = name[len(str(ROOT)) + 1:]
        frames.append(f"{name}:{f.lineno}")
    return " <- ".join(frames)


def run(args: argparse.Namespace, root: Path) -> dict:
    if args.tracemalloc:  # from the start: what is live at the first report is traced too
        tracemalloc.start(args.tracemalloc_frames)
    cluster = Cluster.create(root, args.seed, args.checkpoint_ops, args.compact)
    churn = Churn(args.seed, args.keys, args.rows_per_op)
    step = max(1, args.ops * args.every // 100)
    marks = list(range(step, args.ops, step)) + [args.ops]
    reports = []
    traced_first: tracemalloc.Snapshot | None = None
    traced_last: tracemalloc.Snapshot | None = None
    done = 0
    started = interval_t0 = time.perf_counter()
    interval_start_ops = 0
    baseline = rss_mb()
    print(f"RSS after start (3 nodes, empty stores): {baseline:.1f} MB", flush=True)
    for mark in marks:
        while done < mark:
            for _ in range(min(args.ops_per_round, mark - done)):
                node = cluster.nodes[done % VOTERS]
                node.replica.write(churn.mutations(node.replica), cluster.now_ms)
                done += 1
                if args.slot_every and done % args.slot_every == 0:
                    # A user slot, as placements and lifecycles decide them (decision 0103:
                    # settled ones move to the store's archive with the next compaction).
                    n = done // args.slot_every
                    node.agreement.propose(f"alloc/soak-{n}", {"n": n}, cluster.now_ms)
            cluster.round()
        elapsed = time.perf_counter() - interval_t0
        s = snapshot(cluster, done, args.ops, elapsed, done - interval_start_ops)
        reports.append(s)
        print_snapshot(s)
        if args.tracemalloc:
            if traced_first is None:
                traced_first = tracemalloc.take_snapshot()
            elif mark == args.ops:  # before settling: the same moment as the last report
                traced_last = tracemalloc.take_snapshot()
                tracemalloc.stop()
        interval_t0, interval_start_ops = time.perf_counter(), done
    churn_s = time.perf_counter() - started

    settle = 0
    while not cluster.settled():
        settle += 1
        if settle > SETTLE_ROUNDS_MAX:
            raise RuntimeError(f"not settled in {SETTLE_ROUNDS_MAX} rounds")
        cluster.round()
    result: dict[str, Any] = {
        "reports": reports,
        "churn_s": round(churn_s, 1),
        "ops_per_s": round(args.ops / churn_s),
        "rss_start_mb": round(baseline, 1),
        "settle_rounds": settle,
        "state_digest": cluster.nodes[0].replica.state_digest().hex(),
        "digests_equal": len({n.replica.state_digest() for n in cluster.nodes}) == 1,
        "rows_alive": {t: len(cluster.nodes[0].replica.rows(t)) for t in ("flows", "kv")},
        "counters": {k: v for k, v in cluster.nodes[0].agreement.counters.items()
                     if k in ("checkpoint_proposals", "compactions", "ops_pruned")},
    }
    if traced_first is not None and traced_last is not None:
        group = "lineno" if args.tracemalloc_frames == 1 else "traceback"
        diff = traced_last.compare_to(traced_first, group)
        result["tracemalloc_total_kb"] = round(sum(d.size_diff for d in diff) / 1024, 1)
        result["tracemalloc_top"] = [
            {"site": site(stat.traceback), "size_diff_kb": round(stat.size_diff / 1024, 1),
             "count_diff": stat.count_diff}
            for stat in diff[:TRACEMALLOC_TOP]
        ]
    result["checkpoint"] = checkpoint_cost(cluster.nodes[0])
    cluster.close()
    result["disk_closed"] = [sum(disk_bytes(n.db)) for n in cluster.nodes]
    del churn
    result["open"] = [open_in_child(cluster, args.seed, v, args) for v in args.open_verify]
    result["join"] = join_in_child(cluster, args.seed, root)
    return result


def report_lines(args: argparse.Namespace, info: dict, r: dict) -> list[str]:
    first, last = r["reports"][0], r["reports"][-1]
    grown_ops = last["ops"] - first["ops"]
    per_op = (last["rss_mb"] - first["rss_mb"]) * 1e6 / grown_ops if grown_ops else 0.0
    lines = [
        f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_mb']:,} MB, "
        f"Python {info['python']}, SQLite {sqlite3.sqlite_version}, PyNaCl {info['pynacl']}",
        f"run: --ops {args.ops:,} --checkpoint-ops {args.checkpoint_ops:,} "
        f"--compact={args.compact} --keys {args.keys:,} --rows-per-op {args.rows_per_op} "
        f"--slot-every {args.slot_every} "
        f"--ops-per-round {args.ops_per_round} --seed {args.seed}",
        f"churn: {r['churn_s']:.1f} s wall, {r['ops_per_s']:,} ops/s (3 nodes in one process, "
        f"each op signed once, verified and stored on 3 nodes)",
        f"converged: {r['settle_rounds']} rounds after the last write; digests equal="
        f"{r['digests_equal']}; state {r['state_digest'][:16]}…; rows alive {r['rows_alive']}",
        f"RSS: {r['rss_start_mb']:.1f} MB at start, {first['rss_mb']:.1f} MB at "
        f"{first['percent']}%, {last['rss_mb']:.1f} MB at 100%: {per_op:,.0f} bytes per op "
        f"from {first['percent']}% to 100% (3 nodes; ≈ {per_op / VOTERS:,.0f} bytes per op "
        f"per node)",
        f"held at 100%: tail {last['tail']} ops, pruned {last['pruned']}, "
        f"checkpoints decided {last['checkpoints']}, compacted to {last['compacted_to']}; "
        f"ledger {last['ledger_slots']} slot records referencing {last['ledger_vote_ops']} "
        f"vote ops, {last['ledger_vectors']:,} memoised vectors, "
        f"{last['opset_pending']:,} op ids waiting for op_digest()",
        f"disk (node 0): store.db {last['store_db_bytes'] / 1e6:.1f} MB + wal "
        f"{last['store_wal_bytes'] / 1e6:.1f} MB while running "
        f"({(last['store_db_bytes'] + last['store_wal_bytes']) / last['log_ops']:,.0f} bytes "
        f"per logged op, {last['log_ops']:,} ops with votes); "
        f"{r['disk_closed'][0] / 1e6:.1f} MB after close",
    ]
    for o in r["open"]:
        lines.append(
            f"open node 0 (verify={o['verify']}, {o['log_ops']:,} ops): {o['total_s']:.2f} s = "
            f"SqliteStore {o['sqlite_open_s']:.2f} + open_node_replica {o['open_replica_s']:.2f}"
            f" + Agreement {o['agreement_s']:.2f} + first step {o['first_step_s']:.2f} "
            f"(pruned {o['pruned_at_first_step']:,}); RSS {o['rss_before_mb']:.1f} -> "
            f"{o['rss_opened_mb']:.1f} MB opened (+{o['rss_opened_mb'] - o['rss_before_mb']:.1f})"
            f", {o['rss_after_step_mb']:.1f} MB after the step, peak {o['rss_peak_mb']:.1f} MB"
        )
    j = r["join"]
    if j.get("snapshot"):
        lines.append(
            f"join by snapshot (no network): {j['total_s']:.2f} s = serve {j['serve_s']:.2f} "
            f"({j['rows']:,} rows, {j['chunks']} chunks, {j['bytes'] / 1e6:.1f} MB) + check "
            f"{j['check_s']:.2f} + install {j['install_s']:.2f} + open {j['open_s']:.2f}; "
            f"{j['pruned_ops']:,} ops never sent; peak RSS {j['rss_peak_mb']:.1f} MB"
        )
    else:
        lines.append("join by snapshot: node 0 never compacted (run with --compact)")
    c = r["checkpoint"]
    for name in ("incremental", "from_floor"):
        x = c[name]
        lines.append(
            f"checkpoint cost ({name}): state at the final cut from checkpoint/"
            f"{x['from_checkpoint']}: {x['ops']:,} ops, {x['rows']:,} rows, {x['cpu_ms']:.1f} ms "
            f"CPU"
        )
    if "value_bytes" in c:
        lines.append(
            f"checkpoint size: value of checkpoint/{c['latest']} {c['value_bytes']} bytes; "
            f"certificate {c['certificate_bytes']:,} bytes; "
            f"{c['decided_votes_indexed']} prepare/accepted ops indexed for the slot"
        )
    if "tracemalloc_total_kb" in r:
        lines.append(f"tracemalloc: traced memory grew {r['tracemalloc_total_kb']:,.1f} KB from "
                     f"{first['percent']}% to 100%; the sites that grew most:")
    for t in r.get("tracemalloc_top", []):
        lines.append(f"tracemalloc growth: {t['size_diff_kb']:>10,.1f} KB "
                     f"{t['count_diff']:>+9,} blocks  {t['site']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=100_000,
                        help="row-writing ops of churn, spread over the 3 nodes (default "
                        "100,000; 1,000,000 is supported but long)")
    parser.add_argument("--checkpoint-ops", type=int, default=10_000,
                        help="AgreementConfig.checkpoint_ops: a voter proposes checkpoint/<n> "
                        "once this many ops were added since the latest (default 10,000; 0: none)")
    parser.add_argument("--compact", action="store_true",
                        help="AgreementConfig.compact: prune the ops below the latest stable "
                        "checkpoint, in memory and on disk")
    parser.add_argument("--keys", type=int, default=2_000,
                        help="bounded key set of the churn: 3/4 flows, 1/4 kv (default 2,000)")
    parser.add_argument("--rows-per-op", type=int, default=1,
                        help="row mutations per op (default 1)")
    parser.add_argument("--slot-every", type=int, default=0,
                        help="propose a user slot alloc/soak-<n> every this many ops, in turn from "
                        "each node (default 0: none; placements and lifecycles are such slots)")
    parser.add_argument("--ops-per-round", type=int, default=30,
                        help="ops written (round-robin over the nodes) per message delay of "
                        f"{DELAY_MS} simulated ms (default 30)")
    parser.add_argument("--every", type=int, default=10,
                        help="print the figures every this many percent of --ops (default 10)")
    parser.add_argument("--seed", type=int, default=1,
                        help="seeds identities, churn and node randomness (default 1)")
    parser.add_argument("--open-verify", nargs="*", default=["sample", "all"],
                        choices=["sample", "all", "none"],
                        help="open node 0's store at the end once per verify mode, each in a "
                        "fresh interpreter (default: sample all; none given: skip)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="trace allocations from the start and print the sites that grew most "
                        "from the first report to the last (several times slower; RSS includes "
                        "tracemalloc's own memory)")
    parser.add_argument("--tracemalloc-frames", type=int, default=1,
                        help="frames per traced allocation with --tracemalloc (default 1)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="keep the stores in this (new or empty) directory instead of a "
                        "temporary one that is removed at the end")
    args = parser.parse_args(argv)
    if args.ops < 1 or not 1 <= args.every <= 100 or args.ops_per_round < 1:
        parser.error("--ops and --ops-per-round must be >= 1, --every in 1..100")
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        if any(args.dir.iterdir()):
            parser.error(f"--dir {args.dir}: not empty")
    info = describe("pynacl", "cbor2")
    root = args.dir or Path(tempfile.mkdtemp(prefix="synod-soak-"))
    try:
        result = run(args, root)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    print()
    for line in report_lines(args, info, result):
        print(line)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"machine": info, "args": {k: str(v) for k, v in
                                                         vars(args).items()},
                               "result": result}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
