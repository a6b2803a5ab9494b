"""The web view's server: static page, snapshot and server-sent events, on the node's loop.

One asyncio server beside the gRPC API (decision 0090). Data requests carry the viewer
token as `Authorization: Bearer` and are checked by the API's own authenticator (with its
failed-login bans); TLS with the node's API certificate unless the API runs plaintext on
loopback. Live updates come from one hub per server: an engine watcher (row changes) and
a periodic look at reachability and digests wake it, it builds one snapshot and offers it
to every open stream; a stream that has not taken the previous one has it replaced
(drop and resync: a page always gets the newest whole state, never a backlog).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from controller.node.auth import Denied
from controller.node.config import WebConfig
from controller.node.engine import Watcher
from controller.node.loglimit import RateLimitedLog
from controller.node.tokens import Role

from .gather import snapshot
from .http import (
    HEAD_LINE_BYTES_MAX,
    HEADERS_MAX,
    HttpError,
    Request,
    StaticFile,
    parse_head,
    response_head,
    static_files,
)
from .model import LinkMemory

__all__ = ["WATCHED_TABLES", "WebServer", "tls_context"]

log = logging.getLogger("synod.web")

WATCHED_TABLES = frozenset({"switches", "links", "hosts", "services", "placements", "flows",
                            "conflicts"})
HEAD_TIMEOUT_S = 10.0  # accept to the end of the request head
WRITE_TIMEOUT_S = 5.0  # a stream whose client takes no data for this long is closed
KEEPALIVE_S = 15.0  # a comment line on an idle stream (proxies and dead clients)
WATCH_QUEUE_MAX = 4_096  # row changes buffered for the hub; beyond, it is cut and resyncs
_STATUS_FOR = {"unauthenticated": 401, "permission_denied": 403, "resource_exhausted": 429}


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """Server TLS with the node's API certificate (the one `synod` clients already trust)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


class _Stream:
    """One open event stream: the newest update not yet sent (at most one)."""

    def __init__(self, header: str | None) -> None:
        self.header = header
        self.pending: asyncio.Queue[bytes] = asyncio.Queue(1)
        self.replaced = 0

    def offer(self, data: bytes) -> None:
        if self.pending.full():
            self.pending.get_nowait()  # never sent: the newer whole state replaces it
            self.replaced += 1
        self.pending.put_nowait(data)


class WebServer:
    """Serve the read-only view of the node behind `api` (controller.node.api.Api, whose
    engine and links follow the node through a secession)."""

    def __init__(self, config: WebConfig, api: Any, *, site: str = "",
                 tls: ssl.SSLContext | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config, self.api, self.site, self.tls, self.clock = config, api, site, tls, clock
        self.files: dict[str, StaticFile] = static_files()
        self.memory = LinkMemory()
        self.streams: set[_Stream] = set()
        self.connections = 0
        self.sources: dict[str, int] = {}  # client address -> its open connections
        self.errors = RateLimitedLog(log, "web view", 5, 60.0)
        self.counters = {"requests": 0, "refused": 0, "denied": 0, "updates": 0,
                         "streams_refused": 0}
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._hub: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._latest: bytes = b""

    # ------------------------------------------------------------------ lifecycle
    async def start(self, listen: str) -> int:
        """Listen on HOST:PORT (port 0: any free one); returns the port."""
        host, _, port = listen.rpartition(":")
        self._server = await asyncio.start_server(self._handle, host, int(port),
                                                  limit=HEAD_LINE_BYTES_MAX, ssl=self.tls)
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._hub is not None:
            self._hub.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._hub
        for w in list(self._writers):
            w.close()
        if self._server is not None:
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    @property
    def url_scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    # ------------------------------------------------------------------ the view's state
    def build(self) -> bytes:
        """The current snapshot as JSON bytes."""
        view = snapshot(self.api.engine, self.api.links, self.memory, site=self.site)
        view["node"]["web"] = {"clients": len(self.streams),
                               "clients_max": self.config.clients_max}
        return json.dumps(view, separators=(",", ":")).encode()

    async def _run_hub(self) -> None:
        """While any stream is open: wake on row changes (an engine watcher) or every
        refresh interval, fold changes for update_interval, build once, offer to all."""
        watcher: Watcher | None = None
        engine = None
        update_s = self.config.update_interval_ms / 1000
        refresh_s = self.config.refresh_interval_ms / 1000
        try:
            while self.streams:
                if engine is not self.api.engine or watcher is None or watcher.overflowed:
                    if watcher is not None and engine is not None:
                        engine.watchers.discard(watcher)
                    engine = self.api.engine
                    watcher = Watcher(lambda r: r.table in WATCHED_TABLES,
                                      asyncio.Queue(WATCH_QUEUE_MAX))
                    engine.watchers.add(watcher)
                try:
                    await asyncio.wait_for(watcher.queue.get(), refresh_s)
                    await asyncio.sleep(update_s)  # changes in this window go out as one
                except TimeoutError:
                    pass  # the periodic look: reachability and vectors change without rows
                while not watcher.queue.empty():
                    watcher.queue.get_nowait()
                try:
                    data = self.build()
                except Exception as exc:  # a bug in the view must not take the node down
                    self.errors.log(logging.ERROR, "web: building the view failed: %r", exc)
                    continue
                if data != self._latest:
                    self._latest = data
                    self.counters["updates"] += 1
                    for stream in list(self.streams):
                        stream.offer(data)
        finally:
            if watcher is not None and engine is not None:
                engine.watchers.discard(watcher)
            self._hub = None

    # ------------------------------------------------------------------ HTTP
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        source = self._peer_ip(writer)
        self.connections += 1
        self.sources[source] = self.sources.get(source, 0) + 1
        self._writers.add(writer)
        try:
            if self.connections > self.config.connections_max:
                self.counters["refused"] += 1
                await self._send(writer, 503, b"too many connections\n", "text/plain",
                                 extra=(("Retry-After", "5"),))
                return
            if self.sources[source] > self.config.connections_per_source_max:
                self.counters["refused"] += 1
                await self._send(writer, 503, b"too many connections from this address "
                                 b"(web.connections_per_source_max)\n", "text/plain",
                                 extra=(("Retry-After", "5"),))
                return
            try:
                request = await asyncio.wait_for(self._read_head(reader), HEAD_TIMEOUT_S)
            except HttpError as exc:
                self.counters["refused"] += 1
                extra = (("Allow", "GET, HEAD"),) if exc.status == 405 else ()
                await self._send(writer, exc.status, f"{exc}\n".encode(), "text/plain",
                                 extra=extra)
                return
            except TimeoutError:
                await self._send(writer, 408, b"request head not received in time\n",
                                 "text/plain")
                return
            self.counters["requests"] += 1
            await self._route(request, reader, writer)
        except (ConnectionError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            self.connections -= 1
            self.sources[source] -= 1
            if not self.sources[source]:
                del self.sources[source]
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _read_head(self, reader: asyncio.StreamReader) -> Request:
        lines: list[bytes] = []
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError:
                raise HttpError(431, f"a head line over {HEAD_LINE_BYTES_MAX} bytes") from None
            except asyncio.IncompleteReadError:
                raise ConnectionResetError from None
            line = line.rstrip(b"\r\n")
            if not line:
                return parse_head(lines)
            lines.append(line)
            if len(lines) > HEADERS_MAX + 1:
                raise HttpError(431, f"more than {HEADERS_MAX} header lines")

    async def _send(self, writer: asyncio.StreamWriter, status: int, body: bytes,
                    content_type: str, cache: str = "no-store", head_only: bool = False,
                    extra: tuple[tuple[str, str], ...] = ()) -> None:
        if content_type == "text/plain":
            content_type = "text/plain; charset=utf-8"
        writer.write(response_head(status, content_type, len(body), cache, extra))
        if not head_only:
            writer.write(body)
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)

    def _peer_ip(self, writer: asyncio.StreamWriter) -> str:
        peer = writer.get_extra_info("peername")
        return str(peer[0]) if peer else ""

    def _check(self, request: Request, writer: asyncio.StreamWriter) -> tuple[int, str]:
        """(0, token id) for a valid viewer token, else (status, reason). Failed logins
        count against the address as the API's do (and share its bans)."""
        api, source = self.api, self._peer_ip(writer)
        guard = api.guard
        if guard is not None and guard.bans and not guard.admits(source):
            return 429, "too many failed logins from this address: banned for a while"
        header = request.authorization
        try:
            record = api.auth.authenticate(header, Role.VIEWER)
            api.auth.admit(record.id)
            api.auth.release(record.id)
        except Denied as exc:
            if guard is not None and exc.code == "unauthenticated":
                guard.failed_login(source, header, str(exc), f"web {request.path[:60]}")
            return _STATUS_FOR[exc.code], str(exc)
        return 0, record.id

    async def _route(self, request: Request, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        head_only = request.method == "HEAD"
        static = self.files.get(request.path)
        if static is not None:
            await self._send(writer, 200, static.body, static.content_type, static.cache,
                             head_only)
            return
        if request.path not in ("/api/snapshot", "/api/events"):
            await self._send(writer, 404, b"not found\n", "text/plain", head_only=head_only)
            return
        status, reason = self._check(request, writer)
        if status:
            self.counters["denied"] += 1
            await self._send(writer, status, f"{reason}\n".encode()[:400], "text/plain",
                             head_only=head_only,
                             extra=(("WWW-Authenticate", 'Bearer realm="synod"'),)
                             if status == 401 else ())
            return
        if request.path == "/api/snapshot":
            body = self.build()
            await self._send(writer, 200, body, "application/json", head_only=head_only)
            return
        if head_only:
            await self._send(writer, 200, b"", "text/event-stream", head_only=True)
            return
        await self._events(request, reader, writer)

    async def _events(self, request: Request, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        if len(self.streams) >= self.config.clients_max:
            self.counters["streams_refused"] += 1
            await self._send(writer, 503, f"at most {self.config.clients_max} live pages at "
                             "once (web.clients_max)\n".encode(), "text/plain",
                             extra=(("Retry-After", "5"),))
            return
        stream = _Stream(request.authorization)
        self.streams.add(stream)
        # The client sends nothing more: end of input means it went away, and its place
        # is freed at once rather than at the next write.
        gone = asyncio.ensure_future(reader.read(1))
        try:
            writer.write(response_head(200, "text/event-stream; charset=utf-8", None,
                                       "no-store", (("X-Accel-Buffering", "no"),)))
            stream.offer(self.build())  # the whole state first; updates follow
            if self._hub is None:
                self._hub = asyncio.ensure_future(self._run_hub())
            while True:
                take = asyncio.ensure_future(stream.pending.get())
                await asyncio.wait({take, gone}, timeout=KEEPALIVE_S,
                                   return_when=asyncio.FIRST_COMPLETED)
                if gone.done():
                    take.cancel()
                    return
                if not take.done():
                    take.cancel()
                    writer.write(b": keep-alive\n\n")
                    await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
                    continue
                data = take.result()
                try:  # a token revoked or expired while the page is open ends the stream
                    self.api.auth.authenticate(stream.header, Role.VIEWER)
                except Denied as exc:
                    writer.write(b"event: denied\ndata: " + json.dumps(str(exc)).encode()
                                 + b"\n\n")
                    await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
                    return
                writer.write(b"event: snapshot\ndata: " + data + b"\n\n")
                await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
        finally:
            gone.cancel()
            self.streams.discard(stream)
