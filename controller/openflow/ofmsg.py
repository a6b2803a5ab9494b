"""Translate forwarding intents (pure values) into os-ken OpenFlow 1.3 messages."""

from __future__ import annotations

import ipaddress
from typing import Any

from controller.forwarding.intents import (
    FlowAdd,
    FlowDelete,
    FlowStatsRequest,
    Intent,
    Match,
    Output,
    PacketOut,
    RoleRequest,
)

__all__ = ["match_from_ofp", "outputs_from_instructions", "to_message"]

OFPVID_PRESENT = 0x1000


def _ofp_match(parser: Any, match: Match) -> Any:
    fields: dict[str, Any] = {}
    for name, value in match.fields().items():
        if name in ("ipv4_src", "ipv4_dst") and "/" in str(value):
            net = ipaddress.IPv4Network(value)
            fields[name] = (str(net.network_address), str(net.netmask))
        elif name == "vlan_vid":
            fields[name] = int(str(value)) | OFPVID_PRESENT
        else:
            fields[name] = value
    return parser.OFPMatch(**fields)


def match_from_ofp(ofp_match: Any) -> Match:
    """The inverse of _ofp_match, for flows read back from a switch."""
    fields: dict[str, Any] = {}
    for name in Match.__dataclass_fields__:
        if name not in ofp_match:
            continue
        value = ofp_match[name]
        if name in ("ipv4_src", "ipv4_dst") and isinstance(value, tuple):
            net = ipaddress.IPv4Network(f"{value[0]}/{value[1]}", strict=False)
            value = str(net.network_address) if net.prefixlen == 32 else str(net)
        elif name == "vlan_vid":
            value = int(value) & ~OFPVID_PRESENT
        elif name in ("eth_src", "eth_dst"):
            value = str(value).lower()
        fields[name] = value
    return Match(**fields)


def outputs_from_instructions(ofp: Any, instructions: list[Any]) -> tuple[Output, ...]:
    """Output actions of APPLY_ACTIONS instructions, in order."""
    outputs: list[Output] = []
    for inst in instructions:
        if getattr(inst, "type", None) == ofp.OFPIT_APPLY_ACTIONS:
            outputs += [Output(a.port) for a in inst.actions if a.type == ofp.OFPAT_OUTPUT]
    return tuple(outputs)


def _actions(parser: Any, ofp: Any, actions: tuple[Output, ...]) -> list[Any]:
    # Send whole packets to the controller (no buffering in OVS userspace anyway).
    return [parser.OFPActionOutput(a.port, ofp.OFPCML_NO_BUFFER) for a in actions]


def to_message(datapath: Any, intent: Intent) -> Any:
    """Build the OpenFlow message for `intent` on `datapath` (an os-ken Datapath)."""
    ofp = datapath.ofproto
    parser = datapath.ofproto_parser
    if isinstance(intent, FlowAdd):
        inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS,
                                             _actions(parser, ofp, intent.actions))]
        return parser.OFPFlowMod(
            datapath=datapath,
            cookie=intent.cookie,
            table_id=intent.table_id,
            command=ofp.OFPFC_ADD,
            idle_timeout=intent.idle_timeout_s,
            hard_timeout=intent.hard_timeout_s,
            priority=intent.priority,
            match=_ofp_match(parser, intent.match),
            instructions=inst,
        )
    if isinstance(intent, FlowDelete):
        return parser.OFPFlowMod(
            datapath=datapath,
            cookie=intent.cookie,
            cookie_mask=intent.cookie_mask,
            command=ofp.OFPFC_DELETE,
            out_port=ofp.OFPP_ANY,
            out_group=ofp.OFPG_ANY,
            table_id=ofp.OFPTT_ALL,
            match=_ofp_match(parser, intent.match),
        )
    if isinstance(intent, PacketOut):
        return parser.OFPPacketOut(
            datapath=datapath,
            buffer_id=intent.buffer_id,
            in_port=intent.in_port,
            actions=_actions(parser, ofp, intent.actions),
            data=intent.data or None,
        )
    if isinstance(intent, RoleRequest):
        return parser.OFPRoleRequest(datapath, intent.role, intent.generation_id)
    if isinstance(intent, FlowStatsRequest):
        return parser.OFPFlowStatsRequest(
            datapath, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
            intent.cookie, intent.cookie_mask, parser.OFPMatch())
    raise TypeError(f"not an OpenFlow intent: {intent!r}")
