"""Helpers every os-ken shim shares: guarded handlers, the clock, port state."""

from __future__ import annotations

import functools
import time

__all__ = ["guarded", "now_ms", "port_identity", "port_is_up"]

PORT_NAME_CHARS_MAX = 64  # OpenFlow 1.3 names are 16 bytes; a longer one is not a port's


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


def port_identity(port) -> tuple[str, str]:
    """An OpenFlow port's (name, MAC) as text, from a port-desc or port-status body."""
    name = port.name
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    mac = port.hw_addr if isinstance(port.hw_addr, str) else ""
    return str(name).rstrip("\x00")[:PORT_NAME_CHARS_MAX], mac.lower()
