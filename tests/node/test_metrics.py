"""The node's /metrics endpoint, scraped over HTTP and read with prometheus_client's parsers:
every family typed and documented, counters `_total`, durations in seconds, process and
build info, and per-method gRPC counts with their status codes."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from synod.v1 import northbound_pb2 as nb

import controller
from controller.node.client import ClientError
from controller.node.datadir import init_data_dirs
from controller.node.metrics import COUNTERS, GAUGES, HISTOGRAMS, Histogram, Metrics

from .conftest import InProcessNode, free_port


def scrape(port: int, accept: str = "") -> tuple[str, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                     headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.read().decode(), answer.headers["Content-Type"]


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(fams: dict, family: str, name: str, **labels) -> float | None:
    for s in fams[family].samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


def check_conventions(fams: dict) -> None:
    """What any Prometheus user expects of an exposition (issue 15)."""
    for name, fam in fams.items():
        assert fam.type != "unknown", f"{name} has no TYPE"
        assert fam.documentation.strip(), f"{name} has no HELP"
        assert not name.endswith("_ms") and "_ms_" not in name, f"{name}: not in seconds"
        if fam.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in fam.samples), name
        if fam.type == "histogram":
            assert name.endswith("_seconds") or name.endswith("_bytes"), name


@pytest.fixture
def node(tmp_path):
    d = tmp_path / "solo"
    init_data_dirs([d], "solo")
    port = free_port()
    n = InProcessNode(d, metrics={"listen": f"127.0.0.1:{port}"}).start()
    n.metrics_port = port
    yield n
    n.stop()


def test_the_endpoint_follows_prometheus_conventions(node):
    with node.client() as c:
        c.call(c.cluster.GetStatus, nb.GetStatusRequest())
        c.call(c.rows.Put, nb.PutRequest(rows=[c.row("kv", "a", {"value": "01"})]))
        assert c.call(c.rows.Get, nb.GetRequest(table="kv", key=[nb.Value(text_value="a")]))
        events = c.stream(c.rows.Watch, nb.WatchRequest(table="kv"))
        assert next(events).row.table == "kv"  # one snapshot row, then the client leaves
        events.close()
    with node.client("synod_0123456789abcdef.wrong") as bad, pytest.raises(ClientError):
        bad.call(bad.cluster.GetStatus, nb.GetStatusRequest())

    deadline = time.monotonic() + 10  # the server sees the watcher leave a moment later
    while True:
        text, content_type = scrape(node.metrics_port)
        fams = families(text)
        if "Watch" in text.split("grpc_server_handled_total", 1)[-1] \
                or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert content_type.startswith("text/plain")
    check_conventions(fams)

    # process_*, python_* and build info
    for name in ("process_cpu_seconds", "process_resident_memory_bytes",
                 "process_start_time_seconds", "process_open_fds", "python_info"):
        assert name in fams, name
    assert sample(fams, "synod_build_info", "synod_build_info",
                  version=controller.__version__) == 1
    assert sample(fams, "synod_node_info", "synod_node_info",
                  node_id=node.info["node_id"], cluster="solo") == 1

    # every declared family is there, under its documented name
    for base, fam in COUNTERS.items():
        assert (fam.name or f"synod_{base}_total").removesuffix("_total") in fams, base
    for base in GAUGES:
        assert f"synod_{base}" in fams, base
    for base in HISTOGRAMS:
        assert fams[f"synod_{base}_seconds"].type == "histogram", base

    # per-method gRPC counts by code, and latency in seconds
    def handled(method: str, code: str) -> float | None:
        return sample(fams, "grpc_server_handled", "grpc_server_handled_total",
                      grpc_method=method, grpc_code=code)

    assert handled("Put", "OK") == 1
    assert handled("GetStatus", "OK") == 1 and handled("GetStatus", "UNAUTHENTICATED") == 1
    assert sample(fams, "grpc_server_handled", "grpc_server_handled_total",
                  grpc_method="Watch", grpc_type="server_stream") == 1
    assert sample(fams, "grpc_server_started", "grpc_server_started_total",
                  grpc_service="synod.v1.RowService", grpc_method="Put") == 1
    put_s = sample(fams, "grpc_server_handling_seconds", "grpc_server_handling_seconds_sum",
                   grpc_method="Put")
    assert put_s is not None and 0 < put_s < 10

    # the node's own families keep their meaning
    assert sample(fams, "synod_api_calls", "synod_api_calls_total", method="Put") == 1
    assert sample(fams, "synod_api_denied", "synod_api_denied_total",
                  reason="unauthenticated") == 1
    assert sample(fams, "synod_rows_written", "synod_rows_written_total") == 1
    assert sample(fams, "synod_write_local_seconds", "synod_write_local_seconds_count") == 1
    write_s = sample(fams, "synod_write_local_seconds", "synod_write_local_seconds_sum")
    assert write_s is not None and 0 < write_s < 10
    assert sample(fams, "synod_replica_events", "synod_replica_events_total",
                  event="applied") >= 1
    assert sample(fams, "synod_members", "synod_members") == 1


def test_openmetrics_when_asked(node):
    text, content_type = scrape(node.metrics_port, "application/openmetrics-text")
    assert content_type.startswith("application/openmetrics-text")
    fams = {f.name: f for f in openmetrics_families(text)}  # raises on a malformed exposition
    assert fams["synod_build_info"].type == "gauge" and "grpc_server_handled" in fams


def test_other_paths_are_not_found(node):
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/", timeout=10)
    assert e.value.code == 404


def test_undeclared_metrics_are_programmer_errors():
    m = Metrics()
    m.inc("peer_refused|rate")
    m.inc("api_calls|method=Put")
    for bad in ("no_such_counter", "peer_refused", "quorum_timeouts|x", "api_calls|reason=x"):
        with pytest.raises(AssertionError):
            m.inc(bad)
    with pytest.raises(AssertionError):
        m.observe("write_local_ms", 0.1)


def test_histogram_buckets_are_cumulative_seconds():
    h = Histogram()
    for s in (0.0004, 0.003, 0.003, 7.0):
        h.observe(s)
    b = dict(h.buckets())
    assert b["0.0005"] == 1 and b["0.005"] == 3 and b["5.0"] == 3 and b["+Inf"] == 4
    assert h.n == 4 and h.total_s == pytest.approx(7.0064)
