"""The engine's quorum-write bookkeeping: writes waiting for a majority are answered as the
peers' vectors show they hold them, lowest seq first, each with its holder count; a write
that times out is answered with QuorumTimeout and leaves nothing behind."""

from __future__ import annotations

import asyncio
import random

import pytest

from controller.node.datadir import DataDir, init_data_dirs
from controller.node.engine import Engine, QuorumTimeout
from controller.node.metrics import Metrics
from controller.replication import InvitePolicy, Replica, Upsert
from controller.store import SqliteStore


def _engine(tmp_path, nodes: int = 3):
    dirs = [tmp_path / f"n{i}" for i in range(nodes)]
    init_data_dirs(dirs, "quorum")
    d = DataDir(dirs[0])
    genesis = d.genesis()
    replica = Replica(d.identity(), genesis, random.Random(1),
                      policy=InvitePolicy.from_genesis(genesis))
    others = [DataDir(x).identity().node_id for x in dirs[1:]]
    return replica, SqliteStore(tmp_path / "n0.db"), others


def _put(n: int):
    return [Upsert("kv", (f"k{n}",), {"value": b"v"})]


def run_engine(replica, store, body, **options) -> None:
    """await body(engine) with an engine started on replica and store; stopped and the store
    closed after, whatever body does."""

    async def go():
        engine = Engine(replica, store, Metrics(), **options)
        engine.start()
        try:
            await body(engine)
        finally:
            await engine.stop()

    try:
        asyncio.run(go())
    finally:
        store.close()


def test_quorum_writes_are_answered_as_peers_come_to_hold_them(tmp_path):
    replica, store, (b, c) = _engine(tmp_path)

    async def body(engine):
        me = engine.node_id
        assert engine.quorum_size == 2
        # One at a time, so that each write is its own op (seq 1, 2, 3).
        tasks = []
        for n in range(3):
            tasks.append(asyncio.create_task(engine.write(_put(n), "quorum", 5_000)))
            for _ in range(200):
                if len(engine._quorum) == n + 1:
                    break
                await asyncio.sleep(0.005)
        seqs = sorted(q.seq for _, _, q in engine._quorum)
        assert len(seqs) == 3 and len(set(seqs)) == 3
        assert not any(t.done() for t in tasks)
        engine.note_vector(b, {me: seqs[0]})  # b holds the first only
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert [t.done() for t in tasks] == [True, False, False]
        assert tasks[0].result().holders == 2
        engine.note_vector(c, {me: seqs[2]})  # c holds all three
        results = await asyncio.gather(*tasks)
        assert [r.ack for r in results] == ["quorum"] * 3
        assert [r.holders for r in results] == [2, 2, 2]  # counted when answered
        assert engine._quorum == []

    run_engine(replica, store, body)


def test_a_quorum_write_that_times_out_leaves_nothing_waiting(tmp_path):
    replica, store, (b, _c) = _engine(tmp_path)

    async def body(engine):
        me = engine.node_id
        for n in range(4):
            with pytest.raises(QuorumTimeout) as e:
                await engine.write(_put(n), "quorum", 50)
            assert e.value.result.holders == 1
        assert engine.metrics.counters["quorum_timeouts"] == 4
        # Timed-out writes are dropped from the waiting heap, not kept until a peer
        # catches up (a peer that never comes back must not grow it).
        assert len(engine._quorum) <= 2
        engine.note_vector(b, {me: 10})
        assert engine._quorum == []
        r = await engine.write(_put(9), "quorum", 5_000)
        assert r.holders == 2

    run_engine(replica, store, body)
