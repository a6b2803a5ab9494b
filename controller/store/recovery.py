"""Open a replica from a store: verify the log, rebuild state, check the stored tables."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator
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

__all__ = ["open_replica", "stored_state_digest", "persist", "table_mismatches"]

log = logging.getLogger("synod.store")

MISMATCHES_LOGGED = 10  # rows named in the log when the tables disagree (then a count)


def stored_state_digest(store: Store) -> bytes:
    """The ECMH of the row versions the store holds (compare with Replica.state_digest())."""
    acc = Ecmh()
    for table, key, meta in store.row_metas():
        acc.add(point_of(row_version_bytes(table, key, RowState.from_plain(decode(meta)))))
    return acc.value


def _short(key: tuple) -> str:
    text = repr(list(key))
    return text if len(text) <= 120 else text[:100] + f"… ({len(text)} chars)"


def _same(stored: Any, value: Any) -> bool:
    """Does a stored column value equal the log's value, as SQLite gives values back? An
    int in a real column reads as a float, a NaN as NULL (SQLite holds no NaN); otherwise
    the types must match too (1 is not True, 'x' is not b'x')."""
    if isinstance(value, float):
        if math.isnan(value):
            return stored is None or (isinstance(stored, float) and math.isnan(stored))
        return isinstance(stored, int | float) and not isinstance(stored, bool) and \
            stored == value
    return type(stored) is type(value) and stored == value


def table_mismatches(store: Store, replica: Replica) -> Iterator[tuple[str, tuple, str]]:
    """(table, key, what) for each materialised row whose values differ from the rebuilt
    replica's: edited, deleted or inserted behind the node's back. One pass per table."""
    for table in replica.schema.names:
        want = replica.tables.rows[table]
        columns = tuple(c.name for c in replica.schema.table(table).value_columns)
        stored = store.rows(table)
        for key, values in stored.items():
            row = want.get(key)
            if row is None or not row.alive:
                yield table, key, "a row the log does not hold"
                continue
            expected = row.values(columns)
            for name in columns:
                if not _same(values.get(name), expected[name]):
                    yield table, key, f"column {name} differs from the log"
                    break
        for key, row in want.items():
            if row.alive and key not in stored:
                yield table, key, "missing"


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
    StoreError naming the store and the op. If the stored merge metadata's digest differs
    from the rebuilt state, or any materialised row's values differ from the rebuilt rows
    (table_mismatches: a value edited in the file, decision 0060), every row is rewritten
    on the next commit, with a warning naming the rows that differed.
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
    if getattr(replica_cls, "archives", False):
        kwargs.setdefault("archive", store)  # where it keeps settled decisions (0103)
    try:
        replica = replica_cls.recover(
            identity, genesis, rng, stored.log, stored.evidence, verify=verify,
            compaction=stored.compaction, **kwargs
        )
    except LogError as exc:
        raise StoreError(f"{store.name}: log verification failed at {exc}") from None
    metas_differ = stored_state_digest(store) != replica.state_digest()
    wrong = list(itertools.islice(table_mismatches(store, replica), MISMATCHES_LOGGED + 1))
    if metas_differ or wrong:
        for table, key, what in wrong[:MISMATCHES_LOGGED]:
            log.warning("%s: table %s, key %s: %s", store.name, table, _short(key), what)
        log.warning(
            "%s: the stored %s disagree with the log%s: every row is written again from it",
            store.name, "tables" if wrong else "rows' merge metadata (_synod_rows)",
            f" ({MISMATCHES_LOGGED} rows named, more differ)" if len(wrong) > MISMATCHES_LOGGED
            else "",
        )
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
