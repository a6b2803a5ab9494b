"""`synod node run`: open the store, start the engine, peer links and the gRPC servers."""

from __future__ import annotations

import asyncio
import dataclasses
import faulthandler
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from synod.v1 import peer_pb2, peer_pb2_grpc

from controller.agreement import Agreement, AgreementConfig, Refused, coordinator, lineage_of
from controller.agreement.coordinator import fork_copy_due
from controller.agreement.report import fork_copy_writes
from controller.replication import Config as ReplicationCoreConfig
from controller.replication import InvitePolicy, Upsert
from controller.replication.reserved import INTERNAL, peer_of_key
from controller.store import SqliteStore, StoreError, open_replica, persist
from controller.store.sqlite import holds_nothing

from . import snapshot
from .api import Api, servicers
from .config import NodeConfig
from .datadir import DataDir, DataDirError
from .engine import BelowCheckpoint, Engine
from .errors import NodeBaseError
from .grpclog import relay_grpc_log
from .grpcmetrics import CallMetrics
from .guard import Guard, Limits, fit_fd_limit
from .join import JoinError, read_bundle
from .lineages import (
    NODE_SCHEMA,
    Keeper,
    LineageError,
    begin_move,
    check_notice,
    finish_move,
    held_lineages,
    lineage_dir,
)
from .memory import Trimmer, not_handed_back
from .metrics import Metrics, serve_metrics
from .peers import PeerLinks, PeerServicer
from .slots import open_node_replica

__all__ = ["NodeError", "run_node", "serve"]

log = logging.getLogger("synod.node")


class NodeError(NodeBaseError):
    """The node cannot start; the message names the file, address or setting."""


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def _setup_logging(cfg: NodeConfig, stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    if cfg.log.format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("synod")
    root.handlers[:] = [handler]
    root.setLevel(cfg.log.level.upper())
    root.propagate = False


@dataclass
class _Core:
    """Everything that belongs to one lineage run of the node; a secession replaces it
    while the gRPC servers keep listening."""

    genesis: Any
    store: SqliteStore
    replica: Any
    agreement: Agreement | None
    engine: Engine
    links: PeerLinks
    keeper: Keeper | None

    closed: bool = False

    def start(self) -> None:
        self.engine.start()
        self.links.start()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self.links.stop()
        if self.engine._task is not None and not self.engine._task.done():
            await self.engine.stop()
        if self.keeper is not None:
            self.keeper.close()
        self.store.close()


def _core_config(cfg: NodeConfig) -> ReplicationCoreConfig:
    return ReplicationCoreConfig(
        sync_interval_ms=cfg.replication.sync_interval_ms,
        push_fanout=cfg.replication.push_fanout,
        message_bytes_max=cfg.peer.message_bytes_max,
    )


def _open_core(cfg: NodeConfig, d: DataDir, identity, metrics: Metrics, peer_creds,
               peer_port: int, *, start_empty: bool = False,
               first_snapshot: tuple[Any] | None = None) -> tuple[_Core, NodeConfig]:
    """Open the store and replica of the node's lineage (finishing a recorded secession
    first), its agreement, engine, links and other lineages. Returns the core and the
    config with the peers of a join bundle filled in. A store that lost the history
    history.cbor remembers is refused unless start_empty (decision 0060). A node that
    joined and holds nothing starts from a snapshot: `first_snapshot` is one serve()
    fetched already, (result of _fetch_checked,); None: fetch it here."""
    finish_move(d)
    d.tighten_modes()
    genesis = d.genesis()
    if genesis is None:
        raise NodeError(
            f"{d.genesis_file}: missing; this node is in no cluster yet "
            "(create one with `synod init --new-cluster NAME`)"
        )
    if start_empty:
        log.warning("--start-empty: %s is not checked against %s", d.store_file.name,
                    d.history_file.name)
    else:
        d.check_store(genesis.cluster_id)  # before opening: that would make an empty store
    bundle = _join_bundle(d, genesis)
    core_cfg = _core_config(cfg)
    agreement: Agreement | None = None

    def open_lineage(store: SqliteStore, g) -> Any:
        return open_node_replica(store, identity, random.Random(), g,
                                 verify=cfg.replication.verify_on_start, config=core_cfg,
                                 schema=NODE_SCHEMA)

    try:
        store = SqliteStore(d.store_file, NODE_SCHEMA, convert=True)
        if cfg.agreement.enabled and bundle is not None and store.is_empty():
            # A node that joined and holds nothing yet; the founders of a new cluster
            # never ask (there is nothing to catch up with).
            if first_snapshot is not None:
                got = first_snapshot[0]
            else:
                got = _fetch_checked(cfg, list(cfg.peer.peers) or list(bundle.peers), {},
                                     identity, genesis, peer_creds)
            if got is not None:
                _install(store, got, identity, genesis, cfg, metrics)
        if cfg.agreement.enabled:
            # Membership and policy from decided slots, plus invitations (decision 0032).
            replica = open_lineage(store, genesis)
            write_fork_copy(d, identity, replica, store, open_lineage)
            agreement = Agreement(
                replica,
                random.Random(),
                AgreementConfig(
                    retry_ms=cfg.agreement.retry_ms,
                    backoff_ms_min=cfg.agreement.backoff_ms_min,
                    backoff_ms_max=cfg.agreement.backoff_ms_max,
                    timeout_ms=cfg.agreement.propose_timeout_ms,
                    checkpoint_ops=cfg.agreement.checkpoint_ops,
                    checkpoint_ms=cfg.agreement.checkpoint_ms,
                    compact=cfg.agreement.compact,
                ),
            )
        else:
            replica = open_replica(
                store,
                identity,
                random.Random(),
                genesis,
                verify=cfg.replication.verify_on_start,
                config=core_cfg,  # type: ignore[arg-type]
                policy=InvitePolicy.from_genesis(genesis),
                schema=NODE_SCHEMA,
            )
        if replica.counters["rematerialised"]:  # tables edited behind our back (0060):
            persist(store, replica)  # rewritten from the log before anyone reads them
    except StoreError as exc:
        raise NodeError(str(exc)) from None
    except Refused as exc:  # a compacted store whose checkpoint does not check out
        raise NodeError(f"{d.store_file}: {exc}") from None
    own_seq = replica.version_vector().get(identity.node_id, 0)
    try:
        if not start_empty:
            d.check_store(genesis.cluster_id, replica.op_count(), own_seq)
        d.note_history(genesis.cluster_id, replica.op_count(), own_seq)
    except DataDirError:
        store.close()
        raise
    policy = replica.policy
    if identity.node_id not in policy.members() and bundle is None:  # type: ignore[attr-defined]
        store.close()
        raise NodeError(
            f"{d.path}: node {identity.node_id} is not a member of {genesis.name} "
            f"(join one with `synod join --data {d.path} --via HOST:PORT`)"
        )
    if bundle is not None and not cfg.peer.peers:
        mine = {cfg.peer.listen, cfg.peer.advertise}
        peers = tuple(p for p in bundle.peers if p not in mine)
        cfg = dataclasses.replace(cfg, peer=dataclasses.replace(cfg.peer, peers=peers))
    engine = Engine(
        replica,
        store,
        metrics,
        tick_interval_ms=cfg.replication.tick_interval_ms,
        pending_writes_max=cfg.api.pending_writes_max,
        group_commit_rows_max=cfg.replication.group_commit_rows_max,
        agreement=agreement,
    )
    keeper = None
    if agreement is not None:
        keeper = Keeper(d, identity, replica, agreement, open_lineage,
                        propose_timeout_ms=cfg.agreement.propose_timeout_ms)
        engine.set_keeper(keeper)
        keeper.rejoin()  # meets the lineages other nodes announced, joins where merge
    links = PeerLinks(engine, cfg.peer, peer_creds, metrics)
    if not cfg.peer.advertise:
        links.advertise = f"{cfg.peer.listen.rpartition(':')[0]}:{peer_port}"
    # Nodes invited, or joined by a decided membership, after the config was written.
    for node_id, address in policy.addresses().items():  # type: ignore[attr-defined]
        links.add(address, node_id)
    for (key,), values in replica.rows(INTERNAL).items():
        node_id, address = peer_of_key(key), values.get("value")
        if node_id and isinstance(address, bytes):
            links.add(address.decode(errors="replace"), node_id)
    return _Core(genesis, store, replica, agreement, engine, links, keeper), cfg


CATCH_UP_INTERVAL_S = 30.0  # at most one run-time snapshot catch-up attempt per this


class _CatchUp:
    """Run-time snapshot catch-up (decision 0070): a peer answered that it pruned ops this
    node lacks (engine.BelowCheckpoint), which sync cannot bring. serve() then fetches a
    snapshot and checks it against its certificate while the node keeps serving
    (_fetch_checked, a thread); only with one that checks out does it close the core,
    merge what the store holds above the cut, install (_install_checked) and open the
    core again; the servers keep listening, as in a secession. At most one attempt per
    interval: the claim is a peer's (only a checked snapshot is trusted), so a peer that
    lies costs us one round of asking the peers, with no outage and the store unchanged."""

    def __init__(self, interval_s: float = CATCH_UP_INTERVAL_S) -> None:
        self.requested = asyncio.Event()
        self.interval_s = interval_s
        self.last_s: float | None = None
        self.peer = ""

    def on_event(self, event: Any) -> None:
        if not isinstance(event, BelowCheckpoint) or self.requested.is_set():
            return
        now = time.monotonic()
        if self.last_s is not None and now - self.last_s < self.interval_s:
            return
        self.last_s, self.peer = now, event.peer
        cut = {a[:8]: n for a, n in sorted(event.base.items())}
        log.warning("peer %s pruned ops this node lacks (its pruned cut: %s): catching up "
                    "from a snapshot", event.peer[:16], cut)
        self.requested.set()


def _join_bundle(d: DataDir, genesis) -> Any:
    """The invitation `synod join` stored (None: the node did not join); NodeError when it
    is unreadable or for another cluster."""
    raw = d.join_bundle()
    if raw is None:
        return None
    try:
        bundle = read_bundle(raw)
    except JoinError as exc:
        raise NodeError(f"{d.join_file}: {exc}") from None
    if bundle.genesis.raw != genesis.raw:
        raise NodeError(f"{d.join_file}: invitation is for another cluster")
    return bundle


def _first_snapshot_peers(cfg: NodeConfig, d: DataDir, start_empty: bool) -> list[str] | None:
    """Where a node that joined asks for its first snapshot, before it opens its store:
    None unless agreement is on, the node joined, no move is pending, and its store holds
    nothing yet (read without creating it). A bad invitation, or a store that lost the
    history history.cbor remembers, is refused here already (as _open_core would), before
    a snapshot is fetched for it."""
    if not cfg.agreement.enabled or (d.path / "moving.cbor").exists():
        return None
    genesis = d.genesis()
    if genesis is None:
        return None  # _open_core says so
    bundle = _join_bundle(d, genesis)
    if bundle is None:
        return None
    if not start_empty:
        d.check_store(genesis.cluster_id)
    if d.store_file.exists() and not holds_nothing(d.store_file):
        return None
    return list(cfg.peer.peers) or list(bundle.peers)


async def _fetch_first_snapshot(cfg: NodeConfig, d: DataDir, identity, peer_creds,
                                stop: asyncio.Event, start_empty: bool) -> tuple[Any] | None:
    """The first snapshot of a node that joined (see _first_snapshot_peers), fetched in a
    daemon thread while the loop keeps answering signals: (got,) with got as
    _fetch_checked returns it; None when none was wanted. Raises _StoppedBeforeStart when
    the node is told to stop first (the fetch is cancelled and not waited for)."""
    peers = _first_snapshot_peers(cfg, d, start_empty)
    if not peers:
        return None
    log.info("joined and holding nothing yet: fetching a first snapshot from %s",
             ", ".join(peers))
    cancel = snapshot.Cancel()
    fetching = _in_daemon_thread("synod-snapshot-fetch", _fetch_checked, cfg, peers, {},
                                 identity, d.genesis(), peer_creds, cancel)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({fetching, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not fetching.done():
        cancel.set()
        raise _StoppedBeforeStart("stopped while fetching the first snapshot")
    return (fetching.result(),)


class _StoppedBeforeStart(NodeBaseError):
    """The node was told to stop before it opened its store (nothing to shut down)."""


def _fetch_checked(cfg: NodeConfig, addresses: list[str], vector: dict[str, int], identity,
                   genesis, peer_creds, cancel: snapshot.Cancel | None = None,
                   store_file: Any = None) -> tuple[bytes, Any, Any] | None:
    """The first snapshot a peer gives past `vector` that checks out against its
    certificate, as (record, rows, checked replica); None when none does (logged). With
    store_file (the running node's store, read over a connection of its own) each one is
    also merged with what the store holds, as a trial: one the merge refuses (older than
    the store's own cut, or the store's own ops do not fit) is passed over for the next
    peer, before the core is closed for it. The core keeps running meanwhile."""
    mine = (cfg.peer.listen, cfg.peer.advertise)
    addresses = list(dict.fromkeys(a for a in addresses if a and a not in mine))
    if not addresses:
        return None
    core_cfg = _core_config(cfg)
    held = None
    if store_file is not None:
        store = SqliteStore(store_file, NODE_SCHEMA, check_file=False)
        try:
            held = store.load()
        finally:
            store.close()

    def check_one(record: bytes, rows: Any) -> Any:
        if cancel is not None and cancel.is_set():
            raise snapshot.SnapshotError("the node is stopping")
        snap = snapshot.check(record, rows, identity, genesis, config=core_cfg)
        if held is not None and (held.log or held.compaction is not None):
            snapshot.merge(snap, record, rows, held, identity, genesis, config=core_cfg)
        return snap

    return snapshot.fetch(
        addresses, peer_creds, vector,
        message_bytes_max=cfg.peer.message_bytes_max,
        bytes_max=snapshot.SNAPSHOT_BYTES_MAX,
        timeout_s=snapshot.FETCH_TIMEOUT_S,
        check_one=check_one,
        cancel=cancel,
    )


def _install(store, got: tuple[bytes, Any, Any], identity, genesis, cfg: NodeConfig,
             metrics: Metrics) -> None:
    """Merge a checked snapshot (_fetch_checked) with what the store holds (snapshot.merge:
    nothing held above its cut is lost) and install it in one transaction; then the tail
    comes by sync as usual. SnapshotError or StoreError leave the store unchanged."""
    record, rows, replica = got
    stored = store.load()
    if stored.log or stored.compaction is not None:
        replica, record = snapshot.merge(replica, record, rows, stored, identity, genesis,
                                         config=_core_config(cfg))
    snapshot.install(store, replica, record, rows)
    metrics.inc("snapshots_installed")
    log.info("started from checkpoint/%d (%d rows, %d ops pruned) fetched from a peer",
             replica.restored_checkpoint, len(rows), replica.dag.pruned)


def _install_checked(cfg: NodeConfig, d: DataDir, got: tuple[bytes, Any, Any], identity,
                     genesis, metrics: Metrics) -> bool:
    """_install on the node's store while its core is closed (a thread of its own:
    SQLite's connection stays in it). False, logged, when nothing was installed."""
    try:
        store = SqliteStore(d.store_file, NODE_SCHEMA)
    except StoreError as exc:
        log.error("snapshot catch-up: %s", exc)
        return False
    try:
        _install(store, got, identity, genesis, cfg, metrics)
    except (StoreError, snapshot.SnapshotError) as exc:
        log.error("snapshot catch-up: %s; the store is unchanged", exc)
        return False
    finally:
        store.close()
    return True


# A stop waits at most this long for an install under way: with the servers' grace it
# stays below the service unit's TimeoutStopSec (20 s), after which SIGKILL comes anyway.
INSTALL_STOP_WAIT_S = 10.0


def _in_daemon_thread(name: str, fn: Callable[..., Any], *args: Any) -> asyncio.Future:
    """fn(*args) in a daemon thread; its result or exception in the returned future, on
    the running loop. Not asyncio.to_thread: asyncio.run and the interpreter's exit join
    the default executor's threads, so a SIGTERM would wait for a snapshot fetch and
    check that can take minutes. A daemon thread still running at exit ends with the
    process (a fetch only reads; see _finish_install for the install)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()

    def settle(value: Any, exc: BaseException | None) -> None:
        if future.done():
            return  # cancelled: nobody waits for it any more
        if exc is None:
            future.set_result(value)
        else:
            future.set_exception(exc)

    def run() -> None:
        value, exc = None, None
        try:
            value = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the side that awaits it
            exc = e
        try:
            loop.call_soon_threadsafe(settle, value, exc)
        except RuntimeError:
            pass  # the loop is closed: the node stopped meanwhile

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


async def _finish_install(installing: asyncio.Future, stopper: asyncio.Future) -> bool:
    """The result of _install_checked running in `installing`. An install must finish or
    not start, so a stop (stopper) waits for it, but at most INSTALL_STOP_WAIT_S: after
    that the node stops without it (logged; False): the process exits, and SQLite rolls
    the install's one transaction back at the next open, as after a crash."""
    await asyncio.wait({installing, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if not installing.done():
        log.warning("stopping: waiting up to %.0f s for the snapshot install under way",
                    INSTALL_STOP_WAIT_S)
        await asyncio.wait({installing}, timeout=INSTALL_STOP_WAIT_S)
        if not installing.done():
            log.error("the snapshot install did not finish within %.0f s of the stop; "
                      "stopping without it (cut off by the exit, its transaction is rolled "
                      "back: the store stays as it was)", INSTALL_STOP_WAIT_S)
            return False
    return bool(installing.result())


class _Secession:
    """Moves the running node into a new lineage: records it on disk, asks serve() to
    replace the core, waits until the new one runs."""

    def __init__(self, d: DataDir, identity) -> None:
        self.d = d
        self.identity = identity
        self.requested = asyncio.Event()
        self.done = asyncio.Event()
        self.core: _Core | None = None
        self.lock = asyncio.Lock()

    async def move(self, new) -> None:
        core = self.core
        assert core is not None
        if core.genesis.cluster_id == new.cluster_id:
            return
        members = dict(core.engine.members)
        if core.agreement is not None:
            members.update(core.agreement.membership().voters)
        begin_move(self.d, core.genesis, new, members)
        self.done.clear()
        self.requested.set()
        await asyncio.wait_for(self.done.wait(), 60)

    def go_home(self, parent) -> None:
        """The keeper's on_return: move back into the parent lineage after a reunion (the
        engine round calls this; the move itself happens in serve()'s loop)."""
        core = self.core
        assert core is not None
        log.warning("returning home to lineage %s (%s); %s stays joined, read-only",
                    parent.cluster_id.hex()[:16], parent.name, core.genesis.cluster_id.hex()[:16])
        begin_move(self.d, core.genesis, parent)
        self.done.clear()
        self.requested.set()

    async def adopt(self, new, caller: str) -> None:
        """PeerService.Secede: another seceding voter tells us to move."""
        async with self.lock:
            core = self.core
            assert core is not None
            if core.genesis.cluster_id == new.cluster_id:
                return
            check_notice(core.genesis, new, self.identity.node_id, caller)
            log.warning("seceding into lineage %s (%s), as told by %s; confirmed by %s",
                        new.cluster_id.hex()[:16], new.name, caller,
                        lineage_of(new).confirmed_by)
            await self.move(new)

    async def secede(self, voters: list[str], confirmed_by: str) -> dict[str, Any]:
        """LineageService.Secede on the founder: fork, move, then tell the others."""
        async with self.lock:
            core = self.core
            assert core is not None
            me = self.identity.node_id
            mine = lineage_of(core.genesis)
            named = [[n for n in core.genesis.member_ids if len(v) >= 8 and n.startswith(v)]
                     for v in voters]
            if (mine.parent is not None and core.genesis.founder == self.identity.public_key
                    and all(len(hits) == 1 for hits in named)):
                new = core.genesis  # ran again: tell the voters that were not reached
                addresses = core.links.known_addresses()
            else:
                new = plan_secession(core, self.identity, voters, confirmed_by)
                addresses = core.links.known_addresses()
                log.warning("seceding: new lineage %s with voters %s; confirmed by %s",
                            new.cluster_id.hex()[:16], sorted(new.member_ids), confirmed_by)
                await self.move(new)
            assert self.core is not None
            moved, unreached = [me], []
            for node_id in sorted(new.member_ids):
                if node_id == me:
                    continue
                address = addresses.get(node_id) or self.core.links.address_of(node_id)
                try:
                    if not address:
                        raise LineageError("no known peer address")
                    await self.core.links.notify_secession(node_id, address, new.raw)
                    moved.append(node_id)
                except (grpc.RpcError, LineageError, TimeoutError) as exc:
                    why = f"{exc.code().name}: {exc.details()}" if isinstance(
                        exc, grpc.RpcError) else str(exc)
                    unreached.append(f"{node_id}: {why}")
            return {"genesis": new, "moved": moved, "unreached": unreached}


def plan_secession(core: _Core, identity, voters: list[str], confirmed_by: str):
    """The new lineage's genesis (coordinator.plan_secession: confirmed, a minority of the
    voters, this node among them). LineageError says what is wrong."""
    if core.agreement is None:
        raise LineageError("secession needs the agreement layer (agreement.enabled)")
    try:
        return coordinator.plan_secession(
            identity, core.genesis, core.agreement.membership(), core.agreement.policy(),
            core.replica.version_vector(), voters, confirmed_by, int(time.time() * 1000))
    except coordinator.SecessionRefused as exc:
        raise LineageError(str(exc)) from None


async def serve(cfg: NodeConfig, stop: asyncio.Event, announce=print, *,
                start_empty: bool = False) -> None:
    """Run the node until stop is set; announce(json line) once it listens. start_empty:
    open an empty store even if history.cbor says this node had one (decision 0060)."""
    d = DataDir(Path(cfg.data))
    identity = d.identity()
    ca, tls_key, tls_cert = d.tls()
    metrics = Metrics()
    peer_creds = grpc.ssl_channel_credentials(ca, tls_key, tls_cert)

    api_conns, peer_conns = _fit_connections(cfg)
    peer_server = grpc.aio.server(options=_server_options(cfg.peer, peer_conns),
                                  interceptors=[CallMetrics(metrics)])
    peer_creds_srv = grpc.ssl_server_credentials(
        [(tls_key, tls_cert)], root_certificates=ca, require_client_auth=True
    )
    peer_port = _bind(
        lambda a: peer_server.add_secure_port(a, peer_creds_srv), cfg.peer.listen, "peer.listen"
    )
    try:
        first = await _fetch_first_snapshot(cfg, d, identity, peer_creds, stop, start_empty)
    except _StoppedBeforeStart as exc:
        log.info("%s: the node stops before it started", exc)
        return
    core, cfg = _open_core(cfg, d, identity, metrics, peer_creds, peer_port,
                           start_empty=start_empty, first_snapshot=first)
    secession = _Secession(d, identity)
    secession.core = core
    if core.keeper is not None:
        core.keeper.on_return = secession.go_home
    catch_up = _CatchUp()
    core.engine.subscribe(catch_up.on_event)
    trimmer = Trimmer(observe=lambda s: metrics.observe("memory_trim", s))
    core.engine.trimmer = trimmer
    notice = not_handed_back(trimmer.available)
    if notice is not None:
        log.info("%s", notice)
    api = Api(core.engine, cfg.api, metrics, core.links, str(d.store_file))
    api.secession = secession
    peer_servicer = PeerServicer(core.engine, cfg.peer, metrics)
    peer_servicer.on_secede = secession.adopt
    peer_pb2_grpc.add_PeerServiceServicer_to_server(peer_servicer, peer_server)
    peer_health = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(peer_health, peer_server)

    def gauges(c: _Core) -> None:
        metrics.gauges["peers_up"] = lambda: sum(c.links.up().values())
        metrics.gauges["ops"] = c.replica.op_count
        metrics.gauges["members"] = lambda: len(c.engine.members)

    gauges(core)
    health_servicer = health.aio.HealthServicer()

    api_server = grpc.aio.server(options=_server_options(cfg.api, api_conns),
                                 interceptors=[CallMetrics(metrics)])
    names = servicers(api, api_server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, api_server)
    reflection.enable_server_reflection(
        [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], api_server
    )
    if cfg.api.insecure_loopback:
        api_port = _bind(api_server.add_insecure_port, cfg.api.listen, "api.listen")
    else:
        creds = grpc.ssl_server_credentials([(tls_key, tls_cert)])
        api_port = _bind(
            lambda a: api_server.add_secure_port(a, creds), cfg.api.listen, "api.listen"
        )

    def cores() -> dict[str, dict]:
        c = secession.core  # the lineage this node serves now (it changes on secession)
        assert c is not None
        return {"replica": c.replica.counters,
                "agreement": c.agreement.counters if c.agreement is not None else {},
                "lineage": c.keeper.counters if c.keeper is not None else {}}

    def node_info() -> dict[str, str]:
        c = secession.core
        assert c is not None
        return {"node_id": identity.node_id, "cluster": c.genesis.name,
                "cluster_id": c.genesis.cluster_id.hex()}

    metrics.cores, metrics.node_info = cores, node_info
    metrics_server = None
    if cfg.metrics.listen:
        host, _, port = cfg.metrics.listen.rpartition(":")
        try:
            metrics_server = await serve_metrics(host, int(port), metrics.registry())
        except OSError as exc:
            raise NodeError(f"metrics.listen {cfg.metrics.listen}: {exc.strerror}") from None
    web = await _start_web(cfg, api, d)

    core.start()
    await api_server.start()
    await peer_server.start()
    guards = [Guard("api", api_port, Limits.of(cfg.api), metrics),
              Guard("peer", peer_port, Limits.of(cfg.peer), metrics)]
    api.guard = guards[0]
    guarding = [asyncio.ensure_future(g.run()) for g in guards]
    for g in guards:
        metrics.gauges[f"{g.name}_connections"] = lambda g=g: g.connections
        metrics.gauges[f"{g.name}_sources_refused"] = lambda g=g: len(g.filtered)
    for name in [*names, ""]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    await peer_health.set(
        peer_pb2.DESCRIPTOR.services_by_name["PeerService"].full_name,
        health_pb2.HealthCheckResponse.SERVING,
    )
    announce(
        json.dumps(
            {
                "event": "ready",
                "node_id": identity.node_id,
                "cluster": core.genesis.name,
                "cluster_id": core.genesis.cluster_id.hex(),
                "api_port": api_port,
                "peer_port": peer_port,
                "metrics_port": metrics_server.sockets[0].getsockname()[1] if metrics_server else 0,
                "web_port": web[1] if web else 0,
                "ops": core.replica.op_count(),
            }
        )
    )
    log.info("node %s serving api :%d peer :%d", identity.node_id, api_port, peer_port)
    stopper = asyncio.ensure_future(stop.wait())
    switcher = asyncio.ensure_future(secession.requested.wait())
    catcher = asyncio.ensure_future(catch_up.requested.wait())
    fetching: asyncio.Future | None = None  # a snapshot fetch (catch_up), while it runs
    fetch_genesis, cancel = None, snapshot.Cancel()
    failed: BaseException | None = None

    def reopened(new: _Core) -> None:
        secession.core = new
        new.engine.trimmer = trimmer
        if new.keeper is not None:
            new.keeper.on_return = secession.go_home
        new.engine.subscribe(catch_up.on_event)
        api.rebind(new.engine, new.links)
        peer_servicer.engine = new.engine
        gauges(new)
        new.start()

    try:
        while True:
            engine_task = core.engine._task
            assert engine_task is not None
            waiting: set[asyncio.Future] = {stopper, engine_task, switcher, catcher}
            if fetching is not None:
                waiting.add(fetching)
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if stopper.done() or engine_task.done():
                if engine_task.done() and not engine_task.cancelled():
                    failed = engine_task.exception()
                break
            if catcher.done():
                # Below a peer's pruned cut: fetch and check a snapshot while the node
                # serves (a thread); the core closes only to install it.
                catch_up.requested.clear()
                catcher = asyncio.ensure_future(catch_up.requested.wait())
                if fetching is not None:
                    continue  # one fetch at a time
                addresses = [core.links.address_of(catch_up.peer),
                             *core.links.known_addresses().values(), *cfg.peer.peers]
                fetch_genesis, cancel = core.genesis, snapshot.Cancel()
                fetching = _in_daemon_thread(
                    "synod-snapshot-fetch", _fetch_checked, cfg, addresses,
                    dict(core.replica.version_vector()), identity, fetch_genesis, peer_creds,
                    cancel, d.store_file)
                continue
            if fetching is not None and fetching.done():
                try:
                    got = fetching.result()
                except Exception:  # noqa: BLE001 - a failed fetch must not stop the node
                    log.exception("snapshot catch-up: the fetch failed")
                    got = None
                fetching = None
                installed = False
                if got is not None and fetch_genesis is core.genesis:
                    await core.close()
                    installed = await _finish_install(_in_daemon_thread(
                        "synod-snapshot-install", _install_checked, cfg, d, got, identity,
                        core.genesis, metrics), stopper)
                    if stopper.done():
                        break  # the core stays closed; the servers stop below
                    core, cfg = _open_core(cfg, d, identity, metrics, peer_creds, peer_port)
                    reopened(core)
                metrics.inc(f"snapshot_catch_ups|{'installed' if installed else 'none'}")
                if not installed:
                    log.warning("no snapshot installed; this node stays below its peers' "
                                "pruned cut (next attempt in %.0f s, or restart the node)",
                                catch_up.interval_s)
                continue
            if not switcher.done():
                continue
            # A secession: the new lineage replaces the core; the servers keep listening.
            cancel.set()  # a snapshot being fetched is the old lineage's
            secession.requested.clear()
            switcher = asyncio.ensure_future(secession.requested.wait())
            await core.close()
            core, cfg = _open_core(cfg, d, identity, metrics, peer_creds, peer_port)
            reopened(core)
            log.warning("node %s now runs in lineage %s (%s)", identity.node_id,
                        core.genesis.cluster_id.hex()[:16], core.genesis.name)
            secession.done.set()
    finally:
        stopper.cancel()
        switcher.cancel()
        catcher.cancel()
        cancel.set()  # a snapshot fetch still running asks no further peer
        if fetching is not None and not fetching.done():
            log.info("stopping: the snapshot fetch under way is dropped (a daemon thread)")
        for task in guarding:
            task.cancel()
        await health_servicer.enter_graceful_shutdown()
        await api_server.stop(grace=1)
        api.close()  # its SQL threads
        await peer_server.stop(grace=0.5)
        await core.close()
        if metrics_server is not None:
            metrics_server.close()
        if web is not None:
            await web[0].close()
        log.info("node %s stopped", identity.node_id)
    if failed is not None:
        raise NodeError(f"engine failed: {failed}")


async def _start_web(cfg: NodeConfig, api: Api, d: DataDir):
    """The read-only web view (controller/web, docs/web.md) when web.listen is set: (server,
    port), or None. TLS with the API's certificate unless the API is plaintext on loopback."""
    if not cfg.web.listen:
        return None
    from controller.web import WebServer, tls_context

    tls = None if cfg.api.insecure_loopback else tls_context(str(d.tls_cert), str(d.tls_key))
    web = WebServer(cfg.web, api, site=cfg.site, tls=tls)
    try:
        port = await web.start(cfg.web.listen)
    except OSError as exc:
        raise NodeError(f"web.listen {cfg.web.listen}: {exc.strerror}") from None
    log.info("web view on %s://%s:%d/", web.url_scheme, cfg.web.listen.rpartition(":")[0], port)
    return web, port


def write_fork_copy(d: DataDir, identity, replica, store: SqliteStore, open_lineage) -> None:
    """The founder of a seceded lineage starts it with the parent's rows (its first ops,
    before any other write; decision 0018): re-signed copies at the lowest HLC, so every
    version of the parent beats them when the two DAGs meet again (a parent write the
    founder had not received at the fork must not lose to its copy) and every write made
    apart beats them too."""
    own_seq = replica.version_vector().get(identity.node_id, 0)
    parent_id = fork_copy_due(replica.genesis, identity.public_key, own_seq)
    if parent_id is None:
        return  # not a seceded lineage's founder, or copied already
    parent_dir = lineage_dir(d, parent_id)
    parent_genesis = held_lineages(d).get(parent_id)
    if parent_genesis is None or not (parent_dir / "store.db").exists():
        raise NodeError(f"{parent_dir}: the parent lineage's store is missing; "
                        "cannot start the seceded lineage")
    parent_store = SqliteStore(parent_dir / "store.db", NODE_SCHEMA)
    try:
        parent = open_lineage(parent_store, parent_genesis)
        rows = [Upsert(t, k, v) for t in parent.schema.names for k, v in parent.rows(t).items()]
    finally:
        parent_store.close()
    now = 1  # the lowest time: the copy loses to every real version (see above)
    for chunk in fork_copy_writes(rows, parent_id, replica.config.mutations_max):
        replica.write(chunk, now)
    persist(store, replica)
    log.info("seceded lineage %s starts with %d rows of its parent",
             replica.cluster_id.hex()[:16], len(rows))


def _server_options(c, connections: int) -> list[tuple[str, int]]:
    """gRPC core's limits of a server (c: ApiConfig or PeerConfig); 0 leaves one off.
    Connections over the total are closed at accept; guard.py adds the per-source cap."""
    options = [
        ("grpc.max_receive_message_length", c.message_bytes_max),
        ("grpc.max_send_message_length", c.message_bytes_max),
    ]
    for name, value in (
        ("grpc.max_allowed_incoming_connections", connections),
        ("grpc.server_handshake_timeout_ms", c.handshake_timeout_ms),
        ("grpc.max_connection_idle_ms", c.idle_timeout_ms),
        ("grpc.max_concurrent_streams", c.streams_per_connection_max),
    ):
        if value:
            options.append((name, value))
    return options


def _fit_connections(cfg: NodeConfig) -> tuple[int, int]:
    """api.connections_max and peer.connections_max, lowered if the descriptor limit (raised
    up to the hard limit) cannot hold both: a node out of descriptors serves nobody."""
    api_max, peer_max = cfg.api.connections_max, cfg.peer.connections_max
    if not api_max or not peer_max:
        return api_max, peer_max
    fit = fit_fd_limit(api_max + peer_max)
    if fit >= api_max + peer_max:
        return api_max, peer_max
    api_fit = max(1, api_max * fit // (api_max + peer_max))
    peer_fit = max(1, fit - api_fit)
    log.warning("the descriptor limit holds %d connections, not api.connections_max %d + "
                "peer.connections_max %d: using %d and %d (raise `ulimit -n`)",
                fit, api_max, peer_max, api_fit, peer_fit)
    return api_fit, peer_fit


def _bind(add, address: str, key: str) -> int:
    try:
        port = add(address)
    except RuntimeError as exc:
        raise NodeError(f"{key} {address}: cannot listen: {exc}") from None
    if port == 0:
        raise NodeError(f"{key} {address}: cannot listen (address in use?)")
    return port


def _run_loop(choice: str, main) -> None:
    """Run main() to its end on the event loop [api] event_loop names (uvloop by default,
    decision 0104); asyncio's own loop where uvloop cannot be imported, with a warning."""
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError as exc:
            log.warning("event loop: uvloop cannot be imported (%s); running on asyncio's "
                        "own loop", exc)
        else:
            log.info("event loop: uvloop %s", uvloop.__version__)
            uvloop.run(main())
            return
    log.info("event loop: asyncio")
    asyncio.run(main())


def run_node(cfg: NodeConfig, *, start_empty: bool = False) -> None:
    """Blocking entry point for `synod node run`: runs until SIGTERM or SIGINT."""
    # gRPC core's own lines (a failed TLS handshake: one each) through a rate-limiting
    # relay; this process's Python output keeps the real stderr (grpclog.py).
    sys.stderr = os.fdopen(relay_grpc_log(cfg.log.format, cfg.api.security_log_lines,
                                          cfg.api.security_log_interval_ms), "w", buffering=1)
    faulthandler.enable(sys.stderr)
    _setup_logging(cfg, sys.stderr)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(cfg, stop, lambda line: print(line, flush=True), start_empty=start_empty)

    started = time.monotonic()
    profile_to = os.environ.get("SYNOD_PROFILE")  # bench/: a cProfile of the node's loop
    try:
        if profile_to:
            import cProfile

            cProfile.runctx("asyncio.run(main())", globals(), {"main": main},
                            f"{profile_to}.{os.getpid()}")
        else:
            _run_loop(cfg.api.event_loop, main)
    except DataDirError as exc:
        raise NodeError(str(exc)) from None
    log.info("ran %.1f s", time.monotonic() - started)
