"""Peer links: mutual-TLS gRPC to the other members, one bounded outbound queue per peer,
and the PeerService that receives their messages."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping

import grpc
from synod.v1 import peer_pb2, peer_pb2_grpc

from controller.replication import Genesis, Message, decode_genesis, decode_message, encode_message
from controller.replication.errors import Rejected
from controller.replication.schema import SCHEMA_VERSION

from . import codec, pki, snapshot
from .auth import TokenBucket
from .config import PeerConfig
from .engine import (
    Engine,
    EngineError,
    EngineEvent,
    MemberInvited,
    MembersChanged,
    Outgoing,
    PeerAddress,
)
from .errors import NodeBaseError
from .lineages import LineageError

__all__ = ["PeerLinks", "PeerServicer"]

log = logging.getLogger("synod.peer")


class _Link:
    """One dialled address: discover the node behind it, then deliver its queue in batches."""

    def __init__(self, links: PeerLinks, address: str, node_id: str = "") -> None:
        self.links = links
        self.address = address
        self.node_id = node_id  # known when the link comes from an invitation
        self.up = False
        self.queue: deque[bytes] = deque()
        self.ready = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.streaming = True  # until the peer answers DeliverStream with UNIMPLEMENTED
        self.stream = None  # the DeliverStream call in use, if any
        self.stopping = False  # set by PeerLinks.stop before it cancels the task

    def enqueue(self, data: bytes) -> None:
        cfg = self.links.config
        if len(self.queue) >= cfg.queue_max:
            self.queue.popleft()  # anti-entropy repairs what is dropped; memory stays bounded
            self.links.metrics.inc("peer_dropped|queue_full")
        self.queue.append(data)
        self.ready.set()

    async def run(self) -> None:
        cfg, backoff = self.links.config, 0.05
        # gRPC may swallow a cancellation (a stream call being set up ends "normally" when
        # cancelled), so the loop also checks the flag stop() sets.
        while not self.stopping:
            channel = None
            try:
                channel = await self._connect()
                backoff = 0.05
                await self._pump(channel)
            except _Duplicate as exc:
                log.info("%s; this one stops", exc)
                self.links.links.remove(self)
                return
            except (grpc.RpcError, TimeoutError, ConnectionError, _LinkError) as exc:
                if self.stopping:
                    return
                if self.up:
                    log.warning("peer %s at %s down: %s", self.node_id, self.address, _why(exc))
                self.up = False
                self.links.note_reachable()
                self.links.metrics.inc("peer_errors")
            finally:
                if channel is not None:
                    await channel.close(grace=None)
            self.queue.clear()  # stale while the peer was away; sync catches up
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, cfg.retry_ms_max / 1000)

    def _channel(self, target_name: str) -> grpc.aio.Channel:
        cfg = self.links.config
        options = [
            ("grpc.ssl_target_name_override", target_name),
            ("grpc.max_send_message_length", cfg.message_bytes_max),
            ("grpc.max_receive_message_length", cfg.message_bytes_max),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", cfg.retry_ms_max),
        ]
        return grpc.aio.secure_channel(self.address, self.links.credentials, options=options)

    async def _connect(self) -> grpc.aio.Channel:
        cfg, engine = self.links.config, self.links.engine
        timeout = cfg.connect_timeout_ms / 1000
        if not self.node_id:  # first contact: any cluster node may answer, then pin it
            async with self._channel("node.synod") as probe:
                hello = await peer_pb2_grpc.PeerServiceStub(probe).Hello(
                    _hello_request(engine.node_id), timeout=timeout
                )
            if hello.node_id not in engine.peer_keys() or hello.node_id == engine.node_id:
                raise _LinkError(f"{self.address} is {hello.node_id!r}, not another member")
            self.node_id = hello.node_id
        if self.links.by_node.setdefault(self.node_id, self) is not self:
            raise _Duplicate(f"{self.address}: node {self.node_id} has a link already")
        channel = self._channel(pki.node_dns_name(self.node_id))
        hello = await peer_pb2_grpc.PeerServiceStub(channel).Hello(
            _hello_request(engine.node_id), timeout=timeout
        )
        engine.peer_schema[self.node_id] = hello.schema_version
        engine.note_vector_deltas(self.node_id, hello.vector_deltas)
        if hello.cluster_id == engine.cluster_id:
            engine.note_vector(self.node_id, codec.vector_from_pb(hello.version_vector))
        elif engine.keeper is not None:  # a node of another lineage: relate it (reunion)
            engine.keeper.meet(hello.genesis, self.node_id)
        self.up = True
        self.links.note_reachable()
        self.streaming = True  # a restarted peer may run newer code: try the stream again
        log.info("peer %s at %s up", self.node_id, self.address)
        engine.request_sync(self.node_id)  # catch up at once, not at the next random round
        return channel

    async def _pump(self, channel: grpc.aio.Channel) -> None:
        """Deliver the queue in batches, one batch in flight: over one DeliverStream while
        the peer serves it, else (older code answered UNIMPLEMENTED) a Deliver call each."""
        cfg, engine = self.links.config, self.links.engine
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        timeout = cfg.deliver_timeout_ms / 1000
        stream = self.stream = stub.DeliverStream() if self.streaming else None
        held: dict[str, int] = {}  # the peer's vector, from this stream's answers
        try:
            while not self.stopping:
                if not self.queue:
                    self.ready.clear()
                    await self.ready.wait()
                batch, size = [], 0
                while self.queue and len(batch) < cfg.batch_messages_max:
                    if size + len(self.queue[0]) > cfg.message_bytes_max // 2 and batch:
                        break
                    data = self.queue.popleft()
                    batch.append(data)
                    size += len(data)
                request = peer_pb2.DeliverRequest(messages=batch,
                                                  vector_changes=stream is not None)
                if stream is None:
                    resp = await stub.Deliver(request, timeout=timeout)
                else:
                    try:
                        resp = await _over_stream(stream, request, timeout)
                    except (grpc.aio.AioRpcError, asyncio.InvalidStateError, _LinkError) as exc:
                        # Writing to a call that already ended raises InvalidStateError:
                        # its status says why.
                        code = await stream.code() if stream.done() else None
                        if code != grpc.StatusCode.UNIMPLEMENTED:
                            if isinstance(exc, asyncio.InvalidStateError):
                                raise _LinkError(f"the delivery stream ended: {code}") from None
                            raise
                        log.info("peer %s has no DeliverStream (older code): Deliver calls",
                                 self.node_id)
                        self.streaming, stream = False, None
                        resp = await stub.Deliver(request, timeout=timeout)
                self.links.metrics.inc("sync_bytes_sent", size)
                if resp.vector_changes:  # every answer is applied, whatever its lineage
                    for author, seq in resp.version_vector.items():
                        if seq:
                            held[str(author)] = int(seq)
                        else:
                            held.pop(str(author), None)
                else:
                    held = codec.vector_from_pb(resp.version_vector)
                if resp.cluster_id in (b"", engine.cluster_id):
                    engine.note_vector(self.node_id, dict(held))
        finally:
            self.stream = None
            if stream is not None:
                stream.cancel()


def vector_changes(last: Mapping[str, int], vector: Mapping[str, int]) -> dict[str, int]:
    """The entries of `vector` that differ from `last`, and 0 for an author it lost."""
    changed = {a: s for a, s in vector.items() if last.get(a) != s}
    changed.update((a, 0) for a in last if a not in vector)
    return changed


async def _over_stream(stream, request, timeout: float):
    """One request on a DeliverStream and its answer, within timeout (TimeoutError)."""
    await stream.write(request)
    async with asyncio.timeout(timeout):  # not wait_for: no task, no swallowed cancel
        resp = await stream.read()
    if resp is grpc.aio.EOF:
        raise _LinkError("the peer ended the delivery stream")
    return resp


def _hello_request(node_id: str) -> peer_pb2.HelloRequest:
    return peer_pb2.HelloRequest(node_id=node_id, schema_version=SCHEMA_VERSION,
                                 vector_deltas=True)


class _LinkError(NodeBaseError):
    pass


class _Duplicate(NodeBaseError):
    """Another link already reaches this node (configured and invited addresses)."""


def _why(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError):
        return f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
    return str(exc) or type(exc).__name__


PARKED_MAX = 1_024  # addresses remembered for nodes that are not members yet
KNOWN_CERTS_MAX = 1_024  # peer certificates whose node id is cached
SNAPSHOTS_AT_ONCE = 2  # Snapshot streams served at once (each reads the checkpoint whole)


class PeerLinks:
    """All outbound links; they carry the engine's Outgoing events and dial the members
    its other events name."""

    def __init__(self, engine: Engine, config: PeerConfig, credentials, metrics) -> None:
        self.engine = engine
        self.config = config
        self.credentials = credentials
        self.metrics = metrics
        self.links = [_Link(self, a) for a in config.peers]
        self.by_node: dict[str, _Link] = {}
        self.advertise = config.advertise or config.listen  # our peer address, for others
        self._started = False
        # node id -> address of a node not (yet) a member: dialed once it is one.
        self.parked: dict[str, str] = {}
        engine.subscribe(self._on_event)

    def _on_event(self, event: EngineEvent) -> None:
        match event:
            case Outgoing(peer, message):
                self.send(peer, message)
            case MemberInvited(inv):
                self.add(inv.address, inv.node_id)
            case PeerAddress(node_id, address):
                self.add(address, node_id)
            case MembersChanged():
                self.dial_parked()

    def start(self) -> None:
        self._started = True
        for link in self.links:
            link.task = asyncio.get_running_loop().create_task(link.run(), name=link.address)

    def add(self, address: str, node_id: str = "") -> None:
        """Dial another node (e.g. one just invited) unless a link reaches it already.

        An address recorded for a node id is dialed only while that node is a member (or
        a node of a lineage held here): a record must not make us dial anything else.
        """
        if not address or address == self.advertise or node_id == self.engine.node_id:
            return
        if node_id and node_id not in self.engine.peer_keys():
            if node_id in self.parked or len(self.parked) < PARKED_MAX:
                self.parked[node_id] = address
            return
        if (node_id and node_id in self.by_node) or any(lk.address == address for lk in self.links):
            return
        link = _Link(self, address, node_id)
        self.links.append(link)
        if self._started:
            link.task = asyncio.get_running_loop().create_task(link.run(), name=address)

    def note_reachable(self) -> None:
        """A link came up or went down: the replica pushes to and syncs with the members
        a link reaches (in a star of sites an edge's node reaches only the cloud's)."""
        self.engine.set_reachable(lk.node_id for lk in self.links if lk.up and lk.node_id)

    def dial_parked(self) -> None:
        """Membership changed: dial the parked addresses of nodes that are members now."""
        members = self.engine.peer_keys()
        for node_id in [n for n in self.parked if n in members]:
            self.add(self.parked.pop(node_id), node_id)

    def addresses(self) -> list[str]:
        """Peer addresses of the members, ours first: what a joining node should dial."""
        return [self.advertise, *(lk.address for lk in self.links if lk.address != self.advertise)]

    async def stop(self) -> None:
        links = list(self.links)
        for link in links:
            link.stopping = True
            if link.stream is not None:
                link.stream.cancel()
            if link.task:
                link.task.cancel()
        await asyncio.gather(*(lk.task for lk in links if lk.task), return_exceptions=True)

    def send(self, peer: str, message: Message) -> None:
        link = self.by_node.get(peer)
        if link is None or not link.up:
            self.metrics.inc("peer_dropped|down")
            return
        link.enqueue(encode_message(message))

    async def notify_secession(self, node_id: str, address: str, genesis_raw: bytes) -> None:
        """Tell a seceding voter (at address) to move into the new lineage; raises
        grpc.RpcError when it cannot be reached or refuses (the details say why)."""
        probe = _Link(self, address, node_id)
        async with probe._channel(pki.node_dns_name(node_id)) as channel:
            await peer_pb2_grpc.PeerServiceStub(channel).Secede(
                peer_pb2.SecedeNotice(genesis=genesis_raw), timeout=60
            )

    def known_addresses(self) -> dict[str, str]:
        """node id -> address of every link that found its node."""
        return {lk.node_id: lk.address for lk in self.links if lk.node_id}

    def up(self) -> dict[str, bool]:
        return {lk.node_id: lk.up for lk in self.links if lk.node_id}

    def address_of(self, node_id: str) -> str:
        link = self.by_node.get(node_id)
        return link.address if link else ""


class PeerServicer(peer_pb2_grpc.PeerServiceServicer):
    """Receives other members' messages; the caller is the node its certificate proves."""

    def __init__(self, engine: Engine, config: PeerConfig, metrics) -> None:
        self.engine = engine
        self.config = config
        self.metrics = metrics
        self._known: dict[bytes, str] = {}
        self._inflight: dict[str, int] = {}
        self._buckets: dict[str, TokenBucket] = {}  # per calling node: messages per second
        self._snapshots = 0  # Snapshot streams being served
        # async (genesis, caller): move into a seceded lineage (set by the server)
        self.on_secede: Callable[[Genesis, str], Awaitable[None]] | None = None

    async def _caller(self, context: grpc.aio.ServicerContext) -> str:
        """The calling node, proven by its certificate, and a member now: the certificate
        check is cached, membership is checked on every call, so a node removed by a
        decided membership change is refused from that decision on."""
        pems = context.auth_context().get("x509_pem_cert") or []
        if not pems:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no client certificate")
        pem = pems[0]
        members = self.engine.peer_keys()
        node_id = self._known.get(pem)
        if node_id is None:
            try:
                node_id = pki.check_node_cert(pem, members)
            except pki.CertError as exc:
                self.metrics.inc("peer_refused|certificate")
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
            if len(self._known) >= KNOWN_CERTS_MAX:
                self._known.pop(next(iter(self._known)))
            self._known[pem] = node_id  # type: ignore[assignment]
        if node_id not in members:
            self.metrics.inc("peer_refused|not_member")
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"node {node_id} is not a member (removed by a decided membership change)",
            )
        return node_id  # type: ignore[return-value]

    async def Hello(self, request, context):
        caller = await self._caller(context)
        # The engine's clock (time.monotonic), not the loop's: uvloop's loop.time() is
        # libuv's, cached once per iteration (decision 0104), and silence_ms compares both.
        self.engine.last_seen[caller] = time.monotonic()
        e = self.engine
        e.peer_schema[caller] = request.schema_version
        e.note_vector_deltas(caller, request.vector_deltas)
        out = codec.hello_pb(e.node_id, e.cluster_id, e.version_vector())
        out.genesis = e.genesis.raw
        out.schema_version = SCHEMA_VERSION
        out.vector_deltas = True
        return out

    async def Deliver(self, request, context):
        caller = await self._caller(context)
        vector, rejected = await self._deliver(caller, request, context)
        return self._answer(vector, rejected)

    def _answer(self, vector: Mapping[str, int], rejected: int) -> peer_pb2.DeliverResponse:
        out = codec.deliver_pb(vector, rejected)
        out.cluster_id = self.engine.cluster_id
        return out

    async def DeliverStream(self, request_iterator, context):
        """Deliver, one request after another on a long-lived stream. The stream counts
        against the caller's in-flight bound for its whole life; membership is checked
        again for each request, so a member removed meanwhile is cut off at once."""
        caller = await self._caller(context)
        if self._inflight.get(caller, 0) >= self.config.inflight_max:
            self.metrics.inc("peer_refused|inflight")
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many deliveries in flight")
        self._inflight[caller] = self._inflight.get(caller, 0) + 1
        last: Mapping[str, int] | None = None  # the vector of this stream's last answer
        try:
            async for request in request_iterator:
                if caller not in self.engine.peer_keys():
                    self.metrics.inc("peer_refused|not_member")
                    await context.abort(
                        grpc.StatusCode.PERMISSION_DENIED,
                        f"node {caller} is not a member (removed by a decided membership change)",
                    )
                vector, rejected = await self._deliver(caller, request, context, counted=True)
                if request.vector_changes and last is not None:
                    # The stream is ordered and the caller applies every answer: only
                    # what changed since the last one goes (an author gone as 0).
                    out = self._answer(vector_changes(last, vector), rejected)
                    out.vector_changes = True
                else:
                    out = self._answer(vector, rejected)
                last = vector
                yield out
        finally:
            self._inflight[caller] -= 1

    async def _deliver(self, caller: str, request, context,
                       counted: bool = False) -> tuple[Mapping[str, int], int]:
        """One delivery from caller: rate-limited, decoded, applied and durable here; this
        node's vector then and the messages rejected. counted: the call already holds an
        in-flight slot (a stream), so the bound is not applied twice."""
        if not counted and self._inflight.get(caller, 0) >= self.config.inflight_max:
            self.metrics.inc("peer_refused|inflight")
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many deliveries in flight")
        bucket = self._buckets.get(caller)
        if bucket is None:
            cfg = self.config
            loop = asyncio.get_running_loop()
            bucket = self._buckets[caller] = TokenBucket(cfg.rate_per_s, cfg.burst, loop.time)
        if not bucket.take(max(1, len(request.messages))):
            self.metrics.inc("peer_refused|rate")
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"peer rate limit: {self.config.rate_per_s:g} messages/s per peer",
            )
        messages, rejected = [], 0
        for data in request.messages:
            self.metrics.inc("sync_bytes_received", len(data))
            try:
                msg = decode_message(data, self.config.message_bytes_max)
            except Rejected as exc:
                self.metrics.inc(f"peer_rejected|{exc.reason.value}")
                rejected += 1
                continue
            except Exception:  # noqa: BLE001 - garbage from a peer is counted, never fatal
                self.metrics.inc("peer_rejected|malformed")
                rejected += 1
                continue
            if msg.sender != caller:
                self.metrics.inc("peer_rejected|wrong_sender")
                rejected += 1
                continue
            messages.append(msg)
        if not counted:
            self._inflight[caller] = self._inflight.get(caller, 0) + 1
        try:
            vector = await self.engine.deliver(caller, messages)
        except EngineError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        finally:
            if not counted:
                self._inflight[caller] -= 1
        return vector, rejected

    async def Snapshot(self, request, context):
        """The checkpoint this node's store was compacted to, for a caller lacking pruned
        ops (see controller/node/snapshot.py); an empty stream when it lacks none."""
        await self._caller(context)
        if self._snapshots >= SNAPSHOTS_AT_ONCE:
            self.metrics.inc("peer_refused|inflight")
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "snapshots in flight")
        self._snapshots += 1
        try:
            vector = codec.vector_from_pb(request.version_vector)
            # The rows are read only for a caller that lacks pruned ops (the record says).
            got = await asyncio.to_thread(snapshot.read_compaction, self.engine.store.name,
                                          vector)
            if got is None:
                return
            record, rows = got
            self.metrics.inc("snapshots_served")
            size = min(snapshot.CHUNK_BYTES, self.config.message_bytes_max // 2)
            for chunk in snapshot.chunks(record, rows, size):
                yield chunk
        finally:
            self._snapshots -= 1

    async def Secede(self, request, context):
        """Another voter founded a lineage with us among its voters: check it, move in."""
        caller = await self._caller(context)
        if self.on_secede is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "secession is off on this node")
        try:
            new = decode_genesis(request.genesis)
        except Rejected as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"genesis: {exc}")
        try:
            await self.on_secede(new, caller)
        except LineageError as exc:
            self.metrics.inc("secessions_refused")
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return peer_pb2.SecedeAck(cluster_id=self.engine.cluster_id)
