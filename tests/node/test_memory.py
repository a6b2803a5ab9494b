"""Handing pruned history's memory back (decision 0102): the node re-executes itself under
the system allocator once, and trims the heap after pruning, at most once per interval."""

from __future__ import annotations

import sys

from controller.node.memory import Trimmer, _malloc_trim, reexec_with_system_malloc

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


def test_the_trimmer_trims_after_pruning_at_most_once_per_interval():
    now = [100.0]
    trims, observed = [], []
    t = Trimmer(interval_s=5, trim=lambda: trims.append(now[0]) or 1, clock=lambda: now[0],
                observe=observed.append)
    t.maybe()
    assert trims == []  # nothing pruned: nothing to hand back
    t.pruned()
    assert trims == [100.0] and len(observed) == 1
    now[0] = 102.0
    t.pruned()  # within the interval: held back
    t.maybe()
    assert trims == [100.0]
    now[0] = 105.5
    t.maybe()  # the held-back trim, once the interval passed
    assert trims == [100.0, 105.5]
    now[0] = 120.0
    t.maybe()
    assert trims == [100.0, 105.5] and t.calls == 2


def test_glibc_malloc_trim_is_there_and_runs():
    trim = _malloc_trim()
    assert trim is not None  # Debian's glibc has it; the node says so at start if not
    assert trim() in (0, 1)
