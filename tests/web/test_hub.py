"""The web server's hub and streams (controller/web/server.py) on an engine-shaped stand-in:
bounded per stream (the newest whole state replaces an unsent one), a cut watcher is
replaced and the view rebuilt (resync), a new engine (secession) is followed."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from controller.node.config import WebConfig
from controller.replication import RowUpdate
from controller.web import server as web_server
from controller.web.server import WebServer, _Stream


@dataclass
class _Engine:
    watchers: set = field(default_factory=set)


@dataclass
class _Api:
    engine: _Engine
    links: object = None
    auth: object = None
    guard: object = None


def test_a_stream_holds_one_update_the_newest():
    async def go():
        s = _Stream("Bearer x")
        for n in range(5):
            s.offer(b"%d" % n)
        assert (s.pending.qsize(), s.replaced, await s.pending.get()) == (1, 4, b"4")

    asyncio.run(go())


def test_hub_follows_changes_resyncs_after_a_cut_and_follows_a_new_engine(monkeypatch):
    builds = []

    def snapshot(engine, links, memory, site=""):
        builds.append(engine)
        return {"node": {}, "n": len(builds)}

    monkeypatch.setattr(web_server, "snapshot", snapshot)

    async def go():
        api = _Api(_Engine())
        web = WebServer(WebConfig(update_interval_ms=1, refresh_interval_ms=60_000), api)
        stream = _Stream(None)
        web.streams.add(stream)
        hub = asyncio.ensure_future(web._run_hub())
        await asyncio.sleep(0.05)
        (watcher,) = api.engine.watchers
        assert watcher.accepts(RowUpdate("switches", ("1",), {}, b""))
        assert not watcher.accepts(RowUpdate("kv", ("k",), {}, b""))

        watcher.queue.put_nowait(RowUpdate("switches", ("1",), {}, b""))  # a change: one build
        update = json.loads(await asyncio.wait_for(stream.pending.get(), 2))
        assert update["n"] == len(builds) == 1

        watcher.overflowed = True  # the engine cut it (fell behind): a new one, rebuilt
        watcher.queue.put_nowait(None)
        await asyncio.wait_for(stream.pending.get(), 2)
        (again,) = api.engine.watchers
        assert again is not watcher and not again.overflowed

        old, api.engine = api.engine, _Engine()  # a secession swapped the engine
        again.queue.put_nowait(RowUpdate("links", ("1", 1, "2", 2), {}, b""))
        await asyncio.wait_for(stream.pending.get(), 2)
        assert old.watchers == set() and len(api.engine.watchers) == 1
        assert builds[-1] is api.engine

        web.streams.clear()  # the last page closed: the hub ends and unregisters
        api.engine.watchers.copy().pop().queue.put_nowait(RowUpdate("hosts", ("m",), {}, b""))
        await asyncio.wait_for(hub, 2)
        assert api.engine.watchers == set() and web._hub is None

    asyncio.run(go())
