"""Floods before authentication (issue 10, part 4): unauthenticated calls, half-open
connections, failed logins. Loopback only; the flooding side comes from 127.0.0.2 so the
authenticated client (127.0.0.1) is another source. Every wait is bounded and every
process and socket is cleaned up, also on failure."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from synod.v1 import northbound_pb2 as nb

from controller.node.client import Client, ClientError
from controller.node.datadir import init_data_dirs

from .conftest import InProcessNode, free_port

ATTACKER = "127.0.0.2"  # all of 127/8 is loopback on Linux

# Run as `python -c FLOODER PORT CALLS SECONDS`: CALLS concurrent unauthenticated GetStatus
# calls for SECONDS on one channel, through a relay that dials the node from ATTACKER.
# Prints {"ready": true} once the flood runs, then the status codes it got (JSON).
FLOODER = r"""
import asyncio, json, sys, time
import grpc
from synod.v1 import northbound_pb2 as nb, northbound_pb2_grpc as nbg

PORT, CALLS, SECONDS = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])

async def pipe(reader, writer):
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()

async def relay(reader, writer):
    try:
        up = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", PORT, local_addr=("127.0.0.2", 0)), 3)
    except (OSError, asyncio.TimeoutError):
        writer.close()
        return
    await asyncio.gather(pipe(reader, up[1]), pipe(up[0], writer))

async def main():
    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    target = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    counts = {}
    end = time.monotonic() + SECONDS
    async with grpc.aio.insecure_channel(target) as channel:
        stub = nbg.ClusterServiceStub(channel)

        async def one():
            while time.monotonic() < end:
                try:
                    await stub.GetStatus(nb.GetStatusRequest(), timeout=2)
                    code = "OK"
                except grpc.aio.AioRpcError as exc:
                    code = exc.code().name
                    if code != "UNAUTHENTICATED":
                        await asyncio.sleep(0.05)  # refused: do not spin this small machine
                counts[code] = counts.get(code, 0) + 1

        print(json.dumps({"ready": True}), flush=True)
        await asyncio.gather(*(one() for _ in range(CALLS)))
    server.close()
    print(json.dumps(counts), flush=True)

asyncio.run(main())
"""


def _percentiles(samples: list[float]) -> tuple[float, float]:
    xs = sorted(samples)
    return xs[len(xs) // 2] * 1000, xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000


def _status_latencies(client: Client, until: float, n_max: int) -> list[float]:
    out: list[float] = []
    while len(out) < n_max and time.monotonic() < until:
        t = time.perf_counter()
        client.call(client.cluster.GetStatus, nb.GetStatusRequest(), timeout_s=10)
        out.append(time.perf_counter() - t)
    return out


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_unauthenticated_flood_does_not_starve_an_authenticated_client(tmp_path):
    """500 concurrent unauthenticated calls (issue 10: they tripled `synod status` latency;
    here p99 went from ~1 ms to 230-300 ms): the authenticated client's p99 stays within
    5x its idle p99 or 50 ms, whichever is larger."""
    init_data_dirs([tmp_path / "n"], "flood")
    node = InProcessNode(tmp_path / "n").start()
    flooder = None
    try:
        with node.client() as c:
            _status_latencies(c, time.monotonic() + 5, 50)  # warm up
            idle = _status_latencies(c, time.monotonic() + 10, 400)
            port = node.api.rpartition(":")[2]
            flooder = subprocess.Popen([sys.executable, "-c", FLOODER, port, "500", "8"],
                                       stdout=subprocess.PIPE, start_new_session=True)
            assert json.loads(flooder.stdout.readline()) == {"ready": True}
            time.sleep(0.5)  # the flood is on
            flood = _status_latencies(c, time.monotonic() + 6, 20_000)
            out, _ = flooder.communicate(timeout=30)
        counts = json.loads(out.decode().strip().splitlines()[-1])
        (i50, i99), (f50, f99) = _percentiles(idle), _percentiles(flood)
        print(f"\nidle: {len(idle)} calls p50 {i50:.2f} ms p99 {i99:.2f} ms; under the flood: "
              f"{len(flood)} calls p50 {f50:.2f} ms p99 {f99:.2f} ms; flooder got {counts}")
        assert f99 <= max(5 * i99, 50.0), f"authenticated p99 {f99:.1f} ms (idle {i99:.1f} ms)"
    finally:
        if flooder is not None:
            _kill(flooder)
        node.stop()


def _node_fd_limit() -> None:  # in the child, before exec: a common default limit
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


class _RealNode:
    """`synod node run` (TLS API) with a config file, 1,024 descriptors, its log in a file;
    stop() ends its process group (the node and its log relay)."""

    def __init__(self, tmp_path: Path, config: str) -> None:
        self.data = tmp_path / "n"
        init_data_dirs([self.data], "flood")
        self.api_port, self.peer_port = free_port(), free_port()
        (tmp_path / "node.toml").write_text(config)
        self.log = tmp_path / "node.log"
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from controller.cli import main; main()", "node", "run",
                 "--data", str(self.data), "--config", str(tmp_path / "node.toml"),
                 "--api", f"127.0.0.1:{self.api_port}",
                 "--peer-listen", f"127.0.0.1:{self.peer_port}"],
                stdout=subprocess.PIPE, stderr=logf, preexec_fn=_node_fd_limit,
                start_new_session=True)
        try:
            ready = self.proc.stdout.readline()  # the node prints it or exits
            assert ready.startswith(b"{"), self.log.read_text()[-2000:]
        except BaseException:
            self.stop()
            raise
        self.token = (self.data / "admin.token").read_text().strip()

    @property
    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    @property
    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def status(self) -> str:
        """A new authenticated client's GetStatus: 'ok in N ms' or 'failed: why'."""
        t = time.monotonic()
        try:
            with Client(f"127.0.0.1:{self.api_port}", self.token, str(self.data / "ca.crt"),
                        timeout_s=5) as c:
                c.call(c.cluster.GetStatus, nb.GetStatusRequest())
            return f"ok in {(time.monotonic() - t) * 1000:.0f} ms"
        except ClientError as exc:
            return f"failed: {exc}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            _kill(self.proc)
        with contextlib.suppress(ProcessLookupError):  # the relay ends at EOF; make sure
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                os.killpg(self.proc.pid, 0)
                time.sleep(0.05)
            os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.mark.parametrize("server", ["api", "peer"])
def test_half_open_connections_do_not_exhaust_a_real_node(tmp_path, server):
    """3,000 TCP connections that never send a byte (issue 10: 22,000 exhausted the node's
    descriptors, status failed, RSS stayed high) against a `synod node run` process with
    1,024 descriptors: the node keeps answering new authenticated clients, holds at most
    the total cap of them and mostly the per-source cap, and its descriptors and memory
    come back afterwards."""
    per_source = 50
    node = _RealNode(tmp_path, f"[{server}]\nconnections_max = 300\n"
                               f"connections_per_source_max = {per_source}\n"
                               "handshake_timeout_ms = 2000\n")
    port = node.api_port if server == "api" else node.peer_port
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    n = min(3_000, hard - 200)
    socks: list[socket.socket] = []
    try:
        assert node.status().startswith("ok")
        time.sleep(1)
        fds0, rss0, log0 = node.fds, node.rss_mb, node.log.stat().st_size
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1_000), hard))
        started = time.monotonic()
        for _ in range(n):
            s = socket.socket()
            socks.append(s)
            s.setblocking(False)
            s.bind((ATTACKER, 0))
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
        print(f"\n{server} port: before: {fds0} fds, {rss0:.0f} MB; opened {n} half-open "
              f"connections in {time.monotonic() - started:.2f} s")
        during, answers = [], []
        while time.monotonic() - started < 6:
            time.sleep(0.5)
            during.append((node.fds, node.rss_mb))
            if len(answers) < 3 and time.monotonic() - started > 1:
                # A client retries a refused connection once (gRPC's own reconnect would):
                # under a busy box the guard's 0.25 s sweep can lag the flood's first burst.
                answer = node.status()
                if not answer.startswith("ok"):
                    time.sleep(0.3)
                    answer = node.status() + f" (retried after: {answer})"
                answers.append(answer)
        print(f"during (every 0.5 s): fds {[f for f, _ in during]}, RSS max "
              f"{max(r for _, r in during):.0f} MB; new authenticated clients: {answers}")
        for s in socks:
            s.close()
        socks.clear()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and node.fds > fds0 + 5:
            time.sleep(0.2)
        time.sleep(1)
        fds1, rss1 = node.fds, node.rss_mb
        print(f"after: {fds1} fds, {rss1:.0f} MB, log grew {node.log.stat().st_size - log0} B, "
              f"status {node.status()}")
        assert all(a.startswith("ok") for a in answers), answers
        # The total cap always holds; the per-source cap most of the time: connections the
        # kernel completed into the listen backlog before the guard's filter went in are
        # accepted as handshake timeouts free slots, a burst the next sweep cuts back.
        fds_during = sorted(f for f, _ in during[2:])
        assert fds_during[-1] <= fds0 + 300 + 20, fds_during
        assert fds_during[len(fds_during) // 2] <= fds0 + per_source + 20, fds_during
        assert fds1 <= fds0 + 5
        assert rss1 <= rss0 + 40
    finally:
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        node.stop()


def test_failed_tls_handshakes_are_logged_rate_limited(tmp_path):
    """Issue 10: each failed TLS handshake wrote a ~150-200 B line of gRPC's own log."""
    node = _RealNode(tmp_path, "[api]\nsecurity_log_lines = 5\n"
                               "security_log_interval_ms = 1000\n")
    try:
        time.sleep(0.5)
        size0, n = node.log.stat().st_size, 300
        started = time.monotonic()
        for i in range(n):
            with socket.create_connection(("127.0.0.1", node.api_port), timeout=5) as s:
                s.sendall(b"\x16\x03\x01\x00\x05hello" if i % 2 else b"GET / HTTP/1.1\r\n\r\n")
                with contextlib.suppress(OSError):
                    s.recv(100)  # the server's alert, or its close
        took = time.monotonic() - started
        time.sleep(1.5)  # the interval ends: the relay reports what it suppressed
        assert node.status().startswith("ok")
    finally:
        node.stop()
    text = node.log.read_bytes()[size0:].decode(errors="replace")
    lines = text.splitlines()
    failed = [ln for ln in lines if "Handshake failed" in ln]
    print(f"\n{n} failed handshakes in {took:.1f} s: {len(text)} B of log "
          f"({len(text) / n:.1f} B each), {len(failed)} lines about them:\n" + "\n".join(
              ln for ln in lines if "Handshake failed" in ln or "suppressed" in ln))
    assert len(failed) <= 5 * (int(took) + 2)  # 5 per location per second at most
    assert any("suppressed" in ln for ln in lines)
    assert len(text) < 20 * n  # was ~150-200 B each
    for ln in lines:
        json.loads(ln)  # gRPC's lines come in the node's log format too


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_failed_logins_are_logged_rate_limited_without_secrets(tmp_path):
    init_data_dirs([tmp_path / "n"], "logins")
    node = InProcessNode(tmp_path / "n", api={"security_log_lines": 5,
                                              "security_log_interval_ms": 3_000,
                                              "failed_logins_burst": 1_000}).start()
    lines = _Lines()
    logger = logging.getLogger("synod.guard")
    logger.addHandler(lines)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        admin_id = node.admin_token.partition("_")[2].partition(".")[0]
        wrong = "WrongSecret-do-not-log-7f3a"
        tokens = [f"synod_{admin_id}.{wrong}", f"synod_0123456789abcdef.{wrong}", "", "nope"]
        for i in range(40):
            with node.client(tokens[i % 4]) as c, pytest.raises(ClientError) as e:
                c.call(c.cluster.GetStatus, nb.GetStatusRequest())
            assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and not any("suppressed" in m for m in lines.lines):
            time.sleep(0.1)
        print("\n" + "\n".join(lines.lines))
        failed = [m for m in lines.lines if "failed login" in m]
        assert len(failed) == 5
        assert all("127.0.0.1" in m for m in failed)
        assert any(admin_id in m for m in failed) and any("0123456789abcdef" in m for m in failed)
        assert not any(wrong in m or node.admin_token in m for m in lines.lines)
        assert any("suppressed 35 more" in m for m in lines.lines)
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
        node.stop()


def test_a_source_over_its_failed_login_budget_is_banned_for_a_while(tmp_path):
    init_data_dirs([tmp_path / "n"], "ban")
    node = InProcessNode(tmp_path / "n", api={"failed_logins_burst": 20,
                                              "failed_logins_per_s": 0.1,
                                              "ban_ms": 3_000}).start()
    try:
        codes = []
        with node.client("synod_0123456789abcdef.wrong") as bad:
            while len(codes) < 40 and set(codes) <= {grpc.StatusCode.UNAUTHENTICATED}:
                try:
                    bad.call(bad.cluster.GetStatus, nb.GetStatusRequest(), timeout_s=2)
                except ClientError as exc:
                    codes.append(exc.code)
        banned_at = time.monotonic()
        with node.client(timeout_s=1) as good:  # same source (127.0.0.1): banned too
            try:
                good.call(good.cluster.GetStatus, nb.GetStatusRequest())
                during = "ok"
            except ClientError as exc:
                during = exc.code.name
        time.sleep(max(0.0, banned_at + 3.5 - time.monotonic()))
        with node.client(timeout_s=15) as good:
            after = good.call(good.cluster.GetStatus, nb.GetStatusRequest())
        print(f"\nfailed logins answered {len(codes) - 1} x UNAUTHENTICATED, then "
              f"{codes[-1].name}; a valid token from the "
              f"banned source: {during}; after the ban ({time.monotonic() - banned_at:.1f} s "
              "after it began): ok")
        refused = {grpc.StatusCode.RESOURCE_EXHAUSTED,  # refused before any token lookup
                   grpc.StatusCode.UNAVAILABLE,  # or its connection was closed already
                   grpc.StatusCode.DEADLINE_EXCEEDED}  # and its new one dropped
        assert set(codes[:-1]) == {grpc.StatusCode.UNAUTHENTICATED} and codes[-1] in refused
        # the burst of 20, the one that overdraws it, and a refill or two on a slow box
        assert 21 <= len(codes) - 1 <= 24
        assert during != "ok" and after.node_id
    finally:
        node.stop()


def _connects(family: int, source: str, port: int) -> bool:
    with socket.socket(family) as s:
        s.bind((source, 0))
        s.settimeout(0.5)
        try:
            s.connect(("::1" if family == socket.AF_INET6 else "127.0.0.1", port))
            return True
        except TimeoutError:  # the SYN was dropped
            return False


def test_the_listening_socket_filter_drops_only_the_listed_sources():
    """guard.py's classic-BPF filter, on IPv4 and on dual-stack IPv6 listeners."""
    from controller.node.guard import _filter

    with socket.socket(socket.AF_INET6) as ls:
        ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        ls.bind(("::", 0))
        ls.listen(16)
        port, listener = ls.getsockname()[1], {os.fstat(ls.fileno()).st_ino: ls.fileno()}
        _filter(listener, frozenset({ATTACKER, "2001:db8::1"}))
        assert _connects(socket.AF_INET, "127.0.0.1", port)
        assert not _connects(socket.AF_INET, ATTACKER, port)  # IPv4 through an IPv6 socket
        assert _connects(socket.AF_INET6, "::1", port)
        _filter(listener, frozenset({"::1"}))
        assert not _connects(socket.AF_INET6, "::1", port)
        assert _connects(socket.AF_INET, ATTACKER, port)
        _filter(listener, frozenset())  # detached
        assert _connects(socket.AF_INET6, "::1", port)


@pytest.mark.parametrize("peer, source", [
    ("ipv4:127.0.0.2:5000", "127.0.0.2"),
    ("ipv6:[::1]:5000", "::1"),
    ("ipv6:%5B::ffff:10.0.0.1%5D:5000", "10.0.0.1"),
    ("unix:/tmp/s", ""),
])
def test_source_of_a_grpc_peer(peer, source):
    from controller.node.guard import source_of

    assert source_of(peer) == source
