"""Deploy planning: placement by node, site or any; capacity, bridges, clashes (tables)."""

from __future__ import annotations

import pytest

from edge_agent.deploy import AgentInfo, placement_slot, plan_deploy
from edge_agent.spec import Capacity, SpecError, parse_spec, to_row

A = AgentInfo("nodeA", "edge1", Capacity(2, 512), ("e1s1",))
B = AgentInfo("nodeB", "edge2", Capacity(2, 1024), ("e2s1",))
C = AgentInfo("nodeC", "edge2", Capacity(2, 2048), ("e2s1",))
AGENTS = {a.node: a for a in (A, B, C)}


def spec(name="web", switch=None, **kw):
    nics = [{"switch": switch, "mac": "52:54:00:00:00:01", "ipv4": "10.0.0.1/24"}] \
        if switch else []
    return parse_spec({"name": name, "nics": nics, **kw})


CASES = [
    # (spec kwargs, switch, existing placement, node, generation, moved)
    ({"placement": {"node": "nodeA"}}, "e1s1", None, "nodeA", 1, True),
    ({"placement": {"site": "edge2"}}, "e2s1", None, "nodeC", 1, True),  # most free memory
    ({"placement": "any"}, None, None, "nodeC", 1, True),
    ({"placement": {"site": "edge2"}}, "e2s1", {"node": "nodeB", "generation": 3},
     "nodeB", 3, False),  # stays where it is
    ({"placement": {"site": "edge2"}}, "e2s1", {"node": "nodeA", "generation": 3},
     "nodeC", 4, True),  # moved off a node no longer eligible: next generation
]


@pytest.mark.parametrize(("kw", "switch", "current", "node", "generation", "moved"), CASES)
def test_placement(kw, switch, current, node, generation, moved):
    s = spec(switch=switch, **kw)
    plan = plan_deploy(s, {}, {"web": current} if current else {}, AGENTS)
    assert (plan.node, plan.generation, plan.moved) == (node, generation, moved)
    assert plan.service == to_row(s)


REFUSED = [
    ({"placement": {"node": "nodeZ"}}, None, "placement.node: no edge agent has reported"),
    ({"placement": {"site": "edge9"}}, None,
     "placement.site: no edge agent in site 'edge9' (sites with agents: edge1, edge2)"),
    ({"placement": {"node": "nodeA"}}, "e2s1",
     "nics[0].switch: node nodeA (site edge1) has no bridge 'e2s1' (it has e1s1)"),
    ({"placement": {"node": "nodeA"}, "memory_mb": 1024}, "e1s1",
     "memory_mb: 1024 more would make 1024 MB on node nodeA, which offers 512 MB"),
    ({"placement": "any", "vcpus": 4}, None, "placement: no node fits: vcpus: 4 more"),
]


@pytest.mark.parametrize(("kw", "switch", "message"), REFUSED)
def test_refused(kw, switch, message):
    with pytest.raises(SpecError) as e:
        plan_deploy(spec(switch=switch, **kw), {}, {}, AGENTS)
    assert str(e.value).startswith(message), str(e.value)


def test_capacity_counts_services_already_on_the_node_and_clashes_are_refused():
    other = spec("db", switch="e1s1", memory_mb=384, placement={"node": "nodeA"})
    rows = {"db": to_row(other)}
    placed = {"db": {"node": "nodeA", "generation": 1}}
    new = parse_spec({"name": "web", "memory_mb": 256, "placement": {"node": "nodeA"}})
    with pytest.raises(SpecError, match="640 MB on node nodeA, which offers 512 MB"):
        plan_deploy(new, rows, placed, AGENTS)
    with pytest.raises(SpecError, match=r"nics\[0\].mac: 52:54:00:00:00:01 is already used"):
        plan_deploy(spec("web", switch="e1s1", placement={"node": "nodeA"}), rows, placed,
                    AGENTS)
    # stopped services hold no capacity
    stopped = to_row(spec("db", switch="e1s1", memory_mb=384, state="stopped"))
    assert plan_deploy(new, {"db": stopped}, placed, AGENTS).node == "nodeA"


def test_agent_info_round_trip():
    assert AgentInfo.decode("nodeA", A.encode()) == A


def test_services_that_may_move_have_a_placement_slot():
    assert placement_slot(parse_spec({"name": "a"}), 1) == "placement/a/1"  # any
    assert placement_slot(parse_spec({"name": "a", "placement": "site:e1",
                                      "restart": "failover-after:30"}), 2) == "placement/a/2"
    assert placement_slot(parse_spec({"name": "a", "placement": "site:e1"}), 1) is None
    assert placement_slot(parse_spec({"name": "a", "placement": "node:n1"}), 1) is None
