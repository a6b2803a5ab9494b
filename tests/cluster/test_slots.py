"""Decided slots across 3 real node processes, and a proposal on the isolated side."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from synod.v1 import northbound_pb2 as nb

from controller.node.client import ClientError
from controller.replication import decode, encode

from .harness import wait_for

pytestmark = pytest.mark.cluster


def _propose(cluster, i: int, slot: str, value, timeout_ms: int = 5_000):
    with cluster.client(i, timeout_s=timeout_ms / 1000 + 5) as c:
        req = nb.ProposeRequest(slot=slot, value=encode(value), timeout_ms=timeout_ms)
        return c.call(c.slots.Propose, req)


def _slot(cluster, i: int, slot: str):
    with cluster.client(i) as c:
        return c.call(c.slots.GetSlot, nb.GetSlotRequest(slot=slot))


def _decided_everywhere(cluster, slot: str, nodes=range(3)) -> set[bytes] | None:
    got = [_slot(cluster, i, slot) for i in nodes]
    if not all(s.decided for s in got):
        return None
    return {s.value for s in got}


def test_slots_decide_at_a_majority_and_not_on_the_isolated_side(make_cluster):
    cluster = make_cluster(3)

    # Proposed at one node: decided with one value, visible at all three.
    r = _propose(cluster, 0, "alloc/vlan/1", "web")
    assert r.decided and decode(r.value) == "web" and len(r.voters) >= 2
    assert wait_for(lambda: _decided_everywhere(cluster, "alloc/vlan/1") == {r.value}, 10)

    # Two proposers race for one slot: both answer the one decided value.
    answers: dict[int, object] = {}

    def race(i: int) -> None:
        try:
            answers[i] = decode(_propose(cluster, i, "alloc/vlan/2", f"from-{i}").value)
        except ClientError as exc:
            answers[i] = exc

    threads = [threading.Thread(target=race, args=(i,)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert answers[1] == answers[2] and answers[1] in ("from-1", "from-2"), answers
    assert wait_for(lambda: _decided_everywhere(cluster, "alloc/vlan/2") is not None, 10)
    assert {decode(v) for v in _decided_everywhere(cluster, "alloc/vlan/2")} == {answers[1]}

    # Node 2 cut off: its proposal fails with "no quorum reachable" within its timeout
    # and decides nothing; the majority side keeps deciding.
    cluster.isolate(2)
    started = time.monotonic()
    with pytest.raises(ClientError) as e:
        _propose(cluster, 2, "alloc/vlan/3", "lonely", timeout_ms=2_000)
    took = time.monotonic() - started
    assert e.value.code == grpc.StatusCode.UNAVAILABLE, e.value
    assert "no quorum reachable" in str(e.value) and took < 4, (str(e.value), took)
    assert not _slot(cluster, 2, "alloc/vlan/3").decided
    r = _propose(cluster, 0, "alloc/vlan/4", "majority")
    assert decode(r.value) == "majority"
    r = _propose(cluster, 1, "alloc/vlan/5", "majority-too")
    assert decode(r.value) == "majority-too"
    assert not _slot(cluster, 0, "alloc/vlan/3").decided

    # Healed: node 2 learns what the majority decided; the lonely proposal stays undecided.
    cluster.heal()
    for slot in ("alloc/vlan/4", "alloc/vlan/5"):
        assert wait_for(lambda s=slot: _decided_everywhere(cluster, s) is not None, 15), slot
    assert not any(_slot(cluster, i, "alloc/vlan/3").decided for i in range(3))
