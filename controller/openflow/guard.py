"""Keep one failing os-ken handler from silently ending an app."""

from __future__ import annotations

import functools

__all__ = ["guarded"]


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
