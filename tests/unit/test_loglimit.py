"""Rate-limited log lines (controller/node/loglimit.py) and the gRPC log relay built on
them (controller/node/grpclog.py), on a fake clock and an in-memory output."""

from __future__ import annotations

import io
import json
import logging

from controller.node import grpclog
from controller.node.loglimit import RateLimitedLog


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))


def _limited(lines: int = 5) -> tuple[RateLimitedLog, _Lines, _Clock]:
    logger, out, clock = logging.Logger("test"), _Lines(), _Clock()
    logger.addHandler(out)
    return RateLimitedLog(logger, "api security log", lines, 3.0, clock), out, clock


def test_at_most_n_lines_per_interval_then_one_suppressed_line():
    log, out, clock = _limited()
    for i in range(40):
        log.log(logging.WARNING, "failed login %d", i)
    assert [m for _, m in out.lines] == [f"failed login {i}" for i in range(5)]
    clock.now += 2.9
    log.flush()
    assert len(out.lines) == 5  # the interval is not over
    clock.now += 0.1
    log.log(logging.WARNING, "failed login %d", 40)  # the next line ends the interval
    assert out.lines[5:] == [(logging.WARNING, "api security log: suppressed 35 more in the "
                                               "last 3 s"), (logging.WARNING, "failed login 40")]


def test_each_key_has_its_own_budget_and_summary_at_its_highest_level():
    log, out, clock = _limited(lines=1)
    for level in (logging.INFO, logging.INFO, logging.ERROR, logging.INFO):
        log.log(level, "a", key="a.cc:1")
    log.log(logging.INFO, "b", key="b.cc:2")
    log.log(logging.INFO, "b", key="b.cc:2")
    assert [m for _, m in out.lines] == ["a", "b"]
    clock.now += 1
    log.flush(end=True)  # no more lines: report now
    assert out.lines[2:] == [(logging.ERROR, "a.cc:1: suppressed 3 more in the last 1 s"),
                             (logging.WARNING, "b.cc:2: suppressed 1 more in the last 1 s")]
    log.flush(end=True)
    assert len(out.lines) == 4  # nothing suppressed since


def test_the_relay_limits_grpc_lines_per_location_and_passes_others():
    out = io.BytesIO()
    relay = grpclog._Relay("json", 2, 60.0, out)
    handshake = (b"E1202 03:23:35.099143    8252 ssl_transport_security.cc:2563] "
                 b"Handshake failed with error SSL_ERROR_SSL")
    for _ in range(5):
        relay.line(handshake)
    relay.line(b"Traceback (most recent call last):")
    relay.line(b"I1202 03:23:36.000001    8252 server.cc:10] started")
    relay.log.flush(end=True)
    lines = out.getvalue().decode().splitlines()
    assert lines[2] == "Traceback (most recent call last):"
    records = [json.loads(ln) for i, ln in enumerate(lines) if i != 2]
    assert [(r["level"], r["logger"], r["msg"]) for r in records] == [
        ("error", "grpc", "ssl_transport_security.cc:2563] Handshake failed with error "
                          "SSL_ERROR_SSL"),
        ("error", "grpc", "ssl_transport_security.cc:2563] Handshake failed with error "
                          "SSL_ERROR_SSL"),
        ("info", "grpc", "server.cc:10] started"),
        ("error", "grpc", "ssl_transport_security.cc:2563: suppressed 3 more in the last 0 s"),
    ]
