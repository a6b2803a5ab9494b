"""What the web view shows, computed from plain rows: the topology picture and the cluster panel.

Pure: rows and facts in (dicts, as the engine holds them), JSON-ready dicts out; time is a
parameter. controller/web/server.py gathers the inputs from the running node
(controller/web/gather.py) and sends the result to the page.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "LINKS_REMEMBERED_MAX",
    "LinkMemory",
    "Member",
    "cluster_view",
    "topology_view",
]

LINKS_REMEMBERED_MAX = 10_000  # links the view remembers after their rows went away
LINK_FORGET_MS = 600_000  # a link gone this long is forgotten (a removed cable, not a cut)

LinkKey = tuple[str, int, str, int]  # (src dpid, src port, dst dpid, dst port)


def _pair(key: LinkKey) -> tuple[tuple[str, int], tuple[str, int]]:
    """Both directions of a cable as one undirected key (lower end first)."""
    a, b = (key[0], key[1]), (key[2], key[3])
    return (a, b) if a <= b else (b, a)


@dataclass
class LinkMemory:
    """Links seen earlier whose rows are gone: the view draws them cut instead of dropping
    them, so a cut stays visible. Bounded: at most `max_links`, oldest forgotten first."""

    max_links: int = LINKS_REMEMBERED_MAX
    forget_ms: int = LINK_FORGET_MS
    seen: dict[tuple, int] = field(default_factory=dict)  # undirected pair -> last seen ms

    def update(self, present: Iterable[tuple], now_ms: int) -> set[tuple]:
        """Note the pairs present now; return the remembered pairs that are absent."""
        present = set(present)
        for pair in present:
            self.seen.pop(pair, None)  # re-inserted last: dict order is age order
            self.seen[pair] = now_ms
        for pair in [p for p, t in self.seen.items() if now_ms - t > self.forget_ms]:
            del self.seen[pair]
        while len(self.seen) > self.max_links:
            del self.seen[next(iter(self.seen))]
        return {p for p in self.seen if p not in present}


@dataclass(frozen=True)
class Member:
    """A member as this node sees it: reachable now, and its version vector if known."""

    node_id: str
    self: bool
    up: bool
    vector: Mapping[str, int] | None  # None: never heard from
    last_seen_ms_ago: int = -1  # -1: never


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def topology_view(
    switches: Mapping[tuple, Mapping[str, Any]],
    links: Mapping[tuple, Mapping[str, Any]],
    hosts: Mapping[tuple, Mapping[str, Any]],
    services: Mapping[tuple, Mapping[str, Any]],
    placements: Mapping[tuple, Mapping[str, Any]],
    flows_per_switch: Mapping[str, int],
    site_nodes: Mapping[str, str],
    reachable: Mapping[str, bool],
    memory: LinkMemory,
    now_ms: int,
) -> dict[str, Any]:
    """The picture: sites (groups), switches coloured by master, links (cut ones marked),
    hosts and services.

    site_nodes maps a site to the node its controller writes through (the author of its
    switches' `master` column); reachable maps node ids to whether this node reaches them
    now (this node: True). A site whose node is unreachable is `separated`; every link
    between it and another site is drawn cut, as is any link remembered but gone, or
    reported down.
    """
    site_of: dict[str, str] = {}
    out_switches = []
    for (dpid,), row in sorted(switches.items()):
        site = _text(row.get("site")) or _text(row.get("master")) or "?"
        site_of[str(dpid)] = site
        out_switches.append({
            "dpid": str(dpid), "name": _text(row.get("name")), "site": site,
            "master": _text(row.get("master")),
            "generation_id": int(row.get("generation_id") or 0),
            "connected": bool(row.get("connected")),
            "flows": int(flows_per_switch.get(str(dpid), 0)),
        })
    separated = {s for s, node in site_nodes.items() if not reachable.get(node, False)}
    by_pair: dict[tuple, dict[str, Any]] = {}
    for key, row in links.items():
        src, sport, dst, dport = str(key[0]), int(key[1]), str(key[2]), int(key[3])
        pair = _pair((src, sport, dst, dport))
        entry = by_pair.setdefault(pair, {"directions": 0, "down": False})
        entry["directions"] += 1
        entry["down"] = entry["down"] or not row.get("up", True)
    gone = memory.update(by_pair, now_ms)
    out_links = []
    for pair in sorted(set(by_pair) | gone):
        (a, aport), (b, bport) = pair
        sa, sb = site_of.get(a, "?"), site_of.get(b, "?")
        wan = sa != sb
        if pair in gone:
            state, why = "cut", "not seen any more"
        elif by_pair[pair]["down"]:
            state, why = "cut", "reported down"
        elif wan and (sa in separated or sb in separated):
            state, why = "cut", f"site {sa if sa in separated else sb} is separated"
        else:
            state, why = "up", ""
        out_links.append({"id": f"{a}/{aport}-{b}/{bport}", "a": a, "a_port": aport, "b": b,
                          "b_port": bport, "wan": wan, "state": state, "why": why})
    out_hosts = [{"mac": str(mac), "ip": _text(row.get("ip")), "dpid": _text(row.get("dpid")),
                  "port": int(row.get("port_no") or 0)}
                 for (mac,), row in sorted(hosts.items())]
    node_site = {node: site for site, node in site_nodes.items()}
    out_services = []
    for (name,), row in sorted(services.items()):
        placed = placements.get((name,)) or {}
        node = _text(placed.get("node"))
        out_services.append({
            "name": str(name), "desired_state": _text(row.get("desired_state")),
            "placement": _text(row.get("placement")), "node": node,
            "site": node_site.get(node, ""), "state": _text(placed.get("state")) or "unplaced",
        })
    site_names = sorted({*site_of.values(), *site_nodes}, key=lambda s: (s != "cloud", s))
    out_sites = [{"name": s, "node": site_nodes.get(s, ""), "separated": s in separated,
                  "switches": sum(1 for v in site_of.values() if v == s)}
                 for s in site_names]
    return {"sites": out_sites, "switches": out_switches, "links": out_links,
            "hosts": out_hosts, "services": out_services}


def cluster_view(
    me: str,
    members: Iterable[Member],
    own_vector: Mapping[str, int],
    site_nodes: Mapping[str, str],
    lineage: Mapping[str, Any],
    slots: Iterable[Mapping[str, Any]],
    conflicts: Iterable[Mapping[str, Any]],
) -> dict[str, Any]:
    """The cluster panel. A member's digest is `equal` when its version vector equals ours:
    equal op sets give equal tables and equal digests (the CRDT merge is deterministic),
    and the vector names the op set exactly (docs/replication.md). A member this node does
    not reach now is `unknown` (what it wrote since is not known here), with `last_known`
    the comparison from the vector it last sent."""
    sites_of: dict[str, list[str]] = {}
    for site, node in site_nodes.items():
        sites_of.setdefault(node, []).append(site)
    own = {a: s for a, s in own_vector.items() if s}
    out = []
    for m in sorted(members, key=lambda m: (not m.self, m.node_id)):
        if m.self:
            digest, behind, ahead = "equal", 0, 0
        elif m.vector is None:
            digest, behind, ahead = "unknown", 0, 0
        else:
            theirs = {a: s for a, s in m.vector.items() if s}
            digest = "equal" if theirs == own else "differs"
            behind = sum(max(0, s - theirs.get(a, 0)) for a, s in own.items())
            ahead = sum(max(0, s - own.get(a, 0)) for a, s in theirs.items())
        last_known = digest
        if not m.self and not m.up:
            digest = "unknown"
        out.append({"node_id": m.node_id, "self": m.self, "up": m.up,
                    "sites": sorted(sites_of.get(m.node_id, [])), "digest": digest,
                    "last_known": last_known,
                    "ops_behind": behind, "ops_ahead": ahead,
                    "last_seen_ms_ago": m.last_seen_ms_ago})
    return {"me": me, "members": out, "lineage": dict(lineage), "slots": list(slots),
            "conflicts": list(conflicts),
            "all_equal": all(m["digest"] == "equal" for m in out),
            "reachable": sum(1 for m in out if m["up"]), "total": len(out)}
