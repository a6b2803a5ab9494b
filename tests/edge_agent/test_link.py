"""The agent's node link against a real node (in process, gRPC): the services placed here
arrive with their placement, a placement written after its service sends it, a move away
deletes it, and a report for a service placed elsewhere is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import grpc
import pytest
from synod.v1 import northbound_pb2 as nb

from controller.node.client import ClientError
from controller.node.codec import value_pb
from controller.node.datadir import init_data_dirs
from controller.replication import decode, encode
from edge_agent.deploy import AgentInfo, agent_key
from edge_agent.link import NodeLink
from edge_agent.spec import Capacity, parse_spec, to_row
from tests.node.conftest import InProcessNode


@pytest.fixture
def node(tmp_path):
    d = tmp_path / "solo"
    init_data_dirs([d], "solo")
    n = InProcessNode(d).start()
    yield n
    n.stop()


def _put(c, table, key, **values):
    row = nb.Row(table=table, key=[value_pb(key)])
    for k, v in values.items():
        row.values[k].CopyFrom(value_pb(v))
    c.call(c.rows.Put, nb.PutRequest(rows=[row]))


def _until(pred, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_services_follow_their_placement(node, tmp_path):
    token = tmp_path / "token"
    token.write_text((node.data / "admin.token").read_text())
    with node.client() as c:
        me = c.call(c.cluster.GetStatus, nb.GetStatusRequest()).node_id
        for who in (me, "someone-else"):  # the node checks placements against agents' rows
            _put(c, "kv", agent_key(who), value=AgentInfo(who, "edge1", Capacity(2, 1024),
                                                          ("br0",)).encode())
        _put(c, "services", "early", **to_row(parse_spec({"name": "early"})))
        _put(c, "placements", "early", node=me, generation=1)
        link = NodeLink(node.api, str(token), "", insecure=True)
        link.start()
        try:
            assert link.connected.wait(10) and link.desired.synced
            assert set(link.desired.rows) == {"early"}
            assert link.desired.generations["early"] == 1
            # a service first, its placement here later: the placement event brings it
            _put(c, "services", "late", **to_row(parse_spec({"name": "late"})))
            time.sleep(0.3)
            assert "late" not in link.desired.rows
            _put(c, "placements", "late", node=me, generation=4)
            assert _until(lambda: link.desired.generations.get("late") == 4)
            # moved to another node: gone from this agent's view
            _put(c, "placements", "early", node="someone-else", generation=2)
            assert _until(lambda: "early" not in link.desired.rows)
            # and this agent may not report its state any more
            assert link.report("late", "running", 4) is None
            err = link.report("early", "stopped", 1)
            assert err is not None and "placed on node someone-else" in err
            got = c.call(c.rows.Get, nb.GetRequest(table="placements",
                                                   key=[value_pb("early")]))
            assert got.row.values["node"].text_value == "someone-else"
        finally:
            link.stop()


def _rows(c, table):
    return {r.key[0].text_value for r in c.call(c.rows.List, nb.ListRequest(table=table)).rows}


def test_the_node_refuses_service_rows_no_agent_could_run(node):
    """A raw RowService.Put is checked on the node as `services deploy` checks in the
    client: spec keys with their path, MAC/IPv4 clashes, the placed node's bridges and
    capacity. Refused with INVALID_ARGUMENT and a reason; nothing is written."""
    def spec(name, **kw):
        return to_row(parse_spec({"name": name, **kw}))

    def nic(mac, ip, switch="br0"):
        return [{"switch": switch, "mac": mac, "ipv4": ip}]

    def put(*rows):
        pb = []
        for table, key, values in rows:
            r = nb.Row(table=table, key=[value_pb(key)])
            for k, v in values.items():
                r.values[k].CopyFrom(value_pb(v))
            pb.append(r)
        return c.call(c.rows.Put, nb.PutRequest(rows=pb))

    def refused(needle, *rows):
        before = (_rows(c, "services"), _rows(c, "placements"))
        with pytest.raises(ClientError) as e:
            put(*rows)
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT, e.value
        assert needle in str(e.value), str(e.value)
        assert (_rows(c, "services"), _rows(c, "placements")) == before

    with node.client() as c:
        me = c.call(c.cluster.GetStatus, nb.GetStatusRequest()).node_id
        put(("kv", agent_key(me), {"value": AgentInfo(me, "edge1", Capacity(2, 512),
                                                      ("br0",)).encode()}))
        a = spec("a", memory_mb=256, nics=nic("52:54:00:00:00:0a", "10.0.0.10/24"))
        put(("services", "a", a), ("placements", "a", {"node": me, "generation": 1}))

        bad = dict(a, desired_state=a["desired_state"].replace('"mac":"52:54:00:00:00:0a"',
                                                                '"mac":"nope"'))
        refused("services/b: name: the row is 'b' but its spec says 'a'", ("services", "b", a))
        refused("services/b: nics[0].mac: not a MAC address",
                ("services", "b", dict(bad, desired_state=bad["desired_state"].replace(
                    '"name":"a"', '"name":"b"'))))
        refused("services/b: colour: unknown key", ("services", "b", {
            "desired_state": '{"name":"b","colour":"red"}'}))
        refused("services/b: image:", ("services", "b", {"image": "img"}))
        refused("services/b: nics[0].mac: 52:54:00:00:00:0a is already used by service 'a'",
                ("services", "b", spec("b", nics=nic("52:54:00:00:00:0a", "10.0.0.11/24"))))
        refused("nics[0].ipv4: 10.0.0.10 is already used by service 'a'",
                ("services", "b", spec("b", nics=nic("52:54:00:00:00:0b", "10.0.0.10/24"))))
        # two clashing services in one write: neither is stored
        refused("is already used by service",
                ("services", "b", spec("b", nics=nic("52:54:00:00:00:0b", "10.0.0.11/24"))),
                ("services", "c", spec("c", nics=nic("52:54:00:00:00:0b", "10.0.0.12/24"))))
        b = spec("b", memory_mb=384, nics=nic("52:54:00:00:00:0b", "10.0.0.11/24"))
        refused(f"services/b: memory_mb: 384 more would make 640 MB on node {me[:16]}, "
                "which offers 512 MB",
                ("services", "b", b), ("placements", "b", {"node": me, "generation": 1}))
        refused("has no bridge 'e9s9'", ("services", "b", spec("b", nics=nic(
            "52:54:00:00:00:0b", "10.0.0.11/24", "e9s9"))),
            ("placements", "b", {"node": me, "generation": 1}))
        refused("node nobody has no edge agent", ("services", "b", spec("b")),
                ("placements", "b", {"node": "nobody", "generation": 1}))
        # the service row first, its placement later: checked when the placement comes
        put(("services", "b", b))
        refused("memory_mb: 384 more", ("placements", "b", {"node": me, "generation": 1}))
        # stopped, it needs no room; the old flag form still works
        put(("services", "b", dict(b, desired_state=b["desired_state"].replace(
            '"state":"running"', '"state":"stopped"'))),
            ("placements", "b", {"node": me, "generation": 1}))
        put(("services", "old", {"image": "microvm", "vcpus": 1, "memory_mb": 128,
                                 "desired_state": "running"}))
        assert {"a", "b", "old"} <= _rows(c, "services")


def test_deploy_decides_the_node_of_a_service_that_may_move(node, tmp_path):
    token = (node.data / "admin.token").read_text().strip()
    with node.client() as c:
        me = c.call(c.cluster.GetStatus, nb.GetStatusRequest()).node_id
        _put(c, "kv", agent_key(me), value=AgentInfo(me, "edge1", Capacity(2, 1024),
                                                     ("br0",)).encode())
        spec = tmp_path / "any.yaml"
        spec.write_text("name: roamer\nplacement: any\nrestart: {failover-after: 20}\n")
        env = {**os.environ, "SYNOD_SERVER": node.api, "SYNOD_TOKEN": token,
               "SYNOD_INSECURE": "1"}
        done = subprocess.run([sys.executable, "-c", "from controller.cli import main; main()",
                               "services", "deploy", str(spec), "--json"],
                              capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["node"] == me
        slot = c.call(c.slots.GetSlot, nb.GetSlotRequest(slot="placement/roamer/1"))
        value = decode(slot.value)
        assert slot.decided and value["node"] == me, value
        # the owner's lease: S/(1+rho) less the stop and a round (lease.owner_deadline_ms)
        assert value["lease_ms"] == int(20_000 / 1.01) - 10_000 and len(value["spec_hash"]) == 64
        # an early next generation for another node is refused by this (only) voter,
        # which has heard from the owner (itself) just now: decision 0081 section 3
        with pytest.raises(ClientError) as e:
            c.call(c.slots.Propose, nb.ProposeRequest(slot="placement/roamer/2", value=encode(
                {**value, "node": "0" * 16}), timeout_ms=2_000))
        assert "bad_placement" in str(e.value) and "is not a member" in str(e.value)
        got = c.call(c.rows.Get, nb.GetRequest(table="placements", key=[value_pb("roamer")]))
        assert got.row.values["node"].text_value == me
        # what the agent asks before it starts such a service
        token_file = tmp_path / "token"
        token_file.write_text(token)
        link = NodeLink(node.api, str(token_file), "", insecure=True)
        link.start()
        try:
            assert link.connected.wait(10)
            assert link.decided_node("placement/roamer/1") == (me, "")
            assert link.decided_node("placement/roamer/2") == (None, "not decided yet")
        finally:
            link.stop()


def test_deploys_decide_the_sequence_of_a_services_states(node, tmp_path):
    """services deploy / rm decide service/<name>/<n> before writing (decision 0082); a raw
    Put of a row those slots did not decide is refused by the node."""
    token = (node.data / "admin.token").read_text().strip()
    env = {**os.environ, "SYNOD_SERVER": node.api, "SYNOD_TOKEN": token, "SYNOD_INSECURE": "1"}

    def synod(*args, ok=True):
        done = subprocess.run([sys.executable, "-c", "from controller.cli import main; main()",
                               *args], capture_output=True, text=True, timeout=60, env=env)
        assert (done.returncode == 0) == ok, done.stderr
        return done

    def deploy(memory_mb, state="running"):
        f = tmp_path / "life.yaml"
        f.write_text(f"name: life\nmemory_mb: {memory_mb}\nstate: {state}\n"
                     "placement: {site: edge1}\n")
        return synod("services", "deploy", str(f))

    def slot(n):
        r = c.call(c.slots.GetSlot, nb.GetSlotRequest(slot=f"service/life/{n}"))
        return decode(r.value) if r.decided else None

    with node.client() as c:
        me = c.call(c.cluster.GetStatus, nb.GetStatusRequest()).node_id
        _put(c, "kv", agent_key(me), value=AgentInfo(me, "edge1", Capacity(2, 1024),
                                                     ("br0",)).encode())
        deploy(128)
        first = slot(1)
        assert first["action"] == "deploy" and first["prev"] == "" and slot(2) is None
        deploy(128)  # the same spec again: nothing to decide
        assert slot(2) is None
        deploy(256)
        assert slot(2)["action"] == "upgrade" and slot(2)["prev"] == first["desired"]
        deploy(256, "stopped")
        assert slot(3) == {"action": "stop", "desired": slot(2)["desired"],
                           "prev": slot(2)["desired"]}
        # a raw Put of another spec, or of the decided one running, is refused
        for mem, state in ((512, "stopped"), (256, "running")):
            row = to_row(parse_spec({"name": "life", "memory_mb": mem, "state": state,
                                     "placement": {"site": "edge1"}}))
            with pytest.raises(ClientError) as e:
                _put(c, "services", "life", **row)
            assert "services/life: not what service/life/3 decided (stopped" in str(e.value)
        got = c.call(c.rows.Get, nb.GetRequest(table="services", key=[value_pb("life")]))
        assert '"memory_mb":256' in got.row.values["desired_state"].text_value
        # a raw delete of the row is refused while the slots say it exists
        with pytest.raises(ClientError) as e:
            c.call(c.rows.Delete, nb.DeleteRequest(table="services", keys=[
                nb.KeyList(key=[value_pb("life")])]))
        assert "service/life/3 decided it stopped: `synod services rm`" in str(e.value)
        synod("services", "rm", "life")
        assert slot(4) == {"action": "remove", "desired": "", "prev": slot(2)["desired"]}
        assert not c.call(c.rows.Get, nb.GetRequest(table="services",
                                                    key=[value_pb("life")])).found
        with pytest.raises(ClientError) as e:
            _put(c, "services", "life", **to_row(parse_spec({"name": "life"})))
        assert "removed in service/life/4" in str(e.value)
        deploy(128)
        assert slot(5)["action"] == "deploy" and slot(5)["prev"] == ""
        # another client stopped it meanwhile: a deploy plans from the decided state
        c.call(c.slots.Propose, nb.ProposeRequest(slot="service/life/6", value=encode(
            {"action": "stop", "desired": slot(5)["desired"], "prev": slot(5)["desired"]})))
        deploy(192, "running")
        assert slot(7)["action"] == "deploy" and slot(7)["prev"] == slot(5)["desired"]
        assert slot(8) is None
