"""os-ken app: loop-safe shortest-path forwarding, a thin shim over forwarding.fabric."""

from __future__ import annotations

import os
import threading
from typing import Any

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3

from controller.forwarding.fabric import Fabric
from controller.openflow.ofmsg import to_message
from controller.openflow.shim import guarded, now_ms, port_is_up

__all__ = ["FabricApp"]

TICK_S = 0.1



class FabricApp(app_manager.OSKenApp):
    """Discovers links with LLDP, tracks hosts, programs shortest paths on all switches."""

    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.logic = Fabric(origin=os.urandom(8))  # stamps LLDP probes (link latency)
        self.datapaths: dict[int, Any] = {}  # dpid -> os-ken Datapath
        # Handlers run on several native threads; the logic and the map need one lock.
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ticker = hub.spawn(self._tick_loop)

    def stop(self):
        self._stopping.set()
        super().stop()

    def _send(self, intents) -> None:
        for intent in intents:
            dp = self.datapaths.get(intent.dpid)
            if dp is not None:
                dp.send_msg(to_message(dp, intent))

    def _tick_loop(self) -> None:
        while not self._stopping.wait(TICK_S):
            with self._lock:
                intents = self.logic.tick(now_ms())
                self._send(intents)

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    @guarded
    def _on_features(self, ev):
        dp = ev.msg.datapath
        parser = dp.ofproto_parser
        dp.send_msg(parser.OFPPortDescStatsRequest(dp, 0))

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    @guarded
    def _on_port_desc(self, ev):
        dp = ev.msg.datapath
        ofp = dp.ofproto
        ports = {p.port_no: port_is_up(ofp, p) for p in ev.msg.body if p.port_no <= ofp.OFPP_MAX}
        self.logger.info("switch %016x connected with %d ports", dp.id, len(ports))
        with self._lock:
            self.datapaths[dp.id] = dp
            self._send(self.logic.switch_connected(dp.id, ports, now_ms()))

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    @guarded
    def _on_port_status(self, ev):
        msg = ev.msg
        dp = msg.datapath
        ofp = dp.ofproto
        if msg.desc.port_no > ofp.OFPP_MAX:
            return
        up = msg.reason != ofp.OFPPR_DELETE and port_is_up(ofp, msg.desc)
        with self._lock:
            self._send(self.logic.port_changed(dp.id, msg.desc.port_no, up, now_ms()))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    @guarded
    def _on_packet_in(self, ev):
        msg = ev.msg
        dp = msg.datapath
        with self._lock:
            intents = self.logic.packet_in(dp.id, msg.match["in_port"], bytes(msg.data),
                                           now_ms(), msg.buffer_id)
            self._send(intents)

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    @guarded
    def _on_dead(self, ev):
        dp = ev.datapath
        if dp.id is None:
            return
        self.logger.info("switch %016x disconnected", dp.id)
        with self._lock:
            if self.datapaths.get(dp.id) is dp:
                del self.datapaths[dp.id]
                self._send(self.logic.switch_disconnected(dp.id))
