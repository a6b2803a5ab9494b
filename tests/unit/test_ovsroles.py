"""Mastership as OVS reports it vs the replicated switches table, on fake ovs-vsctl JSON."""

from __future__ import annotations

import json

import pytest

from topologies import sdn_scenario
from topologies.netctl import EmulationError
from topologies.ovsroles import (
    OvsRolesError,
    agreement,
    compare,
    parse_roles,
)
from topologies.sdn import SdnCluster

CLOUD, EDGE, EDGE_BACKUP = "tcp:127.0.0.1:6001", "tcp:127.0.0.1:6002", "tcp:127.0.0.1:7002"
SITES = {CLOUD: "cloud", EDGE: "edge1", EDGE_BACKUP: "cloud"}
CS1, E1S1 = "0000000000000001", "0000000000000101"


def _uuid(n: int) -> list[str]:
    return ["uuid", f"00000000-0000-0000-0000-{n:012d}"]


def _ovs(e1s1_roles: tuple[str, str], connected: tuple[bool, bool] = (True, True)
         ) -> tuple[str, str]:
    """(bridges JSON, controllers JSON) as `ovs-vsctl --format=json list` prints them:
    cs1 has one controller, e1s1 its own and a backup (roles as given)."""
    bridges = {"headings": ["name", "datapath_id", "controller"], "data": [
        ["cs1", CS1, _uuid(1)],
        ["e1s1", E1S1, ["set", [_uuid(2), _uuid(3)]]],
    ]}
    role = lambda r: r or ["set", []]  # noqa: E731 - OVSDB's empty optional value
    controllers = {"headings": ["_uuid", "target", "role", "is_connected"], "data": [
        [_uuid(1), CLOUD, "master", True],
        [_uuid(2), EDGE, role(e1s1_roles[0]), connected[0]],
        [_uuid(3), EDGE_BACKUP, role(e1s1_roles[1]), connected[1]],
    ]}
    return json.dumps(bridges), json.dumps(controllers)


TABLE = {CS1: ("cloud", 0x101), E1S1: ("edge1", 0x102)}


def test_roles_are_read_per_bridge_and_target():
    roles = parse_roles(*_ovs(("master", "slave")))
    assert roles["cs1"].dpid == CS1 and dict(roles["cs1"].roles) == {CLOUD: "master"}
    assert dict(roles["e1s1"].roles) == {EDGE: "master", EDGE_BACKUP: "slave"}
    assert roles["e1s1"].masters() == [EDGE]
    assert dict(parse_roles(*_ovs(("", "")))["e1s1"].roles) == {EDGE: "", EDGE_BACKUP: ""}


def test_agreement_is_reported_per_switch():
    rows = compare(parse_roles(*_ovs(("master", "slave"))), SITES, TABLE)
    assert [r.describe() for r in rows] == [
        "switch 0000000000000001 (cs1): master cloud (OVS and table), generation id 0x101",
        "switch 0000000000000101 (e1s1): master edge1 (OVS and table), generation id 0x102"]
    assert agreement(rows, 2, "the cloud node's") == (
        "OVS and the cloud node's switches table agree on every switch's master", True)


def test_a_table_the_switch_contradicts_fails_naming_the_switch():
    # The backup took e1s1 over at the switch; the table still says edge1.
    rows = compare(parse_roles(*_ovs(("slave", "master"))), SITES, TABLE)
    text, ok = agreement(rows, 2, "the cloud node's")
    assert not ok
    assert text == ("OVS and the cloud node's switches table disagree: "
                    "e1s1 (OVS: cloud, table: edge1)")
    assert rows[1].describe().endswith("master cloud by OVS, edge1 by the table, "
                                       "generation id 0x102: DISAGREE")


@pytest.mark.parametrize("e1s1_roles, connected, table, named", [
    # a master role on a connection that is down does not count
    (("master", "slave"), (False, True), TABLE, "e1s1 (OVS: no master, table: edge1)"),
    # the switch has a master the table has not recorded
    (("master", "slave"), (True, True), {CS1: TABLE[CS1]}, "e1s1 (OVS: edge1, table: no master)"),
    # the table names a switch OVS does not have
    (("master", "slave"), (True, True), {**TABLE, "0000000000000201": ("edge2", 0x103)},
     "0000000000000201 (OVS: no master, table: edge2)"),
])
def test_every_kind_of_disagreement_is_a_failure(e1s1_roles, connected, table, named):
    rows = compare(parse_roles(*_ovs(e1s1_roles, connected)), SITES, table)
    text, ok = agreement(rows, 2, "the cloud node's")
    assert not ok and named in text


def test_a_master_behind_an_unknown_target_is_named_by_its_target():
    rows = compare(parse_roles(*_ovs(("slave", "master"))), {CLOUD: "cloud", EDGE: "edge1"},
                   TABLE)
    assert rows[1].ovs_masters == (f"?{EDGE_BACKUP}",) and not rows[1].agrees


def test_a_missing_switch_fails_even_if_the_rest_agree():
    rows = compare(parse_roles(*_ovs(("master", "slave"))), SITES, TABLE)
    assert agreement(rows[:1], 2, "x")[1] is False


@pytest.mark.parametrize("text", ["not json", '{"headings": ["name"]}',
                                  '{"headings": ["name"], "data": [["cs1"]]}'])
def test_unreadable_json_is_an_error(text):
    with pytest.raises(OvsRolesError):
        parse_roles(text, _ovs(("master", "slave"))[1])


class _FakeCluster:
    """What the scenario asks of an SdnCluster, with the table given."""

    def __init__(self, table):
        self.table, self.polls = table, 0

    def masters(self, site):
        return self.table

    def target_sites(self):
        return SITES

    def wait(self, predicate, timeout_s):
        for _ in range(3):  # bounded, like SdnCluster.wait, without sleeping
            self.polls += 1
            if predicate():
                return 0.0
        return None


def test_the_emulation_reads_roles_from_ovs_and_fails_on_a_stale_table(monkeypatch):
    monkeypatch.setattr(sdn_scenario, "read_roles",
                        lambda bridges: parse_roles(*_ovs(("slave", "master"))))
    cluster = _FakeCluster(TABLE)
    rows = sdn_scenario._mastership(cluster, "cloud", {"cs1": CS1, "e1s1": E1S1})
    assert cluster.polls == 3  # it kept asking until the bound, then reported
    assert agreement(rows, 2, "the cloud node's") == (
        "OVS and the cloud node's switches table disagree: e1s1 (OVS: cloud, table: edge1)",
        False)


def test_the_emulation_stops_when_ovs_cannot_be_asked(monkeypatch):
    def broken(bridges):
        raise OvsRolesError("ovs-vsctl list bridge: database connection failed")

    monkeypatch.setattr(sdn_scenario, "read_roles", broken)
    with pytest.raises(EmulationError, match="cannot read controller roles from OVS"):
        sdn_scenario._mastership(_FakeCluster(TABLE), "cloud", {"cs1": CS1})


class _Port:
    def __init__(self, port):
        self.port = port


def test_cluster_names_the_site_behind_every_target(tmp_path):
    cluster = SdnCluster(["cloud", "edge1"], tmp_path, lambda _m: None)
    cluster.of = {"cloud": 6001, "edge1": 6002}
    cluster.proxies = {("switch:edge1", "cloud"): _Port(7002), ("edge1", "cloud"): _Port(7003)}
    assert cluster.target_sites() == SITES
