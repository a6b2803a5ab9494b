"""gRPC core's own log lines, rate-limited: one failed TLS handshake wrote ~200 B, so a
handshake flood was a log flood.

gRPC core logs through absl straight to file descriptor 2 (`I1202 03:23:35.099143  8252
ssl_transport_security.cc:2563] Handshake failed with error SSL_ERROR_SSL: ...`); Python
cannot hook it. So `synod node run` points descriptor 2 at a pipe read by a small relay
process (this module run with -m): lines in gRPC's format pass at most `lines` times per
interval per source location (file:line), in the node's log format, and the rest are
counted in one "suppressed" line; any other line (a Python traceback) passes unchanged.
The node's own logging keeps the original stderr. The relay is a separate process so that
whatever the node writes just before it dies (a gRPC CHECK failure) still gets out: the
relay reads until every writer is gone, and it ignores SIGINT and SIGTERM (it ends at EOF)."""

from __future__ import annotations

import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import time

from controller.node.loglimit import RateLimitedLog

__all__ = ["relay_grpc_log"]

_LINE = re.compile(rb"^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ ([^\]\s]+)\] ?(.*)$")
_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}
_relay: subprocess.Popen | None = None  # held, so it is not collected while it runs


def relay_grpc_log(fmt: str, lines: int, interval_ms: int) -> int:
    """Route this process's descriptor 2 through the relay; return a descriptor of the
    original stderr for the node's own log handler."""
    global _relay
    original = os.dup(2)
    read, write = os.pipe()
    try:
        _relay = subprocess.Popen(
            [sys.executable, "-m", "controller.node.grpclog", fmt, str(lines), str(interval_ms)],
            stdin=read, stdout=original, stderr=original, close_fds=True)
    except OSError:  # no relay: gRPC's lines go to stderr unfiltered, as they did
        os.close(read)
        os.close(write)
        return original
    os.dup2(write, 2)
    os.close(write)
    os.close(read)
    return original


class _NodeFormat(logging.Handler):
    """Writes records as the node's log lines (server.py's json or text format) to `out`."""

    def __init__(self, fmt: str, out) -> None:
        super().__init__()
        self.fmt, self.out = fmt, out

    def emit(self, record: logging.LogRecord) -> None:
        msg, level = record.getMessage(), record.levelname
        if self.fmt == "json":
            text = json.dumps({"ts": round(record.created, 3), "level": level.lower(),
                               "logger": record.name, "msg": msg})
        else:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
            text = f"{when} {level} {record.name} {msg}"
        self.out.write(text.encode() + b"\n")


class _Relay:
    """gRPC's lines at most `lines` times per interval per source location, in the node's
    format; any other line unchanged."""

    def __init__(self, fmt: str, lines: int, interval_s: float, out) -> None:
        self.out = out
        logger = logging.Logger("grpc")  # outside logging's tree: its lines go to out alone
        logger.addHandler(_NodeFormat(fmt, out))
        self.log = RateLimitedLog(logger, "grpc", lines, interval_s)

    def line(self, raw: bytes) -> None:
        m = _LINE.match(raw)
        if m is None:
            self.out.write(raw + b"\n")
            return
        level, where, text = (g.decode(errors="replace") for g in m.groups())
        self.log.log(_LEVELS[level], "%s] %s", where, text, key=where)


def _main(fmt: str, lines: str, interval_ms: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node's group gets these; EOF ends us
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out = sys.stdout.buffer
    relay = _Relay(fmt, int(lines), int(interval_ms) / 1000, out)
    fd, pending = sys.stdin.fileno(), b""
    while True:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            *whole, pending = (pending + chunk).split(b"\n")
            for raw in whole:
                relay.line(raw)
            if len(pending) > 1 << 16:  # no newline in 64 kB: pass it on as it is
                out.write(pending + b"\n")
                pending = b""
        relay.log.flush()
        out.flush()
    if pending:
        relay.line(pending)
    relay.log.flush(end=True)  # report what is still suppressed
    out.flush()


if __name__ == "__main__":
    _main(*sys.argv[1:4])
