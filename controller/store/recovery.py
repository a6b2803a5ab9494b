"""Open a replica from a store: verify the log, rebuild state, check the stored tables."""

from __future__ import annotations

from typing import Any

from controller.replication import (
    Ecmh,
    Genesis,
    Identity,
    LogError,
    RandomSource,
    Ready,
    Replica,
    RowState,
    Verify,
    decode,
    decode_genesis,
    point_of,
    row_version_bytes,
)
from controller.replication.errors import Rejected

from .port import Store, StoreError

__all__ = ["open_replica", "stored_state_digest", "persist"]


def stored_state_digest(store: Store) -> bytes:
    """The ECMH of the row versions the store holds (compare with Replica.state_digest())."""
    acc = Ecmh()
    for table, key, meta in store.row_metas():
        acc.add(point_of(row_version_bytes(table, key, RowState.from_plain(decode(meta)))))
    return acc.value


def open_replica(
    store: Store,
    identity: Identity,
    rng: RandomSource,
    genesis: Genesis | None = None,
    *,
    verify: Verify = "sample",
    replica_cls: type[Replica] = Replica,
    **kwargs: Any,
) -> Replica:
    """Resume the replica held by store (or start one from genesis on an empty store).

    `replica_cls` lets a caller recover a Replica subclass (e.g. one with its own policy).

    The log is replayed through full validation (signatures per `verify`); a bad log is a
    StoreError naming the store and the op. If the materialised tables' digest differs from
    the rebuilt state, every row is rewritten on the next commit.
    """
    stored = store.load()
    if stored.genesis is None:
        if genesis is None:
            raise StoreError(f"{store.name}: empty store and no genesis given")
        store.init(genesis)
    else:
        try:
            held = decode_genesis(stored.genesis)
        except Rejected as exc:
            raise StoreError(f"{store.name}: stored genesis is invalid: {exc}") from None
        if genesis is not None and genesis.raw != held.raw:
            raise StoreError(f"{store.name}: holds another cluster's genesis")
        genesis = held
    try:
        replica = replica_cls.recover(
            identity, genesis, rng, stored.log, stored.evidence, verify=verify, **kwargs
        )
    except LogError as exc:
        raise StoreError(f"{store.name}: log verification failed at {exc}") from None
    if stored_state_digest(store) != replica.state_digest():
        replica.rematerialise()
        replica.counters["rematerialised"] += 1
    return replica


def persist(store: Store, replica: Replica) -> list[Ready]:
    """Drive the replica's effects to storage only (for tools and tests without a network)."""
    done = []
    while replica.has_ready():
        ready = replica.ready()
        store.commit(ready)
        replica.advance(ready)
        done.append(ready)
    return done
