"""Writes and proposals are checked against the replicated access policy in force at the
node (decision 0034): the token's role is looked up in the policy's table and slot grants."""

from __future__ import annotations

import grpc
import pytest
from synod.v1 import northbound_pb2 as nb

from controller.agreement import AccessPolicy
from controller.node import datadir
from controller.node.client import ClientError
from controller.node.codec import value_pb
from controller.node.datadir import init_data_dirs
from controller.replication import decode, encode

from .conftest import InProcessNode

DP1 = "0000000000000001"


def _put(client, table, key, **values):
    row = nb.Row(table=table, key=[value_pb(k) for k in key])
    for name, v in values.items():
        row.values[name].CopyFrom(value_pb(v))
    return client.call(client.rows.Put, nb.PutRequest(rows=[row]))


def _delete(client, table, key):
    keys = [nb.KeyList(key=[value_pb(k) for k in key])]
    return client.call(client.rows.Delete, nb.DeleteRequest(table=table, keys=keys))


def _propose(client, slot, value, timeout_ms=3_000):
    req = nb.ProposeRequest(slot=slot, value=encode(value), timeout_ms=timeout_ms)
    return client.call(client.slots.Propose, req, timeout_ms / 1000 + 5)


def _tokens(node) -> dict[str, str]:
    with node.client() as admin:
        return {
            role: admin.call(admin.admin.CreateToken, nb.CreateTokenRequest(role=role)).token
            for role in ("viewer", "operator")
        }


def _denied(call, *needles: str) -> None:
    with pytest.raises(ClientError) as e:
        call()
    assert e.value.code == grpc.StatusCode.PERMISSION_DENIED, e.value
    for needle in needles:
        assert needle in str(e.value)


def test_default_policy_viewer_reads_operator_writes_admin_keeps_its_slots(solo):
    tokens = _tokens(solo)
    with solo.client(tokens["viewer"]) as c:
        _denied(lambda: _put(c, "flows", [DP1, "f1"], priority=1),
                "role viewer may not write table 'flows' (access policy v0)")
        _denied(lambda: _delete(c, "kv", ["a"]),
                "role viewer may not write table 'kv' (access policy v0)")
        _denied(lambda: _propose(c, "alloc/vlan/1", 1),
                "role viewer may not propose 'alloc' slots (access policy v0)")
        c.call(c.cluster.GetStatus, nb.GetStatusRequest())  # reads still work
    with solo.client(tokens["operator"]) as c:
        _put(c, "flows", [DP1, "f1"], priority=10, actions="output:2")
        _delete(c, "flows", [DP1, "f1"])
        assert decode(_propose(c, "alloc/vlan/1", {"owner": "web"}).value) == {"owner": "web"}
        for kind in ("policy", "membership", "reunion"):
            _denied(lambda k=kind: _propose(c, f"{k}/v1" if k == "policy" else f"{k}/x", 1),
                    f"role operator may not propose '{kind}' slots (access policy v0)")
        # Token rows are the nodes' (an operator must not mint itself an admin token).
        _denied(lambda: _put(c, "internal", ["token/0123456789abcdef"], value=b"x"),
                "table 'internal' is reserved")
        _put(c, "kv", ["token/0123456789abcdef"], value=b"x")  # a user row like any other
    with solo.client() as admin:
        got = admin.call(admin.rows.Get, nb.GetRequest(table="flows",
                                                       key=[value_pb(DP1), value_pb("f1")]))
        assert not got.found
        # Checkpoints are the nodes' own (decision 0070): not even an admin proposes one.
        _denied(lambda: _propose(admin, "checkpoint/1", {}),
                "checkpoint slots are proposed by the nodes themselves")


def test_a_decided_policy_change_applies_at_once(tmp_path, monkeypatch):
    # The node proposes with its own key: let nodes be admins so it may propose `policy`.
    genesis_policy = {"access": {**datadir.GENESIS_POLICY["access"], "default_role": "admin"}}
    monkeypatch.setattr(datadir, "GENESIS_POLICY", genesis_policy)
    d = tmp_path / "n"
    init_data_dirs([d], "policy")
    node = InProcessNode(d).start()
    try:
        tokens = _tokens(node)
        with node.client(tokens["operator"]) as c:
            _put(c, "services", ["web"], image="microvm")
            _denied(lambda: _propose(c, "reunion/abc", "merge"), "(access policy v0)")
        with node.client(tokens["viewer"]) as c:
            _denied(lambda: _put(c, "kv", ["v"], value=b"1"), "(access policy v0)")

        v0 = AccessPolicy.from_value(genesis_policy["access"])
        v1 = v0.to_value() | {"version": 1}
        v1["tables"] = {**v1["tables"], "operator": ["flows", "kv"], "viewer": ["kv"]}
        v1["slots"] = {**v1["slots"], "operator": ["master", "placement", "alloc", "reunion"]}
        with node.client(tokens["operator"]) as c:  # an operator may not change the policy
            _denied(lambda: _propose(c, "policy/v1", v1),
                    "role operator may not propose 'policy' slots (access policy v0)")
        with node.client() as admin:
            decided = _propose(admin, "policy/v1", v1)
            assert decided.decided and decode(decided.value)["version"] == 1

        with node.client(tokens["viewer"]) as c:
            _put(c, "kv", ["v"], value=b"1")  # granted by v1
            _denied(lambda: _put(c, "flows", [DP1, "f"], priority=1),
                    "role viewer may not write table 'flows' (access policy v1)")
        with node.client(tokens["operator"]) as c:
            _put(c, "flows", [DP1, "f"], priority=1)
            _denied(lambda: _put(c, "services", ["db"], image="microvm"),
                    "role operator may not write table 'services' (access policy v1)")
            _denied(lambda: _delete(c, "services", ["web"]),
                    "role operator may not write table 'services' (access policy v1)")
            assert decode(_propose(c, "reunion/abc", "merge").value) == "merge"
    finally:
        node.stop()


def test_fixed_rules_when_agreement_is_off(tmp_path):
    d = tmp_path / "off"
    init_data_dirs([d], "off")
    node = InProcessNode(d, agreement={"enabled": False}).start()
    try:
        tokens = _tokens(node)
        with node.client(tokens["viewer"]) as c:
            _denied(lambda: _put(c, "kv", ["a"], value=b""),
                    "role viewer may not write table 'kv'", "agreement off")
        with node.client(tokens["operator"]) as c:
            _put(c, "services", ["web"], image="microvm")
            _denied(lambda: _put(c, "internal", ["token/0123456789abcdef"], value=b"x"),
                    "table 'internal' is reserved")
            _denied(lambda: _propose(c, "policy/v1", {}), "agreement off", "needs admin")
    finally:
        node.stop()
