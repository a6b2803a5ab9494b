"""Loop-safe forwarding over any topology: LLDP discovery, host tracking, shortest paths.

Switches never flood on their own. Broadcast and unknown-destination frames come to
the controller, which sends them out of every host-facing (edge) port of every
switch, once: the fabric links are never used for flooding, so rings, dual-homed
sites and redundant WAN links cannot create broadcast storms. An ARP request for an
address whose host is known is answered by the first controller that knows it instead
of flooded further (decision 0097): at 20 sites a flood costs a packet-in at every
site's controller and a trip through every WAN link. Addresses are known from hosts
learned here, from the replicated hosts table, and from the sender fields of the ARP
frames a controller sees pass (the hub sees every site's first request, so it knows
every address a second after the hosts first speak, before replication would say).

For every known host, every switch gets one flow `eth_dst=host -> port on a shortest
path`, recomputed when a link or port changes, so traffic moves to a surviving path by
itself.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from controller.forwarding.intents import (
    NO_BUFFER,
    PORT_CONTROLLER,
    FlowAdd,
    FlowDelete,
    Intent,
    Match,
    Output,
    PacketOut,
)
from controller.forwarding.learning import parse_ethernet
from controller.forwarding.lldp import ETH_TYPE_LLDP, Stamp, build_lldp, parse_lldp, parse_stamp
from controller.forwarding.topology import PortRef, Topology

__all__ = ["FABRIC_COOKIE", "Fabric", "FabricConfig"]

FABRIC_COOKIE = 0x53594E0F00000001  # "SYN" + app 0x0F + instance 1
PRIORITY_MISS = 0
PRIORITY_HOST = 100
PRIORITY_LLDP = 65_000


@dataclass(frozen=True)
class FabricConfig:
    """Tunables; defaults suit emulated cloud-edge sites."""

    lldp_interval_ms: int = 1_000
    link_ttl_ms: int = 3_500  # a link missing ~3 LLDP rounds is gone
    flood_dedup_ms: int = 500  # the same frame again within this window is a loop echo
    flood_dedup_max: int = 4_096
    hosts_max: int = 65_536
    proxy_arp: bool = True  # answer ARP requests for known hosts instead of flooding them


def sender_ipv4(ethertype: int, frame: bytes) -> str:
    """The sender's IPv4 address of an ARP or IPv4 frame (untagged), else ""."""
    if ethertype == 0x0806 and len(frame) >= 32:
        raw = frame[28:32]  # ARP sender protocol address
    elif ethertype == 0x0800 and len(frame) >= 30 and frame[14] >> 4 == 4:
        raw = frame[26:30]  # IPv4 source address
    else:
        return ""
    return ".".join(str(b) for b in raw)


ETH_TYPE_ARP = 0x0806
ARP_REQUEST, ARP_REPLY = 1, 2
_ARP_IPV4_ETHERNET = bytes.fromhex("0001080006040001")  # htype, ptype, sizes, op=request
_ETH_FRAME_MIN = 60  # without the FCS


def arp_request(frame: bytes) -> tuple[str, str, str] | None:
    """(asker's MAC, asker's IPv4, asked IPv4) of an untagged Ethernet ARP request for an
    IPv4 address; None for anything else, and for probes and announcements (an asker
    without an address, or asking for its own), which must reach every host."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x06" or frame[14:22] != _ARP_IPV4_ETHERNET:
        return None
    sender_ip, target_ip = frame[28:32], frame[38:42]
    if sender_ip == b"\0\0\0\0" or sender_ip == target_ip:
        return None
    return (":".join(f"{b:02x}" for b in frame[22:28]), ".".join(map(str, sender_ip)),
            ".".join(map(str, target_ip)))


def arp_sender(frame: bytes) -> tuple[str, str] | None:
    """(sender MAC, sender IPv4) of an untagged Ethernet ARP request or reply for IPv4
    whose sender has an address (not a probe)."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x06" or \
            frame[14:21] != _ARP_IPV4_ETHERNET[:7] or frame[21] not in (ARP_REQUEST, ARP_REPLY):
        return None
    if frame[28:32] == b"\0\0\0\0":
        return None
    return ":".join(f"{b:02x}" for b in frame[22:28]), ".".join(map(str, frame[28:32]))


def arp_reply(asker_mac: str, asker_ip: str, host_mac: str, host_ip: str) -> bytes:
    """The ARP reply `host_ip is at host_mac`, addressed to the asker, padded to 60 bytes."""
    asker, host = bytes.fromhex(asker_mac.replace(":", "")), bytes.fromhex(
        host_mac.replace(":", ""))
    frame = (asker + host + ETH_TYPE_ARP.to_bytes(2, "big") + _ARP_IPV4_ETHERNET[:7]
             + bytes([ARP_REPLY]) + host + bytes(map(int, host_ip.split(".")))
             + asker + bytes(map(int, asker_ip.split("."))))
    return frame.ljust(_ETH_FRAME_MIN, b"\0")


def _is_group(mac: str) -> bool:
    return int(mac[0:2], 16) & 1 == 1


class Fabric:
    """Forwarding logic for all switches of one controller. Events in, intents out."""

    def __init__(self, config: FabricConfig | None = None, origin: bytes | None = None) -> None:
        """`origin`: 8 bytes naming this controller in LLDP stamps (random per process);
        None sends unstamped probes and measures no latency."""
        if origin is not None and len(origin) != 8:
            raise ValueError("origin: 8 bytes")
        self.origin = origin
        self.config = config or FabricConfig()
        self.topology = Topology(self.config.link_ttl_ms, self.config.hosts_max)
        self._installed: dict[tuple[int, str], int] = {}  # (dpid, mac) -> out port
        self._recent_floods: dict[bytes, int] = {}  # frame -> when flooded
        self._remote_ips: dict[str, str] = {}  # host MAC -> IPv4, from the replicated table
        self._seen_ips: dict[str, str] = {}  # host MAC -> IPv4, from ARP frames passing by
        self._ip_index: dict[str, str | None] | None = None  # IPv4 -> MAC (None: several)
        self._claims: dict[str, set[str]] = {}  # IPv4 -> the MACs claiming it (the index's)
        self.index_rebuilds = 0
        self.arp_answered = 0  # ARP requests answered here instead of flooded
        # What the packet-ins were, by kind (the controller logs and clears it now and
        # then): lldp, arp-answered, flood (+ ethertype, group or unknown destination),
        # forward (a known destination whose flow the switch lacked), drop.
        self.packet_in_kinds: Counter[str] = Counter()
        self._next_lldp_ms = 0

    # --- switch lifecycle --------------------------------------------------------------

    def switch_connected(self, dpid: int, ports: dict[int, bool], now_ms: int) -> list[Intent]:
        """A switch joined: punt misses and LLDP to us, probe its links, reprogram paths."""
        self.topology.add_switch(dpid, ports)
        self._installed = {k: v for k, v in self._installed.items() if k[0] != dpid}
        intents: list[Intent] = [
            FlowAdd(dpid, PRIORITY_MISS, Match(), (Output(PORT_CONTROLLER),),
                    cookie=FABRIC_COOKIE),
            FlowAdd(dpid, PRIORITY_LLDP, Match(eth_type=ETH_TYPE_LLDP),
                    (Output(PORT_CONTROLLER),), cookie=FABRIC_COOKIE),
        ]
        intents += self._probe(dpid)
        return intents + self._reprogram()

    def switch_disconnected(self, dpid: int) -> list[Intent]:
        self.topology.remove_switch(dpid)
        self._installed = {k: v for k, v in self._installed.items() if k[0] != dpid}
        return self._reprogram()

    def port_changed(self, dpid: int, port: int, up: bool, now_ms: int) -> list[Intent]:
        if not self.topology.set_port(dpid, port, up):
            return []
        intents: list[Intent] = self._probe(dpid, [port]) if up else []
        return intents + self._reprogram()

    def tick(self, now_ms: int) -> list[Intent]:
        """Call often (every ~100 ms): sends LLDP rounds and ages out silent links."""
        intents: list[Intent] = []
        if now_ms >= self._next_lldp_ms:
            self._next_lldp_ms = now_ms + self.config.lldp_interval_ms
            for dpid in sorted(self.topology.ports):
                intents += self._probe(dpid, now_ms=now_ms)
        if self.topology.expire(now_ms):
            intents += self._reprogram()
        return intents

    # --- packets -----------------------------------------------------------------------

    def packet_in(self, dpid: int, in_port: int, frame: bytes, now_ms: int,
                  buffer_id: int = NO_BUFFER) -> list[Intent]:
        parsed = parse_ethernet(frame)
        if parsed is None:
            return []
        dst, src, ethertype = parsed
        here = PortRef(dpid, in_port)
        if ethertype == ETH_TYPE_LLDP:
            self.packet_in_kinds["lldp"] += 1
            origin = parse_lldp(frame)
            if origin is None:
                return []
            src = PortRef(*origin)
            new = self.topology.saw_link(src, here, now_ms)
            echo = self._latency_sample(src, here, parse_stamp(frame), now_ms)
            if new or echo is not None:
                # Probe straight back so the reverse direction is known one trip later,
                # not at the next LLDP round (a healed link carries traffic sooner), and
                # so a foreign sender can time the round trip on its own clock.
                out = self._probe(dpid, [in_port], now_ms=now_ms, echo=echo)
                return out + self._reprogram() if new else out
            return []
        intents: list[Intent] = []
        edge = self.topology.is_edge_port(here)
        if not _is_group(src) and edge:
            ip = sender_ipv4(ethertype, frame)
            before = self.topology.hosts.get(src)
            if self.topology.learn_host(src, here, now_ms, ip):
                intents += self._reprogram()
            elif ip and (before is None or before.ip != ip):
                self._ip_index = None
        if ethertype == ETH_TYPE_ARP and self.config.proxy_arp:
            answer = self._answer_arp(here, frame)
            if answer is not None:
                self.packet_in_kinds["arp-answered"] += 1
                return intents + [answer]
        at = None if _is_group(dst) else self.topology.host_location(dst)
        if at is None:
            self.packet_in_kinds[f"flood {ethertype:#06x} "
                                 f"{'group' if _is_group(dst) else 'unknown'}"
                                 f"{'' if edge else ' from a fabric port'}"] += 1
            return intents + self._flood(here, frame, now_ms)
        out: int | None = at.port if at.dpid == dpid else \
            self.topology.next_hops(at.dpid).get(dpid)
        if out is None or out == in_port:
            self.packet_in_kinds["drop"] += 1
            return intents  # unreachable from here, or it would go straight back
        self.packet_in_kinds["forward"] += 1
        return intents + [PacketOut(dpid, in_port, (Output(out),), buffer_id,
                                    frame if buffer_id == NO_BUFFER else b"")]

    def _answer_arp(self, here: PortRef, frame: bytes) -> PacketOut | None:
        """An ARP reply for a request whose address belongs to exactly one known host
        (learned here, replicated, or seen as an ARP sender), sent back out of the port
        the request came in by (a host's, or the link it was flooded over by another
        controller); None where the request must be flooded as before (unknown or
        contested address, a probe or an announcement). Notes the sender's address."""
        sender = arp_sender(frame)
        if sender is not None and frame[22:28] != frame[6:12]:
            sender = None  # an ARP sender that is not the frame's source: not noted
        if sender is not None and self._seen_ips.get(sender[0]) != sender[1]:
            # Kept up to date entry by entry: a host spraying ARP frames with ever new
            # senders must not cost a rebuild over every known host per frame.
            self._see(sender[0], sender[1])
            while len(self._seen_ips) > self.config.hosts_max:
                self._see(next(iter(self._seen_ips)), None)
        asked = arp_request(frame)
        if asked is None:
            return None
        asker_mac, asker_ip, target_ip = asked
        host_mac = self._ip_to_mac().get(target_ip)
        if host_mac is None or host_mac == asker_mac or \
                self.topology.host_location(host_mac) is None:
            return None
        self.arp_answered += 1
        return PacketOut(here.dpid, PORT_CONTROLLER, (Output(here.port),), NO_BUFFER,
                         arp_reply(asker_mac, asker_ip, host_mac, target_ip))

    def _claims_of(self, mac: str) -> set[str]:
        """The addresses a MAC claims: a host of ours by what it was learned with; another
        by its replicated and its seen address, both (an address seen in passing does not
        replace the replicated one of the same MAC: a host could otherwise move another's
        claim away and then take its address unopposed; they contest instead)."""
        host = self.topology.hosts.get(mac)
        if host is not None:
            return {host.ip} if host.ip else set()
        return {ip for ip in (self._remote_ips.get(mac), self._seen_ips.get(mac)) if ip}

    def _see(self, mac: str, ip: str | None) -> None:
        """Note (or with None forget) the address an ARP frame's sender had, and update the
        index for that MAC alone."""
        before = self._claims_of(mac) if self._ip_index is not None else set()
        self._seen_ips.pop(mac, None)
        if ip is not None:
            self._seen_ips[mac] = ip
        index = self._ip_index
        if index is None:
            return  # rebuilt whole at its next use
        after = self._claims_of(mac)
        for addr in before ^ after:
            macs = self._claims.setdefault(addr, set())
            if addr in after:
                macs.add(mac)
            else:
                macs.discard(mac)
            if macs:
                index[addr] = next(iter(macs)) if len(macs) == 1 else None
            else:
                del self._claims[addr]
                index.pop(addr, None)

    def _ip_to_mac(self) -> dict[str, str | None]:
        """IPv4 -> the one MAC that claims it (None where several do); our own hosts'
        addresses, then the replicated and the seen ones. Rebuilt after a change of hosts
        or of the replicated table; kept up to date for each address seen."""
        if self._ip_index is None:
            self.index_rebuilds += 1
            claims: dict[str, set[str]] = {}
            for source in (self.topology.hosts, self._remote_ips, self._seen_ips):
                for mac in source:
                    for ip in self._claims_of(mac):
                        claims.setdefault(ip, set()).add(mac)
            self._claims = claims
            self._ip_index = {ip: (next(iter(macs)) if len(macs) == 1 else None)
                              for ip, macs in claims.items()}
        return self._ip_index

    def _flood(self, ingress: PortRef, frame: bytes, now_ms: int) -> list[Intent]:
        last = self._recent_floods.get(frame)
        if last is not None and now_ms - last < self.config.flood_dedup_ms:
            return []  # the same frame came back: drop the echo
        self._recent_floods[frame] = now_ms
        while len(self._recent_floods) > self.config.flood_dedup_max:
            del self._recent_floods[next(iter(self._recent_floods))]
        intents: list[Intent] = []
        for dpid in sorted(self.topology.ports):
            # Edge ports, and exits to other controllers' switches (they flood their part),
            # never back out of the port the frame came in by. Should the controllers'
            # domains form a cycle, each drops the copy that comes round (dedup above).
            exits = self.topology.exit_ports(dpid)
            ports = [p for p in sorted(set(self.topology.edge_ports(dpid)) | set(exits))
                     if PortRef(dpid, p) != ingress]
            if ports:
                in_port = ingress.port if dpid == ingress.dpid else PORT_CONTROLLER
                intents.append(PacketOut(dpid, in_port, tuple(Output(p) for p in ports),
                                         NO_BUFFER, frame))
        return intents

    # --- path programming --------------------------------------------------------------

    def _probe(self, dpid: int, ports: list[int] | None = None, *, now_ms: int = 0,
               echo: tuple[bytes, int] | None = None) -> list[Intent]:
        chosen = ports if ports is not None else sorted(self.topology.ports.get(dpid, {}))
        stamp = Stamp(self.origin, now_ms, echo) if self.origin is not None else None
        return [PacketOut(dpid, PORT_CONTROLLER, (Output(p),), NO_BUFFER,
                          build_lldp(dpid, p, stamp=stamp))
                for p in chosen if self.topology.ports.get(dpid, {}).get(p)]

    def _latency_sample(self, src: PortRef, here: PortRef, stamp: Stamp | None,
                        now_ms: int) -> tuple[bytes, int] | None:
        """Time the link src -> here from a probe's stamp (decision 0036); returns the echo
        to send back when the probe came from another controller and asks for one."""
        if stamp is None or self.origin is None:
            return None
        if stamp.origin == self.origin:  # our own probe, sent and received on our clock
            self.topology.note_latency(src, here, now_ms - stamp.sent_ms, now_ms)
            return None
        if stamp.echo is not None:  # another controller answered a probe of ours
            if stamp.echo[0] == self.origin:
                self.topology.note_latency(src, here, (now_ms - stamp.echo[1]) / 2, now_ms)
            return None
        return (stamp.origin, stamp.sent_ms)  # a foreign probe: echo it back

    def latencies(self) -> dict[PortRef, float]:
        """The reported latency of each link this controller discovered (by its src), ms."""
        return {src: self.topology.latency_ms(src) for src in self.topology.links}

    def desired_host_flows(self) -> dict[tuple[int, str], int]:
        """(dpid, host mac) -> out port, for every switch that can reach every host."""
        want: dict[tuple[int, str], int] = {}
        trees: dict[int, dict[int, int]] = {}
        own = self.topology.ports
        located = {mac: h.at for mac, h in self.topology.hosts.items()}
        for mac, at in self.topology.remote_hosts.items():
            located.setdefault(mac, at)
        for mac, at in sorted(located.items()):
            if at.dpid in own:
                want[(at.dpid, mac)] = at.port
            if at.dpid not in trees:
                trees[at.dpid] = self.topology.next_hops(at.dpid)
            for dpid, port in trees[at.dpid].items():
                if dpid in own:  # we program only the switches we are master of
                    want[(dpid, mac)] = port
        return want

    def set_remote(self, ports: dict[int, dict[int, bool]], links: dict[PortRef, PortRef],
                   hosts: dict[str, PortRef],
                   ips: dict[str, str] | None = None) -> list[Intent]:
        """The replicated view of other controllers' switches changed: recompute paths.
        `ips` (host MAC -> IPv4, from the hosts table) lets us answer ARP for them."""
        if ips is not None and ips != self._remote_ips:
            self._remote_ips = dict(ips)
            self._ip_index = None
        if self.topology.set_remote(ports, links, hosts):
            return self._reprogram()
        return []

    def report(self) -> tuple[dict[int, dict[int, bool]], list[tuple[PortRef, PortRef]],
                              dict[str, PortRef]]:
        """What this controller observes, for the replicated tables: its switches' ports,
        the links it discovered (received on its switches), the hosts it learned."""
        links = [(src, dst) for src, (dst, _) in sorted(self.topology.links.items())]
        hosts = {m: h.at for m, h in sorted(self.topology.hosts.items())}
        return {d: dict(p) for d, p in self.topology.ports.items()}, links, hosts

    def host_ips(self) -> dict[str, str]:
        """MAC -> last sender IPv4 address, for the hosts this controller learned."""
        return {m: h.ip for m, h in self.topology.hosts.items() if h.ip}

    def _reprogram(self) -> list[Intent]:
        """Bring every switch's host flows to what the current graph wants (diff only)."""
        self._ip_index = None  # hosts may have gone or moved with the graph
        want = self.desired_host_flows()
        intents: list[Intent] = []
        for key in sorted(set(self._installed) - set(want)):
            dpid, mac = key
            if dpid in self.topology.ports:
                intents.append(FlowDelete(dpid, Match(eth_dst=mac), FABRIC_COOKIE))
            del self._installed[key]
        for key, port in sorted(want.items()):
            if self._installed.get(key) != port:
                dpid, mac = key
                intents.append(FlowAdd(dpid, PRIORITY_HOST, Match(eth_dst=mac), (Output(port),),
                                       cookie=FABRIC_COOKIE))
                self._installed[key] = port
        return intents
