"""Log lines that cannot flood the log: at most N per interval and key, the rest summed up.

Used by the guards' security log (guard.py, one key) and by the relay of gRPC core's own
lines (grpclog.py, keyed by source location). Standard library only: the relay is a small
separate process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """At most `lines` log lines per interval for each key (a caller that gives none has
    one); the others are counted and reported in one "suppressed" line per key when the
    interval ends (on the next line or flush()), at WARNING or the highest level
    suppressed if that is higher."""

    def __init__(self, logger: logging.Logger, what: str, lines: int, interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.what, self.lines, self.interval_s = logger, what, lines, interval_s
        self.clock = clock
        self.start = clock()
        self.counts: dict[str, int] = {}  # key -> lines logged this interval
        self.suppressed: dict[str, tuple[int, int]] = {}  # key -> (lines, highest level)

    def log(self, level: int, msg: str, *args: object, key: str = "") -> None:
        self.flush()
        count = self.counts.get(key, 0)
        if count < self.lines:
            self.counts[key] = count + 1
            self.logger.log(level, msg, *args)
        else:
            n, top = self.suppressed.get(key, (0, level))
            self.suppressed[key] = (n + 1, max(top, level))

    def flush(self, end: bool = False) -> None:
        """Report what was suppressed if the interval is over, or now (`end`: no more lines
        will come) and start a new interval."""
        now = self.clock()
        if not end and now - self.start < self.interval_s:
            return
        for key, (n, level) in sorted(self.suppressed.items()):
            self.logger.log(max(level, logging.WARNING), "%s: suppressed %d more in the last "
                            "%.0f s", key or self.what, n, now - self.start)
        self.start, self.counts, self.suppressed = now, {}, {}
