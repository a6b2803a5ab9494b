"""Helpers every os-ken shim shares: guarded handlers, the clock, port state."""

from __future__ import annotations

import functools
import time

__all__ = ["guarded", "now_ms", "port_is_up"]


def guarded(handler):
    """Log a handler's exception instead of letting it end the app.

    Under os-ken's native hub, TaskExit is Exception itself: an exception escaping a
    handler silently ends the app's event thread, and every later event is ignored.
    """
    @functools.wraps(handler)
    def wrapper(self, ev):
        try:
            handler(self, ev)
        except Exception:
            self.logger.exception("handler %s failed on %s", handler.__name__,
                                  type(ev).__name__)
    return wrapper


def now_ms() -> int:
    """Monotonic milliseconds: the clock the pure logic is given."""
    return time.monotonic_ns() // 1_000_000


def port_is_up(ofp, port) -> bool:
    """An OpenFlow port is usable: link not down and not administratively down."""
    return not (port.state & ofp.OFPPS_LINK_DOWN) and not (port.config & ofp.OFPPC_PORT_DOWN)
