"""Give os-ken's native-thread hub eventlet's timing: Event.wait(timeout), Timeout, sleep, kill.

os-ken 4.2.2's native hub (the one Synod runs, never eventlet) keeps eventlet's names
but not their behaviour: `Event.wait(timeout=0.5)` blocks until the event is set,
however long that takes; `Timeout(seconds)` neither starts when made nor interrupts a
wait; `kill(thread)` does nothing, so `kill(t); joinall([t])` waits for a loop that
never ends. What that breaks in os-ken's own code, seen here:

- os_ken.lib.stplib: ports stay in LISTEN (its state machine waits on an Event under
  a Timeout), and the first topology change hangs its event loop for good (it kills and
  joins a BPDU sender looping forever), so simple_switch_stp_13 never forwards;
- os_ken.topology.switches: LLDP goes out only when a port appears, never
  periodically, and links never expire (its loops wait with a timeout);
- os_ken.lib.ofctl_utils: a stats request that gets no reply waits forever (ofctl_rest);
- os_ken.controller.controller: a switch whose connection closes is never reported dead
  (no DEAD_DISPATCHER event): Datapath.serve kills and joins its send thread, which sits
  in hub.Queue.get() for good, so the switch stays "connected" to every app.

install() puts eventlet's semantics, carried over to threads, into os_ken.lib.hub:

- a Timeout is armed for the thread that makes it, from the moment it is made, and is
  raised in that thread when it expires while the thread waits on a hub Event or sleeps
  in hub.sleep (the places os-ken blocks under one); blocked anywhere else (a socket),
  the thread gets it when the Timeout's `with` block ends, as before;
- kill(thread) raises ThreadKilled in a thread that waits on a hub Event or sleeps in
  hub.sleep or hub.Queue.get, now or at its next such wait; a hub thread ends quietly on
  it (the hub treats every Exception as a task exit). A thread blocked elsewhere (a
  socket) is not interrupted, as before.
"""

from __future__ import annotations

import queue
import threading
import time

__all__ = ["Event", "Queue", "ThreadKilled", "Timeout", "install", "kill", "sleep"]

_ARMED = threading.local()


class ThreadKilled(Exception):  # noqa: N818 - eventlet's GreenletExit, for threads
    """Raised in a thread that hub.kill() stopped, at its next hub wait or sleep."""


def _armed() -> list[Timeout]:
    """The Timeouts armed by the calling thread."""
    armed = getattr(_ARMED, "timeouts", None)
    if armed is None:
        armed = _ARMED.timeouts = []
    return armed


class Timeout(BaseException):
    """eventlet.Timeout for threads: armed when made; raised into this thread's hub waits.

    exception: None raises the Timeout itself; False raises it too, but its `with`
    block swallows it; anything else (an exception class or instance) is raised instead.
    """

    def __init__(self, seconds: float | None = None, exception=None) -> None:
        super().__init__(seconds)
        self.seconds = seconds
        self.exception = exception
        self.deadline: float | None = None
        self._armed_in: list[Timeout] | None = None
        self.start()

    @property
    def pending(self) -> bool:
        return self._armed_in is not None

    def start(self) -> Timeout:
        """(Re)arm for the calling thread; a Timeout of None seconds never expires."""
        self.cancel()
        if self.seconds is not None:
            self.deadline = time.monotonic() + self.seconds
            self._armed_in = _armed()
            self._armed_in.append(self)
        return self

    def cancel(self) -> None:
        if self._armed_in is not None:
            try:
                self._armed_in.remove(self)
            except ValueError:
                pass
            self._armed_in = None

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def fire(self):
        """Disarm and return what to raise."""
        self.cancel()
        if self.exception is None or isinstance(self.exception, bool):
            return self
        return self.exception

    def __enter__(self) -> Timeout:
        return self

    def __exit__(self, typ, value, tb) -> bool:
        pending = self.pending
        self.cancel()
        if value is self:
            return self.exception is False
        if typ is None and pending and self.expired(time.monotonic()) \
                and self.exception is not False:
            raise self.fire()  # expired while blocked where it could not be raised
        return False

    def __str__(self) -> str:
        return f"timed out after {self.seconds} s"


def _next_due(now: float) -> float | None:
    """Seconds until this thread's first armed Timeout expires; raises it if it has."""
    armed = [(t.deadline, t) for t in _armed() if t.deadline is not None]
    if not armed:
        return None
    due_at, due = min(armed, key=lambda pair: pair[0])
    if due.expired(now):
        raise due.fire()
    return due_at - now


def _killed(thread: threading.Thread) -> threading.Event:
    """The flag kill() sets on a thread (made on first use; dict.setdefault is atomic)."""
    return vars(thread).setdefault("_synod_killed", threading.Event())


class Event:
    """os-ken's hub.Event (set, clear, is_set, wait) with its timeouts kept."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        with self._cond:
            self._flag = True
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._flag = False

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """True once set, False after `timeout` seconds; raises this thread's expired
        Timeout (eventlet's behaviour, which stplib relies on) or ThreadKilled."""
        me = threading.current_thread()
        killed = _killed(me)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            vars(me)["_synod_waiting_on"] = self  # kill() wakes us through it
            try:
                while not self._flag:
                    if killed.is_set():
                        raise ThreadKilled()
                    now = time.monotonic()
                    limits = [x for x in (_next_due(now),
                                          None if deadline is None else deadline - now)
                              if x is not None]
                    if deadline is not None and deadline <= now:
                        return False
                    self._cond.wait(min(limits) if limits else None)
                return True
            finally:
                vars(me)["_synod_waiting_on"] = None


class Queue(queue.Queue):
    """hub.Queue whose blocking get() kill() interrupts (os-ken's send loop waits in it)."""

    def _wake(self) -> None:
        with self.mutex:
            self.not_empty.notify_all()

    def get(self, block: bool = True, timeout: float | None = None):
        if not block:
            return super().get(block=False)
        me = threading.current_thread()
        killed = _killed(me)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.not_empty:
            vars(me)["_synod_waiting_on"] = self  # kill() wakes us through it
            try:
                while not self._qsize():
                    if killed.is_set():
                        raise ThreadKilled()
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise queue.Empty
                    self.not_empty.wait(left)
                item = self._get()
                self.not_full.notify()
                return item
            finally:
                vars(me)["_synod_waiting_on"] = None


def sleep(seconds: float = 0) -> None:
    """hub.sleep that an armed Timeout or kill() interrupts."""
    killed = _killed(threading.current_thread())
    deadline = time.monotonic() + max(0.0, seconds)
    while True:
        now = time.monotonic()
        due = _next_due(now)
        left = deadline - now
        if killed.wait(max(0.0, left if due is None else min(left, due))):
            raise ThreadKilled()
        if time.monotonic() >= deadline:
            return


def kill(thread) -> None:
    """Stop a hub thread at its next hub wait, sleep or queue get (wake it if in one)."""
    if isinstance(thread, threading.Timer):  # hub.spawn_after's
        thread.cancel()
        return
    if not isinstance(thread, threading.Thread):
        return
    _killed(thread).set()  # wakes a sleep at once
    waiting_on = vars(thread).get("_synod_waiting_on")
    if waiting_on is not None:
        waiting_on._wake()


def install() -> bool:
    """Put these into os_ken.lib.hub if it runs native threads; True if done.

    Call before apps are imported: a module that copied a name at import (os-ken's BGP
    speaker does `from os_ken.lib.hub import Timeout`) keeps the old one.
    """
    from os_ken.lib import hub

    if hub.HUB_TYPE != "native":
        return False
    hub.Event = Event
    hub.Queue = Queue
    hub.Timeout = Timeout
    hub.sleep = sleep
    hub.kill = kill
    return True
