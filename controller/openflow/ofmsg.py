"""Translate forwarding intents (pure values) into os-ken OpenFlow 1.3 messages."""

from __future__ import annotations

from typing import Any

from controller.forwarding.intents import FlowAdd, FlowDelete, Intent, Output, PacketOut

__all__ = ["to_message"]


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
            command=ofp.OFPFC_ADD,
            idle_timeout=intent.idle_timeout_s,
            hard_timeout=intent.hard_timeout_s,
            priority=intent.priority,
            match=parser.OFPMatch(**intent.match.fields()),
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
            match=parser.OFPMatch(**intent.match.fields()),
        )
    if isinstance(intent, PacketOut):
        return parser.OFPPacketOut(
            datapath=datapath,
            buffer_id=intent.buffer_id,
            in_port=intent.in_port,
            actions=_actions(parser, ofp, intent.actions),
            data=intent.data or None,
        )
    raise TypeError(f"not an OpenFlow intent: {intent!r}")
