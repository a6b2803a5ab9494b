"""An idle engine folds the digests' pending work a little per round, so the digests a
heal asks for pay only for what the heal brought (decision 0099); a busy one does not."""

from __future__ import annotations

import asyncio

from controller.node.engine import IDLE_FOLD_POINTS, Engine
from controller.node.metrics import Metrics
from controller.replication import Upsert

from .test_quorum_wait import _engine


def test_idle_rounds_fold_the_pending_digest_work(tmp_path):
    replica, store, _ = _engine(tmp_path)
    rows = 4 * IDLE_FOLD_POINTS

    async def go():
        engine = Engine(replica, store, Metrics(), tick_interval_ms=5)
        engine.start()
        try:
            await engine.write([Upsert("kv", (f"k{i}",), {"value": b"v"}) for i in range(rows)],
                               "local", 5_000)
            pending = replica.fold_digests(0)
            assert pending > IDLE_FOLD_POINTS  # more than one idle round can fold
            for _ in range(400):
                if replica.fold_digests(0) == 0:
                    break
                await asyncio.sleep(0.01)
            assert replica.fold_digests(0) == 0
        finally:
            await engine.stop()

    try:
        asyncio.run(go())
    finally:
        store.close()
