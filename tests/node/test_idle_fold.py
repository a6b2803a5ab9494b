"""An idle engine folds the digests' pending work a little per round, so the digests a
heal asks for pay only for what the heal brought (decision 0099); a busy one does not."""

from __future__ import annotations

import asyncio

from controller.node.engine import IDLE_FOLD_POINTS
from controller.replication import Upsert

from .test_quorum_wait import _engine, run_engine


def test_idle_rounds_fold_the_pending_digest_work(tmp_path):
    replica, store, _ = _engine(tmp_path)
    rows = 4 * IDLE_FOLD_POINTS

    async def body(engine):
        await engine.write([Upsert("kv", (f"k{i}",), {"value": b"v"}) for i in range(rows)],
                           "local", 5_000)
        assert replica.fold_digests(0) > IDLE_FOLD_POINTS  # more than one round's worth
        for _ in range(400):
            if replica.fold_digests(0) == 0:
                break
            await asyncio.sleep(0.01)
        assert replica.fold_digests(0) == 0

    run_engine(replica, store, body, tick_interval_ms=5)
