"""The node's configuration: one schema, loaded from TOML, unknown keys rejected, frozen."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.replication.address import address_problem

from .errors import NodeBaseError

__all__ = [
    "AgreementSettings",
    "AgentConfig",
    "ApiConfig",
    "ConfigError",
    "ControllerConfig",
    "LogConfig",
    "MetricsConfig",
    "NodeConfig",
    "PeerConfig",
    "ReplicationConfig",
    "UpConfig",
    "WebConfig",
    "load_config",
    "parse_config",
]


class ConfigError(NodeBaseError):
    """A configuration fault; the message names the key path and what is wrong."""


@dataclass(frozen=True)
class ApiConfig:
    """Northbound and local API (clients: operators, controller, agent)."""

    listen: str = "127.0.0.1:7000"
    insecure_loopback: bool = False  # plaintext, only allowed on 127.0.0.1 (tests)
    rate_per_s: float = 20_000.0  # requests per second per client (token bucket)
    burst: int = 40_000
    message_bytes_max: int = 4 << 20
    pending_writes_max: int = 50_000  # rows waiting for group commit, all clients
    inflight_per_client_max: int = 256  # calls of one client being served at once
    # Before authentication (controller/node/guard.py; 0 turns a cap or timeout off): gRPC
    # closes connections over connections_max at accept; an address over its own cap has
    # its newest connections closed and new ones dropped until it is back under it.
    connections_max: int = 1_000  # open client connections, all addresses
    connections_per_source_max: int = 64  # open connections of one client address
    handshake_timeout_ms: int = 10_000  # accept to HTTP/2 settings, TLS included
    idle_timeout_ms: int = 300_000  # a connection without calls for this long is closed
    streams_per_connection_max: int = 100  # concurrent calls on one connection
    failed_logins_per_s: float = 10.0  # per client address (token bucket); past the burst
    failed_logins_burst: int = 100  # the address is banned: calls refused before any token
    ban_ms: int = 10_000  # lookup, connections closed, new ones dropped; doubled on repeats
    ban_ms_max: int = 600_000
    security_log_lines: int = 20  # failed logins, bans, gRPC's lines (a failed TLS handshake)
    security_log_interval_ms: int = 60_000  # logged per interval; the rest summed in one line
    quorum_timeout_ms: int = 5_000
    sql_time_ms_max: int = 2_000
    sql_rows_max: int = 10_000
    # Users' SQL runs on its own threads, never the engine's commit thread (sqlquery.py).
    sql_workers: int = 2  # threads running queries, all tokens (at least 1)
    sql_per_token_max: int = 2  # queries of one token running or waiting (at least 1)
    sql_queued_max: int = 8  # queries waiting for a worker, all tokens; beyond: refused
    # Longest string or blob a query may read or make (SQLITE_LIMIT_LENGTH). Some functions
    # (instr, replace, trim, LIKE) cost up to its square in one call, which no time limit
    # stops: up to about 1 s at 64 KiB on a 2-core VM (trim), 6-11 s at 1 MiB.
    sql_value_bytes_max: int = 64 << 10
    list_rows_max: int = 100_000
    watch_queue_max: int = 10_000  # events buffered per watcher before it is cut
    # The loop every API, peer link and the engine run on: uvloop (libuv) takes 12-29 %
    # more writes here than asyncio's own loop (decision 0104); "asyncio" if it misbehaves.
    event_loop: str = "uvloop"


@dataclass(frozen=True)
class PeerConfig:
    """Node-to-node sync over mutual TLS."""

    listen: str = "127.0.0.1:7100"
    advertise: str = ""  # address peers should dial (default: listen)
    peers: tuple[str, ...] = ()  # addresses of other members' peer ports
    message_bytes_max: int = 16 << 20
    queue_max: int = 4_096  # outbound messages waiting per peer (oldest dropped when full)
    batch_messages_max: int = 256  # messages per Deliver call
    inflight_max: int = 8  # Deliver calls being served per calling peer
    rate_per_s: float = 20_000.0  # messages per second taken from one peer (token bucket)
    burst: int = 40_000  # messages one peer may send at once above its rate
    connections_max: int = 256  # open connections from peers (as api.*; 0: off)
    connections_per_source_max: int = 32  # open connections of one address
    handshake_timeout_ms: int = 10_000  # accept to HTTP/2 settings, mutual TLS included
    idle_timeout_ms: int = 300_000  # a connection without calls for this long is closed
    streams_per_connection_max: int = 100  # concurrent calls on one connection
    connect_timeout_ms: int = 2_000
    deliver_timeout_ms: int = 5_000
    retry_ms_max: int = 2_000  # back-off cap when a peer is down


@dataclass(frozen=True)
class ReplicationConfig:
    sync_interval_ms: int = 200
    push_fanout: int = 3
    tick_interval_ms: int = 20
    group_commit_rows_max: int = 5_000  # rows folded into one op
    # all | sample | none: signatures checked at recovery (the tail above the latest
    # compacted checkpoint, and what the compaction kept; decision 0070)
    verify_on_start: str = "all"


@dataclass(frozen=True)
class AgreementSettings:
    """The agreement layer (controller/agreement) inside the node: decided slots."""

    enabled: bool = True  # false: no slots; membership only by invitation (decision 0030)
    propose_timeout_ms: int = 10_000  # default time a proposal may take (no quorum reachable)
    retry_ms: int = 600  # a ballot that made no progress for this long is retried
    backoff_ms_min: int = 20  # random back-off between ballots of dueling proposers
    backoff_ms_max: int = 1_600
    # Agreed checkpoints (decision 0070): proposed once this many ops were added since the
    # latest one, or this long after it if any was; 0 turns either trigger off.
    checkpoint_ops: int = 10_000
    checkpoint_ms: int = 300_000
    # Prune the ops below the latest stable checkpoint, from memory and the store (decision
    # 0070): a joining node starts from a peer's checkpoint; a voter removed without the
    # reason "decommissioned" pins it at its last op (it may come back to reunite).
    compact: bool = True


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = ""  # "HOST:PORT" serves Prometheus text at /metrics; "" = off


@dataclass(frozen=True)
class WebConfig:
    """The read-only web view (controller/web, docs/web.md): viewer tokens, TLS as the API."""

    listen: str = ""  # "HOST:PORT" serves the page; "" = off
    clients_max: int = 16  # live pages (server-sent event streams) open at once
    connections_max: int = 64  # open HTTP connections, all clients
    connections_per_source_max: int = 16  # open HTTP connections of one client address
    update_interval_ms: int = 250  # changes are folded into one update per interval
    refresh_interval_ms: int = 500  # reachability and digests are looked at this often


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "json"  # json | text


# The site's other daemons, which `synod up` starts beside the node (controller/up.py,
# docs/deploy.md); the node itself ignores these tables. Relative paths are read from `data`.
@dataclass(frozen=True)
class ControllerConfig:
    enabled: bool = False
    listen: str = "127.0.0.1:6653"  # OpenFlow listen address of the site controller
    index: int = 1  # unique in the cluster, 1..255 (low bits of its generation ids)
    controllers: tuple[str, ...] = ()  # every controller as SITE=HOST:PORT, same order everywhere
    token_file: str = "controller.token"  # the node API token it uses (operator role)
    apps: tuple[str, ...] = ("controller.openflow.synod_app",)
    args: tuple[str, ...] = ()  # more synod-controller flags


@dataclass(frozen=True)
class AgentConfig:
    enabled: bool = False
    # `synod agent run` and its flags; {site}, {api}, {data}, {ca} and {token_file} are
    # filled in from this file
    args: tuple[str, ...] = ("--site", "{site}", "--node", "{api}", "--node-token-file",
                             "{token_file}", "--node-ca", "{ca}", "--state-dir", "{data}/agent")
    token_file: str = "controller.token"


@dataclass(frozen=True)
class UpConfig:
    """How `synod up` supervises the site's daemons (controller/supervise.py)."""

    log_dir: str = "logs"  # one log per daemon
    ready_timeout_ms: int = 60_000  # spawn to ready, else the start failed
    backoff_ms_min: int = 500  # first restart delay after a crash, doubled per crash
    backoff_ms_max: int = 30_000
    stable_ms: int = 60_000  # a daemon ready this long has its crash count reset
    restarts_max: int = 10  # crashes in a row before up gives up (0: never)
    stop_timeout_ms: int = 10_000  # SIGTERM to SIGKILL


@dataclass(frozen=True)
class NodeConfig:
    data: str = ""
    site: str = ""
    api: ApiConfig = field(default_factory=ApiConfig)
    peer: PeerConfig = field(default_factory=PeerConfig)
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)
    agreement: AgreementSettings = field(default_factory=AgreementSettings)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    web: WebConfig = field(default_factory=WebConfig)
    log: LogConfig = field(default_factory=LogConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    up: UpConfig = field(default_factory=UpConfig)


_CHOICES = {
    "replication.verify_on_start": ("all", "sample", "none"),
    "api.event_loop": ("uvloop", "asyncio"),
    "log.level": ("debug", "info", "warning", "error"),
    "log.format": ("json", "text"),
}
_LISTEN = {"api.listen", "peer.listen", "metrics.listen", "web.listen"}  # port 0: any free port
_ADDRESSES = {*_LISTEN, "peer.advertise", "controller.listen"}  # and the lists below
_ADDRESS_LISTS = {"peer.peers"}
_SITE_ADDRESS_LISTS = {"controller.controllers"}  # SITE=HOST:PORT


def _build(cls: type, raw: Mapping[str, Any], path: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path or 'config'}: expected a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(f"{where}: unknown key (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in raw.items():
        f = fields[name]
        key = f"{path}.{name}" if path else name
        kwargs[name] = _value(f, value, key)
    return cls(**kwargs)


def _value(f: dataclasses.Field, value: Any, key: str) -> Any:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    if dataclasses.is_dataclass(default):
        return _build(type(default), value, key)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{key}: expected a non-negative integer, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"{key}: expected a positive number, got {value!r}")
        value = float(value)
    elif isinstance(default, tuple):
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings")
        for v in value:
            if key in _ADDRESS_LISTS:
                _check_address(v, key)
            elif key in _SITE_ADDRESS_LISTS:
                site, sep, address = v.partition("=")
                if not sep or not site:
                    raise ConfigError(f"{key}: {v!r} is not SITE=HOST:PORT")
                _check_address(address, key)
        value = tuple(value)
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(_CHOICES[key])}")
        if key in _ADDRESSES and value:
            _check_address(value, key)
    return value


def _check_address(value: str, key: str) -> None:
    problem = address_problem(value, listen=key in _LISTEN)
    if problem is not None:
        raise ConfigError(f"{key}: {problem}")


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_config(raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> NodeConfig:
    """Validate a config mapping (plus command-line overrides) into a frozen NodeConfig."""
    cfg = _build(NodeConfig, _merge(dict(raw), overrides or {}), "")
    if cfg.api.insecure_loopback and not cfg.api.listen.startswith("127.0.0.1:"):
        raise ConfigError("api.insecure_loopback: only allowed with api.listen on 127.0.0.1")
    for key in ("sql_workers", "sql_per_token_max", "sql_value_bytes_max"):
        if getattr(cfg.api, key) < 1:
            raise ConfigError(f"api.{key}: expected at least 1, got {getattr(cfg.api, key)}")
    for key in ("clients_max", "connections_max", "connections_per_source_max",
                "update_interval_ms", "refresh_interval_ms"):
        if getattr(cfg.web, key) < 1:
            raise ConfigError(f"web.{key}: expected at least 1, got {getattr(cfg.web, key)}")
    if not 1 <= cfg.controller.index <= 255:
        raise ConfigError(f"controller.index: expected 1 to 255, got {cfg.controller.index}")
    return cfg


def load_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> NodeConfig:
    """Read a TOML file (or nothing) and validate it; ConfigError names the file and key."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse_config(raw, overrides)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None
