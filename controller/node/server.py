"""`synod node run`: open the store, start the engine, peer links and the gRPC servers."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import signal
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from synod.v1 import peer_pb2, peer_pb2_grpc

from controller.agreement import Agreement, AgreementConfig
from controller.replication import Config as ReplicationCoreConfig
from controller.replication import InvitePolicy
from controller.store import SqliteStore, StoreError, open_replica

from .api import Api, servicers
from .config import NodeConfig
from .datadir import DataDir, DataDirError
from .engine import Engine
from .join import JoinError, read_bundle
from .metrics import Metrics, serve_metrics
from .peers import PeerLinks, PeerServicer
from .slots import open_node_replica, peer_of_address_key

__all__ = ["NodeError", "run_node", "serve"]

log = logging.getLogger("synod.node")


class NodeError(Exception):
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


def _setup_logging(cfg: NodeConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if cfg.log.format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("synod")
    root.handlers[:] = [handler]
    root.setLevel(cfg.log.level.upper())
    root.propagate = False


async def serve(cfg: NodeConfig, stop: asyncio.Event, announce=print) -> None:
    """Run the node until stop is set; announce(json line) once it listens."""
    d = DataDir(Path(cfg.data))
    identity = d.identity()
    genesis = d.genesis()
    if genesis is None:
        raise NodeError(
            f"{d.genesis_file}: missing; this node is in no cluster yet "
            "(create one with `synod init --new-cluster NAME`)"
        )
    bundle = None
    raw_bundle = d.join_bundle()
    if raw_bundle is not None:
        try:
            bundle = read_bundle(raw_bundle)
        except JoinError as exc:
            raise NodeError(f"{d.join_file}: {exc}") from None
        if bundle.genesis.raw != genesis.raw:
            raise NodeError(f"{d.join_file}: invitation is for another cluster")
    ca, tls_key, tls_cert = d.tls()
    core_cfg = ReplicationCoreConfig(
        sync_interval_ms=cfg.replication.sync_interval_ms,
        push_fanout=cfg.replication.push_fanout,
        message_bytes_max=cfg.peer.message_bytes_max,
    )
    agreement: Agreement | None = None
    try:
        store = SqliteStore(d.store_file)
        if cfg.agreement.enabled:
            # Membership and policy from decided slots, plus invitations (decision 0032).
            replica = open_node_replica(
                store,
                identity,
                random.Random(),
                genesis,
                verify=cfg.replication.verify_on_start,
                config=core_cfg,
            )
            agreement = Agreement(
                replica,
                random.Random(),
                AgreementConfig(
                    retry_ms=cfg.agreement.retry_ms,
                    backoff_ms_min=cfg.agreement.backoff_ms_min,
                    backoff_ms_max=cfg.agreement.backoff_ms_max,
                    timeout_ms=cfg.agreement.propose_timeout_ms,
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
            )
    except StoreError as exc:
        raise NodeError(str(exc)) from None
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
    metrics = Metrics()
    engine = Engine(
        replica,
        store,
        metrics,
        tick_interval_ms=cfg.replication.tick_interval_ms,
        pending_writes_max=cfg.api.pending_writes_max,
        group_commit_rows_max=cfg.replication.group_commit_rows_max,
        agreement=agreement,
    )
    peer_creds = grpc.ssl_channel_credentials(ca, tls_key, tls_cert)
    links = PeerLinks(engine, cfg.peer, peer_creds, metrics)
    api = Api(engine, cfg.api, metrics, links, str(d.store_file))
    metrics.gauges["peers_up"] = lambda: sum(links.up().values())
    metrics.gauges["ops"] = replica.op_count
    metrics.gauges["members"] = lambda: len(engine.members)

    health_servicer = health.aio.HealthServicer()

    api_server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", cfg.api.message_bytes_max),
            ("grpc.max_send_message_length", cfg.api.message_bytes_max),
            ("grpc.max_concurrent_streams", 1_000),
        ]
    )
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

    peer_server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", cfg.peer.message_bytes_max),
            ("grpc.max_send_message_length", cfg.peer.message_bytes_max),
        ]
    )
    peer_pb2_grpc.add_PeerServiceServicer_to_server(
        PeerServicer(engine, cfg.peer, metrics), peer_server
    )
    peer_health = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(peer_health, peer_server)
    peer_creds_srv = grpc.ssl_server_credentials(
        [(tls_key, tls_cert)], root_certificates=ca, require_client_auth=True
    )
    peer_port = _bind(
        lambda a: peer_server.add_secure_port(a, peer_creds_srv), cfg.peer.listen, "peer.listen"
    )
    if not cfg.peer.advertise:
        links.advertise = f"{cfg.peer.listen.rpartition(':')[0]}:{peer_port}"
    # Nodes invited, or joined by a decided membership, after the config was written.
    for node_id, address in policy.addresses().items():  # type: ignore[attr-defined]
        links.add(address, node_id)
    for (key,), values in replica.rows("kv").items():
        node_id, address = peer_of_address_key(key), values.get("value")
        if node_id and isinstance(address, bytes):
            links.add(address.decode(errors="replace"), node_id)
    engine.on_address = lambda node_id, address: links.add(address, node_id)

    def render() -> str:
        extra = {f"replica_{k}": v for k, v in replica.counters.items()}
        if agreement is not None:
            extra.update({f"agreement|{k}": v for k, v in agreement.counters.items()})
        return metrics.render(extra)

    metrics_server = None
    if cfg.metrics.listen:
        host, _, port = cfg.metrics.listen.rpartition(":")
        try:
            metrics_server = await serve_metrics(host, int(port), render)
        except OSError as exc:
            raise NodeError(f"metrics.listen {cfg.metrics.listen}: {exc.strerror}") from None

    engine.start()
    await api_server.start()
    await peer_server.start()
    links.start()
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
                "cluster": genesis.name,
                "cluster_id": genesis.cluster_id.hex(),
                "api_port": api_port,
                "peer_port": peer_port,
                "metrics_port": metrics_server.sockets[0].getsockname()[1] if metrics_server else 0,
                "ops": replica.op_count(),
            }
        )
    )
    log.info("node %s serving api :%d peer :%d", identity.node_id, api_port, peer_port)
    stopper = asyncio.ensure_future(stop.wait())
    engine_task = engine._task
    assert engine_task is not None
    try:
        await asyncio.wait({stopper, engine_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        await health_servicer.enter_graceful_shutdown()
        await api_server.stop(grace=1)
        await peer_server.stop(grace=0.5)
        await links.stop()
        if not engine_task.done():
            await engine.stop()
        if metrics_server is not None:
            metrics_server.close()
        store.close()
        log.info("node %s stopped", identity.node_id)
    if engine_task.done() and engine_task.exception() is not None:
        raise NodeError(f"engine failed: {engine_task.exception()}")


def _bind(add, address: str, key: str) -> int:
    try:
        port = add(address)
    except RuntimeError as exc:
        raise NodeError(f"{key} {address}: cannot listen: {exc}") from None
    if port == 0:
        raise NodeError(f"{key} {address}: cannot listen (address in use?)")
    return port


def run_node(cfg: NodeConfig) -> None:
    """Blocking entry point for `synod node run`: runs until SIGTERM or SIGINT."""
    _setup_logging(cfg)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(cfg, stop, lambda line: print(line, flush=True))

    started = time.monotonic()
    try:
        asyncio.run(main())
    except DataDirError as exc:
        raise NodeError(str(exc)) from None
    log.info("ran %.1f s", time.monotonic() - started)
