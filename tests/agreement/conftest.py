"""Fixtures for the agreement tests: a few voting nodes on a hand-pumped perfect network."""

from __future__ import annotations

import random
from typing import Any

import pytest

from controller.agreement import Agreement, AgreementConfig, AgreementReplica
from controller.replication import DEFAULT_SCHEMA, Config, Genesis, Identity, Schema, make_genesis
from controller.store import MemoryStore, SqliteStore


class Node:
    def __init__(self, net: Net, identity: Identity) -> None:
        self.net = net
        self.identity = identity
        self.id = identity.node_id
        self.store = net.make_store(self.id)
        self.up = True
        self.start()

    def start(self) -> None:
        self.store.init(self.net.genesis)
        stored = self.store.load()
        rng = random.Random(f"{self.id}-{len(stored.log)}")
        self.replica = AgreementReplica.recover(
            self.identity,
            self.net.genesis,
            rng,
            stored.log,
            stored.evidence,
            compaction=stored.compaction,
            archive=self.store,
            config=self.net.replica_config,
            peers=[i.node_id for i in self.net.identities],
            schema=self.net.schema,
        )
        self.agreement = Agreement(self.replica, rng, self.net.agreement_config)
        self.up = True


class Net:
    """Nodes and a perfect network: one round delivers every message sent in the last one."""

    def __init__(
        self,
        n: int,
        spares: int = 0,
        access: Any = None,
        *,
        identities: list[Identity] | None = None,
        genesis: Genesis | None = None,
        schema: Schema = DEFAULT_SCHEMA,
        store_dir: Any = None,
        **config: Any,
    ) -> None:
        self.identities = identities or [
            Identity.from_seed(bytes([i + 1]) * 32) for i in range(n + spares)
        ]
        founders = self.identities[:n]
        if access is None:
            access = {"roles": {i.node_id: "admin" for i in founders}}
        self.genesis = genesis or make_genesis(
            founders[0], "test", [i.public_key for i in founders], 0, {"access": access}
        )
        self.schema = schema
        self.store_dir = store_dir  # SQLite files there; MemoryStores when None
        self.groups: list[set[str]] | None = None
        self.replica_config = Config(push_fanout=n + spares, sync_interval_ms=100)
        self.agreement_config = AgreementConfig(**config)
        self.nodes = [Node(self, i) for i in self.identities]
        self.now_ms = 1_000_000
        self.cut: set[str] = set()  # nodes cut off from everyone
        self.in_flight: list[tuple[str, str, Any]] = []
        self.rounds = 0
        self.sent = 0

    def make_store(self, node_id: str) -> Any:
        if self.store_dir is None:
            return MemoryStore(node_id, self.schema)
        return SqliteStore(self.store_dir / f"{node_id[:8]}.db", self.schema)

    def __getitem__(self, i: int) -> Node:
        return self.nodes[i]

    def _flush(self) -> None:
        for node in self.nodes:
            if not node.up:
                continue
            node.agreement.step(self.now_ms)
            while node.replica.has_ready():
                ready = node.replica.ready()
                node.store.commit(ready)
                for out in ready.messages:
                    self.sent += 1
                    self.in_flight.append((node.id, out.to, out.message))
                node.replica.advance(ready)
            node.agreement.release()

    def round(self, tick: bool = True) -> None:
        """One message delay: deliver what is in flight, then tick and step every node."""
        self.rounds += 1
        self.now_ms += 10
        batch, self.in_flight = self.in_flight, []
        by_id = {n.id: n for n in self.nodes}
        for src, dst, msg in batch:
            node = by_id.get(dst)
            if node is None or not node.up or src in self.cut or dst in self.cut:
                continue
            if self.groups and not any(src in g and dst in g for g in self.groups):
                continue
            node.replica.receive(msg, self.now_ms)
            node.agreement.step(self.now_ms)
        if tick:
            for node in self.nodes:
                if node.up:
                    node.replica.tick(self.now_ms)
        self._flush()

    def run(self, rounds: int = 50, until: Any = None) -> int:
        """Run rounds until until() is true (returns the rounds it took) or the bound."""
        self._flush()
        for i in range(rounds):
            if until is not None and until():
                return i
            self.round()
        if until is not None and not until():
            raise AssertionError(f"not reached in {rounds} rounds")
        return rounds

    def crash(self, i: int) -> None:
        self.nodes[i].up = False
        self.nodes[i].replica = None  # type: ignore[assignment]

    def restart(self, i: int) -> None:
        self.nodes[i].start()


@pytest.fixture
def net3() -> Net:
    return Net(3)
