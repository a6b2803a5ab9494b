"""OpenFlow 1.3 flow-stats replies parsed from their bytes into InstalledFlow values.

The audit reads back every replicated flow of a switch. os-ken's parser builds an
OFPFlowStats, an OFPMatch with its OXM objects, instruction and action objects per
flow, and Synod then converted those into InstalledFlow: about 70 µs a flow here
(docs/decisions/0098). The layout is fixed (OpenFlow 1.3.5 sections 7.2.2, 7.2.5,
7.3.5.2), and the audit needs only cookie, table, priority, timeouts, counters, the
match fields Synod's Match knows and the OUTPUT actions of APPLY_ACTIONS instructions,
so they are read here directly with struct.

The result is the one ofmsg.match_from_ofp / outputs_from_instructions produce from
os-ken's objects (tests/unit/test_readback.py checks it on generated replies): fields
Match does not name are ignored, other instructions and actions are skipped. Where
that conversion would do something odd — a masked field other than an IPv4 prefix, a
netmask that is not a prefix, a field of an unexpected length — `NotPlain` is raised
and the caller hands the message to os-ken's parser instead, so such a flow is judged
exactly as before.
"""

from __future__ import annotations

import struct

from controller.forwarding.audit import InstalledFlow
from controller.forwarding.intents import Match, Output

__all__ = ["NotPlain", "OFPMP_FLOW", "OFPT_MULTIPART_REPLY", "parse_flow_stats_reply"]

OFP_VERSION = 0x04
OFPT_MULTIPART_REPLY = 19
OFPMP_FLOW = 1
OFPMPF_REPLY_MORE = 1
OFPIT_APPLY_ACTIONS = 4
OFPAT_OUTPUT = 0
OFPVID_PRESENT = 0x1000

_REPLY = struct.Struct("!BBHIHH4x")  # ofp_header + ofp_multipart_reply
_FLOW_STATS = struct.Struct("!HBxIIHHHH4xQQQ")  # ofp_flow_stats up to its match
_TLV = struct.Struct("!HH")  # ofp_match / instruction / action: type, length
_OXM = struct.Struct("!HBB")  # OXM header: class, field << 1 | has mask, value length
_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")

# Match's fields in its constructor's order; the OXM headers (class OPENFLOW_BASIC, field
# number << 1, no mask, value length) that carry them, with how to read the value.
_ATTRS = ("in_port", "eth_src", "eth_dst", "eth_type", "vlan_vid", "ip_proto", "ipv4_src",
          "ipv4_dst", "tcp_src", "tcp_dst", "udp_src", "udp_dst")
_INT, _MAC, _IPV4, _VLAN = range(4)
_FIELDS = {  # OXM field number -> (index in _ATTRS, value length, kind)
    0: (0, 4, _INT), 4: (1, 6, _MAC), 3: (2, 6, _MAC), 5: (3, 2, _INT), 6: (4, 2, _VLAN),
    10: (5, 1, _INT), 11: (6, 4, _IPV4), 12: (7, 4, _IPV4), 13: (8, 2, _INT),
    14: (9, 2, _INT), 15: (10, 2, _INT), 16: (11, 2, _INT)}
_OXM_CLASS_BASIC = 0x8000
_dotted = "{}.{}.{}.{}".format
_PREFIX = {((0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF): n for n in range(33)}


class NotPlain(ValueError):
    """The reply holds something this parser leaves to os-ken's (see the module doc)."""


def parse_flow_stats_reply(data: bytes | bytearray | memoryview
                           ) -> tuple[list[InstalledFlow], bool]:
    """The flows of one OFPMP_FLOW multipart reply message, and whether more parts follow.

    Raises NotPlain for a message that is not such a reply, is malformed, or holds a match
    os-ken's objects would be needed to judge the same way.
    """
    view = memoryview(data)
    if len(view) < _REPLY.size:
        raise NotPlain("shorter than a multipart reply header")
    version, msg_type, length, _xid, mp_type, flags = _REPLY.unpack_from(view)
    if version != OFP_VERSION or msg_type != OFPT_MULTIPART_REPLY or mp_type != OFPMP_FLOW:
        raise NotPlain("not an OpenFlow 1.3 flow-stats reply")
    if length != len(view):
        raise NotPlain(f"length field {length} != {len(view)} bytes")
    flows = []
    at = _REPLY.size
    while at < length:
        if length - at < _FLOW_STATS.size + 4:
            raise NotPlain("truncated flow-stats entry")
        (entry_len, table_id, _sec, _nsec, priority, idle, hard, _flags, cookie, packets,
         octets) = _FLOW_STATS.unpack_from(view, at)
        end = at + entry_len
        if entry_len < _FLOW_STATS.size + 8 or end > length:
            raise NotPlain(f"flow-stats entry length {entry_len} out of bounds")
        match, after = _match(view, at + _FLOW_STATS.size, end)
        flows.append(InstalledFlow(cookie, table_id, priority, match,
                                   _outputs(view, after, end), idle, hard, packets, octets))
        at = end
    return flows, bool(flags & OFPMPF_REPLY_MORE)


def _match(view: memoryview, at: int, end: int) -> tuple[Match, int]:
    """The Match of the ofp_match at `at`, and where the instructions begin."""
    match_type, match_len = _TLV.unpack_from(view, at)
    match_end = at + match_len
    if match_type != 1 or match_len < 4 or match_end > end:
        raise NotPlain(f"match type {match_type} length {match_len}")
    values: list[object] = [None] * 12
    pos = at + 4
    while pos < match_end:
        if match_end - pos < 4:
            raise NotPlain("truncated OXM header")
        oxm_class, field_mask, oxm_len = _OXM.unpack_from(view, pos)
        value_at, pos = pos + 4, pos + 4 + oxm_len
        if pos > match_end:
            raise NotPlain("OXM past the match")
        known = _FIELDS.get(field_mask >> 1) if oxm_class == _OXM_CLASS_BASIC else None
        if known is None:
            continue  # a field Match does not name: ignored, as match_from_ofp does
        index, width, kind = known
        if values[index] is not None:
            raise NotPlain(f"OXM field {_ATTRS[index]} twice")
        masked = field_mask & 1
        if oxm_len != width * (2 if masked else 1) or (masked and kind != _IPV4):
            raise NotPlain(f"OXM field {_ATTRS[index]}: length {oxm_len}, mask {masked}")
        if kind == _INT:
            values[index] = int.from_bytes(view[value_at:pos], "big")
        elif kind == _VLAN:
            values[index] = _U16.unpack_from(view, value_at)[0] & ~OFPVID_PRESENT
        elif kind == _MAC:
            values[index] = view[value_at:pos].hex(":")
        elif not masked:
            values[index] = _dotted(*view[value_at:pos])
        else:
            values[index] = _network(view, value_at)
    return Match(*values), at + ((match_len + 7) // 8) * 8  # type: ignore[arg-type]


def _network(view: memoryview, at: int) -> str:
    """A masked IPv4 OXM as match_from_ofp writes it: "a.b.c.d" for /32, else "net/len"."""
    address, mask = _U32.unpack_from(view, at)[0], _U32.unpack_from(view, at + 4)[0]
    prefix = _PREFIX.get(mask)
    if prefix is None:
        raise NotPlain(f"IPv4 mask {mask:#010x} is not a prefix")
    text = _dotted(*_U32.pack(address & mask))
    return text if prefix == 32 else f"{text}/{prefix}"


def _outputs(view: memoryview, at: int, end: int) -> tuple[Output, ...]:
    """OUTPUT actions of the APPLY_ACTIONS instructions in [at, end), in order."""
    outputs = []
    while at < end:
        if end - at < 4:
            raise NotPlain("truncated instruction")
        inst_type, inst_len = _TLV.unpack_from(view, at)
        inst_end = at + inst_len
        if inst_len < 4 or inst_end > end:
            raise NotPlain(f"instruction length {inst_len}")
        if inst_type == OFPIT_APPLY_ACTIONS:
            if inst_len < 8:
                raise NotPlain(f"apply-actions instruction length {inst_len}")
            pos = at + 8  # type, length, 4 pad bytes
            while pos < inst_end:
                if inst_end - pos < 4:
                    raise NotPlain("truncated action")
                action_type, action_len = _TLV.unpack_from(view, pos)
                if action_len < 8 or pos + action_len > inst_end:
                    raise NotPlain(f"action length {action_len}")
                if action_type == OFPAT_OUTPUT:
                    if action_len != 16:
                        raise NotPlain(f"output action length {action_len}")
                    outputs.append(Output(_U32.unpack_from(view, pos + 4)[0]))
                pos += action_len
        at = inst_end
    return tuple(outputs)
