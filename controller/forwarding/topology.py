"""The switch graph a controller sees: switches, ports, LLDP-discovered links, hosts.

Pure data with deterministic queries (sorted iteration everywhere), so that two
controllers fed the same events compute the same forwarding.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["HostLocation", "PortRef", "Topology"]


@dataclass(frozen=True, order=True)
class PortRef:
    """One port of one switch."""

    dpid: int
    port: int


@dataclass(frozen=True)
class HostLocation:
    """Where a host (by MAC) attaches, and when it was last heard from."""

    mac: str
    at: PortRef
    seen_ms: int
    ip: str = ""  # the IPv4 address it last used as a sender (ARP or IPv4), if any


LATENCY_EWMA = 0.25  # weight of a new latency sample in the moving average
# The reported latency (the links row's latency_ms: every change is a signed op that every
# node of the cluster stores and applies) changes when the average moved more than
# LATENCY_STEP_MS and LATENCY_STEP_FRACTION of the reported value, and at most once per
# LATENCY_REPORT_MS_MIN per link; the first measurement is reported at once. With the old
# 0.5 ms / 10 % step and no interval, scheduling jitter on a loaded machine rewrote the
# link rows every few seconds: ~2.5 ops/s at 3 edge sites, growing with the sites, each
# stored by every node (decision 0097).
LATENCY_STEP_MS = 1.0
LATENCY_STEP_FRACTION = 0.25
LATENCY_REPORT_MS_MIN = 30_000


class Topology:
    """Switches and their ports, directed links (frames out of src arrive at dst), hosts."""

    def __init__(self, link_ttl_ms: int = 10_000, hosts_max: int = 65_536) -> None:
        self.link_ttl_ms = link_ttl_ms
        self.hosts_max = hosts_max
        self.ports: dict[int, dict[int, bool]] = {}  # dpid -> port -> up
        self.links: dict[PortRef, tuple[PortRef, int]] = {}  # src -> (dst, seen_ms)
        self.hosts: dict[str, HostLocation] = {}
        # What other controllers see, from the replicated tables: their switches' ports,
        # the links they discovered, the hosts they learned. Our own view wins on overlap.
        self.remote_ports: dict[int, dict[int, bool]] = {}
        self.remote_links: dict[PortRef, PortRef] = {}
        self.remote_hosts: dict[str, PortRef] = {}
        self.version = 0  # bumps on every change that can alter paths
        # Link latency (decision 0036), per link by its src: a moving average of the
        # samples, and the value reported (changed only when the average moved enough, so
        # a jittery link does not rewrite its replicated row every LLDP round).
        self._latency: dict[PortRef, float] = {}
        self._latency_reported: dict[PortRef, tuple[float, int]] = {}  # value, when (ms)

    # --- changes; each returns True if the graph changed -------------------------------

    def add_switch(self, dpid: int, ports: dict[int, bool]) -> bool:
        self.ports[dpid] = dict(ports)
        self._drop_links(lambda src, dst: dpid in (src.dpid, dst.dpid))
        self.version += 1
        return True

    def remove_switch(self, dpid: int) -> bool:
        if dpid not in self.ports:
            return False
        del self.ports[dpid]
        self._drop_links(lambda src, dst: dpid in (src.dpid, dst.dpid))
        for mac in [m for m, h in self.hosts.items() if h.at.dpid == dpid]:
            del self.hosts[mac]
        self.version += 1
        return True

    def set_port(self, dpid: int, port: int, up: bool) -> bool:
        ports = self.ports.setdefault(dpid, {})
        if ports.get(port) == up:
            return False
        ports[port] = up
        if not up:
            ref = PortRef(dpid, port)
            self._drop_links(lambda src, dst: ref in (src, dst))
        self.version += 1
        return True

    def saw_link(self, src: PortRef, dst: PortRef, now_ms: int) -> bool:
        """An LLDP frame sent out of src arrived at dst (one of our switches).

        src may belong to another controller's switch: the port is then an exit from our
        part of the fabric. We cannot probe the reverse direction of such a link
        ourselves, so it is assumed symmetric (its owner reports it through replication).
        """
        if dst.dpid not in self.ports or src == dst:
            return False
        previous = self.links.get(src)
        self.links[src] = (dst, now_ms)
        if previous is not None and previous[0] == dst:
            return False
        self._forget_latency(src)  # a new link, or the port now leads elsewhere
        # A port that joins the fabric is no longer a host port.
        for mac in [m for m, h in self.hosts.items() if h.at in (src, dst)]:
            del self.hosts[mac]
        self.version += 1
        return True

    def note_latency(self, src: PortRef, dst: PortRef, sample_ms: float, now_ms: int) -> None:
        """A latency sample for the link src -> dst (ignored unless that link is known)."""
        seen = self.links.get(src)
        if seen is None or seen[0] != dst or sample_ms < 0:
            return
        old = self._latency.get(src)
        est = sample_ms if old is None else old + LATENCY_EWMA * (sample_ms - old)
        self._latency[src] = est
        shown = self._latency_reported.get(src)
        if shown is None or (
                abs(est - shown[0]) > max(LATENCY_STEP_MS, LATENCY_STEP_FRACTION * shown[0])
                and now_ms - shown[1] >= LATENCY_REPORT_MS_MIN):
            self._latency_reported[src] = (round(est, 1), now_ms)

    def latency_ms(self, src: PortRef) -> float:
        """The reported latency of the link out of src, ms (0.0 until measured)."""
        shown = self._latency_reported.get(src)
        return 0.0 if shown is None else shown[0]

    def expire(self, now_ms: int) -> bool:
        stale = [s for s, (_, seen) in self.links.items() if now_ms - seen > self.link_ttl_ms]
        for src in stale:
            del self.links[src]
            self._forget_latency(src)
        if stale:
            self.version += 1
        return bool(stale)

    def learn_host(self, mac: str, at: PortRef, now_ms: int, ip: str = "") -> bool:
        """Record a host seen at an edge port; True if it is new or moved."""
        previous = self.hosts.pop(mac, None)
        if not ip and previous is not None:
            ip = previous.ip
        self.hosts[mac] = HostLocation(mac, at, now_ms, ip)
        while len(self.hosts) > self.hosts_max:
            del self.hosts[next(iter(self.hosts))]
        return previous is None or previous.at != at

    def set_remote(self, ports: dict[int, dict[int, bool]], links: dict[PortRef, PortRef],
                   hosts: dict[str, PortRef]) -> bool:
        """Replace the replicated view of other controllers' switches; True if it changed."""
        ports = {d: p for d, p in ports.items() if d not in self.ports}
        links = {s: d for s, d in links.items() if s.dpid not in self.ports}
        hosts = {m: at for m, at in hosts.items() if at.dpid not in self.ports}
        if (ports, links, hosts) == (self.remote_ports, self.remote_links, self.remote_hosts):
            return False
        self.remote_ports, self.remote_links, self.remote_hosts = ports, links, hosts
        self.version += 1
        return True

    def exit_ports(self, dpid: int) -> list[int]:
        """Up ports of our switch `dpid` whose link leads to a switch we do not control."""
        out = set()
        for src, (dst, _) in self.links.items():
            if dst.dpid == dpid and src.dpid not in self.ports:
                out.add(dst.port)
        return sorted(p for p in out if self.ports.get(dpid, {}).get(p))

    def host_location(self, mac: str) -> PortRef | None:
        host = self.hosts.get(mac)
        if host is not None:
            return host.at
        return self.remote_hosts.get(mac)

    def _port_up(self, ref: PortRef) -> bool:
        if ref.dpid in self.ports:
            return bool(self.ports[ref.dpid].get(ref.port))
        return bool(self.remote_ports.get(ref.dpid, {}).get(ref.port, True))

    def _all_links(self) -> list[tuple[PortRef, PortRef]]:
        """Directed links usable for paths: ours, foreign ones reversed, and replicated."""
        links: dict[PortRef, PortRef] = dict(self.remote_links)
        for src, (dst, _) in self.links.items():
            links[src] = dst
            if src.dpid not in self.ports:
                links.setdefault(dst, src)  # assumed symmetric, see saw_link
        return sorted(links.items())

    def _drop_links(self, doomed) -> None:
        for src in [s for s, (d, _) in self.links.items() if doomed(s, d)]:
            del self.links[src]
            self._forget_latency(src)

    def _forget_latency(self, src: PortRef) -> None:
        self._latency.pop(src, None)
        self._latency_reported.pop(src, None)

    # --- queries -----------------------------------------------------------------------

    def fabric_ports(self) -> set[PortRef]:
        """Ports that face another switch (either end of a link)."""
        return set(self.links) | {dst for dst, _ in self.links.values()}

    def edge_ports(self, dpid: int) -> list[int]:
        """Up ports of `dpid` that face hosts (no link discovered on them)."""
        fabric = self.fabric_ports()
        return sorted(p for p, up in self.ports.get(dpid, {}).items()
                      if up and PortRef(dpid, p) not in fabric)

    def is_edge_port(self, at: PortRef) -> bool:
        return self.ports.get(at.dpid, {}).get(at.port, False) and at not in self.fabric_ports()

    def next_hops(self, dst_dpid: int) -> dict[int, int]:
        """For every switch that can reach dst_dpid: the port out of it on a shortest path.

        Breadth-first from the destination over live links; ties break towards the lower
        (dpid, port), so the result is deterministic. Every hop decreases the distance to
        dst_dpid by one, so following these ports can never loop.
        """
        if dst_dpid not in self.ports and dst_dpid not in self.remote_ports:
            return {}
        into: dict[int, list[tuple[int, int]]] = {}  # v -> [(u, u's port towards v)]
        for src, dst in self._all_links():
            if self._port_up(src) and self._port_up(dst):
                into.setdefault(dst.dpid, []).append((src.dpid, src.port))
        hops: dict[int, int] = {}
        seen = {dst_dpid}
        queue = deque([dst_dpid])
        while queue:
            v = queue.popleft()
            for u, port in into.get(v, []):
                if u not in seen:
                    seen.add(u)
                    hops[u] = port
                    queue.append(u)
        return hops
