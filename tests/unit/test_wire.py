"""Synod's packed flow-mods and bundle messages are byte-identical to os-ken's."""

from __future__ import annotations

import pytest
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from controller.forwarding.flowspec import parse_actions, parse_match
from controller.forwarding.intents import PORT_CONTROLLER, FlowAdd, FlowDelete, Match, Output
from controller.forwarding.wire import bundle_add, bundle_ctrl, flow_mod
from controller.openflow.ofmsg import to_message


class FakeDatapath:
    ofproto = ofproto_v1_3
    ofproto_parser = ofproto_v1_3_parser
    id = 0x101


def osken_bytes(msg, xid: int) -> bytes:
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


MATCHES = ["", "in_port=3", "eth_dst=02:00:00:00:01:01", "eth_type=0x0806",
           "eth_type=0x0800,ipv4_dst=10.9.9.9", "ipv4_src=10.0.0.0/8,tcp_dst=80",
           "udp_src=53,ipv4_dst=192.0.2.0/24", "vlan_vid=10,eth_src=02:00:00:00:00:0a",
           "in_port=1,eth_src=02:00:00:00:00:0a,eth_dst=02:00:00:00:00:0b"]
ACTIONS = ["", "output:1", "output:1,output:2", "controller", "flood"]


@pytest.mark.parametrize("match", MATCHES)
@pytest.mark.parametrize("actions", ACTIONS)
def test_flow_add_bytes_equal_osken(match, actions):
    intent = FlowAdd(0x101, 300, parse_match(match), parse_actions(actions), 5, 7,
                     0x5346_0000_1234_5678, table_id=3)
    assert flow_mod(99, intent) == osken_bytes(to_message(FakeDatapath, intent), 99)


@pytest.mark.parametrize("match", [Match(), Match(eth_dst="02:00:00:00:00:0b")])
def test_flow_delete_bytes_equal_osken(match):
    intent = FlowDelete(0x101, match, 0x5346_0000_1234_5678, 0xFFFF_FFFF_FFFF_FFFF)
    assert flow_mod(7, intent) == osken_bytes(to_message(FakeDatapath, intent), 7)


def test_bundle_messages_equal_osken():
    dp, ofp, parser = FakeDatapath, ofproto_v1_3, ofproto_v1_3_parser
    flow = FlowAdd(1, 10, Match(in_port=1), (Output(PORT_CONTROLLER),), cookie=5)
    for kind in (ofp.ONF_BCT_OPEN_REQUEST, ofp.ONF_BCT_COMMIT_REQUEST):
        ours = bundle_ctrl(11, 42, kind, ofp.ONF_BF_ATOMIC)
        assert ours == osken_bytes(parser.ONFBundleCtrlMsg(dp, 42, kind, ofp.ONF_BF_ATOMIC, []),
                                   11)
    inner = to_message(dp, flow)
    theirs = osken_bytes(parser.ONFBundleAddMsg(dp, 42, ofp.ONF_BF_ATOMIC, inner, []), 12)
    assert bundle_add(12, 42, ofp.ONF_BF_ATOMIC, flow_mod(12, flow)) == theirs
