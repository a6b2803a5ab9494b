"""Mastership as the switches report it, checked against the replicated switches table.

The controllers write the `switches` table themselves, so it can only say what they
believe. Open vSwitch is the arbiter of roles (docs/decisions/0050): OVSDB's
Controller rows carry the role the switch gave each connection. `read_roles` asks
`ovs-vsctl` for them; `compare` lines them up with the table, switch by switch.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "BridgeRoles",
    "OvsRolesError",
    "SwitchMastership",
    "agreement",
    "compare",
    "parse_roles",
    "read_roles",
]

VSCTL_TIMEOUT_S = 10


class OvsRolesError(Exception):
    """ovs-vsctl could not be asked, or answered something we cannot read."""


@dataclass(frozen=True)
class BridgeRoles:
    """One OVS bridge: its datapath id and the role it gives each controller target."""

    bridge: str
    dpid: str  # 16 hex digits, as the switches table keys it
    roles: Mapping[str, str]  # target ("tcp:127.0.0.1:6653") -> "master", "slave", "other", ""
    connected: Mapping[str, bool]

    def masters(self) -> list[str]:
        """Targets the switch treats as MASTER (OVS allows one; more would be a bug)."""
        return sorted(t for t, role in self.roles.items()
                      if role == "master" and self.connected.get(t, False))


@dataclass(frozen=True)
class SwitchMastership:
    """Who masters one switch: by OVS's roles, and by the replicated table."""

    dpid: str
    bridge: str  # "" when OVS has no bridge with this dpid
    ovs_masters: tuple[str, ...]  # sites (or "?target" for a target of no known site)
    table_master: str  # "" when the table has no master for it
    generation_id: int  # as the table holds it

    @property
    def ovs_master(self) -> str:
        return self.ovs_masters[0] if len(self.ovs_masters) == 1 else ""

    @property
    def agrees(self) -> bool:
        return len(self.ovs_masters) == 1 and self.ovs_master == self.table_master

    @property
    def name(self) -> str:
        return self.bridge or self.dpid

    def describe(self) -> str:
        """One report line: "switch <dpid> (<bridge>): master ..., generation id ..."."""
        head = f"switch {self.dpid}" + (f" ({self.bridge})" if self.bridge else "")
        gen = f"generation id {self.generation_id:#x}"
        if self.agrees:
            return f"{head}: master {self.ovs_master} (OVS and table), {gen}"
        ovs = "+".join(self.ovs_masters) or "none"
        return (f"{head}: master {ovs} by OVS, {self.table_master or 'none'} by the table, "
                f"{gen}: DISAGREE")

    def disagreement(self) -> str:
        """What a failed check says about this switch."""
        return (f"{self.name} (OVS: {'+'.join(self.ovs_masters) or 'no master'}, "
                f"table: {self.table_master or 'no master'})")


def _atoms(value: object) -> list:
    """The members of an OVSDB JSON set (["set", [...]]) or of a single atom."""
    if isinstance(value, list) and len(value) == 2 and value[0] == "set":
        return list(value[1])
    return [value]


def _uuid(value: object) -> str:
    if isinstance(value, list) and len(value) == 2 and value[0] == "uuid":
        return str(value[1])
    raise OvsRolesError(f"not an OVSDB uuid: {value!r}")


def _table(text: str, columns: tuple[str, ...]) -> list[dict]:
    try:
        doc = json.loads(text)
        headings = doc["headings"]
        rows = [dict(zip(headings, row, strict=True)) for row in doc["data"]]
    except (ValueError, KeyError, TypeError) as e:
        raise OvsRolesError(f"unreadable ovs-vsctl JSON: {e}") from None
    missing = [c for c in columns if rows and c not in rows[0]]
    if missing:
        raise OvsRolesError(f"ovs-vsctl JSON lacks columns {missing}")
    return rows


def parse_roles(bridges_json: str, controllers_json: str) -> dict[str, BridgeRoles]:
    """Bridge name -> its roles, from `ovs-vsctl --format=json list bridge` and
    `... list controller` (columns name, datapath_id, controller / _uuid, target, role,
    is_connected)."""
    controllers = {}
    for row in _table(controllers_json, ("_uuid", "target", "role", "is_connected")):
        given = _atoms(row["role"])  # empty when OVS has not reported one
        controllers[_uuid(row["_uuid"])] = (str(row["target"]), str(given[0]) if given else "",
                                            row["is_connected"] is True)
    bridges = {}
    for row in _table(bridges_json, ("name", "datapath_id", "controller")):
        roles: dict[str, str] = {}
        connected: dict[str, bool] = {}
        for ref in _atoms(row["controller"]):
            target, role, is_connected = controllers.get(_uuid(ref), ("", "", False))
            if target:
                roles[target], connected[target] = role, is_connected
        dpid = _atoms(row["datapath_id"])
        bridges[str(row["name"])] = BridgeRoles(str(row["name"]), str(dpid[0]) if dpid else "",
                                                roles, connected)
    return bridges


def _vsctl(*args: str) -> str:
    try:
        done = subprocess.run(["ovs-vsctl", "--timeout=5", "--format=json", *args],
                              capture_output=True, text=True, timeout=VSCTL_TIMEOUT_S,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise OvsRolesError(f"ovs-vsctl {' '.join(args)}: {e}") from None
    if done.returncode != 0:
        raise OvsRolesError(f"ovs-vsctl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def read_roles(bridges: Iterable[str] | None = None) -> dict[str, BridgeRoles]:
    """Ask OVS (ovs-vsctl) for every bridge's controller roles; only `bridges` if given."""
    found = parse_roles(
        _vsctl("--columns=name,datapath_id,controller", "list", "bridge"),
        _vsctl("--columns=_uuid,target,role,is_connected", "list", "controller"))
    if bridges is None:
        return found
    return {name: found[name] for name in bridges if name in found}


def compare(roles: Mapping[str, BridgeRoles], site_of_target: Mapping[str, str],
            table: Mapping[str, tuple[str, int]]) -> list[SwitchMastership]:
    """Every switch in OVS or in the table (dpid -> (master site, generation id)), by dpid."""
    by_dpid = {b.dpid: b for b in roles.values()}
    rows = []
    for dpid in sorted(set(by_dpid) | set(table)):
        bridge = by_dpid.get(dpid)
        masters = tuple(site_of_target.get(t, f"?{t}") for t in bridge.masters()) \
            if bridge else ()
        master, generation = table.get(dpid, ("", 0))
        rows.append(SwitchMastership(dpid, bridge.bridge if bridge else "", masters,
                                     master, generation))
    return rows


def agreement(rows: list[SwitchMastership], expected: int, whose: str) -> tuple[str, bool]:
    """The check that OVS and `whose` switches table name the same master for each of
    `expected` switches; a failure names the switches and what each side says."""
    bad = [r for r in rows if not r.agrees]
    if bad or len(rows) != expected:
        named = ", ".join(r.disagreement() for r in bad) or f"{len(rows)} of {expected} switches"
        return f"OVS and {whose} switches table disagree: {named}", False
    return f"OVS and {whose} switches table agree on every switch's master", True
