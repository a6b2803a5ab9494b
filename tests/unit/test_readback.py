"""Flow-stats replies read from bytes give what os-ken's parser plus Synod's conversion gave.

Seeded and generated (property style): each case builds flows with os-ken's own match,
instruction and action classes, lays them out as a switch's reply, and compares
controller.forwarding.readback with os-ken's parser followed by ofmsg.match_from_ofp and
outputs_from_instructions (the path the audit used before). Replay one case with
`pytest tests/unit/test_readback.py -k 'seed-17'`.
"""

from __future__ import annotations

import random

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.forwarding.audit import InstalledFlow
from controller.forwarding.readback import NotPlain, parse_flow_stats_reply
from controller.openflow import rawstats
from controller.openflow.ofmsg import _ofp_match, match_from_ofp, outputs_from_instructions
from tests.unit.ofbytes import (
    flow_stats_entry,
    flow_stats_reply,
    osken_parse,
    random_match,
    random_outputs,
)

SEEDS = range(60)


def osken_flows(data: bytes) -> tuple[list[InstalledFlow], bool]:
    msg = osken_parse(data)
    flows = [InstalledFlow(s.cookie, s.table_id, s.priority, match_from_ofp(s.match),
                           outputs_from_instructions(ofp, s.instructions), s.idle_timeout,
                           s.hard_timeout, s.packet_count, s.byte_count) for s in msg.body]
    return flows, bool(msg.flags & ofp.OFPMPF_REPLY_MORE)


def _extras(rng: random.Random) -> dict:
    """OXM fields Synod's Match does not name (both readers must ignore them)."""
    extras = {"metadata": rng.getrandbits(64), "arp_op": rng.randrange(1, 3),
              "ipv6_src": "2001:db8::1", "tunnel_id": rng.getrandbits(32),
              "mpls_label": rng.randrange(0, 1 << 20), "ip_dscp": rng.randrange(0, 64)}
    return {k: v for k, v in extras.items() if rng.random() < 0.2}


def _instructions(rng: random.Random) -> list:
    out = []
    for _ in range(rng.randrange(0, 4)):
        kind = rng.randrange(6)
        if kind <= 1:
            actions = [parser.OFPActionOutput(o.port, rng.choice([0, 128, ofp.OFPCML_NO_BUFFER]))
                       for o in random_outputs(rng)]
            for _ in range(rng.randrange(0, 3)):  # other actions, skipped by both
                actions.insert(rng.randrange(len(actions) + 1), rng.choice([
                    parser.OFPActionPushVlan(0x8100), parser.OFPActionPopVlan(),
                    parser.OFPActionDecNwTtl(), parser.OFPActionGroup(7),
                    parser.OFPActionSetField(vlan_vid=0x1000 | rng.randrange(4096)),
                    parser.OFPActionSetField(ipv4_dst="10.0.0.9"),
                    parser.OFPActionSetField(eth_src="02:00:00:00:00:09")]))
            out.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions))
        elif kind == 2:
            out.append(parser.OFPInstructionActions(
                ofp.OFPIT_WRITE_ACTIONS, [parser.OFPActionOutput(5, ofp.OFPCML_NO_BUFFER)]))
        elif kind == 3:
            out.append(parser.OFPInstructionActions(ofp.OFPIT_CLEAR_ACTIONS, []))
        elif kind == 4:
            out.append(parser.OFPInstructionGotoTable(rng.randrange(1, 255)))
        else:
            out.append(parser.OFPInstructionWriteMetadata(rng.getrandbits(64),
                                                          rng.getrandbits(64)))
    return out


def random_entry(rng: random.Random) -> bytes:
    fields = dict(_ofp_match(parser, random_match(rng)).items())
    if rng.random() < 0.1:  # a /32 sent with an all-ones mask reads back as the address
        fields["ipv4_src"] = ("10.1.2.3", "255.255.255.255")
    fields.update(_extras(rng))
    return flow_stats_entry(
        cookie=rng.getrandbits(64), table_id=rng.randrange(0, 255),
        priority=rng.randrange(0, 65536), match=parser.OFPMatch(**fields),
        instructions=_instructions(rng), idle=rng.randrange(0, 65536),
        hard=rng.randrange(0, 65536), packets=rng.getrandbits(64), octets=rng.getrandbits(64),
        duration=(rng.getrandbits(32), rng.randrange(10**9)), flags=rng.randrange(0, 32))


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"seed-{s}")
def test_generated_replies_read_the_same_as_through_osken(seed):
    rng = random.Random(seed)
    entries = [random_entry(rng) for _ in range(rng.randrange(0, 40))]
    data = flow_stats_reply(rng.getrandbits(32), entries, more=rng.random() < 0.5)
    ours = parse_flow_stats_reply(data)
    assert ours == osken_flows(data)
    assert len(ours[0]) == len(entries)


def test_a_synod_flow_reads_back_as_its_spec():
    from controller.forwarding.flowspec import spec_from_row

    spec = spec_from_row({"dpid": 0x101, "flow_id": "web", "priority": 300,
                          "match": "ipv4_dst=10.1.0.0/16,tcp_dst=80", "actions": "output:2"})
    inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS,
                                         [parser.OFPActionOutput(2, ofp.OFPCML_NO_BUFFER)])]
    data = flow_stats_reply(5, [flow_stats_entry(spec.cookie, 0, 300,
                                                 _ofp_match(parser, spec.match), inst,
                                                 packets=7, octets=700)])
    (flow,), more = parse_flow_stats_reply(data)
    assert not more
    assert (flow.cookie, flow.table_id, flow.priority, flow.match, flow.actions) == \
        (spec.cookie, 0, 300, spec.match, spec.actions)
    assert (flow.packets, flow.bytes) == (7, 700)


@pytest.mark.parametrize("fields", [
    {"eth_src": ("02:00:00:00:00:01", "ff:ff:ff:00:00:00")},  # a masked MAC
    {"vlan_vid": (0x1000, 0x1000)},  # a masked VLAN
    {"eth_type": 0x0800, "ipv4_dst": ("10.0.0.0", "255.0.255.0")},  # not a prefix
    {"eth_type": 0x0800, "ipv4_dst": ("10.0.0.0", "0.0.0.255")},  # a hostmask
], ids=["masked-mac", "masked-vlan", "netmask-not-prefix", "hostmask"])
def test_matches_only_osken_objects_judge_the_same_way_are_left_to_osken(fields):
    data = flow_stats_reply(9, [flow_stats_entry(1, 0, 1, parser.OFPMatch(**fields), [])])
    with pytest.raises(NotPlain):
        parse_flow_stats_reply(data)


@pytest.mark.parametrize("cut", [1, 8, 17, 30])
def test_truncated_or_mislabelled_messages_are_not_read(cut):
    rng = random.Random(cut)
    data = flow_stats_reply(3, [random_entry(rng) for _ in range(3)])
    short = data[:-cut]
    short = short[:2] + len(short).to_bytes(2, "big") + short[4:]  # consistent length field
    with pytest.raises(NotPlain):
        parse_flow_stats_reply(short)
    with pytest.raises(NotPlain):
        parse_flow_stats_reply(data[:1] + bytes([ofp.OFPT_ECHO_REPLY]) + data[2:])


class Dp:
    pass


def test_rawstats_reads_only_the_replies_it_expects_on_that_connection():
    rawstats.install()
    rng = random.Random(1)
    ours, other = Dp(), Dp()
    got: list = []
    rawstats.expect(ours, 0x80000011, lambda dp, more, flows: got.append((dp, more, flows)))
    first = flow_stats_reply(0x80000011, [random_entry(rng)], more=True)
    last = flow_stats_reply(0x80000011, [random_entry(rng)])

    def receive(dp, data):  # what os-ken's receive loop calls for each message
        from os_ken.ofproto import ofproto_parser
        return ofproto_parser.msg(dp, data[0], data[1], len(data), 0x80000011,
                                  bytearray(data))

    # The same xid on another connection, e.g. another switch: os-ken parses it.
    assert isinstance(receive(other, first), parser.OFPFlowStatsReply)
    assert receive(ours, first) is None and receive(ours, last) is None
    assert [(dp, more, flows) for dp, more, flows in got] == [
        (ours, True, parse_flow_stats_reply(first)[0]),
        (ours, False, parse_flow_stats_reply(last)[0])]
    # After the last part the xid is no longer expected.
    assert isinstance(receive(ours, last), parser.OFPFlowStatsReply)


def test_rawstats_leaves_a_reply_it_cannot_judge_to_osken_and_forgets_it_when_done():
    rawstats.install()
    dp = Dp()
    got: list = []
    rawstats.expect(dp, 0x80000021, lambda *a: got.append(a))
    odd = flow_stats_reply(0x80000021, [flow_stats_entry(
        1, 0, 1, parser.OFPMatch(eth_src=("02:00:00:00:00:01", "ff:ff:ff:00:00:00")), [])])
    from os_ken.ofproto import ofproto_parser
    msg = ofproto_parser.msg(dp, 4, ofp.OFPT_MULTIPART_REPLY, len(odd), 0x80000021,
                             bytearray(odd))
    assert isinstance(msg, parser.OFPFlowStatsReply) and len(msg.body) == 1
    assert got == []
    assert 0x80000021 not in rawstats._expected


def test_rawstats_forgets_a_dead_connection_and_bounds_what_it_remembers():
    rawstats.install()
    dp = Dp()
    for xid in range(rawstats.EXPECTED_MAX + 10):
        rawstats.expect(dp, 0x90000000 + xid, lambda *a: None)
    assert len(rawstats._expected) <= rawstats.EXPECTED_MAX
    rawstats.forget(dp)
    assert not any(entry[0] is dp for entry in rawstats._expected.values())
