"""ONOS's everyday views (devices, links, hosts, masters) from the topology tables' rows.

Pure: rows in (column -> value dicts, as the CLI reads them), view rows out. The `synod`
commands of the same names (controller/node/commands.py) print them.
"""

from __future__ import annotations

__all__ = ["devices", "hosts", "links", "masters"]


def _at(dpid: object, port: object) -> str:
    return f"{dpid}/{port}"


def devices(switches: list[dict], ports: list[dict]) -> list[dict]:
    """One row per switch a controller masters now, with its port counts."""
    total: dict[object, int] = {}
    up: dict[object, int] = {}
    for p in ports:
        total[p.get("dpid")] = total.get(p.get("dpid"), 0) + 1
        up[p.get("dpid")] = up.get(p.get("dpid"), 0) + bool(p.get("up"))
    return [{"dpid": s.get("dpid"), "available": bool(s.get("connected")),
             "master": s.get("master") or "", "site": s.get("site") or "",
             "generation_id": s.get("generation_id") or 0,
             "ports": total.get(s.get("dpid"), 0), "ports_up": up.get(s.get("dpid"), 0)}
            for s in sorted(switches, key=lambda s: str(s.get("dpid")))]


def links(rows: list[dict]) -> list[dict]:
    """One row per direction of a link, as LLDP saw it."""
    return [{"src": _at(r.get("src_dpid"), r.get("src_port")),
             "dst": _at(r.get("dst_dpid"), r.get("dst_port")),
             "up": bool(r.get("up")), "latency_ms": r.get("latency_ms") or 0.0}
            for r in sorted(rows, key=lambda r: (str(r.get("src_dpid")), r.get("src_port") or 0,
                                                 str(r.get("dst_dpid")), r.get("dst_port") or 0))]


def hosts(rows: list[dict]) -> list[dict]:
    """One row per host MAC, where it was seen."""
    return [{"mac": r.get("mac"), "ip": r.get("ip") or "",
             "location": _at(r.get("dpid"), r.get("port_no")), "vlan": r.get("vlan") or 0}
            for r in sorted(rows, key=lambda r: str(r.get("mac")))]


def masters(switches: list[dict]) -> list[dict]:
    """Per master site: how many switches it masters and which."""
    by: dict[str, list[str]] = {}
    for s in switches:
        by.setdefault(s.get("master") or "", []).append(str(s.get("dpid")))
    return [{"master": m, "devices": len(d), "dpids": sorted(d)} for m, d in sorted(by.items())]
