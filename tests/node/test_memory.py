"""Handing pruned history's memory back (decision 0102): the node re-executes itself under
the system allocator once, and trims the heap after pruning, at most once per interval."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from controller.node.memory import (
    Trimmer,
    _malloc_trim,
    not_handed_back,
    reexec_with_system_malloc,
    system_allocator,
)

NODE_RUN = ["/usr/bin/python3", "-c", "from controller.cli import main; main()", "node", "run",
            "--data", "/tmp/d"]


def test_a_node_run_reexecutes_once_under_the_system_allocator():
    calls = []
    assert reexec_with_system_malloc(NODE_RUN, {"PATH": "/bin"}, lambda *a: calls.append(a))
    (exe, argv, env), = calls
    assert exe == sys.executable and argv == [sys.executable, *NODE_RUN[1:]]
    assert env == {"PATH": "/bin", "PYTHONMALLOC": "malloc"}


def test_no_reexec_when_set_kept_or_not_a_node_run():
    def never(*a):
        raise AssertionError(f"re-executed: {a}")

    assert not reexec_with_system_malloc(NODE_RUN, {"PYTHONMALLOC": "malloc"}, never)
    assert not reexec_with_system_malloc(NODE_RUN, {"PYTHONMALLOC": "pymalloc"}, never)
    assert not reexec_with_system_malloc(NODE_RUN, {"SYNOD_KEEP_PYMALLOC": "1"}, never)
    assert not reexec_with_system_malloc(["python", "-m", "pytest", "tests/node"], {}, never)
    assert not reexec_with_system_malloc(["synod", "run", "node"], {}, never)
    # python -E / -I: PYTHONMALLOC would be ignored after the re-exec as well.
    assert not reexec_with_system_malloc(NODE_RUN, {}, never, ignore_environment=True)


def test_the_system_allocator_is_in_use_only_when_the_interpreter_read_pythonmalloc():
    assert system_allocator({"PYTHONMALLOC": "malloc"}, False)
    assert system_allocator({"PYTHONMALLOC": "malloc_debug"}, False)
    assert not system_allocator({"PYTHONMALLOC": "malloc"}, True)  # python -E / -I
    assert not system_allocator({"PYTHONMALLOC": "pymalloc"}, False)
    assert not system_allocator({}, False)
    assert not_handed_back(True, {"PYTHONMALLOC": "malloc"}, False) is None
    assert "PYTHONMALLOC=malloc, ignored: python -E or -I" in not_handed_back(
        True, {"PYTHONMALLOC": "malloc"}, True)
    assert "malloc_trim missing" in not_handed_back(False, {"PYTHONMALLOC": "malloc"}, False)
    assert "PYTHONMALLOC=unset" in not_handed_back(True, {}, False)


@pytest.mark.parametrize("flags", [[], ["-E"], ["-I"], ["-X", "dev"]])
@pytest.mark.parametrize("env", ["malloc", "pymalloc", None])
def test_system_allocator_agrees_with_the_interpreter(flags, env):
    """What CPython really allocates with (_testcapi, where the build ships it), against
    what the node's start-up notice goes by."""
    pytest.importorskip("_testcapi")
    code = ("import _testcapi, os, sys\n"
            "from controller.node.memory import SYSTEM_ALLOCATORS, system_allocator\n"
            "real = _testcapi.pymem_getallocatorsname() in SYSTEM_ALLOCATORS\n"
            "print(real, system_allocator())\n")
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONMALLOC"}
    if env is not None:
        environ["PYTHONMALLOC"] = env
    done = subprocess.run([sys.executable, *flags, "-c", code], capture_output=True,
                          text=True, timeout=60, env=environ)
    assert done.returncode == 0, done.stderr
    real, told = done.stdout.split()
    assert real == told, (flags, env, done.stdout)


def test_the_trimmer_trims_after_pruning_at_most_once_per_interval():
    now = [100.0]
    trims, observed = [], []
    t = Trimmer(interval_s=5, trim=lambda: trims.append(now[0]) or 1, clock=lambda: now[0],
                observe=observed.append, spawn=lambda run: run())  # inline: a table
    t.maybe()
    assert trims == [] and observed == []  # nothing pruned: nothing to hand back
    t.pruned()
    assert trims == [100.0] and observed == []  # its time comes with the next call
    t.maybe()
    assert len(observed) == 1
    now[0] = 102.0
    t.pruned()  # within the interval: held back
    t.maybe()
    assert trims == [100.0]
    now[0] = 105.5
    t.maybe()  # the held-back trim, once the interval passed
    assert trims == [100.0, 105.5]
    now[0] = 120.0
    t.maybe()
    assert trims == [100.0, 105.5] and t.calls == 2 and len(observed) == 2


def test_the_trim_runs_off_the_callers_thread_one_at_a_time():
    """malloc_trim takes tens of ms on a large heap: the engine's round (the event loop)
    must not wait for it. A trim that blocks leaves pruned() returning at once; while it
    runs no second one starts, even past the interval; the held-back one runs after."""
    now = [0.0]
    entered, release = threading.Event(), threading.Event()
    threads, observed = [], []

    def slow_trim() -> int:
        threads.append(threading.get_ident())
        entered.set()
        assert release.wait(10), "the test did not release the trim"
        return 1

    t = Trimmer(interval_s=5, trim=slow_trim, clock=lambda: now[0], observe=observed.append)
    started = time.monotonic()
    t.pruned()
    assert time.monotonic() - started < 1.0  # not waiting for the trim (inline: 10 s)
    assert entered.wait(5) and t.running.is_set()
    assert threads == [threads[0]] and threads[0] != threading.get_ident()
    now[0] = 50.0
    t.pruned()  # past the interval, but one is in flight: held back
    t.maybe()
    assert t.calls == 1 and observed == []
    release.set()
    deadline = time.monotonic() + 5
    while t.running.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not t.running.is_set()
    entered.clear()
    t.maybe()  # the first one's time, then the held-back trim
    assert len(observed) == 1 and observed[0] >= 0
    assert entered.wait(5) and t.calls == 2
    deadline = time.monotonic() + 5
    while t.running.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    t.maybe()
    assert len(observed) == 2 and len(threads) == 2


def test_glibc_malloc_trim_is_there_and_runs():
    trim = _malloc_trim()
    assert trim is not None  # Debian's glibc has it; the node says so at start if not
    assert trim() in (0, 1)
