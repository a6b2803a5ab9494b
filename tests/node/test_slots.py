"""SlotService on an in-process node: the agreement engine runs inside the node."""

from __future__ import annotations

import threading

import grpc
import pytest
from synod.v1 import northbound_pb2 as nb

from controller.agreement import Certificate, verify_certificate
from controller.agreement.membership import Membership
from controller.node.client import ClientError
from controller.node.datadir import DataDir, init_data_dirs
from controller.replication import decode, encode

from .conftest import InProcessNode


def _propose(c, slot, value, timeout_ms=3_000):
    req = nb.ProposeRequest(slot=slot, value=encode(value), timeout_ms=timeout_ms)
    return c.call(c.slots.Propose, req, timeout_ms / 1000 + 5)


def test_propose_get_and_watch_on_a_one_voter_cluster(solo):
    with solo.client() as c:
        before = c.call(c.slots.GetSlot, nb.GetSlotRequest(slot="alloc/vlan/7"))
        assert not before.decided
        got = _propose(c, "alloc/vlan/7", {"owner": "web"})
        assert got.decided and decode(got.value) == {"owner": "web"}
        assert got.voters == [solo.info["node_id"]] and got.membership_version == 0
        # Decided once: a later proposal of another value answers the decided one.
        again = _propose(c, "alloc/vlan/7", {"owner": "db"})
        assert decode(again.value) == {"owner": "web"}
        slot = c.call(c.slots.GetSlot, nb.GetSlotRequest(slot="alloc/vlan/7"))
        assert slot.decided and slot.certificate == got.certificate
        cert = Certificate.from_plain(decode(slot.certificate))
        assert cert.slot == "alloc/vlan/7" and cert.ballot.mv == 0
        identity = DataDir(solo.data).identity()
        cluster_id = bytes.fromhex(solo.info["cluster_id"])
        voters = {identity.node_id: identity.public_key}
        verify_certificate(cert, cluster_id, {0: Membership(0, voters, {})}.get)

        seen: list = []
        stream = c.slots.WatchSlots(nb.WatchSlotsRequest(prefix="alloc/"), metadata=c.metadata)

        def read():
            for s in stream:
                seen.append(s)
                if len(seen) == 2:
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        _propose(c, "alloc/vlan/8", 8)
        _propose(c, "master/0000000000000001", 1)  # another prefix: not watched
        reader.join(10)
        stream.cancel()
        assert [s.slot for s in seen] == ["alloc/vlan/7", "alloc/vlan/8"]
        assert decode(seen[1].value) == 8


def test_refusals_say_why(solo):
    with solo.client() as admin:
        viewer = admin.call(admin.admin.CreateToken, nb.CreateTokenRequest(role="viewer")).token
        operator = admin.call(admin.admin.CreateToken, nb.CreateTokenRequest(role="operator")).token
        # The nodes' role (default policy) may not propose policy slots.
        with pytest.raises(ClientError) as e:
            _propose(admin, "policy/v1", {"version": 1})
        assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "forbidden" in str(e.value)
        with pytest.raises(ClientError) as e:
            _propose(admin, "Not A Slot", 1)
        assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(ClientError) as e:
            admin.call(admin.slots.Propose, nb.ProposeRequest(slot="alloc/a/1", value=b"\xff"))
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with solo.client(viewer) as c, pytest.raises(ClientError) as e:
        _propose(c, "alloc/a/1", 1)
    assert e.value.code == grpc.StatusCode.PERMISSION_DENIED
    with solo.client(operator) as c:
        assert decode(_propose(c, "alloc/a/1", 1).value) == 1
        with pytest.raises(ClientError) as e:
            _propose(c, "reunion/abc", "merge")
        assert e.value.code == grpc.StatusCode.PERMISSION_DENIED


def test_agreement_can_be_switched_off(tmp_path):
    d = tmp_path / "off"
    init_data_dirs([d], "off")
    node = InProcessNode(d, agreement={"enabled": False}).start()
    try:
        with node.client() as c, pytest.raises(ClientError) as e:
            c.call(c.slots.GetSlot, nb.GetSlotRequest(slot="alloc/a/1"))
        assert e.value.code == grpc.StatusCode.UNIMPLEMENTED
    finally:
        node.stop()
