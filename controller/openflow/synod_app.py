"""os-ken app: Synod's site controller — mastership, fabric forwarding, replicated flows.

A shim: every handler translates an OpenFlow event, calls the pure logic under one
lock — forwarding.mastership (roles), forwarding.ranking (who should be master, who
lives), forwarding.fabric (paths), forwarding.reconciler (replicated flows, audits,
flow errors) — and carries out what it returns. What stays here is I/O: the
connections, the HELLO probe's socket, bundling flow-mods onto the wire. Flow-mods and
packet-outs go only to switches that have confirmed us as MASTER. See
docs/controller.md.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import OrderedDict
from typing import Any

from os_ken.base import app_manager
from os_ken.controller import event as osken_event
from os_ken.controller import ofp_event
from os_ken.controller.handler import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3

from controller.forwarding import wire
from controller.forwarding.audit import InstalledFlow
from controller.forwarding.fabric import Fabric
from controller.forwarding.intents import FlowAdd, FlowDelete, FlowStatsRequest, PacketOut
from controller.forwarding.mastership import BecameMaster, LostMaster, Mastership
from controller.forwarding.ranking import (
    Liveness,
    better_alive,
    controller_order,
    home_site_from_desc,
    rank_in,
    sites_to_probe,
)
from controller.forwarding.reconciler import (
    Audited,
    FlowReconciler,
    FlowRefused,
    ReconcilerConfig,
)
from controller.openflow import options, rawstats
from controller.openflow.node_link import NodeLink, TopologySync
from controller.openflow.ofmsg import match_from_ofp, outputs_from_instructions, to_message
from controller.openflow.shim import guarded, now_ms, port_identity, port_is_up

__all__ = ["FlowStatsRead", "SynodController", "failed_flow_cookie", "home_site_from_desc"]

TICK_S = 0.1
PACKET_IN_LOG_S = 10.0  # how often the packet-ins by kind are logged (when not LLDP alone)
JOINED_WRITE_BYTES = 64 * 1024
PROBE_INTERVAL_S = 0.1
PROBE_TIMEOUT_S = 1.0  # a busy controller (10k flow-mods, GIL) must not look dead
OFPET_BAD_REQUEST, OFPBRC_IS_SLAVE = 1, 10
OFPET_ROLE_REQUEST_FAILED = 11
OFPT_HELLO = 0
OFPT_FLOW_MOD = 14
OFPT_EXPERIMENTER = 4
BUNDLE_ADD_HEADER_BYTES = 24  # OpenFlow + experimenter header, bundle id, pad, flags
BUNDLE_LOG_FLOW_MODS_MIN = 1_000  # a committed bundle this large is logged with its time
BUNDLES_TRACKED_MAX = 1_024  # bundles awaiting their commit reply (a refused one never gets it)


class FlowStatsRead(osken_event.EventBase):
    """A part of the reply to our flow-stats request, parsed by rawstats (in the
    connection's receive thread) and queued to the app like os-ken's own events, so it is
    handled in order with the switch's other messages (e.g. errors for earlier flows)."""

    def __init__(self, datapath, more: bool, flows: list[InstalledFlow]) -> None:
        super().__init__()
        self.datapath, self.more, self.flows = datapath, more, flows


class SynodController(app_manager.OSKenApp):
    """One per site. Claims its own switches, backs up the others, installs desired flows."""

    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.opts = options.load()
        self.sites = [s for s, _, _ in self.opts.controllers]
        self.fabric = Fabric(origin=os.urandom(8))  # stamps LLDP probes (link latency)
        self.mastership = Mastership(self.opts.index)
        # Without a node, the desired set is whatever set_desired is given: known at once.
        self.flows = FlowReconciler(ReconcilerConfig(self.opts.audit_interval_ms),
                                    desired_known=not self.opts.node)
        self.liveness = Liveness(s for s in self.sites if s != self.opts.site)
        self.datapaths: dict[int, Any] = {}  # dpid -> os-ken Datapath
        # dpid -> its newest connection. A switch can reconnect (e.g. its controller
        # target changed) before os-ken reports the old connection dead; only the newest
        # connection's replies start it, and the old one's death must not undo that.
        self._latest: dict[int, Any] = {}
        self.ports: dict[int, dict[int, bool]] = {}
        self.port_ids: dict[int, dict[int, tuple[str, str]]] = {}  # dpid -> port -> name, MAC
        self.home: dict[int, str | None] = {}
        self._ports_done: set[int] = set()
        self._bundle_id = 0
        self._next_xid = 0
        # Encoded flow-mods of the desired flows, made when they are learnt, so that a
        # takeover (or a repair) writes bytes it already holds (decision 0098).
        self._encoded = wire.FlowModCache()
        # bundle id -> dpid, flow-mods, when opened and when all was handed to os-ken (ns):
        # for the log line of a large bundle's commit
        self._bundles: OrderedDict[int, tuple[int, int, int, int]] = OrderedDict()
        self._lock = threading.RLock()
        rawstats.install()
        self._stopping = threading.Event()
        self._threads = [hub.spawn(self._tick_loop), hub.spawn(self._probe_loop)]
        self.node_link = None
        if self.opts.node:
            self.node_link = NodeLink(self.opts.node, self.opts.node_token_file,
                                      self.opts.node_ca, self.opts.node_insecure,
                                      self._on_node_flows, self._stopping,
                                      on_changes=self._on_flow_changes)
            self._threads.append(hub.spawn(self.node_link.run))
            self.topology_sync = TopologySync(self.node_link, self._observe, self._on_remote)
            self._threads.append(hub.spawn(self.topology_sync.run))
        self.logger.info("site %r, controller %d, peers %s", self.opts.site, self.opts.index,
                         self.sites)

    def stop(self):
        if self.node_link is not None:
            self.topology_sync.final_round()  # before the link closes with _stopping
        self._stopping.set()
        super().stop()

    # --- the node link (desired flows down, observations up) ---------------------------

    def set_desired(self, dpid: int, specs) -> None:
        """Replace the desired replicated flows of a switch (cookie -> FlowSpec)."""
        with self._lock:
            self._send(self.flows.set_desired(dpid, specs, now_ms()))
            self._encoded.prepare(s.to_intent() for s in specs.values())

    def _on_flow_changes(self, changes) -> None:
        with self._lock:
            self._send(self.flows.flows_changed(changes, now_ms()))
            # After sending: flows just sent are cache hits here, the others are encoded.
            self._encoded.prepare(s.to_intent() for _, _, s in changes if s is not None)

    def _on_node_flows(self, by_dpid) -> None:
        with self._lock:
            self._send(self.flows.flows_loaded(by_dpid, now_ms()))
            self._encoded.prepare(s.to_intent() for specs in by_dpid.values()
                                  for s in specs.values())

    def _observe(self) -> dict:
        with self._lock:
            ports, links, hosts = self.fabric.report()
            latency = self.fabric.latencies()
            switches = {dpid: (self.home.get(dpid), self.opts.site,
                               self.mastership.generation(dpid))
                        for dpid in self.mastership.masters()}
            errors = self.flows.flow_errors()
            states = self.flows.flow_states()
            ips = self.fabric.host_ips()
        return {"ports": ports, "links": links, "latency": latency, "hosts": hosts,
                "switches": switches,
                "flow_errors": errors, "flow_states": states, "host_ips": ips,
                "site": self.opts.site,
                "connected": list(self.datapaths),
                "port_ids": {dpid: dict(self.port_ids.get(dpid, {})) for dpid in ports}}

    def _on_remote(self, ports, links, hosts, ips=None) -> None:
        with self._lock:
            self._send(self.fabric.set_remote(ports, links, hosts, ips))

    # --- plumbing ----------------------------------------------------------------------

    def _send(self, events) -> None:
        """Carry out what the logic returned, in order. Caller holds the lock.

        Flow-mods for one switch are collected and go out together (see _flush).
        """
        batch: dict[int, list] = {}
        for event in events:
            if isinstance(event, (FlowAdd, FlowDelete)):
                if self.mastership.is_master(event.dpid) and event.dpid in self.datapaths:
                    batch.setdefault(event.dpid, []).append(event)
                continue
            self._flush(batch)
            self._send_one(event)
        self._flush(batch)

    def _flush(self, batch: dict[int, list]) -> None:
        """Send each switch's flow-mods; several at once go in one atomic OpenFlow bundle
        (ONF extension for OpenFlow 1.3, which OVS implements): the switch applies all of
        them or none, so a repair or a takeover never leaves a half-changed table.

        Messages are packed by controller/forwarding/wire.py (byte-identical to os-ken's,
        several times cheaper) and handed to os-ken as joined writes of up to 64 KB: one
        queue hand-off per write instead of per message (os-ken's per-message cost caps
        it near 10,000 flow-mods/s otherwise).
        """
        for dpid, intents in batch.items():
            dp = self.datapaths[dpid]
            ofp = dp.ofproto
            if len(intents) == 1:
                dp.send(wire.with_xid(self._encoded.encoded(intents[0]), self._xid()))
                continue
            self._bundle_id = (self._bundle_id + 1) & 0xFFFFFFFF
            bid, flags = self._bundle_id, ofp.ONF_BF_ATOMIC
            opened_ns = time.monotonic_ns()
            chunk = [wire.bundle_ctrl(self._xid(), bid, ofp.ONF_BCT_OPEN_REQUEST, flags)]
            size = len(chunk[0])
            for data in wire.bundled_flow_mods(iter(self._xid, None), bid, flags, intents,
                                               self._encoded):
                chunk.append(data)
                size += len(data)
                if size >= JOINED_WRITE_BYTES:
                    dp.send(b"".join(chunk))
                    chunk, size = [], 0
            chunk.append(wire.bundle_ctrl(self._xid(), bid, ofp.ONF_BCT_COMMIT_REQUEST, flags))
            dp.send(b"".join(chunk))
            self._bundles[bid] = (dpid, len(intents), opened_ns, time.monotonic_ns())
            while len(self._bundles) > BUNDLES_TRACKED_MAX:
                self._bundles.popitem(last=False)
        batch.clear()

    def _xid(self) -> int:
        # Our own transaction ids, in the upper half so they never equal os-ken's.
        self._next_xid = (self._next_xid + 1) & 0x7FFFFFFF
        return 0x80000000 | self._next_xid

    def _send_one(self, event) -> None:
        if isinstance(event, BecameMaster):
            self.logger.info("switch %016x: MASTER with generation id %#x", event.dpid,
                             event.generation_id)
            now = now_ms()
            self._send(self.fabric.switch_connected(event.dpid, self.ports.get(event.dpid, {}),
                                                    now))
            self._send(self.flows.became_master(event.dpid, now))
        elif isinstance(event, LostMaster):
            self.logger.info("switch %016x: no longer MASTER", event.dpid)
            self._send(self.flows.lost_master(event.dpid))
            self._send(self.fabric.switch_disconnected(event.dpid))
        elif isinstance(event, FlowRefused):
            self.logger.error("switch %016x rejected flow %s (cookie %#x): OpenFlow error %s",
                              event.dpid, event.flow_id, event.cookie, event.error)
        elif isinstance(event, Audited):
            if not event.clean:
                self.logger.warning("switch %016x audit: %d missing, %d changed, "
                                    "%d unexpected: repairing", event.dpid,
                                    len(event.missing), len(event.changed),
                                    len(event.unexpected))
        else:
            dp = self.datapaths.get(event.dpid)
            if dp is None:
                return
            fenced = isinstance(event, (PacketOut, FlowStatsRequest))
            if fenced and not self.mastership.is_master(event.dpid):
                return  # only the confirmed master programs a switch
            if isinstance(event, FlowStatsRequest):
                # Our own xid, so that rawstats parses the reply from its bytes.
                xid = self._xid()
                rawstats.expect(dp, xid, self._flow_stats_read)
                dp.send(wire.flow_stats_request(xid, event.cookie, event.cookie_mask))
                return
            dp.send_msg(to_message(dp, event))

    def _order(self, dpid: int) -> tuple[str, ...]:
        return controller_order(self.home.get(dpid), self.sites, self.opts.site)

    def _better_alive(self, dpid: int) -> bool:
        return better_alive(self._order(dpid), self.opts.site, self.liveness.alive())

    # --- loops -------------------------------------------------------------------------

    def _tick_loop(self) -> None:
        next_log = time.monotonic() + PACKET_IN_LOG_S
        while not self._stopping.wait(TICK_S):
            now = now_ms()
            if time.monotonic() >= next_log:
                next_log = time.monotonic() + PACKET_IN_LOG_S
                with self._lock:
                    kinds = sorted(self.fabric.packet_in_kinds.items())
                    self.fabric.packet_in_kinds.clear()
                if any(k != "lldp" for k, _ in kinds):  # LLDP alone is the steady state
                    self.logger.info("packet-ins in the last %.0f s: %s", PACKET_IN_LOG_S,
                                     ", ".join(f"{k} {n}" for k, n in kinds))
            with self._lock:
                self._send(self.mastership.tick(now))
                for dpid in list(self.mastership.masters()):
                    self._send(self.mastership.better_alive(dpid, self._better_alive(dpid), now))
                self._send(self.fabric.tick(now))
                self._send(self.flows.tick(now))

    def _probe_loop(self) -> None:
        peers = [(s, h, p) for s, h, p in self.opts.controllers if s != self.opts.site]
        while not self._stopping.wait(PROBE_INTERVAL_S):
            with self._lock:  # only those ranked above us for a switch we are connected to
                wanted = sites_to_probe([self._order(d) for d in self.datapaths],
                                        self.opts.site)
            results = {site: _answers(host, port) for site, host, port in peers
                       if site in wanted}
            now = now_ms()
            with self._lock:
                changed = self.liveness.probed(results)
                if self.liveness.forget(s for s, _, _ in peers if s not in wanted) or changed:
                    for dpid in list(self.datapaths):
                        self._send(self.mastership.better_alive(
                            dpid, self._better_alive(dpid), now))

    # --- OpenFlow events ---------------------------------------------------------------

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    @guarded
    def _on_features(self, ev):
        dp = ev.msg.datapath
        parser = dp.ofproto_parser
        with self._lock:
            self._latest[ev.msg.datapath_id] = dp
            self._ports_done.discard(ev.msg.datapath_id)  # this connection reports them anew
        dp.send_msg(parser.OFPDescStatsRequest(dp, 0))
        dp.send_msg(parser.OFPPortDescStatsRequest(dp, 0))

    # Replies to what we ask in the features handler may arrive before os-ken moves the
    # switch to MAIN (it waits for its own port-desc reply): listen in both states.
    @set_ev_cls(ofp_event.EventOFPDescStatsReply, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    @guarded
    def _on_desc(self, ev):
        dp = ev.msg.datapath
        with self._lock:
            desc = ev.msg.body.dp_desc
            if isinstance(desc, bytes):
                desc = desc.decode("utf-8", "replace")
            self.home[dp.id] = home_site_from_desc(desc.rstrip("\x00"))
            self._maybe_start(dp)

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    @guarded
    def _on_port_desc(self, ev):
        dp = ev.msg.datapath
        ofp = dp.ofproto
        with self._lock:
            ports = self.ports.setdefault(dp.id, {})
            ports.update({p.port_no: port_is_up(ofp, p) for p in ev.msg.body
                          if p.port_no <= ofp.OFPP_MAX})
            self.port_ids.setdefault(dp.id, {}).update(
                {p.port_no: port_identity(p) for p in ev.msg.body if p.port_no <= ofp.OFPP_MAX})
            if not ev.msg.flags & ofp.OFPMPF_REPLY_MORE:
                self._maybe_start(dp, ports_done=True)

    def _maybe_start(self, dp, ports_done: bool = False) -> None:
        latest = self._latest.get(dp.id)
        if latest is None or latest is not dp:
            return  # a late reply on a connection the switch has since replaced
        if ports_done:
            self._ports_done.add(dp.id)
        if self.datapaths.get(dp.id) is dp or dp.id not in self.home or \
                dp.id not in self._ports_done:
            return
        if dp.id in self.datapaths:
            self._disconnected(dp.id)  # its old connection, not yet reported dead
        self.datapaths[dp.id] = dp
        rank = rank_in(self._order(dp.id), self.opts.site)
        self.logger.info("switch %016x connected: home %s, our rank %d",
                         dp.id, self.home.get(dp.id), rank)
        now = now_ms()
        self._send(self.mastership.switch_connected(dp.id, rank, now))
        self._send(self.mastership.better_alive(dp.id, self._better_alive(dp.id), now))

    @set_ev_cls(ofp_event.EventOFPRoleReply, MAIN_DISPATCHER)
    @guarded
    def _on_role_reply(self, ev):
        msg = ev.msg
        with self._lock:
            self._send(self.mastership.role_reply(msg.datapath.id, msg.role,
                                                  msg.generation_id, now_ms()))

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    @guarded
    def _on_error(self, ev):
        msg = ev.msg
        dp = msg.datapath
        if msg.type == OFPET_ROLE_REQUEST_FAILED:
            self.logger.warning("switch %016x refused our role request (code %d)",
                                dp.id, msg.code)
            with self._lock:
                self._send(self.mastership.role_failed(dp.id, now_ms()))
        elif msg.type == OFPET_BAD_REQUEST and msg.code == OFPBRC_IS_SLAVE:
            self.logger.warning("switch %016x: we are not its master (IS_SLAVE)", dp.id)
            with self._lock:
                self._send(self.mastership.demoted(dp.id, now_ms()))
        else:
            cookie = failed_flow_cookie(bytes(msg.data or b""))
            with self._lock:
                out = [] if cookie is None else \
                    self.flows.switch_error(dp.id, cookie, msg.type, msg.code)
                self._send(out)
            if not out:  # not one of our replicated flows: log it as it is
                self.logger.error("switch %016x: OpenFlow error type %d code %d%s", dp.id,
                                  msg.type, msg.code,
                                  "" if cookie is None else f" (flow cookie {cookie:#x})")

    @set_ev_cls(ofp_event.EventONFBundleCtrlMsg, MAIN_DISPATCHER)
    @guarded
    def _on_bundle_reply(self, ev):
        msg = ev.msg
        if msg.type != msg.datapath.ofproto.ONF_BCT_COMMIT_REPLY:
            return
        with self._lock:
            entry = self._bundles.pop(msg.bundle_id, None)
        if entry is not None and entry[1] >= BUNDLE_LOG_FLOW_MODS_MIN:
            dpid, flow_mods, opened_ns, handed_ns = entry
            self.logger.info("switch %016x committed a bundle of %d flow-mods %.1f ms after "
                             "it was opened (all handed to os-ken after %.1f ms)", dpid,
                             flow_mods, (time.monotonic_ns() - opened_ns) / 1e6,
                             (handed_ns - opened_ns) / 1e6)

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
            self.ports.setdefault(dp.id, {})[msg.desc.port_no] = up
            ids = self.port_ids.setdefault(dp.id, {})
            if msg.reason == ofp.OFPPR_DELETE:
                ids.pop(msg.desc.port_no, None)
            else:
                ids[msg.desc.port_no] = port_identity(msg.desc)
            if self.mastership.is_master(dp.id):
                self._send(self.fabric.port_changed(dp.id, msg.desc.port_no, up, now_ms()))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    @guarded
    def _on_packet_in(self, ev):
        msg = ev.msg
        dp = msg.datapath
        with self._lock:
            if not self.mastership.is_master(dp.id):
                return
            self._send(self.fabric.packet_in(dp.id, msg.match["in_port"], bytes(msg.data),
                                             now_ms(), msg.buffer_id))

    def _flow_stats_read(self, dp, more: bool, flows: list[InstalledFlow]) -> None:
        """rawstats parsed a part of our reply (receive thread): queue it for the app."""
        self.send_event(self.name, FlowStatsRead(dp, more, flows))

    @set_ev_cls(FlowStatsRead)
    @guarded
    def _on_flow_stats_read(self, ev):
        with self._lock:
            self._send(self.flows.flow_stats(ev.datapath.id, ev.flows, ev.more, now_ms()))

    # Replies rawstats leaves to os-ken (a match it could not judge the same way) and
    # replies to other apps' requests arrive parsed by os-ken.
    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    @guarded
    def _on_flow_stats(self, ev):
        msg = ev.msg
        dp = msg.datapath
        ofp = dp.ofproto
        flows = [InstalledFlow(s.cookie, s.table_id, s.priority, match_from_ofp(s.match),
                               outputs_from_instructions(ofp, s.instructions),
                               s.idle_timeout, s.hard_timeout, s.packet_count, s.byte_count)
                 for s in msg.body]
        more = bool(msg.flags & ofp.OFPMPF_REPLY_MORE)
        with self._lock:
            self._send(self.flows.flow_stats(dp.id, flows, more, now_ms()))

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    @guarded
    def _on_dead(self, ev):
        dp = ev.datapath
        rawstats.forget(dp)
        if dp.id is None:
            return
        with self._lock:
            if self._latest.get(dp.id) is dp:
                del self._latest[dp.id]
                self.home.pop(dp.id, None)
                self._ports_done.discard(dp.id)
            if self.datapaths.get(dp.id) is dp:
                self._disconnected(dp.id)

    def _disconnected(self, dpid: int) -> None:
        """The started connection of `dpid` is gone. Caller holds the lock."""
        self.logger.info("switch %016x disconnected", dpid)
        del self.datapaths[dpid]
        self._send(self.mastership.switch_disconnected(dpid))
        self._send(self.fabric.switch_disconnected(dpid))


def failed_flow_cookie(data: bytes) -> int | None:
    """The cookie of the FLOW_MOD an OpenFlow error quotes (its first bytes), if it is one,
    also when the flow-mod was inside a bundle-add message."""
    if len(data) >= 16 and data[0] == 0x04 and data[1] == OFPT_FLOW_MOD:
        return int.from_bytes(data[8:16], "big")
    inner = BUNDLE_ADD_HEADER_BYTES
    if len(data) >= inner + 16 and data[0] == 0x04 and data[1] == OFPT_EXPERIMENTER:
        return failed_flow_cookie(data[inner:])
    return None


def _answers(host: str, port: int) -> bool:
    """Is the controller at host:port alive? It must greet us with an OpenFlow HELLO.

    A TCP connect alone is not enough: the kernel completes handshakes for a process
    that is hung or stopped (SIGSTOP), and such a controller must count as gone.
    """
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as sock:
            sock.settimeout(PROBE_TIMEOUT_S)
            header = b""
            while len(header) < 8:
                chunk = sock.recv(8 - len(header))
                if not chunk:
                    return False
                header += chunk
            return header[1] == OFPT_HELLO
    except OSError:
        return False
