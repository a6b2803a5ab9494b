"""Deploy planning: from a validated spec and the rows the cluster holds, the rows to write
(the service and its placement) or a SpecError saying why nothing may be written. Pure.

Agents declare what their node offers in a `kv` row `agent/<node id>` (AgentInfo, canonical
JSON): site, vCPUs, memory and the OVS bridges they may attach NICs to. A placement names a
node (`node:`), one of a site's agents (`site:`) or any agent (`any`); among several the
one with the most free memory is chosen (ties by node id), and a service already placed on
an eligible node stays there (same generation). A service that may move (`any`, or
`failover-after`) has its node decided in the slot `placement/<service>/<generation>` (the
client proposes, any concurrent deploy gets the same decision) and an agent starts it only
for a decision naming its own node; the owner's lease and failover are still to come
(docs/decisions/0081-placement-slots-and-leases.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from controller.agreement.lifecycle import ABSENT, LifeState, lifecycle_slot
from edge_agent.spec import (
    Capacity,
    ServiceSpec,
    SpecError,
    check_capacity,
    check_clashes,
    from_row,
    spec_hash,
    to_row,
)

__all__ = ["AGENT_KEY_PREFIX", "AgentInfo", "Plan", "agent_key", "agents_of", "check_life",
           "check_rows", "object_hash", "placement_slot", "plan_deploy"]

AGENT_KEY_PREFIX = "agent/"


def agent_key(node_id: str) -> str:
    return f"{AGENT_KEY_PREFIX}{node_id}"


def placement_slot(spec: ServiceSpec, generation: int) -> str | None:
    """The agreement slot deciding the node of a service that may move (placement `any`
    or restart `failover-after`), None for one pinned by its spec (a node, or a site's
    `local-only` service): placement/<service>/<generation>."""
    if spec.placement == "any" or spec.restart == "failover-after":
        return f"placement/{spec.name}/{generation}"
    return None


@dataclass(frozen=True)
class AgentInfo:
    node: str
    site: str
    capacity: Capacity
    bridges: tuple[str, ...]

    def encode(self) -> bytes:
        return json.dumps({"site": self.site, "vcpus": self.capacity.vcpus,
                           "memory_mb": self.capacity.memory_mb, "bridges": list(self.bridges)},
                          sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, node: str, value: bytes | str) -> AgentInfo:
        d = json.loads(value)
        return cls(node, str(d["site"]), Capacity(int(d["vcpus"]), int(d["memory_mb"])),
                   tuple(str(b) for b in d.get("bridges", ())))


@dataclass(frozen=True)
class Plan:
    service: dict[str, Any]  # the services row's values (key: spec.name)
    node: str
    generation: int
    moved: bool  # a new node (generation counted up) rather than the one it had


def _others(services: Mapping[str, Mapping[str, Any]], name: str) -> list[ServiceSpec]:
    out = []
    for other, values in sorted(services.items()):
        if other == name:
            continue
        try:
            out.append(from_row(other, values))
        except SpecError:
            continue  # an invalid row runs nowhere; its agent reports why
    return out


def plan_deploy(spec: ServiceSpec, services: Mapping[str, Mapping[str, Any]],
                placements: Mapping[str, Mapping[str, Any]],
                agents: Mapping[str, AgentInfo]) -> Plan:
    """The rows to write for spec, or SpecError (nothing is to be written)."""
    others = _others(services, spec.name)
    check_clashes(spec, others)
    if spec.placement == "node":
        if spec.placement_target not in agents:
            raise SpecError(f"placement.node: no edge agent has reported for node "
                            f"{spec.placement_target[:16]!r} (kv row agent/<node id>)")
        candidates = [agents[spec.placement_target]]
    elif spec.placement == "site":
        candidates = [a for a in agents.values() if a.site == spec.placement_target]
        if not candidates:
            sites = sorted({a.site for a in agents.values()}) or ["none"]
            raise SpecError(f"placement.site: no edge agent in site {spec.placement_target!r} "
                            f"(sites with agents: {', '.join(sites)})")
    else:
        candidates = list(agents.values())
        if not candidates:
            raise SpecError("placement: no edge agent has reported its capacity yet")
    placed_on = {n: str(p.get("node") or "") for n, p in placements.items()}
    by_node: dict[str, list[ServiceSpec]] = {}
    for o in others:
        by_node.setdefault(placed_on.get(o.name, ""), []).append(o)

    def fits(agent: AgentInfo) -> str | None:
        for i, nic in enumerate(spec.nics):
            if nic.switch not in agent.bridges:
                return (f"nics[{i}].switch: node {agent.node[:16]} (site {agent.site}) has no "
                        f"bridge {nic.switch!r} (it has {', '.join(agent.bridges) or 'none'})")
        if spec.state == "running":
            try:
                check_capacity(spec, agent.capacity, agent.node, by_node.get(agent.node, []))
            except SpecError as e:
                return str(e)
        return None

    reasons = {a.node: fits(a) for a in candidates}
    eligible = [a for a in candidates if reasons[a.node] is None]
    if not eligible:
        raise SpecError(reasons[sorted(reasons)[0]] if len(reasons) == 1 else
                        "placement: no node fits: " + "; ".join(
                            str(reasons[n]) for n in sorted(reasons)))
    current = placements.get(spec.name) or {}
    generation = int(current.get("generation") or 0)
    here = str(current.get("node") or "")
    if here in {a.node for a in eligible}:
        return Plan(to_row(spec), here, max(generation, 1), moved=False)

    def free_mb(a: AgentInfo) -> int:
        return a.capacity.memory_mb - sum(o.memory_mb for o in by_node.get(a.node, [])
                                          if o.state == "running")

    chosen = min(eligible, key=lambda a: (-free_mb(a), a.node))
    return Plan(to_row(spec), chosen.node, generation + 1, moved=True)


def agents_of(kv: Mapping[str, Any]) -> dict[str, AgentInfo]:
    """The agents' declarations among kv rows (key -> value); rows that do not decode are
    skipped (their agent rewrites them when it starts)."""
    out = {}
    for key, value in kv.items():
        if not key.startswith(AGENT_KEY_PREFIX) or value is None:
            continue
        node = key[len(AGENT_KEY_PREFIX):]
        try:
            out[node] = AgentInfo.decode(node, value)
        except (ValueError, KeyError, TypeError):
            continue
    return out


def object_hash(spec: ServiceSpec) -> str:
    """The desired object a lifecycle slot names (decision 0082): the spec's hash with its
    state left out (running or stopped is the slot's action, not the object)."""
    return spec_hash(replace(spec, state="running"))


def check_life(spec: ServiceSpec, life: LifeState) -> None:
    """SpecError unless a services row with spec is what service/<name>/<life.n> decided:
    the same object, running or stopped as decided, and not removed."""
    where = lifecycle_slot(spec.name, life.n)
    if life.phase == ABSENT:
        raise SpecError(f"removed in {where}: `synod services deploy` decides a new deploy "
                        "before the row is written")
    if object_hash(spec) != life.desired or spec.state != life.phase:
        raise SpecError(f"not what {where} decided ({life.phase} {life.desired[:16]}; this "
                        f"row: {spec.state} {object_hash(spec)[:16]}): `synod services "
                        "deploy` decides the next transition before it writes the row")


def check_rows(touched: set[str], services: Mapping[str, Mapping[str, Any]],
               placements: Mapping[str, Mapping[str, Any]],
               agents: Mapping[str, AgentInfo],
               lives: Mapping[str, LifeState] | None = None,
               written: set[str] | None = None) -> None:
    """The node's check of a write to `services`/`placements` (the rows as they would be
    after it): each touched service's spec valid, no MAC or IPv4 address of another
    service, and, once placed and running, the node's agent has its bridges and the room.
    SpecError naming the service; the client's plan_deploy checks the same beforehand.
    A services row written (in `written`) for a service whose life is decided in slots
    (`lives`: its latest decided state, n >= 1) must be what those slots decided."""
    for name in sorted(touched):
        values = services.get(name)
        if values is None:
            continue  # a placement row alone: nothing runs without its service row
        try:
            spec = from_row(name, values)
            life = (lives or {}).get(name)
            if life is not None and life.n > 0 and name in (written or set()):
                check_life(spec, life)
            others = _others(services, name)
            check_clashes(spec, others)
            node = str((placements.get(name) or {}).get("node") or "")
            if not node or spec.state != "running":
                continue
            agent = agents.get(node)
            if agent is None:
                raise SpecError(f"placement: node {node[:16]} has no edge agent (no kv row "
                                f"agent/<node id>): its capacity is unknown")
            for i, nic in enumerate(spec.nics):
                if nic.switch not in agent.bridges:
                    raise SpecError(f"nics[{i}].switch: node {node[:16]} (site {agent.site}) "
                                    f"has no bridge {nic.switch!r} (it has "
                                    f"{', '.join(agent.bridges) or 'none'})")
            there = [o for o in others
                     if str((placements.get(o.name) or {}).get("node") or "") == node]
            check_capacity(spec, agent.capacity, node, there)
        except SpecError as e:
            raise SpecError(f"services/{name}: {e}") from None
