"""os-ken's native hub with eventlet's timing (controller/openflow/native_hub.py).

Bounds are generous (2 shared cores): each check is "returns within about its time,
and not long after", never a tight latency figure.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time

import pytest

from controller.openflow.native_hub import Event, Queue, ThreadKilled, Timeout, kill, sleep

SLACK_S = 2.0  # scheduling slack on a busy machine


def _elapsed(fn) -> tuple[object, float]:
    started = time.monotonic()
    result = fn()
    return result, time.monotonic() - started


def test_os_ken_native_event_ignores_its_timeout_which_is_why_this_exists():
    """The bug, measured: os-ken 4.2.2's own hub.Event.wait(timeout=0.2) never returns."""
    code = "from os_ken.lib import hub; hub.Event().wait(timeout=0.2); print('returned')"
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=3)


def test_wait_times_out_and_returns_false():
    result, took = _elapsed(lambda: Event().wait(timeout=0.2))
    assert result is False and 0.19 <= took < 0.2 + SLACK_S


def test_wait_returns_true_when_set_from_another_thread():
    ev = Event()
    threading.Timer(0.1, ev.set).start()
    result, took = _elapsed(lambda: ev.wait(timeout=10))
    assert result is True and took < 0.1 + SLACK_S
    assert ev.is_set() and ev.wait(timeout=0) is True
    ev.clear()
    assert not ev.is_set() and ev.wait(timeout=0) is False


def test_timeout_made_before_a_wait_interrupts_it_as_stplib_expects():
    ev = Event()
    timeout = Timeout(0.2)
    started = time.monotonic()
    with pytest.raises(Timeout) as raised:
        try:
            ev.wait()
        finally:
            timeout.cancel()
    assert raised.value is timeout and time.monotonic() - started < 0.2 + SLACK_S


def test_cancelled_timeout_does_not_fire():
    timeout = Timeout(0.05)
    timeout.cancel()
    assert Event().wait(timeout=0.2) is False and not timeout.pending


def test_timeout_with_false_is_swallowed_by_its_with_block():
    with Timeout(0.1, False):
        Event().wait()
        raise AssertionError("the wait was not interrupted")


def test_timeout_raises_the_given_exception():
    with pytest.raises(KeyError), Timeout(0.1, KeyError("late")):
        Event().wait()


def test_timeout_belongs_to_the_thread_that_made_it():
    Timeout(0.05)  # armed in this thread only: not cancelled, left to expire
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(Event().wait(timeout=0.3)))
    worker.start()
    worker.join(5)
    assert outcome == [False]  # the other thread's wait ran its full time, untouched
    with pytest.raises(Timeout):
        Event().wait(timeout=1)  # here it fires at once: already expired


def test_sleep_sleeps_and_a_timeout_interrupts_it():
    _, took = _elapsed(lambda: sleep(0.1))
    assert 0.09 <= took < 0.1 + SLACK_S
    with pytest.raises(Timeout), Timeout(0.1):
        sleep(30)


def test_kill_ends_a_sleeping_or_waiting_thread_promptly():
    ended = []

    def sleeper():
        try:
            sleep(60)
        except ThreadKilled:
            ended.append("sleep")

    def waiter():
        try:
            Event().wait()
        except ThreadKilled:
            ended.append("wait")

    threads = [threading.Thread(target=sleeper), threading.Thread(target=waiter)]
    for t in threads:
        t.start()
    time.sleep(0.2)  # let both block
    started = time.monotonic()
    for t in threads:
        kill(t)
    for t in threads:
        t.join(5)
    assert sorted(ended) == ["sleep", "wait"] and time.monotonic() - started < SLACK_S


def test_kill_before_the_thread_blocks_takes_effect_at_its_next_wait():
    go, ended = threading.Event(), []

    def late_waiter():
        go.wait(5)
        try:
            Event().wait(timeout=30)
        except ThreadKilled:
            ended.append(True)

    t = threading.Thread(target=late_waiter)
    t.start()
    kill(t)
    go.set()
    t.join(5)
    assert ended == [True]


def test_kill_cancels_a_spawn_after_timer():
    fired = []
    timer = threading.Timer(0.2, lambda: fired.append(True))
    timer.start()
    kill(timer)
    time.sleep(0.4)
    assert fired == []


def test_install_patches_only_the_native_hub():
    code = ("from controller.openflow import native_hub; from os_ken.lib import hub; "
            "print(native_hub.install(), hub.Event is native_hub.Event, "
            "hub.Queue is native_hub.Queue, "
            "hub.Event().wait(timeout=0.1))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, check=True)
    assert done.stdout.split() == ["True", "True", "True", "False"]


def test_queue_gets_in_order_and_times_out():
    q = Queue(4)
    q.put("a")
    q.put("b")
    assert q.get() == "a" and q.get(timeout=1) == "b"
    with pytest.raises(queue.Empty):
        q.get(block=False)
    _, took = _elapsed(lambda: pytest.raises(queue.Empty, q.get, timeout=0.2))
    assert 0.19 <= took < 0.2 + SLACK_S


def test_kill_ends_a_thread_blocked_in_queue_get():
    q, ended = Queue(16), []

    def getter():
        try:
            q.get()
        except ThreadKilled:
            ended.append(True)

    t = threading.Thread(target=getter)
    t.start()
    time.sleep(0.2)  # let it block
    kill(t)
    t.join(5)
    assert ended == [True] and not t.is_alive()


# os-ken's own connection handling, on a real TCP connection whose peer (the "switch")
# closes it: does os-ken get to DEAD_DISPATCHER, the state its apps learn a switch is gone?
_DEAD_PROBE = """
import socket, sys, threading, time
if sys.argv[1] == "repaired":
    from controller.openflow import native_hub
    native_hub.install()
from os_ken import cfg
from os_ken.base import app_manager  # noqa: F401 - os-ken's own import order
from os_ken.controller import controller
cfg.CONF([], project="os_ken")
listener = socket.create_server(("127.0.0.1", 0))
switch = socket.create_connection(listener.getsockname())
conn, addr = listener.accept()
done = threading.Event()
def serve():
    controller.datapath_connection_factory(conn, addr)  # what os-ken's server runs
    done.set()
threading.Thread(target=serve, daemon=True).start()
time.sleep(0.3)
switch.close()
print("dead" if done.wait(3) else "hung")
"""


@pytest.mark.parametrize("hub, expected", [("stock", "hung"), ("repaired", "dead")])
def test_a_closed_switch_connection_reaches_dead_only_with_the_repair(hub, expected):
    done = subprocess.run([sys.executable, "-c", _DEAD_PROBE, hub], capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.split() == [expected], done.stderr
