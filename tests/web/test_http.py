"""The web view's HTTP layer against a real `synod node run --web` process (TLS, tokens)."""

from __future__ import annotations

import json
import socket
import ssl
import time

import pytest
from synod.v1 import northbound_pb2 as nb

from controller.node.config import ConfigError, parse_config
from controller.web.http import HttpError, parse_head
from tests.web.helpers import WebNode, fill, row

CLIENTS_MAX = 2
PER_SOURCE_MAX = 6


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    root = tmp_path_factory.mktemp("web-http")
    n = WebNode(root)
    conf = root / "node.toml"
    conf.write_text(f"[web]\nclients_max = {CLIENTS_MAX}\nupdate_interval_ms = 50\n"
                    f"connections_per_source_max = {PER_SOURCE_MAX}\n")
    n.proc.extra_args += ["--config", str(conf)]
    with n:
        fill(n.client(), sites=2, switches_per_site=2, flows=4)
        n.viewer = n.token("viewer")
        yield n


def _ops(node) -> int:
    with node.client() as c:
        return c.call(c.cluster.GetDigest, nb.GetDigestRequest()).ops


# --------------------------------------------------------------------------- pure rules

@pytest.mark.parametrize(
    ("lines", "status"),
    [
        ([b"POST /api/snapshot HTTP/1.1"], 405),
        ([b"DELETE / HTTP/1.1"], 405),
        ([b"GET / HTTP/1.1", b"Content-Length: 5"], 413),
        ([b"GET / HTTP/1.1", b"Transfer-Encoding: chunked"], 413),
        ([b"GET / HTTP/2.0"], 505),
        ([b"GET /"], 400),
        ([b"GET http://elsewhere/ HTTP/1.1"], 400),
        ([b"GET / HTTP/1.1", b"no colon"], 400),
        ([b"GET / HTTP/1.1", *[b"X: y"] * 65], 431),
    ],
)
def test_parse_head_refuses(lines, status):
    with pytest.raises(HttpError) as err:
        parse_head(lines)
    assert err.value.status == status


def test_parse_head_keeps_path_and_headers():
    r = parse_head([b"GET /api/events?x=1 HTTP/1.1", b"Authorization: Bearer t",
                    b"authorization: Bearer other"])
    assert (r.method, r.path, r.authorization) == ("GET", "/api/events", "Bearer t")


def test_web_config_is_off_by_default_and_checked():
    assert parse_config({}).web.listen == ""
    with pytest.raises(ConfigError, match=r"web\.listen"):
        parse_config({"web": {"listen": "nonsense"}})
    with pytest.raises(ConfigError, match=r"web\.clients_max: expected at least 1"):
        parse_config({"web": {"clients_max": 0}})
    with pytest.raises(ConfigError, match=r"web\.colour: unknown key"):
        parse_config({"web": {"colour": "red"}})


# --------------------------------------------------------------------------- a real node

@pytest.mark.parametrize("path", ["/api/snapshot", "/api/events"])
@pytest.mark.parametrize("auth", [None, "Bearer", "Bearer nonsense", "Basic abc",
                                  "Bearer synod_0123456789abcdef_wrongsecret"])
def test_no_valid_token_gets_401_and_no_data(node, path, auth):
    status, headers, body = node.get(path, headers={"Authorization": auth} if auth else {})
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")
    assert headers["cache-control"] == "no-store"
    text = body.decode()
    assert node.proc.info["node_id"] not in text and node.proc.info["cluster_id"] not in text
    assert "switches" not in text and "{" not in text


def test_viewer_token_gets_the_view(node):
    status, headers, body = node.get("/api/snapshot", token=node.viewer)
    assert status == 200 and headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    view = json.loads(body)
    assert view["node"]["node_id"] == node.proc.info["node_id"]
    assert len(view["topology"]["switches"]) == 4
    assert [s["name"] for s in view["topology"]["sites"]] == ["cloud", "edge1"]
    assert view["cluster"]["flows_total"] == 4
    assert view["cluster"]["members"][0]["self"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
@pytest.mark.parametrize("path", ["/", "/api/snapshot", "/api/events", "/app.js"])
def test_no_write_method_is_accepted(node, method, path):
    before = _ops(node)
    status, headers, _ = node.get(path, token=node.viewer, method=method,
                                  body=b'{"table": "flows"}')
    assert status == 405 and headers["allow"] == "GET, HEAD"
    assert _ops(node) == before


def test_a_body_on_a_get_is_refused(node):
    status, _, _ = node.get("/api/snapshot", token=node.viewer, body=b"x" * 10)
    assert status == 413


@pytest.mark.parametrize("path", ["/../server.py", "/vendor/../http.py", "/%2e%2e/http.py",
                                  "/static/app.js", "/vendor/", "/index.html/..", "//etc/passwd",
                                  "/app.js/", "/vendor/README.md"])
def test_only_the_known_files_are_served(node, path):
    status, _, body = node.get(path)
    assert status == 404 and body == b"not found\n"


@pytest.mark.parametrize(("path", "ctype", "cache"), [
    ("/", "text/html; charset=utf-8", "no-cache"),
    ("/app.js", "text/javascript; charset=utf-8", "no-cache"),
    ("/style.css", "text/css; charset=utf-8", "no-cache"),
    ("/vendor/cytoscape.min.js", "text/javascript; charset=utf-8",
     "public, max-age=86400, immutable"),
    ("/vendor/cytoscape.LICENSE.txt", "text/plain; charset=utf-8",
     "public, max-age=86400, immutable"),
])
def test_static_files_have_type_cache_and_csp(node, path, ctype, cache):
    status, headers, body = node.get(path)
    assert status == 200 and body
    assert (headers["content-type"], headers["cache-control"]) == (ctype, cache)
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self';" in csp
    assert "form-action 'none'" in csp and "unsafe" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    status, headers, body = node.get(path, method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0


def _raw(node, data: bytes, timeout_s: float = 10) -> bytes:
    ctx = ssl.create_default_context(cafile=str(node.data / "ca.crt"))
    with socket.create_connection(("127.0.0.1", node.web_port), timeout=timeout_s) as s, \
            ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
        t.sendall(data)
        out = b""
        while chunk := t.recv(65536):
            out += chunk
        return out


def test_oversized_heads_are_refused(node):
    assert _raw(node, b"GET / HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n").startswith(
        b"HTTP/1.1 431")
    many = b"".join(b"X%d: y\r\n" % i for i in range(80))
    assert _raw(node, b"GET / HTTP/1.1\r\n" + many + b"\r\n").startswith(b"HTTP/1.1 431")


def test_plaintext_http_gets_no_page(node):
    with socket.create_connection(("127.0.0.1", node.web_port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        try:
            answer = s.recv(65536)
        except (ConnectionError, TimeoutError):
            answer = b""
    assert b"Synod" not in answer and b"<html" not in answer


class Events:
    """A raw event stream over TLS; events() yields (event, data) as they arrive."""

    def __init__(self, node, token: str) -> None:
        ctx = ssl.create_default_context(cafile=str(node.data / "ca.crt"))
        raw = socket.create_connection(("127.0.0.1", node.web_port), timeout=10)
        self.sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        self.sock.sendall(b"GET /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                          + token.encode() + b"\r\n\r\n")
        self.buffer = b""
        head = self._until(b"\r\n\r\n")
        self.status = int(head.split(b" ")[1])
        self.head = head.decode()

    def _until(self, sep: bytes) -> bytes:
        while sep not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("stream closed")
            self.buffer += chunk
        part, _, self.buffer = self.buffer.partition(sep)
        return part

    def next(self) -> tuple[str, str]:
        block = self._until(b"\n\n").decode()
        event = next((ln[7:] for ln in block.splitlines() if ln.startswith("event: ")), "")
        data = "".join(ln[6:] for ln in block.splitlines() if ln.startswith("data: "))
        return event, data

    def close(self) -> None:
        self.sock.close()


def test_events_start_with_the_view_and_follow_changes(node):
    stream = Events(node, node.viewer)
    try:
        assert stream.status == 200 and "text/event-stream" in stream.head
        assert "Cache-Control: no-store" in stream.head
        event, data = stream.next()
        assert event == "snapshot" and len(json.loads(data)["topology"]["switches"]) == 4
        new = "00000000000000ff"
        with node.client() as c:
            from synod.v1 import local_pb2

            c.call(c.local.ReportTopology, local_pb2.TopologyReport(rows=[
                row("switches", [new], name="late", site="edge1", master="edge1",
                    generation_id=7, connected=True)]))
        started = time.monotonic()
        while True:  # pushed by the engine's watcher, not asked for
            event, data = stream.next()
            dpids = [s["dpid"] for s in json.loads(data)["topology"]["switches"]]
            if new in dpids:
                break
        assert time.monotonic() - started < 3
    finally:
        stream.close()


def test_live_pages_are_bounded(node):
    streams = [Events(node, node.viewer) for _ in range(CLIENTS_MAX)]
    try:
        for s in streams:
            assert s.next()[0] == "snapshot"
        status, headers, body = node.get("/api/events", token=node.viewer)
        assert status == 503 and headers["retry-after"] == "5"
        assert b"web.clients_max" in body
    finally:
        for s in streams:
            s.close()
    deadline = time.monotonic() + 5  # closed streams free their places
    while True:
        probe = Events(node, node.viewer)
        ok = probe.status == 200
        probe.close()
        if ok or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert ok


def test_a_revoked_token_ends_its_stream_and_gets_nothing_more(node):
    with node.client() as c:
        made = c.call(c.admin.CreateToken, nb.CreateTokenRequest(role="viewer"))
    stream = Events(node, made.token)
    try:
        assert stream.next()[0] == "snapshot"
        with node.client() as c:
            c.call(c.admin.RevokeToken, nb.RevokeTokenRequest(id=made.info.id))
            c.call(c.rows.Put, nb.PutRequest(rows=[row("kv", ["poke"], value=b"1")]))
        event = ""
        while event != "denied":  # at most the update already on its way, then denied
            event, data = stream.next()
        assert "revoked" in json.loads(data)
    finally:
        stream.close()
    assert node.get("/api/snapshot", token=made.token)[0] == 401


def test_decided_slots_show_newest_first(node):
    from controller.replication import encode

    with node.client() as c:
        for n in (1, 2):
            c.call(c.slots.Propose, nb.ProposeRequest(slot=f"alloc/vlan/{n}",
                                                      value=encode(f"site-{n}"),
                                                      timeout_ms=5_000), 10)
    slots = json.loads(node.get("/api/snapshot", token=node.viewer)[2])["cluster"]["slots"]
    assert [(s["slot"], s["value"], s["voters"]) for s in slots[:2]] == [
        ("alloc/vlan/2", "'site-2'", 1), ("alloc/vlan/1", "'site-1'", 1)]


def test_connections_of_one_address_are_bounded(node):
    ctx = ssl.create_default_context(cafile=str(node.data / "ca.crt"))
    idle = []
    try:
        for _ in range(PER_SOURCE_MAX):  # connected, saying nothing (a slow client)
            raw = socket.create_connection(("127.0.0.1", node.web_port), timeout=10)
            idle.append(ctx.wrap_socket(raw, server_hostname="127.0.0.1"))
        status, headers, body = node.get("/")
        assert status == 503 and b"web.connections_per_source_max" in body
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + 5  # closed ones free their places
    while node.get("/")[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
