"""The L2 learning logic, run against fake OpenFlow tables."""

from __future__ import annotations

import pytest

from controller.forwarding.intents import (
    PORT_CONTROLLER,
    PORT_FLOOD,
    FlowAdd,
    FlowDelete,
    Match,
    Output,
    PacketOut,
)
from controller.forwarding.learning import (
    L2_COOKIE,
    LearningConfig,
    LearningSwitch,
    parse_ethernet,
)
from tests.unit.fake_openflow import FakeNetwork, frame

A, B, C = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"
BCAST = "ff:ff:ff:ff:ff:ff"


def test_switch_connected_installs_only_a_table_miss_to_controller():
    intents = LearningSwitch().switch_connected(7)
    assert intents == [FlowAdd(dpid=7, priority=0, match=Match(),
                               actions=(Output(PORT_CONTROLLER),), cookie=L2_COOKIE)]


@pytest.mark.parametrize("data, expected", [
    (frame(B, A), (B, A, 0x0800)),
    (frame(BCAST, A, 0x0806), (BCAST, A, 0x0806)),
    (b"\x00" * 13, None),
])
def test_parse_ethernet(data, expected):
    assert parse_ethernet(data) == expected


def test_unknown_destination_floods_without_a_flow():
    logic = LearningSwitch()
    out = logic.packet_in(1, 3, frame(B, A), now_ms=0)
    assert out == [PacketOut(dpid=1, in_port=3, actions=(Output(PORT_FLOOD),),
                             data=frame(B, A))]
    assert logic.lookup(1, A) == 3


def test_known_destination_installs_flow_with_idle_timeout_and_cookie():
    logic = LearningSwitch(LearningConfig(flow_idle_timeout_s=42))
    logic.packet_in(1, 2, frame(A, B), now_ms=0)
    out = logic.packet_in(1, 3, frame(B, A), now_ms=1)
    flow, packet_out = out
    assert isinstance(flow, FlowAdd) and isinstance(packet_out, PacketOut)
    assert flow.match == Match(in_port=3, eth_src=A, eth_dst=B)
    assert flow.actions == (Output(2),) and packet_out.actions == (Output(2),)
    assert flow.idle_timeout_s == 42 and flow.cookie == L2_COOKIE


def test_broadcast_is_flooded_and_multicast_source_not_learned():
    logic = LearningSwitch()
    out = logic.packet_in(1, 1, frame(BCAST, "01:00:5e:00:00:01"), now_ms=0)
    assert [type(i) for i in out] == [PacketOut]
    assert out[0].actions == (Output(PORT_FLOOD),)
    assert logic.lookup(1, "01:00:5e:00:00:01") is None


def test_lldp_and_runt_frames_are_ignored():
    logic = LearningSwitch()
    assert logic.packet_in(1, 1, frame("01:80:c2:00:00:0e", A, 0x88CC), now_ms=0) == []
    assert logic.packet_in(1, 1, b"\x01\x02", now_ms=0) == []


def test_destination_behind_ingress_port_is_dropped():
    logic = LearningSwitch()
    logic.packet_in(1, 4, frame(A, B), now_ms=0)
    assert logic.packet_in(1, 4, frame(B, A), now_ms=0) == []


def test_host_move_deletes_flows_towards_it():
    logic = LearningSwitch()
    logic.packet_in(1, 1, frame(B, A), now_ms=0)
    out = logic.packet_in(1, 5, frame(B, A), now_ms=1)
    assert FlowDelete(dpid=1, match=Match(eth_dst=A), cookie=L2_COOKIE) in out
    assert logic.lookup(1, A) == 5


def test_stale_entries_expire_and_table_is_bounded():
    logic = LearningSwitch(LearningConfig(mac_table_size_max=2, mac_entry_ttl_ms=1000))
    logic.packet_in(1, 1, frame(BCAST, A), now_ms=0)
    out = logic.packet_in(1, 2, frame(A, B), now_ms=5000)  # A's entry is 5 s old: stale
    assert out[-1].actions == (Output(PORT_FLOOD),)
    logic.packet_in(1, 3, frame(BCAST, C), now_ms=5000)
    logic.packet_in(1, 4, frame(BCAST, "02:00:00:00:00:0d"), now_ms=5000)
    assert logic.lookup(1, B) is None  # evicted as the oldest when the table overflowed
    assert logic.lookup(1, C) == 3


def test_disconnect_forgets_the_switch():
    logic = LearningSwitch()
    logic.packet_in(9, 1, frame(BCAST, A), now_ms=0)
    logic.switch_disconnected(9)
    assert logic.lookup(9, A) is None


def _linear_network(logic: LearningSwitch) -> FakeNetwork:
    # h1 - s1 - s2 - s3 - h3, with h2 on s2: a loop-free chain like one site's switches.
    net = FakeNetwork(logic)
    for dpid in (1, 2, 3):
        net.add_switch(dpid, ports=3)
    net.link((1, 2), (2, 2))
    net.link((2, 3), (3, 2))
    net.attach("h1", (1, 1))
    net.attach("h2", (2, 1))
    net.attach("h3", (3, 1))
    return net


MAC = {"h1": A, "h2": B, "h3": C}


def test_fake_network_first_exchange_floods_then_flows_take_over():
    net = _linear_network(LearningSwitch())
    assert sorted(net.send("h1", frame(BCAST, MAC["h1"], 0x0806))) == ["h2", "h3"]
    assert net.send("h3", frame(MAC["h1"], MAC["h3"])) == ["h1"]
    assert net.send("h1", frame(MAC["h3"], MAC["h1"])) == ["h3"]
    before = net.packet_ins
    for _ in range(5):
        assert net.send("h1", frame(MAC["h3"], MAC["h1"])) == ["h3"]
        assert net.send("h3", frame(MAC["h1"], MAC["h3"])) == ["h1"]
    assert net.packet_ins == before, "steady traffic must not reach the controller"


def test_fake_network_all_pairs_reachable_and_unicast_not_leaked():
    net = _linear_network(LearningSwitch())
    for h in MAC:
        net.send(h, frame(BCAST, MAC[h], 0x0806))  # gratuitous ARP: everyone is learned
    for src in MAC:
        for dst in MAC:
            if src != dst:
                assert net.send(src, frame(MAC[dst], MAC[src])) == [dst]


def test_fake_switch_delete_leaves_foreign_cookies():
    net = _linear_network(LearningSwitch())
    sw = net.switches[1]
    sw.apply(FlowAdd(dpid=1, priority=5, match=Match(eth_dst=A), actions=(Output(1),),
                     cookie=0x1234))
    sw.apply(FlowDelete(dpid=1, match=Match(eth_dst=A), cookie=L2_COOKIE))
    assert any(f.cookie == 0x1234 for f in sw.flows)
