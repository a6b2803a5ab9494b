"""os-ken app: OpenFlow 1.3 L2 learning switch, a thin shim over forwarding.learning."""

from __future__ import annotations

import threading

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)
from os_ken.ofproto import ofproto_v1_3

from controller.forwarding.learning import LearningSwitch
from controller.openflow.ofmsg import to_message
from controller.openflow.shim import guarded, now_ms

__all__ = ["L2Switch"]



class L2Switch(app_manager.OSKenApp):
    """Learns MACs per switch and installs forwarding flows (cookie L2_COOKIE)."""

    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.logic = LearningSwitch()
        # The native hub runs handlers on several threads: the logic's tables need a lock.
        self._lock = threading.Lock()

    def _send(self, datapath, intents) -> None:
        for intent in intents:
            datapath.send_msg(to_message(datapath, intent))

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    @guarded
    def _on_features(self, ev):
        dp = ev.msg.datapath
        self.logger.info("switch %016x connected", dp.id)
        with self._lock:
            intents = self.logic.switch_connected(dp.id)
        self._send(dp, intents)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    @guarded
    def _on_packet_in(self, ev):
        msg = ev.msg
        dp = msg.datapath
        with self._lock:
            intents = self.logic.packet_in(
                dp.id, msg.match["in_port"], bytes(msg.data), now_ms(), msg.buffer_id
            )
        self._send(dp, intents)

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    @guarded
    def _on_dead(self, ev):
        dp = ev.datapath
        if dp.id is None:
            return
        self.logger.info("switch %016x disconnected", dp.id)
        with self._lock:
            self.logic.switch_disconnected(dp.id)
