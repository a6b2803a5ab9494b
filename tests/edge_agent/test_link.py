"""The agent's node link against a real node (in process, gRPC): the services placed here
arrive with their placement, a placement written after its service sends it, a move away
deletes it, and a report for a service placed elsewhere is refused."""

from __future__ import annotations

import time

import pytest
from synod.v1 import northbound_pb2 as nb

from controller.node.codec import value_pb
from controller.node.datadir import init_data_dirs
from edge_agent.link import NodeLink
from edge_agent.spec import parse_spec, to_row
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
