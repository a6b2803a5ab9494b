"""Replicated flow rows: parsing, validation, cookies, and the audit's repair plan."""

from __future__ import annotations

import pytest

from controller.forwarding.audit import InstalledFlow, audit
from controller.forwarding.flowspec import (
    FLOW_COOKIE_MASK,
    FLOW_COOKIE_SPACE,
    FlowSpecError,
    flow_cookie,
    parse_actions,
    parse_dpid,
    parse_match,
    spec_from_row,
)
from controller.forwarding.intents import PORT_CONTROLLER, FlowAdd, FlowDelete, Match, Output


def row(**kw):
    base = {"dpid": "0000000000000101", "flow_id": "web", "priority": 200,
            "match": "eth_type=0x0800,ipv4_dst=10.1.0.1", "actions": "output:2"}
    base.update(kw)
    return base


def test_spec_from_row_parses_and_derives_cookie():
    spec = spec_from_row(row())
    assert spec.dpid == 0x101 and spec.priority == 200 and spec.table_id == 0
    assert spec.match == Match(eth_type=0x0800, ipv4_dst="10.1.0.1")
    assert spec.actions == (Output(2),)
    assert spec.cookie & FLOW_COOKIE_MASK == FLOW_COOKIE_SPACE
    assert spec.cookie == flow_cookie(0x101, "web") != flow_cookie(0x101, "web2")


@pytest.mark.parametrize("text, expected", [
    ("", Match()),
    ("in_port=3", Match(in_port=3)),
    ("tcp_dst=80", Match(eth_type=0x0800, ip_proto=6, tcp_dst=80)),
    ("udp_src=53,ipv4_src=10.0.0.0/8", Match(eth_type=0x0800, ip_proto=17, udp_src=53,
                                            ipv4_src="10.0.0.0/8")),
    ("eth_dst=02:00:00:00:01:01, vlan_vid=10", Match(eth_dst="02:00:00:00:01:01", vlan_vid=10)),
])
def test_parse_match(text, expected):
    assert parse_match(text) == expected


@pytest.mark.parametrize("text, message", [
    ("colour=blue", "unknown match field 'colour'"),
    ("in_port", "is not field=value"),
    ("in_port=0", "outside 1.."),
    ("in_port=x", "is not a number"),
    ("eth_dst=zz:00:00:00:00:00", "not a MAC address"),
    ("ipv4_dst=10.0.0.1/8", "has host bits set"),
    ("eth_type=0x86dd,ipv4_dst=10.0.0.1", "needs eth_type=0x800"),
    ("tcp_dst=1,udp_dst=2", "needs ip_proto"),
    ("in_port=1,in_port=2", "given twice"),
])
def test_parse_match_rejects_bad_input(text, message):
    with pytest.raises(FlowSpecError, match=message):
        parse_match(text)


def test_parse_actions():
    assert parse_actions("output:1,output:2") == (Output(1), Output(2))
    assert parse_actions("controller") == (Output(PORT_CONTROLLER),)
    assert parse_actions("drop") == () == parse_actions("")
    for bad, message in [("output:0", "port must be"), ("jump", "unknown action"),
                         ("drop,output:1", "cannot be combined"), ("output:x", "not a number")]:
        with pytest.raises(FlowSpecError, match=message):
            parse_actions(bad)


@pytest.mark.parametrize("value, expected", [(0x101, 0x101), ("0000000000000101", 0x101),
                                             ("0x101", 0x101), ("257", 257)])
def test_parse_dpid(value, expected):
    assert parse_dpid(value) == expected


@pytest.mark.parametrize("value", ["", "zz", 0, -1, None, True])
def test_parse_dpid_rejects(value):
    with pytest.raises(FlowSpecError):
        parse_dpid(value)


def test_unknown_ports_are_rejected_when_ports_are_known():
    with pytest.raises(FlowSpecError, match="has no port 9"):
        spec_from_row(row(actions="output:9"), known_ports=[1, 2, 3])
    assert spec_from_row(row(actions="output:3"), known_ports=[1, 2, 3]).actions == (Output(3),)


def test_bad_priority_and_missing_id():
    with pytest.raises(FlowSpecError, match="priority must be 0..65535"):
        spec_from_row(row(priority=70000))
    with pytest.raises(FlowSpecError, match="flow_id"):
        spec_from_row(row(flow_id=""))


# --- audit ------------------------------------------------------------------------------

def installed(spec, **changes):
    values = dict(cookie=spec.cookie, table_id=spec.table_id, priority=spec.priority,
                  match=spec.match, actions=spec.actions)
    values.update(changes)
    return InstalledFlow(**values)


def test_audit_clean_when_switch_matches():
    a, b = spec_from_row(row(flow_id="a")), spec_from_row(row(flow_id="b", actions="output:3"))
    result = audit(0x101, {a.cookie: a, b.cookie: b}, [installed(a), installed(b)])
    assert result.clean and result.intents == [] and result.installed == 2


def test_audit_readds_missing_replaces_changed_deletes_stale_and_ignores_others():
    a, b, c = (spec_from_row(row(flow_id=f)) for f in "abc")
    stale_cookie = flow_cookie(0x101, "gone")
    actual = [installed(b, actions=(Output(7),)),  # changed out of band
              installed(c),
              InstalledFlow(stale_cookie, 0, 5, Match(), ()),  # its row was deleted
              InstalledFlow(0x53594E0F00000001, 0, 0, Match(), (Output(PORT_CONTROLLER),)),
              InstalledFlow(0x1234, 0, 9, Match(), ())]  # someone else's flows
    result = audit(0x101, {s.cookie: s for s in (a, b, c)}, actual)
    assert result.missing == ["a"] and result.changed == ["b"]
    assert result.unexpected == [stale_cookie]
    deletes = [i for i in result.intents if isinstance(i, FlowDelete)]
    adds = [i for i in result.intents if isinstance(i, FlowAdd)]
    assert {d.cookie for d in deletes} == {b.cookie, stale_cookie}
    assert all(d.cookie_mask == 0xFFFFFFFFFFFFFFFF for d in deletes)
    assert {x.cookie for x in adds} == {a.cookie, b.cookie}


def test_audit_skips_in_flight_and_timed_flows():
    a = spec_from_row(row(flow_id="a"))
    t = spec_from_row(row(flow_id="t", idle_timeout=30))
    result = audit(0x101, {a.cookie: a, t.cookie: t}, [], in_flight=[a.cookie])
    assert result.clean


def test_ipv4_match_values_read_as_ipaddress_reads_them():
    """parse_match takes a plain address, or one with /32, without ipaddress (the node and
    the controller parse every row): the result, or the refusal, must be ipaddress's
    (seeded cases)."""
    import ipaddress
    import random

    rng = random.Random(14)
    cases = ["10.0.0.1", "10.0.0.01", "256.1.1.1", "1.2.3", "1.2.3.4.5", "1..2.3",
             "+1.2.3.4", "1.2.3.4/32", "1.2.3.0/24", "1.2.3.4/24", "0.0.0.0", "1.2.3.-1",
             "\u0661.2.3.4", "1.2.3.4/", "1.2.3.4/255.255.0.0"]
    cases += [".".join(str(rng.randrange(0, 300)) for _ in range(4)) for _ in range(500)]
    # With a prefix: /32 (a host route) is taken without ipaddress too, the rest is not.
    parts = ["0", "1", "99", "255", "256", "01", "", " 1", "x"]
    suffixes = ["", "/32", "/31", "/24", "/0", "/032", "/33", "/", "/ 32", "/x"]
    cases += [".".join(rng.choice(parts) for _ in range(rng.choice((3, 4, 4, 5))))
              + rng.choice(suffixes) for _ in range(2000)]
    for text in cases:
        try:
            net = ipaddress.IPv4Network(text.strip(), strict=True)  # parse_match strips
            want = str(net.network_address) if net.prefixlen == 32 else str(net)
        except ValueError:
            want = None
        try:
            got = parse_match(f"ipv4_src={text}").ipv4_src
        except FlowSpecError:
            got = None
        assert got == want, text
