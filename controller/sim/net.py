"""The seeded network, durability and crash model the agreement simulators share."""

from __future__ import annotations

import heapq
import random
from typing import Any, Generic, Protocol, TypeVar

from controller.agreement import Agreement, AgreementReplica, Watch
from controller.replication import (
    Identity,
    NodeId,
    Op,
    OpId,
    Ready,
    Rejected,
    decode_message,
    encode_message,
)
from controller.store import MemoryStore

__all__ = ["NetConfig", "SimNet", "SimNode"]


class NetConfig(Protocol):
    """What the network's draws depend on (a simulator's config has more)."""

    @property
    def seed(self) -> int: ...

    @property
    def drop(self) -> float: ...

    @property
    def duplicate(self) -> float: ...

    @property
    def delay_ms_max(self) -> int: ...


C = TypeVar("C", bound=NetConfig)


class SimNode:
    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.id = identity.node_id
        self.store = MemoryStore(identity.node_id)
        self.replica: AgreementReplica | None = None
        self.agreement: Agreement | None = None
        self.watch: Watch | None = None
        self.in_flight: Ready | None = None
        self.incarnation = 0
        # Every op this node ever made durable: the checkers' copy of its whole log (the
        # store keeps only the tail once it compacts).
        self.archive: dict[OpId, Op] = {}


class SimNet(Generic[C]):
    """Nodes on one event queue in virtual time; every choice comes from the seed.

    A message is dropped, duplicated and delayed by the seed's draws, and reaches a node of
    the cluster it was sent in (`_accepts`); a node's Ready becomes durable 0-3 ms after it
    was taken, and a crash before that loses it, as a power cut would. A subclass brings
    nodes up (`_start`), reads what their watches tell (`_learn`) and words its failures.
    """

    def __init__(self, config: C) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.time_ms = 0
        self._events: list[tuple[int, int, str, Any]] = []
        self._seq = 0
        self.nodes: dict[NodeId, SimNode] = {}
        self.groups: list[set[NodeId]] | None = None
        self.isolated: NodeId | None = None
        self.messages = 0

    def at(self, time_ms: int, kind: str, payload: Any = None) -> None:
        """Schedule an event; events at one time run in the order they were scheduled."""
        self._seq += 1
        heapq.heappush(self._events, (time_ms, self._seq, kind, payload))

    def now(self) -> int:
        return self.time_ms + 10_000

    def _learn(self, node: SimNode) -> None:
        raise NotImplementedError

    def _tag(self, src: NodeId) -> bytes:
        """The cluster a message from src is sent in (one cluster: no tag)."""
        return b""

    def _accepts(self, dst: NodeId, tag: bytes) -> bool:
        return True

    def crash(self, node: SimNode) -> None:
        node.replica = node.agreement = node.watch = None
        node.in_flight = None  # taken, never durable: lost as after a power cut

    def step(self, node: SimNode) -> None:
        assert node.agreement is not None
        node.agreement.step(self.now())
        self._learn(node)
        self.pump(node)

    def pump(self, node: SimNode) -> None:
        """Take the node's next Ready; it becomes durable after a short random delay."""
        r = node.replica
        if r is None or node.in_flight is not None or not r.has_ready():
            return
        node.in_flight = r.ready()
        self.at(self.time_ms + self.rng.randint(0, 3), "durable", (node.id, node.incarnation))

    def durable(self, node: SimNode) -> None:
        """Commit the Ready in flight, send its messages, then advance and release."""
        ready, r = node.in_flight, node.replica
        assert ready is not None and r is not None
        node.store.commit(ready)
        node.archive.update((op.id, op) for op in ready.ops)
        for out in ready.messages:
            self.send(node.id, out.to, encode_message(out.message))
        node.in_flight = None
        r.advance(ready)
        if node.agreement is not None:
            node.agreement.release()  # decisions that waited for our votes to be durable
        self.pump(node)

    def connected(self, a: NodeId, b: NodeId) -> bool:
        if self.isolated in (a, b) and a != b:
            return False
        return self.groups is None or any(a in g and b in g for g in self.groups)

    def send(self, src: NodeId, dst: NodeId, data: bytes, tag: bytes | None = None) -> None:
        """Count, then drop or deliver once or twice, each copy after its own delay."""
        cfg = self.config
        self.messages += 1
        if not self.connected(src, dst) or self.rng.random() < cfg.drop:
            return
        tag = self._tag(src) if tag is None else tag
        for _ in range(2 if self.rng.random() < cfg.duplicate else 1):
            delay = self.rng.randint(1, cfg.delay_ms_max)
            self.at(self.time_ms + delay, "deliver", (src, dst, data, tag))

    def deliver(self, src: NodeId, dst: NodeId, data: bytes, tag: bytes) -> None:
        node = self.nodes[dst]
        if node.replica is None or not self.connected(src, dst) or not self._accepts(dst, tag):
            return
        try:
            msg = decode_message(data, node.replica.config.message_bytes_max)
        except Rejected as exc:
            node.replica.counters[exc.reason] += 1
            return
        node.replica.receive(msg, self.now())
        self.step(node)

    def handle_common(self, kind: str, payload: Any) -> bool:
        """The events every simulator schedules the same way: a delivery, a Ready made
        durable, a node isolated and back, a crash. False: not one of them."""
        if kind == "deliver":
            self.deliver(*payload)
        elif kind == "durable":
            self.handle_durable(payload)
        elif kind == "isolate":
            self.isolated = payload
        elif kind == "rejoin":
            self.isolated = None
        elif kind == "crash":
            node = self.nodes[payload]
            if node.replica is not None:
                self.crash(node)
        else:
            return False
        return True

    def handle_durable(self, payload: tuple[NodeId, int]) -> None:
        """A 'durable' event: only for the incarnation that took the Ready."""
        node = self.nodes[payload[0]]
        if node.incarnation == payload[1] and node.in_flight is not None and node.replica:
            self.durable(node)
