"""Giving the memory of pruned history back to the system (decision 0102).

CPython's own allocator (pymalloc) serves small objects from 1 MiB arenas and returns an
arena only when every object in it is freed. A node's ops are small objects: when a
member is down the others cannot prune (the stable cut waits for it), the log grows, and
once it is pruned the survivors (rows, newer ops) are scattered over those arenas, so
the process keeps its peak size. Measured (3 in-process replicas, 60,000 ops with one cut
off, then healed and pruned to ~4,000): 297 MB -> 277 MB with pymalloc, allocated blocks
down 80 %; with the system allocator and malloc_trim(0), 334 MB -> 138 MB.

So a node process runs with PYTHONMALLOC=malloc (`reexec_with_system_malloc`, called
first thing by `synod node run`: the interpreter reads it only at start) and calls glibc's
malloc_trim(0) after a compaction pruned ops (`Trimmer`, at most once per interval, in a
thread of its own): that hands back every free page, not only the top of the heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping

log = logging.getLogger("synod.memory")

__all__ = ["KEEP_PYMALLOC", "TRIM_INTERVAL_S", "Trimmer", "not_handed_back",
           "reexec_with_system_malloc", "system_allocator"]

KEEP_PYMALLOC = "SYNOD_KEEP_PYMALLOC"  # set (to anything) to keep CPython's allocator
TRIM_INTERVAL_S = 5.0
SYSTEM_ALLOCATORS = ("malloc", "malloc_debug")  # PYTHONMALLOC values that use glibc's


def reexec_with_system_malloc(
    orig_argv: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
    execve: Callable[..., object] = os.execve,
    ignore_environment: bool | None = None,
) -> bool:
    """Replace this process by itself under PYTHONMALLOC=malloc, unless PYTHONMALLOC is
    set already (the second start, or an operator's choice), SYNOD_KEEP_PYMALLOC is set,
    the interpreter ignores the environment (`python -E` or `-I`: it would ignore
    PYTHONMALLOC after the re-exec too, so that would only cost a start), or this process
    was not started as `... node run` (a test calling the CLI in-process must not be
    replaced). The pid, open descriptors and process group stay. Returns False when it
    does not re-exec (execve does not return otherwise)."""
    argv = list(sys.orig_argv if orig_argv is None else orig_argv)
    env = dict(os.environ if environ is None else environ)
    if ignore_environment is None:
        ignore_environment = bool(sys.flags.ignore_environment)
    if ignore_environment or env.get("PYTHONMALLOC") or env.get(KEEP_PYMALLOC):
        return False
    if "node" not in argv or "run" not in argv[argv.index("node"):]:
        return False
    if not sys.executable:
        return False
    env["PYTHONMALLOC"] = "malloc"
    sys.stdout.flush()
    sys.stderr.flush()
    execve(sys.executable, [sys.executable, *argv[1:]], env)
    return True


def system_allocator(environ: Mapping[str, str] | None = None,
                     ignore_environment: bool | None = None) -> bool:
    """Whether this interpreter allocates with the C library's malloc, the one malloc_trim
    gives back from: PYTHONMALLOC=malloc (or malloc_debug) as read at start, which `-E`
    and `-I` make it ignore though os.environ still shows it. No -X option selects it."""
    env = os.environ if environ is None else environ
    if ignore_environment is None:
        ignore_environment = bool(sys.flags.ignore_environment)
    return not ignore_environment and env.get("PYTHONMALLOC", "") in SYSTEM_ALLOCATORS


def not_handed_back(trim_available: bool, environ: Mapping[str, str] | None = None,
                    ignore_environment: bool | None = None) -> str | None:
    """The node's start-up notice when pruned memory is not handed back to the system
    (another allocator, or no malloc_trim in the C library); None when it is."""
    env = os.environ if environ is None else environ
    if ignore_environment is None:
        ignore_environment = bool(sys.flags.ignore_environment)
    if system_allocator(env, ignore_environment) and trim_available:
        return None
    allocator = env.get("PYTHONMALLOC", "unset")
    if ignore_environment:
        allocator += ", ignored: python -E or -I"
    return (f"memory: pruned history is not handed back to the system (PYTHONMALLOC="
            f"{allocator}, malloc_trim {'available' if trim_available else 'missing'}; "
            "decision 0102)")


def _malloc_trim() -> Callable[[], int] | None:
    """glibc's malloc_trim(0), or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return lambda: int(fn(0))


def _daemon_thread(run: Callable[[], None]) -> None:
    threading.Thread(target=run, name="synod-malloc-trim", daemon=True).start()


class Trimmer:
    """Calls malloc_trim after ops were pruned, at most once per `interval_s`; the call
    after a quiet interval catches up on what was pruned meanwhile. The trim runs in a
    thread (`spawn`), at most one at a time: with a large heap it takes tens of ms, which
    the node's event loop must not wait for (ctypes lets go of the GIL for the call, and
    glibc's malloc locks its arenas). observe(seconds) is given the time each trim took,
    on the caller's thread, at the first pruned() or maybe() after it finished (the
    node's metrics belong to its loop)."""

    def __init__(self, interval_s: float = TRIM_INTERVAL_S,
                 trim: Callable[[], int] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 observe: Callable[[float], None] | None = None,
                 spawn: Callable[[Callable[[], None]], None] = _daemon_thread) -> None:
        self.interval_s = interval_s
        self.trim = trim if trim is not None else _malloc_trim()
        self.clock = clock
        self.observe = observe
        self.spawn = spawn
        self.pending = False
        self.last: float | None = None
        self.calls = 0  # trims started
        self.running = threading.Event()  # set while a trim is in flight
        self._took: deque[float] = deque(maxlen=16)  # seconds, from the trim's thread

    @property
    def available(self) -> bool:
        return self.trim is not None

    def pruned(self) -> None:
        """Ops were pruned: trim now, or at the next call once the interval has passed
        and no trim is in flight."""
        self.pending = True
        self.maybe()

    def maybe(self) -> None:
        while self._took:
            seconds = self._took.popleft()
            if self.observe is not None:
                self.observe(seconds)
        if not self.pending or self.trim is None or self.running.is_set():
            return
        now = self.clock()
        if self.last is not None and now - self.last < self.interval_s:
            return
        self.pending, self.last = False, now
        self.running.set()
        self.calls += 1
        try:
            self.spawn(self._run)
        except RuntimeError as exc:  # no thread to be had: the next interval tries again
            self.running.clear()
            self.pending = True
            log.warning("malloc_trim: %s", exc)

    def _run(self) -> None:
        trim = self.trim
        assert trim is not None and self.running.is_set()
        started = time.perf_counter()
        try:
            trim()
        finally:
            self._took.append(time.perf_counter() - started)
            self.running.clear()
