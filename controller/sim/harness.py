"""The simulator: virtual time, a seeded lossy network, crashes and restarts, and the checks."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.replication import (
    Config,
    Delete,
    Identity,
    NodeId,
    Ready,
    Rejected,
    Replica,
    Upsert,
    decode_message,
    encode_message,
    make_genesis,
)
from controller.store import MemoryStore, Store, open_replica, stored_state_digest

__all__ = ["SimConfig", "Cluster", "SimResult", "SimFailure", "run_seed", "replay_command"]


@dataclass(frozen=True)
class SimConfig:
    """Everything a run depends on; from_seed derives it all from one integer."""

    seed: int
    nodes: int = 4
    writes: int = 60
    chaos_ms: int = 6_000
    quiet_ms_max: int = 30_000
    drop: float = 0.1
    duplicate: float = 0.05
    delay_ms_max: int = 80
    disk_ms_max: int = 5
    partitions: int = 2
    crashes: int = 2
    noise: int = 5  # garbage or tampered messages injected
    skew_ms_max: int = 500
    sync_interval_ms: int = 200
    push_fanout: int = 3
    legacy: int = 0  # nodes running code from before vector deltas (decision 0101)

    @classmethod
    def from_seed(cls, seed: int, **overrides: Any) -> SimConfig:
        rng = random.Random(f"config-{seed}")
        derived = dict(
            nodes=rng.randint(2, 6),
            writes=rng.randint(20, 80),
            drop=rng.choice([0.0, 0.05, 0.2, 0.4]),
            duplicate=rng.choice([0.0, 0.05, 0.2]),
            delay_ms_max=rng.choice([1, 30, 150]),
            partitions=rng.randint(0, 3),
            crashes=rng.randint(0, 3),
            noise=rng.randint(0, 8),
            legacy=rng.choice([0, 0, 1]),  # drawn last: the draws above are unchanged
        )
        derived.update(overrides)
        return cls(seed=seed, **derived)


def replay_command(config: SimConfig) -> str:
    defaults = SimConfig.from_seed(config.seed)
    extra = "".join(
        f" --set {name}={getattr(config, name)}"
        for name in config.__dataclass_fields__
        if getattr(config, name) != getattr(defaults, name)
    )
    return f".venv/bin/python -m controller.sim --seed {config.seed}{extra}"


class SimFailure(AssertionError):
    """A check failed; the message starts with the seed and the replay command."""


@dataclass
class SimResult:
    config: SimConfig
    converged_at_ms: int
    ops: int
    acked: int
    restarts: int
    messages: int
    counters: dict[str, int] = field(default_factory=dict)


TABLE_KEYS = {
    "kv": lambda r: (f"k{r.randint(0, 9)}",),
    "switches": lambda r: (f"d{r.randint(0, 4)}",),
    "flows": lambda r: (f"d{r.randint(0, 2)}", f"f{r.randint(0, 5)}"),
    "hosts": lambda r: (f"00:00:00:00:00:0{r.randint(0, 5)}",),
}


def random_mutation(rng: random.Random) -> Upsert | Delete:
    table = rng.choice(sorted(TABLE_KEYS))
    key = TABLE_KEYS[table](rng)
    if rng.random() < 0.2:
        return Delete(table, key)
    values: dict[str, Any] = {
        "kv": {"value": rng.randbytes(rng.randint(0, 8))},
        "switches": {"name": f"sw{rng.randint(0, 99)}", "connected": rng.random() < 0.5},
        "flows": {"priority": rng.randint(0, 9), "actions": rng.choice(["drop", "out:1", None])},
        "hosts": {"ip": f"10.0.0.{rng.randint(1, 9)}", "vlan": rng.randint(0, 3)},
    }[table]
    subset = dict(rng.sample(sorted(values.items()), rng.randint(1, len(values))))
    return Upsert(table, key, subset)


class Node:
    def __init__(self, identity: Identity, store: Store, skew_ms: int) -> None:
        self.identity = identity
        self.id = identity.node_id
        self.store = store
        self.skew_ms = skew_ms
        self.replica: Replica | None = None
        self.in_flight: Ready | None = None  # taken from the replica, not yet durable
        self.incarnation = 0


class Cluster:
    """N nodes on one event queue. Time is virtual; every choice comes from one seed."""

    def __init__(
        self, config: SimConfig, store_factory: Callable[[str], Store] | None = None
    ) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.time_ms = 0
        self._events: list[tuple[int, int, str, Any]] = []
        self._event_seq = 0
        identities = [Identity.from_seed(self.rng.randbytes(32)) for _ in range(config.nodes)]
        self.genesis = make_genesis(identities[0], "sim", [i.public_key for i in identities], 0)
        factory = store_factory or (lambda name: MemoryStore(name))
        self.nodes: dict[NodeId, Node] = {}
        for ident in identities:
            skew = self.rng.randint(-config.skew_ms_max, config.skew_ms_max)
            self.nodes[ident.node_id] = Node(ident, factory(ident.node_id), skew)
        self.replica_config = Config(
            sync_interval_ms=config.sync_interval_ms, push_fanout=config.push_fanout
        )
        self.groups: list[set[NodeId]] | None = None  # None: no partition
        self.acked: dict[bytes, NodeId] = {}
        self.acked_by_restarted: set[bytes] = set()
        self.restarts = 0
        self.messages = 0
        # Older code neither sends nor takes vector deltas; the others learn that from its
        # hello (here: they are told) and send it whole vectors.
        self.legacy = set(sorted(self.nodes)[: config.legacy])
        for node in self.nodes.values():
            self._start(node)

    # -------------------------------------------------------------- event plumbing
    def _at(self, time_ms: int, kind: str, payload: Any = None) -> None:
        self._event_seq += 1
        heapq.heappush(self._events, (time_ms, self._event_seq, kind, payload))

    def _now(self, node: Node) -> int:
        return self.time_ms + node.skew_ms + 10_000  # keep node clocks positive

    def _start(self, node: Node) -> None:
        node.incarnation += 1
        rng = random.Random(f"{self.config.seed}-{node.id}-{node.incarnation}")
        node.replica = open_replica(
            node.store,
            node.identity,
            rng,
            self.genesis,
            verify="sample",
            config=self.replica_config,
        )
        node.replica.delta_peers = (
            set() if node.id in self.legacy else set(self.nodes) - self.legacy)
        self._pump(node)

    def _crash(self, node: Node) -> None:
        node.replica = None
        node.in_flight = None  # taken but never made durable: lost, as after a power cut

    def _pump(self, node: Node) -> None:
        """Take the next Ready and schedule its fsync (one Ready in flight per node)."""
        r = node.replica
        if r is None or node.in_flight is not None or not r.has_ready():
            return
        node.in_flight = r.ready()
        disk_ms = self.rng.randint(0, self.config.disk_ms_max)
        self._at(self.time_ms + disk_ms, "durable", (node.id, node.incarnation))

    def _durable(self, node: Node) -> None:
        ready, r = node.in_flight, node.replica
        assert ready is not None and r is not None
        node.store.commit(ready)  # 1. durable
        for out in ready.messages:  # 2. then send and ack
            self._send(node.id, out.to, encode_message(out.message))
        for op_id in ready.acked:
            self.acked[op_id] = node.id
        node.in_flight = None
        r.advance(ready)  # 3.
        self._pump(node)

    def _connected(self, a: NodeId, b: NodeId) -> bool:
        if self.groups is None:
            return True
        return any(a in g and b in g for g in self.groups)

    def _send(self, src: NodeId, dst: NodeId, data: bytes) -> None:
        cfg = self.config
        self.messages += 1
        if not self._connected(src, dst) or self.rng.random() < cfg.drop:
            return
        copies = 2 if self.rng.random() < cfg.duplicate else 1
        for _ in range(copies):
            self._at(
                self.time_ms + self.rng.randint(1, cfg.delay_ms_max), "deliver", (src, dst, data)
            )

    def _deliver(self, src: NodeId, dst: NodeId, data: bytes) -> None:
        node = self.nodes[dst]
        if node.replica is None or not self._connected(src, dst):
            return
        try:
            msg = decode_message(data, node.replica.config.message_bytes_max)
        except Rejected as exc:
            node.replica.counters[exc.reason] += 1
            return
        if dst in self.legacy and (msg.vector_hash or msg.resync):
            raise self.fail(f"{src[:8]} sent a vector delta to {dst[:8]}, older code")
        node.replica.receive(msg, self._now(node))
        self._pump(node)

    # -------------------------------------------------------------- scenario
    def _schedule(self) -> None:
        cfg, rng = self.config, self.rng
        for _ in range(cfg.writes):
            self._at(rng.randint(0, cfg.chaos_ms), "write")
        for _ in range(cfg.partitions):
            start = rng.randint(0, cfg.chaos_ms)
            self._at(start, "partition")
            self._at(min(cfg.chaos_ms, start + rng.randint(200, 3_000)), "heal")
        for _ in range(cfg.crashes):
            start = rng.randint(0, cfg.chaos_ms)
            victim = rng.choice(sorted(self.nodes))
            self._at(start, "crash", victim)
            self._at(min(cfg.chaos_ms, start + rng.randint(0, 2_000)), "restart", victim)
        for _ in range(cfg.noise):
            self._at(rng.randint(0, cfg.chaos_ms), "noise")
        for t in range(0, cfg.chaos_ms + cfg.quiet_ms_max, 50):
            self._at(t, "tick")
        self._at(cfg.chaos_ms, "heal")
        for victim in sorted(self.nodes):
            self._at(cfg.chaos_ms, "restart", victim)

    def _handle(self, kind: str, payload: Any) -> None:
        rng = self.rng
        if kind == "tick":
            for node in self.nodes.values():
                if node.replica is not None:
                    node.replica.tick(self._now(node))
                    self._pump(node)
        elif kind == "deliver":
            self._deliver(*payload)
        elif kind == "durable":
            node_id, incarnation = payload
            node = self.nodes[node_id]
            if node.incarnation == incarnation and node.in_flight is not None and node.replica:
                self._durable(node)
        elif kind == "write":
            alive = [n for n in self.nodes.values() if n.replica is not None]
            if alive:
                node = rng.choice(alive)
                muts = [random_mutation(rng) for _ in range(rng.randint(1, 4))]
                assert node.replica is not None
                node.replica.write(muts, self._now(node))
                self._pump(node)
        elif kind == "partition":
            ids = sorted(self.nodes)
            rng.shuffle(ids)
            cuts = sorted(rng.sample(range(1, len(ids)), min(len(ids) - 1, rng.randint(1, 2))))
            bounds = [0, *cuts, len(ids)]
            self.groups = [set(ids[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
        elif kind == "heal":
            self.groups = None
        elif kind == "crash":
            node = self.nodes[payload]
            if node.replica is not None:
                self._crash(node)
        elif kind == "restart":
            node = self.nodes[payload]
            if node.replica is None:
                self.restarts += 1
                self._start(node)
                mine = [i for i, who in self.acked.items() if who == node.id]
                self.acked_by_restarted.update(mine)
        elif kind == "noise":
            self._noise()

    def _noise(self) -> None:
        """A hostile or broken peer: garbage bytes, or a real message with a flipped byte."""
        rng = self.rng
        dst = rng.choice(sorted(self.nodes))
        node = self.nodes[dst]
        if rng.random() < 0.5 or node.replica is None or not node.replica.log():
            data = rng.randbytes(rng.randint(0, 200))
        else:
            from controller.replication import OpBatch

            op = rng.choice(node.replica.log())
            raw = bytearray(op.raw)
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
            src = rng.choice(sorted(self.nodes))
            data = encode_message(OpBatch(self.genesis.cluster_id, src, (bytes(raw),)))
        self._at(self.time_ms + 1, "deliver", (rng.choice(sorted(self.nodes)), dst, data))

    def converged(self) -> bool:
        replicas = [n.replica for n in self.nodes.values()]
        if any(r is None or r.has_ready() for r in replicas):
            return False
        if any(n.in_flight is not None for n in self.nodes.values()):
            return False
        vectors = [r.version_vector() for r in replicas]  # type: ignore[union-attr]
        return all(v == vectors[0] for v in vectors)

    def run(self) -> SimResult:
        self._schedule()
        cfg = self.config
        end_ms = cfg.chaos_ms + cfg.quiet_ms_max
        converged_at = -1
        while self._events:
            time_ms, _, kind, payload = heapq.heappop(self._events)
            if time_ms > end_ms:
                break
            self.time_ms = time_ms
            # Checked before a tick, when nothing is being written: quiet and equal.
            if time_ms > cfg.chaos_ms and kind == "tick" and self.converged():
                converged_at = time_ms
                break
            self._handle(kind, payload)
        self.check(converged_at)
        counters: dict[str, int] = {}
        for node in self.nodes.values():
            assert node.replica is not None
            for k, v in node.replica.counters.items():
                counters[k] = counters.get(k, 0) + v
        first = next(iter(self.nodes.values())).replica
        assert first is not None
        return SimResult(
            cfg,
            converged_at,
            len(first.log()),
            len(self.acked),
            self.restarts,
            self.messages,
            counters,
        )

    # -------------------------------------------------------------- checks
    def fail(self, what: str) -> SimFailure:
        return SimFailure(
            f"seed {self.config.seed}: {what}\n  replay: {replay_command(self.config)}"
        )

    def check(self, converged_at: int) -> None:
        if converged_at < 0:
            vectors = {
                n.id[:8]: n.replica and n.replica.version_vector() for n in self.nodes.values()
            }
            raise self.fail(f"no convergence within {self.config.quiet_ms_max} ms: {vectors}")
        replicas = [n.replica for n in self.nodes.values()]
        assert all(r is not None for r in replicas)
        first = replicas[0]
        assert first is not None
        for node in self.nodes.values():
            r = node.replica
            assert r is not None
            if r.state_digest() != first.state_digest():
                raise self.fail(f"state digests differ at {node.id[:8]}")
            if r.op_digest() != first.op_digest():
                raise self.fail(f"op digests differ at {node.id[:8]}")
            for table in r.schema.names:
                if r.rows(table) != first.rows(table):
                    raise self.fail(f"table {table} differs at {node.id[:8]}")
                if node.store.rows(table) != r.rows(table):
                    raise self.fail(f"stored table {table} differs from memory at {node.id[:8]}")
            if stored_state_digest(node.store) != r.state_digest():
                raise self.fail(f"stored row meta digest differs at {node.id[:8]}")
            logged = {op.id for op in r.log()}
            lost = [i.hex()[:12] for i in self.acked_by_restarted if i not in logged]
            if lost:
                raise self.fail(f"acknowledged writes lost at {node.id[:8]}: {lost}")
            # Every applied op is valid: a full re-verification of the log must pass, and
            # rebuilding from it must give the incremental state's digest.
            try:
                rebuilt = Replica.recover(
                    node.identity,
                    self.genesis,
                    random.Random(0),
                    node.store.load().log,
                    node.store.load().evidence,
                    verify="all",
                    config=self.replica_config,
                )
            except Exception as exc:  # any failure here is a finding
                raise self.fail(f"log of {node.id[:8]} fails verification: {exc}") from None
            if rebuilt.state_digest() != r.state_digest():
                raise self.fail(f"rebuild from log differs from incremental at {node.id[:8]}")
        missing = [i.hex()[:12] for i in self.acked if i not in {op.id for op in first.log()}]
        if missing:
            raise self.fail(f"acknowledged writes missing after convergence: {missing}")


def run_seed(seed: int, **overrides: Any) -> SimResult:
    """Run one seeded simulation; raises SimFailure (with a replay command) on any finding."""
    return Cluster(SimConfig.from_seed(seed, **overrides)).run()
