"""An in-process node (its own thread and event loop) on loopback, for API tests."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from pathlib import Path

import pytest

from controller.node.client import Client
from controller.node.config import parse_config
from controller.node.datadir import init_data_dirs
from controller.node.server import serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class InProcessNode:
    def __init__(self, data: Path, peer_listen: str | None = None, **overrides) -> None:
        self.data = data
        self.api = f"127.0.0.1:{free_port()}"
        self.peer = peer_listen or f"127.0.0.1:{free_port()}"
        api = {"listen": self.api, "insecure_loopback": True, **overrides.pop("api", {})}
        self.cfg = parse_config({"data": str(data), "api": api,
                                 "peer": {"listen": self.peer, **overrides.pop("peer", {})},
                                 "log": {"level": "warning"}, **overrides})
        self.ready = threading.Event()
        self.info: dict = {}
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def go() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def announce(line: str) -> None:
                self.info = json.loads(line)
                self.ready.set()

            await serve(self.cfg, self._stop, announce)

        try:
            asyncio.run(go())
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self.error = exc
            self.ready.set()

    def start(self) -> InProcessNode:
        self._thread.start()
        assert self.ready.wait(20), "node did not start within 20 s"
        if self.error:
            raise self.error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)
        assert not self._thread.is_alive(), "node did not stop within 15 s"

    def client(self, token: str | None = None, **kw) -> Client:
        return Client(self.api, self.admin_token if token is None else token, insecure=True, **kw)

    @property
    def admin_token(self) -> str:
        return (self.data / "admin.token").read_text().strip()


@pytest.fixture
def cluster_dirs(tmp_path):
    """Three initialised data dirs of one new cluster (only the first has an admin token)."""
    dirs = [tmp_path / f"n{i}" for i in range(1, 4)]
    init_data_dirs(dirs, "test")
    return dirs


@pytest.fixture
def solo(tmp_path):
    """A running one-member cluster."""
    d = tmp_path / "solo"
    init_data_dirs([d], "solo")
    node = InProcessNode(d).start()
    yield node
    node.stop()
