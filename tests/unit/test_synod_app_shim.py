"""The os-ken shim's translation: OpenFlow events to the pure cores and their outputs back.

The logic is tested in test_reconciler.py, test_ranking.py and test_mastership.py; this
checks that the app wires it up: role replies, refused flow-mods (also inside bundles),
flow-stats replies, and the start-up window before the first liveness probe.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from controller.forwarding import wire
from controller.forwarding.flowspec import FLOW_COOKIE_MASK, FLOW_COOKIE_SPACE, spec_from_row
from controller.forwarding.intents import ROLE_EQUAL, ROLE_MASTER, ROLE_SLAVE
from controller.forwarding.mastership import UNDEFINED_GENERATION
from controller.forwarding.ranking import PROBE_FAILURES_DEAD
from controller.openflow import synod_app
from controller.openflow.options import ControllerOptions
from tests.unit.ofbytes import flow_stats_entry, flow_stats_reply, osken_parse
from tests.unit.test_synod_app_reconnect import DPID, FakeDatapath, _connect, _desc, _features

CONTROLLERS = (("edge1", "127.0.0.1", 1), ("cloud", "127.0.0.1", 2))


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(synod_app, "now_ms", clock)
    return clock


def make_app(monkeypatch, site: str, index: int):
    monkeypatch.setattr(synod_app.hub, "spawn", lambda *_a, **_k: None)  # no loops
    monkeypatch.setattr(synod_app.options, "load", lambda: ControllerOptions(
        site=site, index=index, controllers=CONTROLLERS, node="", node_token_file="",
        node_ca="", node_insecure=False, audit_interval_ms=2000))
    return synod_app.SynodController()


def role_reply(app, dp, role: int, generation: int) -> None:
    msg = SimpleNamespace(datapath=dp, role=role, generation_id=generation)
    app._on_role_reply(SimpleNamespace(msg=msg))


def spec(flow_id: str, port: int):
    return spec_from_row({"dpid": DPID, "flow_id": flow_id, "priority": 300,
                          "match": f"in_port={port}", "actions": "output:3"})


def cookies_sent(dp) -> set[int]:
    """Cookies of the FLOW_MODs the app wrote as bytes (alone or inside bundle adds)."""
    found = set()
    for data in (m for m in dp.sent if isinstance(m, bytes)):
        at = 0
        while at < len(data):
            length = int.from_bytes(data[at + 2:at + 4], "big")
            cookie = synod_app.failed_flow_cookie(data[at:at + length])
            if cookie is not None:
                found.add(cookie)
            at += length
    return found


def test_the_home_controller_installs_desired_flows_once_confirmed(monkeypatch, clock):
    app = make_app(monkeypatch, "edge1", 1)
    a, b = spec("a", 1), spec("b", 2)
    app.set_desired(DPID, {a.cookie: a, b.cookie: b})
    dp = FakeDatapath()
    _connect(app, dp)
    assert cookies_sent(dp) == set()  # not before the switch confirms us
    claim = [r for r in dp.role_requests() if r.role == ROLE_MASTER]
    assert not claim  # reads its role first
    role_reply(app, dp, ROLE_EQUAL, UNDEFINED_GENERATION)
    claim = [r for r in dp.role_requests() if r.role == ROLE_MASTER]
    assert claim
    role_reply(app, dp, ROLE_MASTER, claim[0].generation_id)
    assert app.flows.is_master(DPID)
    assert {a.cookie, b.cookie} <= cookies_sent(dp)


def _master(app, dp) -> None:
    _connect(app, dp)
    role_reply(app, dp, ROLE_EQUAL, UNDEFINED_GENERATION)
    claim = [r for r in dp.role_requests() if r.role == ROLE_MASTER]
    role_reply(app, dp, ROLE_MASTER, claim[-1].generation_id)


def test_a_refused_flow_inside_a_bundle_becomes_a_flow_error_row(monkeypatch, clock):
    app = make_app(monkeypatch, "edge1", 1)
    a = spec("a", 1)
    app.set_desired(DPID, {a.cookie: a})
    dp = FakeDatapath()
    _master(app, dp)
    quoted = wire.bundle_add(7, 1, 1, wire.flow_mod(7, a.to_intent()))[:64]
    msg = SimpleNamespace(datapath=dp, type=5, code=9, data=quoted)
    app._on_error(SimpleNamespace(msg=msg))
    assert app._observe()["flow_errors"] == {(DPID, "a"): "type 5 code 9"}


def stats_requests(dp) -> list[tuple[int, int, int]]:
    """(xid, cookie, cookie mask) of the flow-stats requests the app wrote as bytes."""
    found = []
    for data in (m for m in dp.sent if isinstance(m, bytes)):
        if data[1] == ofproto_v1_3.OFPT_MULTIPART_REQUEST:
            assert int.from_bytes(data[8:10], "big") == ofproto_v1_3.OFPMP_FLOW
            found.append((int.from_bytes(data[4:8], "big"), int.from_bytes(data[32:40], "big"),
                          int.from_bytes(data[40:48], "big")))
    return found


def receive(app, dp, data: bytes) -> None:
    """What os-ken's receive loop and then the app's event loop do with a message."""
    from os_ken.ofproto import ofproto_parser

    queued = []
    app.send_event = lambda name, ev: queued.append((name, ev))
    msg = ofproto_parser.msg(dp, data[0], data[1], len(data),
                             int.from_bytes(data[4:8], "big"), bytearray(data))
    assert msg is None  # rawstats read it; os-ken dispatches nothing
    assert [name for name, _ in queued] == [app.name]
    app._on_flow_stats_read(queued[0][1])


def test_a_stats_reply_is_audited_and_repaired(monkeypatch, clock):
    app = make_app(monkeypatch, "edge1", 1)
    a = spec("a", 1)
    app.set_desired(DPID, {a.cookie: a})
    dp = FakeDatapath()
    _master(app, dp)
    clock.ms += 1_000
    app._send(app.flows.tick(clock.ms))  # what the tick loop does
    asked = stats_requests(dp)
    assert [(c, m) for _, c, m in asked] == [(FLOW_COOKIE_SPACE, FLOW_COOKIE_MASK)]
    dp.sent.clear()
    clock.ms += 10
    # The switch holds nothing: the flow sent 1 s ago is missing and is sent again.
    receive(app, dp, flow_stats_reply(asked[0][0], []))
    assert cookies_sent(dp) == {a.cookie}
    assert app.flows.last_audit(DPID).missing == ("a",)


def _held(a, in_port: int = 1):
    ofp, parser = ofproto_v1_3, ofproto_v1_3_parser
    actions = [parser.OFPActionOutput(3, ofp.OFPCML_NO_BUFFER)]
    return flow_stats_entry(a.cookie, 0, 300, parser.OFPMatch(in_port=in_port),
                            [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)],
                            packets=4, octets=400)


def test_the_stats_reply_is_read_from_its_bytes_in_parts(monkeypatch, clock):
    app = make_app(monkeypatch, "edge1", 1)
    a, b = spec("a", 1), spec("b", 2)
    app.set_desired(DPID, {a.cookie: a, b.cookie: b})
    dp = FakeDatapath()
    _master(app, dp)
    clock.ms += 1_000
    app._send(app.flows.tick(clock.ms))
    (xid, _, _), = stats_requests(dp)
    dp.sent.clear()
    receive(app, dp, flow_stats_reply(xid, [_held(a, 1)], more=True))
    assert app.flows.last_audit(DPID) is None  # waits for the last part
    receive(app, dp, flow_stats_reply(xid, [_held(b, 2)]))
    done = app.flows.last_audit(DPID)
    assert done is not None and done.clean and done.installed == 2
    assert cookies_sent(dp) == set()
    assert app.flows.flow_states()[DPID]["a"].packets == 4


def test_a_stats_reply_osken_parses_is_still_audited(monkeypatch, clock):
    """A reply rawstats leaves to os-ken (or one to another app's request) arrives as
    os-ken's objects and is translated as before."""
    app = make_app(monkeypatch, "edge1", 1)
    a = spec("a", 1)
    app.set_desired(DPID, {a.cookie: a})
    dp = FakeDatapath()
    _master(app, dp)
    clock.ms += 1_000
    app._send(app.flows.tick(clock.ms))
    msg = osken_parse(flow_stats_reply(1, [_held(a, 1)]))
    msg.datapath = dp
    dp.sent.clear()
    app._on_flow_stats(SimpleNamespace(msg=msg))
    done = app.flows.last_audit(DPID)
    assert done is not None and done.clean and done.installed == 1
    assert cookies_sent(dp) == set()


def test_a_backup_starting_up_does_not_claim_before_its_first_probe(monkeypatch, clock):
    app = make_app(monkeypatch, "cloud", 2)  # the switch's home is edge1
    dp = FakeDatapath()
    _connect(app, dp)
    role_reply(app, dp, ROLE_EQUAL, UNDEFINED_GENERATION)
    assert not [r for r in dp.role_requests() if r.role == ROLE_MASTER]
    # Two failed probes of edge1: now it claims.
    for _ in range(PROBE_FAILURES_DEAD):
        changed = app.liveness.probed({"edge1": False})
    assert changed
    app._send(app.mastership.better_alive(DPID, app._better_alive(DPID), clock.ms))
    role_reply(app, dp, ROLE_SLAVE, UNDEFINED_GENERATION)  # to its request to be SLAVE
    assert [r for r in dp.role_requests() if r.role == ROLE_MASTER]


def _port(no: int, name: bytes, mac: str, down: bool = False):
    ofp = ofproto_v1_3
    return ofproto_v1_3_parser.OFPPort(
        port_no=no, hw_addr=mac, name=name, config=0,
        state=ofp.OFPPS_LINK_DOWN if down else 0, curr=0, advertised=0, supported=0,
        peer=0, curr_speed=0, max_speed=0)


def test_port_rows_carry_names_macs_and_state_from_port_desc_and_status(monkeypatch, clock):
    from controller.openflow.node_link import topology_rows

    app = make_app(monkeypatch, "edge1", 1)
    dp = FakeDatapath()
    _features(app, dp)
    _desc(app, dp)
    body = [_port(1, b"e1s1-eth1\x00\x00", "AA:00:00:00:00:01"),
            _port(2, b"e1s1-eth2", "aa:00:00:00:00:02"),
            _port(ofproto_v1_3.OFPP_LOCAL, b"e1s1", "aa:00:00:00:00:ff")]
    app._on_port_desc(SimpleNamespace(msg=SimpleNamespace(datapath=dp, body=body, flags=0)))
    role_reply(app, dp, ROLE_EQUAL, UNDEFINED_GENERATION)
    claim = [r for r in dp.role_requests() if r.role == ROLE_MASTER]
    role_reply(app, dp, ROLE_MASTER, claim[-1].generation_id)

    def ports() -> dict:
        return {k[2]: v[2] for k, v in topology_rows(app._observe()).items()
                if k[0] == "ports"}

    assert ports() == {1: {"name": "e1s1-eth1", "mac": "aa:00:00:00:00:01", "up": True},
                       2: {"name": "e1s1-eth2", "mac": "aa:00:00:00:00:02", "up": True}}
    ofp = ofproto_v1_3
    for reason, port in [(ofp.OFPPR_MODIFY, _port(2, b"e1s1-eth2", "aa:00:00:00:00:02",
                                                  down=True)),
                         (ofp.OFPPR_ADD, _port(3, b"e1s1-eth3", "aa:00:00:00:00:03")),
                         (ofp.OFPPR_DELETE, _port(1, b"e1s1-eth1", "aa:00:00:00:00:01"))]:
        app._on_port_status(SimpleNamespace(msg=SimpleNamespace(datapath=dp, reason=reason,
                                                                desc=port)))
    got = ports()
    assert got[2] == {"name": "e1s1-eth2", "mac": "aa:00:00:00:00:02", "up": False}
    assert got[3] == {"name": "e1s1-eth3", "mac": "aa:00:00:00:00:03", "up": True}
    assert got[1] == {"name": "", "mac": "", "up": False}  # deleted: down, no name left


def test_a_large_bundles_commit_is_logged_with_its_time(monkeypatch, clock, caplog):
    app = make_app(monkeypatch, "edge1", 1)
    specs = [spec_from_row({"dpid": DPID, "flow_id": f"f{i}", "priority": 300,
                            "match": f"ipv4_dst=10.9.{i >> 8}.{i & 255}", "actions": "output:3"})
             for i in range(synod_app.BUNDLE_LOG_FLOW_MODS_MIN)]
    app.set_desired(DPID, {s.cookie: s for s in specs})
    dp = FakeDatapath()
    _master(app, dp)
    assert {c for c in cookies_sent(dp) if c & FLOW_COOKIE_MASK == FLOW_COOKIE_SPACE} == \
        {s.cookie for s in specs}
    bundle_id = max(app._bundles)  # the replicated flows' (the fabric sends its own first)
    assert app._bundles[bundle_id][1] == len(specs)
    ofp = ofproto_v1_3
    reply = SimpleNamespace(datapath=dp, bundle_id=bundle_id, type=ofp.ONF_BCT_COMMIT_REPLY)
    with caplog.at_level("INFO", logger=app.logger.name):
        app._on_bundle_reply(SimpleNamespace(msg=reply))
    assert f"committed a bundle of {len(specs)} flow-mods" in caplog.text
    assert bundle_id not in app._bundles


def test_a_takeover_sends_the_bytes_prepared_when_the_flows_were_learnt(monkeypatch, clock):
    """The desired flows are encoded when learnt; rows delivered again as new objects (the
    node link's watch starts with a snapshot) do not defeat that, and a takeover encodes
    none of them again."""
    app = make_app(monkeypatch, "edge1", 1)
    rows = [{"dpid": DPID, "flow_id": f"f{i}", "priority": 300, "match": f"in_port={i + 1}",
             "actions": "output:3"} for i in range(50)]
    specs = [spec_from_row(r) for r in rows]
    app._on_node_flows({DPID: {s.cookie: s for s in specs}})
    again = [spec_from_row(r) for r in rows]
    app._on_flow_changes([(DPID, s.cookie, s) for s in again])
    encoded = []
    real = wire.flow_mod
    monkeypatch.setattr(wire, "flow_mod", lambda xid, intent: encoded.append(intent.cookie)
                        or real(xid, intent))
    dp = FakeDatapath()
    _master(app, dp)
    assert {s.cookie for s in specs} <= cookies_sent(dp)
    assert not {s.cookie for s in specs} & set(encoded)
