"""controller/forwarding/reports.py: a controller's topology report is checked like flows."""

from __future__ import annotations

import pytest

from controller.forwarding.reports import (
    _KEYS,
    _VALUES,
    TOPOLOGY_TABLES,
    ReportError,
    check_report,
    check_report_row,
)
from controller.replication import DEFAULT_SCHEMA

DP1, DP2 = "0000000000000001", "0000000000000002"
MAC = "00:00:00:00:01:01"

GOOD = [
    ("switches", (DP1,), {"name": "", "site": "edge1", "master": "edge1",
                          "generation_id": 0x101, "connected": True}),
    ("ports", (DP1, 1), {"name": "", "mac": "", "up": True}),
    ("ports", (DP1, 0xFFFFFF00), {"mac": MAC, "up": False}),
    ("links", (DP1, 1, DP2, 2), {"up": True, "latency_ms": 0.0}),
    ("links", (DP1, 1, DP1, 2), {"up": True, "latency_ms": 12}),
    ("hosts", (MAC,), {"ip": "10.0.1.1", "dpid": DP1, "port_no": 3, "vlan": 0,
                       "last_seen_ms": 0}),
    ("hosts", ("00:00:00:00:01:02",), {"ip": "", "dpid": DP2}),
    ("hosts", ("00:00:00:00:01:03",), {"ip": "fd00::1", "dpid": None}),
    ("flow_errors", (DP1, "f1"), {"error": "type 2 code 4"}),
]


def test_what_a_controller_reports_passes():
    check_report(GOOD)


@pytest.mark.parametrize("row, needle", [
    (("ports", (DP1, -5), {"up": True}),
     "rows[0] (ports 0000000000000001/-5): port_no -5 is not an OpenFlow port number"),
    (("ports", (DP1, 0xFFFFFF01), {}), "port_no 4294967041 is not an OpenFlow port"),
    (("ports", ("1", 1), {}), "dpid '1' is not a datapath id (16 lowercase hex digits"),
    (("ports", ("00000000000000AB", 1), {}), "is not a datapath id"),
    (("switches", ("0000000000000000",), {}), "not all zero"),
    (("switches", ("zz00000000000001",), {}), "is not a datapath id"),
    (("switches", ("0x00000000000001",), {}), "is not a datapath id"),  # one spelling only
    (("switches", (" 000000000000001",), {}), "is not a datapath id"),
    (("switches", ("1" * 17,), {}), "is not a datapath id"),
    (("switches", (DP1,), {"generation_id": -1}), "generation_id -1 is outside 0.."),
    (("switches", (DP1,), {"site": "x" * 300}), "site 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…(302 chars)"
                                                " must be text of 0..256 characters"),
    (("links", (DP1, 1, DP1, 1), {}), "a link needs two different ends"),
    (("links", (DP1, 1, "x", 2), {}), "dst_dpid 'x' is not a datapath id"),
    (("links", (DP1, 1, DP2, -2), {}), "dst_port -2 is not an OpenFlow port"),
    (("links", (DP1, 1, DP2, 2), {"latency_ms": float("nan")}), "latency_ms nan is not a finite"),
    (("links", (DP1, 1, DP2, 2), {"latency_ms": -1.0}), "latency_ms -1.0 is not a finite"),
    (("links", (DP1, 1, DP2, 2), {"up": 1}), "up 1 is not true or false"),
    (("hosts", ("00:01",), {}), "mac '00:01' is not a MAC address"),
    (("hosts", ("00:00:00:00:01:0G",), {}), "is not a MAC address"),
    (("hosts", ("00:00:00:00:01:0A",), {}), "is not a MAC address"),  # lowercase only
    (("hosts", (MAC + "\n",), {}), "is not a MAC address"),
    (("hosts", (MAC,), {"ip": "10.0.0.256"}), "ip '10.0.0.256' is not an IP address"),
    (("hosts", (MAC,), {"vlan": 4096}), "vlan 4096 is outside 0..4095"),
    (("hosts", (MAC,), {"port_no": -1}), "port_no -1 is not an OpenFlow port"),
    (("hosts", (MAC,), {"dpid": "1"}), "dpid '1' is not a datapath id"),
    (("hosts", (MAC,), {"last_seen_ms": -3}), "last_seen_ms -3 is outside"),
    (("ports", (DP1, 1), {"mac": "nope"}), "mac 'nope' is not a MAC address"),
    (("flow_errors", (DP1, ""), {}), "flow_id '' must be text of 1..256"),
    (("flow_errors", (DP1, "f"), {"error": "e" * 1001}), "error 'eeee"),
    (("kv", ("k",), {}), "table 'kv' is not topology"),
    (("ports", (DP1,), {}), "the key needs 2 values (dpid, port_no)"),
    (("ports", (DP1, 1), {"speed": 10}), "'speed' is not a column a report sets here"),
])
def test_a_bad_row_is_refused_naming_the_row_and_the_field(row, needle):
    with pytest.raises(ReportError) as e:
        check_report([row])
    assert needle in str(e.value)
    assert len(str(e.value)) < 300  # a value is quoted by a few dozen characters at most


def test_the_first_bad_row_is_named_by_its_position():
    with pytest.raises(ReportError, match=r"^rows\[9\] \(ports 0000000000000001/-5\)"):
        check_report([*GOOD, ("ports", (DP1, -5), {})])


def test_a_huge_value_is_never_echoed_whole():
    with pytest.raises(ReportError) as e:
        check_report_row("hosts", ("a" * 200_000,), {}, "rows[0]")
    assert len(str(e.value)) < 300 and "(200002 chars)" in str(e.value)


@pytest.mark.parametrize("name", sorted(TOPOLOGY_TABLES))
def test_the_rules_cover_the_schemas_columns_exactly(name):
    """Key and column names come from the schema; a column added there needs a rule here
    before a report may set it."""
    table = DEFAULT_SCHEMA.table(name)
    assert len(_KEYS[name]) == len(table.primary_key)
    assert set(_VALUES[name]) == {c.name for c in table.value_columns}
