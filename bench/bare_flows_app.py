"""Bench-only os-ken app: push N /32 flow-mods one send_msg each, barrier, read them back.

The baseline bench/controller.py compares Synod's pipeline against. Each time a switch
connects (reaches MAIN), a worker thread (never the event handler: barrier and stats
replies come through the same event queue) builds and sends BENCH_FLOWS flow-mods
identical to the ones Synod installs for the same rows (match eth_type=0x0800,
ipv4_dst=<addr>/32, priority, output port, cookie flow_cookie(dpid, "b<i>")), sends a
barrier and waits for its reply, then sends one flow-stats request in Synod's cookie
space and times the replies until the last one (os-ken's parser, then Synod's
conversion), then the same through Synod's own reader (controller/openflow/rawstats.py,
decision 0098), READS times each. It logs one line
"BENCH_RESULT {json}" per connection. Every wait is bounded by BENCH_WAIT_S.

Environment: BENCH_FLOWS (default 10000), BENCH_PRIORITY (300), BENCH_OUT_PORT (1),
BENCH_WAIT_S (120).
"""

from __future__ import annotations

import json
import os
import threading
import time

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import MAIN_DISPATCHER, set_ev_cls
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3

from controller.forwarding import wire
from controller.forwarding.audit import InstalledFlow
from controller.forwarding.flowspec import FLOW_COOKIE_MASK, FLOW_COOKIE_SPACE, flow_cookie
from controller.openflow import rawstats
from controller.openflow.ofmsg import match_from_ofp, outputs_from_instructions

__all__ = ["BareFlows", "flow_address"]

READS = 3  # read-backs of each kind per connection (the machine is shared: noisy)


def flow_address(i: int) -> str:
    """The i-th distinct /32 destination (shared with bench/controller.py)."""
    return f"10.{100 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"


class BareFlows(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.flows = int(os.environ.get("BENCH_FLOWS", "10000"))
        self.priority = int(os.environ.get("BENCH_PRIORITY", "300"))
        self.out_port = int(os.environ.get("BENCH_OUT_PORT", "1"))
        self.wait_s = float(os.environ.get("BENCH_WAIT_S", "120"))
        self._barrier: dict[int, threading.Event] = {}
        self._stats_done: dict[int, threading.Event] = {}
        self._stats: dict[int, list] = {}
        self._stats_last_ns: dict[int, int] = {}

    @set_ev_cls(ofp_event.EventOFPStateChange, MAIN_DISPATCHER)
    def _on_main(self, ev):
        hub.spawn(self._run, ev.datapath)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _on_barrier(self, ev):
        done = self._barrier.get(ev.msg.xid)
        if done is not None:
            done.set()

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def _on_stats(self, ev):
        msg = ev.msg
        self._stats.setdefault(msg.xid, []).extend(msg.body)
        if not msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            self._stats_last_ns[msg.xid] = time.perf_counter_ns()
            done = self._stats_done.get(msg.xid)
            if done is not None:
                done.set()

    def _run(self, dp) -> None:
        try:
            result = self._push_and_read(dp)
        except Exception as e:  # noqa: BLE001 - report any failure in the one result line
            result = {"error": f"{type(e).__name__}: {e}"}
        self.logger.info("BENCH_RESULT %s", json.dumps(result))

    def _push_and_read(self, dp) -> dict:
        ofp, parser = dp.ofproto, dp.ofproto_parser
        out: dict = {"dpid": f"{dp.id:016x}", "flows": self.flows}
        t0 = time.perf_counter_ns()
        for i in range(self.flows):
            match = parser.OFPMatch(eth_type=0x0800, ipv4_dst=flow_address(i))
            inst = [parser.OFPInstructionActions(
                ofp.OFPIT_APPLY_ACTIONS,
                [parser.OFPActionOutput(self.out_port, ofp.OFPCML_NO_BUFFER)])]
            dp.send_msg(parser.OFPFlowMod(
                datapath=dp, cookie=flow_cookie(dp.id, f"b{i}"), table_id=0,
                command=ofp.OFPFC_ADD, idle_timeout=0, hard_timeout=0,
                priority=self.priority, match=match, instructions=inst))
        t_sent = time.perf_counter_ns()
        barrier = parser.OFPBarrierRequest(dp)
        dp.set_xid(barrier)
        done = self._barrier[barrier.xid] = threading.Event()
        dp.send_msg(barrier)
        if not done.wait(self.wait_s):
            raise TimeoutError(f"no barrier reply within {self.wait_s} s")
        t_barrier = time.perf_counter_ns()
        out["send_loop_s"] = (t_sent - t0) / 1e9
        out["to_barrier_s"] = (t_barrier - t0) / 1e9
        out["flows_per_s"] = self.flows / out["to_barrier_s"]

        # Read back: one flow-stats request in the replicated-flow cookie space.
        req = parser.OFPFlowStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                         FLOW_COOKIE_SPACE, FLOW_COOKIE_MASK, parser.OFPMatch())
        dp.set_xid(req)
        done = self._stats_done[req.xid] = threading.Event()
        t1 = time.perf_counter_ns()
        dp.send_msg(req)
        if not done.wait(self.wait_s):
            raise TimeoutError(f"no complete flow-stats reply within {self.wait_s} s")
        stats = self._stats.pop(req.xid, [])
        out["readback_flows"] = len(stats)
        out["readback_osken_s"] = (self._stats_last_ns[req.xid] - t1) / 1e9
        # What Synod's audit does next with the parsed replies (synod_app._on_flow_stats).
        t2 = time.perf_counter_ns()
        [InstalledFlow(s.cookie, s.table_id, s.priority, match_from_ofp(s.match),
                       outputs_from_instructions(ofp, s.instructions),
                       s.idle_timeout, s.hard_timeout) for s in stats]
        out["readback_synod_convert_s"] = (time.perf_counter_ns() - t2) / 1e9
        out["readback_osken_more_s"] = [self._read_osken(dp) for _ in range(READS - 1)]

        # Synod's read-back since decision 0098: the same request, with our own xid, its
        # reply read from the bytes by rawstats into InstalledFlow values (what
        # synod_app's audit receives), timed from the request to the last part read.
        rawstats.install()
        out["readback_raw_s"], out["readback_raw_flows"] = [], []
        for k in range(READS):
            seconds, flows = self._read_raw(dp, 0x80000000 | (dp.id & 0xFFFF) << 8 | k)
            out["readback_raw_s"].append(seconds)
            out["readback_raw_flows"].append(flows)
        return out

    def _read_osken(self, dp) -> float:
        ofp, parser = dp.ofproto, dp.ofproto_parser
        req = parser.OFPFlowStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                         FLOW_COOKIE_SPACE, FLOW_COOKIE_MASK, parser.OFPMatch())
        dp.set_xid(req)
        done = self._stats_done[req.xid] = threading.Event()
        t1 = time.perf_counter_ns()
        dp.send_msg(req)
        if not done.wait(self.wait_s):
            raise TimeoutError(f"no complete flow-stats reply within {self.wait_s} s")
        stats = self._stats.pop(req.xid, [])
        [InstalledFlow(s.cookie, s.table_id, s.priority, match_from_ofp(s.match),
                       outputs_from_instructions(ofp, s.instructions),
                       s.idle_timeout, s.hard_timeout) for s in stats]
        return (time.perf_counter_ns() - t1) / 1e9

    def _read_raw(self, dp, xid: int) -> tuple[float, int]:
        done = threading.Event()
        got: list = []
        end_ns: list[int] = []

        def deliver(_dp, more: bool, flows: list) -> None:
            got.extend(flows)
            if not more:
                end_ns.append(time.perf_counter_ns())
                done.set()

        rawstats.expect(dp, xid, deliver)
        t1 = time.perf_counter_ns()
        dp.send(wire.flow_stats_request(xid, FLOW_COOKIE_SPACE, FLOW_COOKIE_MASK))
        if not done.wait(self.wait_s):
            raise TimeoutError(f"no complete raw flow-stats reply within {self.wait_s} s")
        return (end_ns[0] - t1) / 1e9, len(got)
