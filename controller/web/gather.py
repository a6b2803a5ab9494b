"""Read the running node's state (engine, peer links, lineage keeper) into the web view's model.

Called on the node's event loop, between engine rounds, like the API's servicers: reads only.
"""

from __future__ import annotations

import time
from typing import Any

from controller.agreement import lineage_of

from .model import LinkMemory, Member, cluster_view, topology_view

__all__ = ["SLOTS_SHOWN", "TEXT_CHARS_MAX", "site_nodes", "snapshot"]

SLOTS_SHOWN = 12  # the most recent decided slots in the panel
CONFLICTS_SHOWN = 200  # conflict report lines in the panel (the count is always whole)
TEXT_CHARS_MAX = 300  # any value shown (a slot's value, a conflict's text) is cut here


def _clip(text: str) -> str:
    return text if len(text) <= TEXT_CHARS_MAX else text[: TEXT_CHARS_MAX - 1] + "…"


def site_nodes(engine) -> dict[str, str]:
    """site -> the node its controller writes through: the author of the `master` column of
    the switches that site masters (the newest write wins when several did)."""
    tables = engine.replica.tables
    newest: dict[str, tuple[int, str]] = {}
    for (dpid,), row in engine.rows("switches").items():
        site = row.get("master")
        state = tables.get("switches", (dpid,))
        version = state.cols.get("master") if state is not None else None
        if not site or version is None:
            continue
        if site not in newest or version.hlc > newest[site][0]:
            newest[str(site)] = (version.hlc, version.author)
    return {site: author for site, (_, author) in newest.items()}


def _lineage(engine) -> dict[str, Any]:
    g = engine.genesis
    lin = lineage_of(g)
    voters = engine.agreement.membership().voters if engine.agreement else engine.members
    met = []
    for m in engine.keeper.info() if engine.keeper is not None else []:
        met.append({"cluster_id": m["genesis"].cluster_id.hex(), "name": m["genesis"].name,
                    "relation": m["relation"], "decided": _clip(m["decided"]),
                    "joined": m["joined"], "reported": m["reported"]})
    return {"cluster_id": g.cluster_id.hex(), "name": g.name, "root": lin.root.hex(),
            "seceded": lin.parent is not None,
            "parent": lin.parent.hex() if lin.parent is not None else "",
            "confirmed_by": lin.confirmed_by, "left": sorted(lin.left),
            "voters": sorted(voters), "met": met}


def _slots(engine) -> list[dict[str, Any]]:
    from controller.agreement import certificate_voters

    def order(d) -> tuple:  # newest last: membership version, then the slot's number
        tail = d.slot.rpartition("/")[2].lstrip("v")
        return (d.certificate.ballot.mv, int(tail) if tail.isdigit() else -1, d.slot)

    # The newest held or archived (decision 0103): the archive is not read whole.
    decisions = sorted(engine.decisions("", newest=SLOTS_SHOWN), key=order)
    out = []
    for d in decisions[-SLOTS_SHOWN:][::-1]:
        out.append({"slot": d.slot, "value": _clip(repr(d.value)),
                    "ballot": str(d.certificate.ballot),
                    "voters": len(certificate_voters(d.certificate))})
    return out


def _conflicts(engine) -> list[dict[str, str]]:
    from controller.node.api import _conflict_fields  # the one wording of a conflict

    out = [{"kind": "equivocation",
            "description": f"node {author} signed two ops at seq {seq}; its ops from there on "
                           "are kept as evidence"}
           for author, seq in sorted(engine.forks().items())]
    rows = engine.rows("conflicts")
    for (_,), v in sorted(rows.items(), key=lambda kv: (str(kv[1]["kind"]), str(kv[1]["name"]))):
        try:
            fields = _conflict_fields(v)
        except Exception:  # a row this version cannot read: show that it is there
            fields = {"kind": str(v.get("kind")), "description": "(unreadable conflict row)"}
        out.append({"kind": fields["kind"], "description": _clip(fields["description"])})
    return out


def snapshot(engine, links, memory: LinkMemory, *, site: str = "",
             now_ms: int | None = None) -> dict[str, Any]:
    """Everything the page shows, as one JSON-ready dict."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    nodes = site_nodes(engine)
    up = links.up()
    me = engine.node_id
    reachable = {n: (n == me or up.get(n, False)) for n in engine.members}
    flows: dict[str, int] = {}
    for (dpid, _flow), _ in engine.rows("flows").items():
        flows[str(dpid)] = flows.get(str(dpid), 0) + 1
    topo = topology_view(engine.rows("switches"), engine.rows("links"), engine.rows("hosts"),
                         engine.rows("services"), engine.rows("placements"), flows, nodes,
                         reachable, memory, now_ms)
    mono = time.monotonic()
    members = []
    for node_id in sorted(engine.members):
        seen = engine.last_seen.get(node_id)
        mine = node_id == me
        members.append(Member(
            node_id, mine, reachable.get(node_id, False),
            engine.version_vector() if mine else engine.peer_vectors.get(node_id),
            0 if mine else (-1 if seen is None else int((mono - seen) * 1000))))
    conflicts = _conflicts(engine)
    cluster = cluster_view(me, members, engine.version_vector(), nodes, _lineage(engine),
                           _slots(engine), conflicts[:CONFLICTS_SHOWN])
    d = engine.digest()
    cluster.update(state_digest=d.state.hex(), op_digest=d.ops.hex(), ops=d.count,
                   conflicts_total=len(conflicts), flows_total=sum(flows.values()))
    return {"node": {"node_id": me, "site": site, "cluster": engine.genesis.name,
                     "cluster_id": engine.cluster_id.hex()},
            "topology": topo, "cluster": cluster}
