"""Synod's packed flow-mods, bundle messages and flow-stats requests are byte-identical to
os-ken's: on fixed cases, and on generated flows (seeded; replay one with -k 'seed-N')."""

from __future__ import annotations

import itertools
import random

import pytest
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from controller.forwarding.flowspec import parse_actions, parse_match
from controller.forwarding.intents import (
    PORT_CONTROLLER,
    FlowAdd,
    FlowDelete,
    FlowStatsRequest,
    Match,
    Output,
)
from controller.forwarding.wire import (
    bundle_add,
    bundle_ctrl,
    bundled_flow_mods,
    flow_mod,
    flow_stats_request,
)
from controller.openflow.ofmsg import to_message
from tests.unit.ofbytes import random_match, random_outputs


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


# --- generated flows (property style, seeded): replay one with -k 'seed-N' -------------
def random_intent(rng: random.Random) -> FlowAdd | FlowDelete:
    if rng.random() < 0.8:
        return FlowAdd(0x101, rng.randrange(0, 65536), random_match(rng), random_outputs(rng),
                       rng.randrange(0, 65536), rng.randrange(0, 65536), rng.getrandbits(64),
                       rng.randrange(0, 255))
    return FlowDelete(0x101, random_match(rng), rng.getrandbits(64),
                      rng.choice([0xFFFF_FFFF_FFFF_FFFF, 0xFFFF << 48, rng.getrandbits(64)]))


@pytest.mark.parametrize("seed", range(40), ids=lambda s: f"seed-{s}")
def test_generated_flow_mods_equal_osken(seed):
    rng = random.Random(seed)
    for _ in range(50):
        intent, xid = random_intent(rng), rng.getrandbits(32)
        assert flow_mod(xid, intent) == osken_bytes(to_message(FakeDatapath, intent), xid)


@pytest.mark.parametrize("seed", range(10), ids=lambda s: f"seed-{s}")
def test_generated_bundles_equal_osken(seed):
    dp, ofp, parser = FakeDatapath, ofproto_v1_3, ofproto_v1_3_parser
    rng = random.Random(seed)
    intents = [random_intent(rng) for _ in range(rng.randrange(1, 60))]
    bundle_id, first = rng.getrandbits(32), rng.getrandbits(31)
    ours = list(bundled_flow_mods(itertools.count(first), bundle_id, ofp.ONF_BF_ATOMIC, intents))
    theirs = [osken_bytes(parser.ONFBundleAddMsg(dp, bundle_id, ofp.ONF_BF_ATOMIC,
                                                 to_message(dp, intent), []), first + i)
              for i, intent in enumerate(intents)]
    assert ours == theirs


@pytest.mark.parametrize("cookie, mask", [(0, 0), (0x5346 << 48, 0xFFFF << 48), (7, 2**64 - 1)])
def test_flow_stats_request_equals_osken(cookie, mask):
    intent = FlowStatsRequest(0x101, cookie, mask)
    assert flow_stats_request(0x80000005, cookie, mask) == \
        osken_bytes(to_message(FakeDatapath, intent), 0x80000005)


@pytest.mark.parametrize("bad", ["10.0.0.1/8", "10.0.0/8", "10.0.0.256", "10.0.0.01",
                                 "10.0.0.0/33", "10.0.0.0/08", "x"])
def test_an_invalid_ipv4_match_is_refused_not_sent(bad):
    with pytest.raises(ValueError):
        flow_mod(1, FlowAdd(1, 1, Match(ipv4_dst=bad), ()))


def test_the_flow_mod_cache_serves_the_same_intent_and_re_encodes_a_changed_one():
    from controller.forwarding.flowspec import spec_from_row
    from controller.forwarding.wire import FlowModCache, with_xid

    row = {"dpid": 0x101, "flow_id": "web", "priority": 300, "match": "ipv4_dst=10.0.0.1",
           "actions": "output:2"}
    spec = spec_from_row(row)
    cache = FlowModCache()
    assert spec.to_intent() is spec.to_intent()  # what the cache relies on
    first = cache.encoded(spec.to_intent())
    assert with_xid(first, 77) == flow_mod(77, spec.to_intent())
    assert cache.encoded(spec.to_intent()) is first  # a hit: not encoded again
    again = spec_from_row(row)  # the same row parsed again (a new, equal object)
    assert again.to_intent() is not spec.to_intent()
    assert cache.encoded(again.to_intent()) is first
    moved = spec_from_row({**row, "actions": "output:3"})  # same cookie, another flow
    assert moved.cookie == spec.cookie
    assert cache.encoded(moved.to_intent()) == flow_mod(0, moved.to_intent()) != first
    # Deleting the flow forgets its bytes.
    cache.encoded(FlowDelete(0x101, Match(), spec.cookie))
    assert len(cache) == 0


def test_the_flow_mod_cache_is_bounded():
    from controller.forwarding.wire import FlowModCache

    cache = FlowModCache(entries_max=10)
    intents = [FlowAdd(1, 1, Match(in_port=i + 1), (), cookie=i) for i in range(25)]
    cache.prepare(intents)
    assert len(cache) == 10  # prepare stops when full
    for intent in intents:
        assert cache.encoded(intent) == flow_mod(0, intent)
        assert len(cache) <= 10


@pytest.mark.parametrize("seed", range(5), ids=lambda s: f"seed-{s}")
def test_bundles_from_the_cache_equal_those_without(seed):
    from controller.forwarding.wire import FlowModCache

    rng = random.Random(seed)
    intents = [random_intent(rng) for _ in range(40)]
    cache = FlowModCache()
    cache.prepare(i for i in intents[:20] if isinstance(i, FlowAdd))
    plain = list(bundled_flow_mods(itertools.count(5), 9, 1, intents))
    assert list(bundled_flow_mods(itertools.count(5), 9, 1, intents, cache)) == plain
    assert list(bundled_flow_mods(itertools.count(5), 9, 1, intents, cache)) == plain
