"""OpenFlow 1.3 bytes for the messages Synod sends in bulk: flow-mods and bundle adds.

Building each message through os-ken's classes costs about 0.18 ms here, which caps a
master taking over a switch near 5,500 flows/s. The layout of a FLOW_MOD is fixed
(OpenFlow 1.3.5 section 7.3.4.1), so it is packed here directly with struct. The
bytes are tested to be identical to os-ken's own serialisation of the same message
(tests/unit/test_wire.py), so the switch sees exactly what os-ken would send.
"""

from __future__ import annotations

import ipaddress
import struct

from controller.forwarding.intents import FlowAdd, FlowDelete, Match, Output

__all__ = ["bundle_add", "bundle_ctrl", "flow_mod"]

OFP_VERSION = 0x04
OFPT_EXPERIMENTER, OFPT_FLOW_MOD = 4, 14
OFPFC_ADD, OFPFC_DELETE = 0, 3
OFP_NO_BUFFER = 0xFFFFFFFF
OFPP_ANY = OFPG_ANY = 0xFFFFFFFF
OFPTT_ALL = 0xFF
OFP_DEFAULT_PRIORITY = 0x8000
OFPIT_APPLY_ACTIONS = 4
OFPAT_OUTPUT = 0
OFPCML_NO_BUFFER = 0xFFFF
OFPVID_PRESENT = 0x1000
OXM_CLASS_BASIC = 0x8000
ONF_EXPERIMENTER_ID = 0x4F4E4600
ONF_ET_BUNDLE_CONTROL, ONF_ET_BUNDLE_ADD_MESSAGE = 2300, 2301

_HEADER = struct.Struct("!BBHI")
_FLOW_MOD = struct.Struct("!QQBBHHHIIIH2x")
_OUTPUT = struct.Struct("!HHIH6x")
_INSTRUCTION = struct.Struct("!HH4x")
_EXPERIMENTER = struct.Struct("!II")

# OXM field number, value width in bytes (masked fields carry a mask of the same width)
_OXM = {"in_port": (0, 4), "eth_dst": (3, 6), "eth_src": (4, 6), "eth_type": (5, 2),
        "vlan_vid": (6, 2), "ip_proto": (10, 1), "ipv4_src": (11, 4), "ipv4_dst": (12, 4),
        "tcp_src": (13, 2), "tcp_dst": (14, 2), "udp_src": (15, 2), "udp_dst": (16, 2)}


def _oxm(name: str, value: object) -> tuple[int, bytes]:
    field, width = _OXM[name]
    mask = b""
    if name in ("eth_src", "eth_dst"):
        data = bytes.fromhex(str(value).replace(":", ""))
    elif name in ("ipv4_src", "ipv4_dst"):
        net = ipaddress.IPv4Network(str(value))
        data = net.network_address.packed
        if net.prefixlen != 32:
            mask = net.netmask.packed
    elif name == "vlan_vid":
        data = (int(value) | OFPVID_PRESENT).to_bytes(width, "big")  # type: ignore[call-overload]
    else:
        data = int(value).to_bytes(width, "big")  # type: ignore[call-overload]
    header = struct.pack("!HBB", OXM_CLASS_BASIC, (field << 1) | (1 if mask else 0),
                         len(data) + len(mask))
    return field, header + data + mask


def _match(match: Match) -> bytes:
    fields = sorted(_oxm(name, value) for name, value in match.fields().items())
    body = b"".join(tlv for _, tlv in fields)
    length = 4 + len(body)
    return struct.pack("!HH", 1, length) + body + b"\0" * ((8 - length % 8) % 8)


def _apply_actions(actions: tuple[Output, ...]) -> bytes:
    outputs = b"".join(_OUTPUT.pack(OFPAT_OUTPUT, 16, a.port, OFPCML_NO_BUFFER)
                       for a in actions)
    return _INSTRUCTION.pack(OFPIT_APPLY_ACTIONS, 8 + len(outputs)) + outputs


def flow_mod(xid: int, intent: FlowAdd | FlowDelete) -> bytes:
    """The FLOW_MOD for a FlowAdd or FlowDelete, as os-ken's ofmsg.to_message builds it."""
    if isinstance(intent, FlowAdd):
        body = _FLOW_MOD.pack(intent.cookie, 0, intent.table_id, OFPFC_ADD,
                              intent.idle_timeout_s, intent.hard_timeout_s, intent.priority,
                              OFP_NO_BUFFER, 0, 0, 0)
        tail = _match(intent.match) + _apply_actions(intent.actions)
    else:
        body = _FLOW_MOD.pack(intent.cookie, intent.cookie_mask, OFPTT_ALL, OFPFC_DELETE,
                              0, 0, OFP_DEFAULT_PRIORITY, OFP_NO_BUFFER, OFPP_ANY, OFPG_ANY, 0)
        tail = _match(intent.match)
    length = _HEADER.size + len(body) + len(tail)
    return _HEADER.pack(OFP_VERSION, OFPT_FLOW_MOD, length, xid) + body + tail


def bundle_ctrl(xid: int, bundle_id: int, type_: int, flags: int) -> bytes:
    """An ONF bundle control message (open, commit, ...) without properties."""
    body = _EXPERIMENTER.pack(ONF_EXPERIMENTER_ID, ONF_ET_BUNDLE_CONTROL) + \
        struct.pack("!IHH", bundle_id, type_, flags)
    return _HEADER.pack(OFP_VERSION, OFPT_EXPERIMENTER, _HEADER.size + len(body), xid) + body


def bundle_add(xid: int, bundle_id: int, flags: int, inner: bytes) -> bytes:
    """An ONF bundle-add message around `inner` (which must carry the same xid)."""
    body = _EXPERIMENTER.pack(ONF_EXPERIMENTER_ID, ONF_ET_BUNDLE_ADD_MESSAGE) + \
        struct.pack("!I2xH", bundle_id, flags) + inner
    return _HEADER.pack(OFP_VERSION, OFPT_EXPERIMENTER, _HEADER.size + len(body), xid) + body
