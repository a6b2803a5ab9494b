"""`synod devices|links|hosts|masters`: ONOS's everyday views over the topology tables,
against an in-process node (rows written as a controller's report would be)."""

from __future__ import annotations

import json
import time

from click.testing import CliRunner
from synod.v1 import local_pb2
from synod.v1 import northbound_pb2 as nb

from controller.cli import cli
from controller.node.client import ClientError
from controller.node.codec import value_pb

DP1, DP2 = "0000000000000001", "0000000000000002"
MAC = "00:00:00:00:01:01"


def _run(node, *args):
    opts = ["--server", node.api, "--insecure", "--token", node.admin_token]
    return CliRunner().invoke(cli, [*args, *opts], catch_exceptions=False)


def _row(table, key, **values):
    row = nb.Row(table=table, key=[value_pb(k) for k in key])
    for name, v in values.items():
        row.values[name].CopyFrom(value_pb(v))
    return row


def _report(node):
    with node.client() as c:
        c.call(c.local.ReportTopology, local_pb2.TopologyReport(rows=[
            _row("switches", [DP1], name="", site="edge1", master="edge1",
                 generation_id=5, connected=True),
            _row("switches", [DP2], name="", site="cloud", master="edge1",
                 generation_id=6, connected=True),
            _row("ports", [DP1, 1], name="s1-eth1", mac="aa:00:00:00:00:01", up=True),
            _row("ports", [DP1, 2], name="s1-eth2", mac="aa:00:00:00:00:02", up=False),
            _row("links", [DP1, 2, DP2, 1], up=True, latency_ms=1.5),
            _row("hosts", [MAC], ip="10.0.1.1", dpid=DP1, port_no=1, vlan=0,
                 last_seen_ms=0)]))


def test_views_as_json(solo):
    _report(solo)
    out = {v: json.loads(_run(solo, v, "--json").stdout)
           for v in ("devices", "links", "hosts", "masters")}
    assert out["devices"] == [
        {"dpid": DP1, "available": True, "master": "edge1", "site": "edge1",
         "generation_id": 5, "ports": 2, "ports_up": 1},
        {"dpid": DP2, "available": True, "master": "edge1", "site": "cloud",
         "generation_id": 6, "ports": 0, "ports_up": 0}]
    assert out["links"] == [{"src": f"{DP1}/2", "dst": f"{DP2}/1", "up": True,
                             "latency_ms": 1.5}]
    assert out["hosts"] == [{"mac": MAC, "ip": "10.0.1.1", "location": f"{DP1}/1",
                             "vlan": 0}]
    assert out["masters"] == [{"master": "edge1", "devices": 2, "dpids": [DP1, DP2]}]


def test_views_as_tables(solo):
    assert _run(solo, "devices").stdout.strip() == "(none)"
    _report(solo)
    lines = _run(solo, "masters").stdout.splitlines()
    assert lines[0].split() == ["MASTER", "DEVICES", "DPIDS"]
    assert lines[1].split() == ["edge1", "2", f"{DP1},{DP2}"]
    assert _run(solo, "devices").stdout.splitlines()[1].split() == [
        DP1, "true", "edge1", "edge1", "5", "2", "1"]


def test_flows_list_says_pending_for_a_switch_no_controller_has(solo):
    _report(solo)
    for dpid in (DP1, DP2):
        added = _run(solo, "flows", "add", dpid, "f1", "--match", "in_port=1",
                     "--actions", "output:1")
        assert added.exit_code == 0, added.output
    with solo.client() as c:  # DP2 disconnects: its master retracts its row
        c.call(c.local.ReportTopology, local_pb2.TopologyReport(gone=[_row("switches", [DP2])]))
    listed = {r["dpid"]: r["status"] for r in json.loads(_run(solo, "flows", "list",
                                                               "--json").stdout)}
    assert listed == {DP1: "pending: not audited yet",
                      DP2: "pending: no controller has the switch"}
    # The master's audit saw it installed: the status says so, with the switch's counters
    # (flow_state needs schema/2: the first report asks for it, a later one goes through).
    state = local_pb2.TopologyReport(rows=[_row("flow_state", [DP1, "f1"], state="installed",
                                                 packets=7, bytes=420, seen_ms=1)])
    deadline = time.monotonic() + 10
    with solo.client() as c:
        while True:
            try:
                c.call(c.local.ReportTopology, state)
                break
            except ClientError:
                assert time.monotonic() < deadline, "flow_state never accepted"
                time.sleep(0.05)
    listed = {r["dpid"]: r for r in json.loads(_run(solo, "flows", "list", "--json").stdout)}
    assert (listed[DP1]["status"], listed[DP1]["packets"], listed[DP1]["bytes"]) == (
        "installed", 7, 420)
    assert listed[DP2]["packets"] is None
