"""Test helpers: seeded random OpenFlow 1.3 flows, and flow-stats replies as a switch sends them.

os-ken parses flow-stats replies but cannot serialise them, so `flow_stats_reply` lays
out the bytes (OpenFlow 1.3.5 section 7.3.5.2) around matches and instructions that
os-ken's own classes serialise.
"""

from __future__ import annotations

import random
import struct

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.forwarding.intents import PORT_CONTROLLER, PORT_FLOOD, Match, Output

_REPLY_HEADER = struct.Struct("!BBHIHH4x")
_FLOW_STATS = struct.Struct("!HBxIIHHHH4xQQQ")


def flow_stats_entry(cookie: int, table_id: int, priority: int, match, instructions,
                     idle: int = 0, hard: int = 0, packets: int = 0, octets: int = 0,
                     duration: tuple[int, int] = (0, 0), flags: int = 0) -> bytes:
    """One ofp_flow_stats: its fixed part, then os-ken's serialised match and instructions."""
    mbuf = bytearray()
    match.serialize(mbuf, 0)
    ibuf = bytearray()
    for inst in instructions:
        inst.serialize(ibuf, len(ibuf))
    length = _FLOW_STATS.size + len(mbuf) + len(ibuf)
    return _FLOW_STATS.pack(length, table_id, duration[0], duration[1], priority, idle, hard,
                            flags, cookie, packets, octets) + bytes(mbuf) + bytes(ibuf)


def flow_stats_reply(xid: int, entries: list[bytes], more: bool = False) -> bytes:
    body = b"".join(entries)
    return _REPLY_HEADER.pack(ofp.OFP_VERSION, ofp.OFPT_MULTIPART_REPLY,
                              _REPLY_HEADER.size + len(body), xid, ofp.OFPMP_FLOW,
                              ofp.OFPMPF_REPLY_MORE if more else 0) + body


def osken_parse(data: bytes):
    """os-ken's parse of one message, as its receive loop does it."""
    version, msg_type, length, xid = struct.unpack_from("!BBHI", data)
    return parser.msg_parser(None, version, msg_type, length, xid, bytearray(data))


def random_ipv4(rng: random.Random, prefix: bool) -> str:
    """An address, or a network "a.b.c.d/len" (len < 32, host bits zero) as parse_match
    writes them."""
    value = rng.getrandbits(32)
    if prefix:
        length = rng.randrange(0, 32)
        value &= (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF
    text = ".".join(str(b) for b in value.to_bytes(4, "big"))
    return f"{text}/{length}" if prefix else text


def random_mac(rng: random.Random) -> str:
    return ":".join(f"{b:02x}" for b in rng.randbytes(6))


def random_match(rng: random.Random) -> Match:
    """Any subset of Match's fields with values in range (not only valid combinations:
    the encoder and parser do not check prerequisites)."""
    fields: dict[str, object] = {}
    makers = {
        "in_port": lambda: rng.choice([1, 2, rng.randrange(1, 0xFFFFFF00)]),
        "eth_src": lambda: random_mac(rng), "eth_dst": lambda: random_mac(rng),
        "eth_type": lambda: rng.choice([0x0800, 0x0806, rng.randrange(0, 0x10000)]),
        "vlan_vid": lambda: rng.randrange(0, 4096),
        "ip_proto": lambda: rng.choice([6, 17, rng.randrange(0, 256)]),
        "ipv4_src": lambda: random_ipv4(rng, rng.random() < 0.4),
        "ipv4_dst": lambda: random_ipv4(rng, rng.random() < 0.4),
        "tcp_src": lambda: rng.randrange(0, 65536), "tcp_dst": lambda: rng.randrange(0, 65536),
        "udp_src": lambda: rng.randrange(0, 65536), "udp_dst": lambda: rng.randrange(0, 65536),
    }
    for name, make in makers.items():
        if rng.random() < 0.3:
            fields[name] = make()
    return Match(**fields)  # type: ignore[arg-type]


def random_outputs(rng: random.Random) -> tuple[Output, ...]:
    ports = [1, 2, 3, PORT_CONTROLLER, PORT_FLOOD, rng.randrange(1, 0xFFFFFF00)]
    return tuple(Output(rng.choice(ports)) for _ in range(rng.randrange(0, 4)))
