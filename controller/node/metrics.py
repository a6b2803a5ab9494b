"""The node's metrics: declared families, rendered by prometheus_client, served over HTTP.

Every family the node exposes is declared here once, with its HELP text and type, so the
exposition never has an `unknown` family (decision 0061; names in docs/operations.md).
Callers count by internal name: `inc("quorum_timeouts")`; a family with a label takes its
value after a bar, `inc("peer_refused|rate")` or, naming the label, `inc("api_calls|method=Put")`.
Durations are observed in seconds (`observe("commit", seconds)`).
"""

from __future__ import annotations

import asyncio
import bisect
import platform
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import controller

__all__ = [
    "BUCKETS_S",
    "COUNTERS",
    "GAUGES",
    "HISTOGRAMS",
    "Family",
    "Histogram",
    "Metrics",
    "serve_metrics",
]

# Upper bounds of the latency buckets, seconds: 0.5 ms to 5 s, as the ms buckets were.
BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True)
class Family:
    """A declared family: its HELP text, the name of its one label (counters and gauges
    with a label), and its exposed name when that is not `synod_<internal name>`."""

    help: str
    label: str = ""
    name: str = ""


COUNTERS: dict[str, Family] = {
    "api_calls": Family("API calls received (before authentication), by method", "method"),
    "api_denied": Family("API calls refused: unauthenticated, permission_denied, "
                         "resource_exhausted (rate or in-flight limit), banned", "reason"),
    "api_bad_request": Family("API calls refused as invalid: outside the schema or a limit"),
    "api_failed_logins": Family("API calls with a missing, unknown or wrong token"),
    "api_bans": Family("client addresses banned for too many failed logins"),
    "api_connections_closed": Family("API connections closed by the per-address cap or a ban"),
    "peer_failed_logins": Family("peer calls with a missing, unknown or wrong token"),
    "peer_bans": Family("peer addresses banned for too many failed logins"),
    "peer_connections_closed": Family("peer connections closed by the per-address cap"),
    "peer_dropped": Family("sync messages to peers dropped: queue_full, down", "reason"),
    "peer_errors": Family("outbound peer links that failed (the link retries)"),
    "peer_refused": Family("calls from peers refused before their content was read: "
                           "certificate, not_member, inflight, rate, inbound_full", "reason"),
    "peer_rejected": Family("messages from peers rejected, by reason", "reason"),
    "sync_bytes_sent": Family("sync bytes sent to peers", name="synod_sync_sent_bytes_total"),
    "sync_bytes_received": Family("sync bytes received from peers",
                                  name="synod_sync_received_bytes_total"),
    "secessions": Family("secessions this node carried out"),
    "secessions_refused": Family("secession requests or notices refused"),
    "snapshots_served": Family("checkpoint snapshots streamed to peers that lacked pruned ops"),
    "snapshots_installed": Family("checkpoint snapshots fetched, checked and installed"),
    "below_peer_checkpoint": Family("sync answers saying a peer pruned ops this node lacks"),
    "snapshot_catch_ups": Family("times the running node reopened to catch up by snapshot: "
                                 "installed, none (no peer gave one that checks out)",
                                 "outcome"),
    "writes_refused": Family("rows of writes refused by the engine: queue_full, not_member",
                             "reason"),
    "quorum_timeouts": Family("quorum writes that timed out waiting for a majority"),
    "members_invited": Family("invitation ops signed by this node"),
    "ops_stored": Family("ops stored by this node (own and peers')"),
    "rows_written": Family("rows written by this node's clients"),
    "proposals": Family("slot proposals started by this node"),
    "proposals_refused": Family("slot proposals refused (forbidden or malformed)"),
    "proposals_no_quorum": Family("slot proposals that ended without a reachable quorum"),
    "slot_decisions": Family("slot decisions learned"),
    "watchers_cut": Family("watch streams cut because their client fell behind"),
    "sql_refused": Family("SQL queries refused: busy, limit, invalid", "reason"),
    "joins_admitted": Family("join requests answered with an invitation"),
    "joins_refused": Family("join requests refused"),
}

GAUGES: dict[str, Family] = {
    "peers_up": Family("peers this node has a working link to"),
    "ops": Family("ops in this node's log"),
    "members": Family("members of this node's cluster"),
    "api_connections": Family("open API connections"),
    "peer_connections": Family("open peer connections"),
    "api_sources_refused": Family("client addresses whose new API connections are dropped"),
    "peer_sources_refused": Family("peer addresses whose new connections are dropped"),
}

HISTOGRAMS: dict[str, Family] = {
    "write_local": Family("time from a write's arrival until it is durable on this node"),
    "write_quorum": Family("time from a write's arrival until a majority holds it"),
    "propose": Family("time a slot proposal took to be decided"),
    "commit": Family("time one group commit took (sign, store, apply)"),
    "memory_trim": Family("time malloc_trim took after ops were pruned (decision 0102)"),
}

# Counters of the sans-I/O cores, by event (an outcome or a rejection reason); the cores own
# their keys, so each core's counters are one family with an `event` label.
CORE_COUNTERS: dict[str, Family] = {
    "replica": Family("ops and messages taken in by the replica core, by outcome "
                      "(applied, buffered, ...) or rejection reason", "event",
                      "synod_replica_events_total"),
    "agreement": Family("agreement engine events, by outcome or rejection reason", "event",
                        "synod_agreement_events_total"),
    "lineage": Family("lineage coordinator events (secession, reunion)", "event",
                      "synod_lineage_events_total"),
}

GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")


class Histogram:
    """Cumulative-bucket latency histogram in seconds (BUCKETS_S, then +Inf)."""

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS_S) + 1)
        self.total_s = 0.0
        self.n = 0

    def observe(self, seconds: float) -> None:
        assert seconds >= 0, seconds
        self.counts[bisect.bisect_left(BUCKETS_S, seconds)] += 1
        self.total_s += seconds
        self.n += 1

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        cumulative = 0
        for bound, count in zip((*BUCKETS_S, float("inf")), self.counts, strict=True):
            cumulative += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        return out


def _split(name: str, families: Mapping[str, Family]) -> tuple[str, str]:
    """'base', 'base|value' or 'base|label=value' -> (base, value); base is declared, and
    has a value exactly when its family has a label."""
    base, sep, rest = name.partition("|")
    family = families.get(base)
    assert family is not None, f"metric {base!r} is not declared in controller/node/metrics.py"
    assert bool(sep) == bool(family.label), f"metric {name!r}: its label is {family.label!r}"
    label, eq, value = rest.partition("=")
    assert not eq or label == family.label, f"metric {base!r} has no label {label!r}"
    return base, value if eq else rest


class Metrics:
    """A node's metrics: counters by internal name, gauges read at scrape time, latency
    histograms, and per-method gRPC counts (filled by controller/node/grpcmetrics.py)."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()  # also reported by GetStatus
        self.histograms: dict[str, Histogram] = {}
        self.gauges: dict[str, Callable[[], float]] = {}
        self.grpc_started: Counter[tuple[str, str, str]] = Counter()
        self.grpc_handled: Counter[tuple[str, str, str, str]] = Counter()
        self.grpc_seconds: dict[tuple[str, str, str], Histogram] = {}
        # What render() adds when the node serves metrics (server.py sets them).
        self.cores: Callable[[], Mapping[str, Mapping[str, int]]] = dict
        self.node_info: Callable[[], Mapping[str, str]] = dict

    def inc(self, name: str, n: int = 1) -> None:
        _split(name, COUNTERS)
        self.counters[name] += n

    def observe(self, name: str, seconds: float) -> None:
        assert name in HISTOGRAMS, f"histogram {name!r} is not declared"
        h = self.histograms.get(name)
        if h is None:
            h = self.histograms[name] = Histogram()
        h.observe(seconds)

    def observe_call(self, labels: tuple[str, str, str], code: str, seconds: float) -> None:
        """One finished gRPC call: its type, service, method, status code and duration."""
        self.grpc_handled[(*labels, code)] += 1
        h = self.grpc_seconds.get(labels)
        if h is None:
            h = self.grpc_seconds[labels] = Histogram()
        h.observe(seconds)

    # ------------------------------------------------------------------- exposition
    def collect(self) -> Iterator:
        """The node's families for prometheus_client (a Collector's collect())."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        build = GaugeMetricFamily("synod_build_info", "Synod's version and Python's, always 1",
                                  labels=["version", "python"])
        build.add_metric([controller.__version__, platform.python_version()], 1)
        yield build
        info = dict(self.node_info())
        if info:
            node = GaugeMetricFamily("synod_node_info", "this node's id and cluster, always 1",
                                     labels=sorted(info))
            node.add_metric([info[k] for k in sorted(info)], 1)
            yield node
        by_family: dict[str, list[tuple[str, int]]] = {}
        for key, value in sorted(dict(self.counters).items()):
            base, label_value = _split(key, COUNTERS)
            by_family.setdefault(base, []).append((label_value, value))
        for base, family in COUNTERS.items():
            name = (family.name or f"synod_{base}_total").removesuffix("_total")
            out = CounterMetricFamily(name, family.help,
                                      labels=[family.label] if family.label else None)
            for label_value, value in by_family.get(base, [("", 0)] if not family.label else []):
                out.add_metric([label_value] if family.label else [], value)
            yield out
        cores = self.cores()
        for core, family in CORE_COUNTERS.items():
            out = CounterMetricFamily(family.name.removesuffix("_total"), family.help,
                                      labels=[family.label])
            for event, value in sorted((str(k), v) for k, v in cores.get(core, {}).items()):
                out.add_metric([event], value)
            yield out
        for base, family in GAUGES.items():
            fn = self.gauges.get(base)
            if fn is not None:
                yield GaugeMetricFamily(f"synod_{base}", family.help, value=fn())
        unknown = set(self.gauges) - set(GAUGES)
        assert not unknown, f"gauges not declared in metrics.py: {sorted(unknown)}"
        for base, family in HISTOGRAMS.items():
            histogram = HistogramMetricFamily(f"synod_{base}_seconds", family.help + ", seconds")
            h = self.histograms.get(base) or Histogram()
            histogram.add_metric([], h.buckets(), h.total_s)
            yield histogram
        yield from self._grpc_families()

    def _grpc_families(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        started = CounterMetricFamily("grpc_server_started", "gRPC calls started on the "
                                      "server", labels=list(GRPC_LABELS))
        for labels, n in sorted(dict(self.grpc_started).items()):
            started.add_metric(list(labels), n)
        handled = CounterMetricFamily("grpc_server_handled", "gRPC calls completed on the "
                                      "server, by status code",
                                      labels=[*GRPC_LABELS, "grpc_code"])
        for labels4, n in sorted(dict(self.grpc_handled).items()):
            handled.add_metric(list(labels4), n)
        seconds = HistogramMetricFamily("grpc_server_handling_seconds", "time the server took "
                                        "to handle a gRPC call, seconds",
                                        labels=list(GRPC_LABELS))
        for labels, h in sorted(dict(self.grpc_seconds).items()):
            seconds.add_metric(list(labels), h.buckets(), h.total_s)
        yield from (started, handled, seconds)

    def registry(self):
        """A prometheus_client registry of this node's families plus the process's
        (process_*, python_*); one per node, so in-process test nodes do not mix."""
        from controller.prometheus import process_registry

        return process_registry(self)


async def serve_metrics(host: str, port: int, registry) -> asyncio.Server:
    """A minimal HTTP/1.0 server on the node's loop: GET /metrics answers the Prometheus
    text (or OpenMetrics, when the Accept header asks for it), anything else 404. It runs
    on the loop so that collecting reads the node's state without locks."""
    from prometheus_client.exposition import choose_encoder

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            accept = ""
            for _ in range(100):  # headers: bounded in count, each by the reader's limit
                header = await asyncio.wait_for(reader.readline(), 5)
                if header in (b"\r\n", b"\n", b""):
                    break
                name, _, value = header.decode("latin-1").partition(":")
                if name.strip().lower() == "accept":
                    accept = value.strip()
            parts = line.decode("latin-1").split()
            if len(parts) >= 2 and parts[0] == "GET" and parts[1].split("?")[0] == "/metrics":
                encode, content_type = choose_encoder(accept)
                body, status = encode(registry), "200 OK"
            else:
                body, status, content_type = b"not found\n", "404 Not Found", "text/plain"
            writer.write(
                f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, limit=8192)
