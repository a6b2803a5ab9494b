"""The voters' side of the lease rule (decision 0081 §3) across 3 real node processes: an
operator's token cannot move a service to another node while its owner is still heard; once
the owner is cut off for its lease plus the margin, the same proposal is decided."""

from __future__ import annotations

import time

import grpc
import pytest
from synod.v1 import northbound_pb2 as nb

from controller.agreement.placement import silence_needed_ms
from controller.node.client import Client, ClientError
from controller.replication import decode, encode

from .harness import wait_for

pytestmark = pytest.mark.cluster

LEASE_MS = 1_000
SPEC_HASH = "5e" * 32


def _node_id(cluster, i: int) -> str:
    with cluster.client(i) as c:
        return c.call(c.cluster.GetStatus, nb.GetStatusRequest()).node_id


def _propose(client: Client, slot: str, node: str):
    value = {"node": node, "spec_hash": SPEC_HASH, "lease_ms": LEASE_MS}
    req = nb.ProposeRequest(slot=slot, value=encode(value), timeout_ms=3_000)
    return client.call(client.slots.Propose, req, 10)


def test_an_operator_cannot_move_a_service_while_its_owner_is_heard(make_cluster):
    cluster = make_cluster(3)
    ids: list[str] = []
    # each node knows the admin token once node 0's row reached it
    assert wait_for(lambda: ids.extend(_node_id(cluster, i) for i in range(len(ids), 3))
                    or len(ids) == 3, 20)
    with cluster.client(0) as admin:
        token = admin.call(admin.admin.CreateToken, nb.CreateTokenRequest(role="operator")).token
    operator = Client(f"127.0.0.1:{cluster.nodes[0].api_port}", token, cluster.ca, timeout_s=10)
    with operator:
        assert wait_for(lambda: operator.call(operator.cluster.GetStatus,
                                              nb.GetStatusRequest()) is not None, 10)
        r = _propose(operator, "placement/web/1", ids[2])  # node 2 owns it
        assert r.decided and decode(r.value)["node"] == ids[2]
        assert wait_for(lambda: all(_decided(cluster, i, "placement/web/1") for i in range(3)), 10)

        # Everyone hears node 2: the operator's next generation for node 1 is refused.
        with pytest.raises(ClientError) as e:
            _propose(operator, "placement/web/2", ids[1])
        assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION, e.value
        said = str(e.value)
        assert "lease_held" in said and f"heard from {ids[2][:16]}" in said, said
        assert "the owner of placement/web/1" in said, said
        # A malformed value is refused with its path, a skipped generation too.
        bad = nb.ProposeRequest(slot="placement/web/2", value=encode({"node": ids[1]}))
        with pytest.raises(ClientError) as e:
            operator.call(operator.slots.Propose, bad, 10)
        assert "placement/web/2.lease_ms: missing" in str(e.value), e.value
        with pytest.raises(ClientError) as e:
            _propose(operator, "placement/web/3", ids[1])
        assert "placement/web/2 is not decided here" in str(e.value), e.value

        # Node 2 cut off: still refused before its lease and the margin have passed ...
        cluster.isolate(2)
        cut = time.monotonic()
        need_s = silence_needed_ms(LEASE_MS) / 1000
        with pytest.raises(ClientError) as e:
            _propose(operator, "placement/web/2", ids[1])
        assert "lease_held" in str(e.value) and time.monotonic() - cut < need_s

        # ... and decided for node 1 once they have (at node 0 and node 1: a majority).
        decided: list = []

        def moved() -> bool:
            try:
                decided.append(_propose(operator, "placement/web/2", ids[1]))
                return True
            except ClientError as exc:
                assert "lease_held" in str(exc) or "no quorum" in str(exc), exc
                return False

        assert wait_for(moved, need_s + 20, interval_s=1), "never decided after the lease"
        took = time.monotonic() - cut
        assert decided[0].decided and decode(decided[0].value)["node"] == ids[1]
        # The voters count from the last message they heard from node 2, which came before
        # the cut by a few anti-entropy intervals (200 ms each) at most: not earlier.
        assert took >= need_s - HEARD_GAP_S, (took, need_s)
        print(f"moved {took:.1f} s after the cut (voters need {need_s:.1f} s of silence)")
    assert not _decided(cluster, 2, "placement/web/2")  # the cut-off owner never learned it


HEARD_GAP_S = 1.0  # a live, connected member is heard far more often than this here


def _decided(cluster, i: int, slot: str) -> bool:
    with cluster.client(i) as c:
        return c.call(c.slots.GetSlot, nb.GetSlotRequest(slot=slot)).decided
