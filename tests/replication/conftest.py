"""Fixtures for the replication tests: deterministic identities, genesis, replicas."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from controller.replication import (
    Genesis,
    Identity,
    Replica,
    decode_message,
    encode_message,
    make_genesis,
)


class Net:
    """A few replicas and a perfect network, pumped by hand."""

    def __init__(self, n: int, seed: int = 1, **kwargs: object) -> None:
        self.identities = [Identity.from_seed(bytes([i + 1]) * 32) for i in range(n)]
        self.genesis: Genesis = make_genesis(
            self.identities[0], "test", [i.public_key for i in self.identities], 0
        )
        self.replicas = [
            Replica(i, self.genesis, random.Random(seed + k), **kwargs)  # type: ignore[arg-type]
            for k, i in enumerate(self.identities)
        ]
        self.by_id = {r.node_id: r for r in self.replicas}
        self.now_ms = 1_000_000
        self.delivered = 0
        self.stores: dict[str, object] = {}  # node id -> Store: pump commits Readies there

    def pump(self, rounds: int = 200, tick: bool = True) -> None:
        """Deliver every message until quiet; tick each replica every round."""
        for _ in range(rounds):
            self.now_ms += 50
            busy = False
            for r in self.replicas:
                if tick:
                    r.tick(self.now_ms)
                while r.has_ready():
                    rd = r.ready()
                    store = self.stores.get(r.node_id)
                    if store is not None:
                        store.commit(rd)  # type: ignore[attr-defined]
                    r.advance(rd)
                    for out in rd.messages:
                        busy = True
                        self.delivered += 1
                        msg = decode_message(encode_message(out.message), 1 << 24)
                        self.by_id[out.to].receive(msg, self.now_ms)
            if not busy and not tick:
                return

    def converged(self) -> bool:
        first = self.replicas[0]
        return all(
            r.version_vector() == first.version_vector()
            and r.state_digest() == first.state_digest()
            for r in self.replicas
        )


@pytest.fixture
def net() -> Callable[..., Net]:
    return Net
