"""Counters and latency histograms, rendered as Prometheus text, served over plain HTTP."""

from __future__ import annotations

import asyncio
import bisect
from collections import Counter
from collections.abc import Callable

__all__ = ["Histogram", "Metrics", "serve_metrics"]

_BUCKETS_MS = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(_BUCKETS_MS) + 1)
        self.total_ms = 0.0
        self.n = 0

    def observe(self, ms: float) -> None:
        self.counts[bisect.bisect_left(_BUCKETS_MS, ms)] += 1
        self.total_ms += ms
        self.n += 1


class Metrics:
    """Node metrics: counters by name ("name|reason" or "name|label=value"), histograms."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.histograms: dict[str, Histogram] = {}
        self.gauges: dict[str, Callable[[], float]] = {}

    def inc(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def observe(self, name: str, ms: float) -> None:
        h = self.histograms.get(name)
        if h is None:
            h = self.histograms[name] = Histogram()
        h.observe(ms)

    def render(self, extra: dict[str, int]) -> str:
        lines = []
        for name, value in sorted({**self.counters, **extra}.items()):
            metric, _, label = name.partition("|")
            metric = "synod_" + metric.replace(".", "_").replace("-", "_")
            if label:
                key, eq, val = label.partition("=")
                label = f'{key}="{val}"' if eq else f'reason="{label}"'
                lines.append(f"{metric}{{{label}}} {value}")
            else:
                lines.append(f"{metric} {value}")
        for name, fn in sorted(self.gauges.items()):
            lines.append(f"synod_{name} {fn()}")
        for name, h in sorted(self.histograms.items()):
            metric = f"synod_{name}_ms"
            lines.append(f"# TYPE {metric} histogram")
            cumulative = 0
            for bound, count in zip((*_BUCKETS_MS, "+Inf"), h.counts, strict=True):
                cumulative += count
                lines.append(f'{metric}_bucket{{le="{bound}"}} {cumulative}')
            lines.append(f"{metric}_sum {h.total_ms:.3f}")
            lines.append(f"{metric}_count {h.n}")
        return "\n".join(lines) + "\n"


async def serve_metrics(host: str, port: int, render: Callable[[], str]) -> asyncio.Server:
    """A minimal HTTP/1.0 server: GET /metrics answers the Prometheus text, else 404."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            if len(parts) >= 2 and parts[0] == "GET" and parts[1].startswith("/metrics"):
                body, status = render().encode(), "200 OK"
            else:
                body, status = b"not found\n", "404 Not Found"
            writer.write(
                f"HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, limit=8192)
