"""Checks of a controller's topology report (LocalService.ReportTopology), as flows are
checked (flowspec.py): every row the controller writes into `switches`, `ports`, `links`,
`hosts`, `flow_errors` and `flow_state` names real datapaths and OpenFlow ports, and holds values in
range, or the whole report is refused naming the row and the field.

The rules (values a report leaves out, or gives as null, are not checked):
  dpid (any table, also a link's ends and a host's switch)  16 lowercase hex digits, not 0
  port numbers (port_no, src_port, dst_port)                0..0xffffff00 (OFPP_MAX)
  MAC addresses (hosts.mac, ports.mac)                      aa:bb:cc:dd:ee:ff ("" for none
                                                            in ports.mac)
  a link                                                    two different ends
  hosts.ip                                                  "" or an IPv4/IPv6 address
  hosts.vlan                                                0..4095
  generation ids, times (ms)                                0..2^63-1
  links.latency_ms                                          a finite number >= 0
  names (switch name, site, master, port name)              at most 256 characters
  flow_errors: flow_id, error                               1..256 and 0..1000 characters
  flow_state: state                                         installed, missing, pending or
                                                            "failed: <error>"
  flow_state: packets, bytes, seen_ms                       0..2^63-1

Sans-I/O: rows in, ReportError out. Messages never quote more than a few dozen characters
of a value.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Mapping

from controller.forwarding.flowspec import PORT_MAX, FlowSpecError, is_mac, parse_dpid
from controller.replication import DEFAULT_SCHEMA
from controller.replication.reserved import FLOW_ERRORS
from controller.replication.schema import FLOW_STATE

__all__ = [
    "NAME_CHARS_MAX",
    "ReportError",
    "TOPOLOGY_TABLES",
    "check_report",
    "check_report_row",
]

TOPOLOGY_TABLES = frozenset({"switches", "ports", "links", "hosts", FLOW_ERRORS, FLOW_STATE})
FLOW_STATES = ("installed", "missing", "pending")  # or "failed: <the switch's error>"
NAME_CHARS_MAX = 256
FLOW_ID_CHARS_MAX = 256
ERROR_CHARS_MAX = 1_000  # what a controller keeps of a switch's error (node_link.py uses it)
INT63_MAX = 2**63 - 1
VLAN_MAX = 4095
_TABLES = {name: DEFAULT_SCHEMA.table(name) for name in TOPOLOGY_TABLES}  # their columns


class ReportError(ValueError):
    """A report row the node refuses; the message names the row and the field."""


def _show(value: object) -> str:
    """A value as an error quotes it: its repr, cut to a few dozen characters."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:32]}…({len(text)} chars)"


def _dpid(value: object, field: str) -> None:
    # A datapath id parse_dpid takes, in the one spelling rows are keyed by (node_link.py
    # writes f"{dpid:016x}"): "1" or "0x1" would be another row for the same switch.
    try:
        ok = (isinstance(value, str) and len(value) == 16
              and f"{parse_dpid(value):016x}" == value)
    except FlowSpecError:
        ok = False
    if not ok:
        raise ReportError(f"{field} {_show(value)} is not a datapath id "
                          "(16 lowercase hex digits, not all zero)")


def _port(value: object, field: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= PORT_MAX:
        raise ReportError(f"{field} {_show(value)} is not an OpenFlow port number "
                          f"(0..{PORT_MAX:#x})")


def _mac(value: object, field: str, empty_ok: bool = False) -> None:
    if empty_ok and value == "":
        return
    if not isinstance(value, str) or not is_mac(value):
        raise ReportError(f"{field} {_show(value)} is not a MAC address "
                          "(six lowercase hex pairs, aa:bb:cc:dd:ee:ff)")


def _int(value: object, field: str, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
        raise ReportError(f"{field} {_show(value)} is outside 0..{high}")


def _text(value: object, field: str, high: int, low: int = 0) -> None:
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise ReportError(f"{field} {_show(value)} must be text of {low}..{high} characters")


def _bool(value: object, field: str) -> None:
    if not isinstance(value, bool):
        raise ReportError(f"{field} {_show(value)} is not true or false")


def _ip(value: object, field: str) -> None:
    if value == "":
        return
    try:
        ipaddress.ip_address(value)  # type: ignore[arg-type]
    except ValueError:
        raise ReportError(f"{field} {_show(value)} is not an IP address") from None


def _flow_state(value: object, field: str) -> None:
    _text(value, field, ERROR_CHARS_MAX + 8, 1)
    if value not in FLOW_STATES and not str(value).startswith("failed: "):
        raise ReportError(f"{field} {_show(value)} is not one of {', '.join(FLOW_STATES)} "
                          "or 'failed: <reason>'")


def _latency(value: object, field: str) -> None:
    if (not isinstance(value, int | float) or isinstance(value, bool)
            or not math.isfinite(value) or value < 0):
        raise ReportError(f"{field} {_show(value)} is not a finite number >= 0")


# Per table: checks of key columns (in the schema's key order) and of value columns by
# name; test_topology_reports.py checks that they cover the schema's columns exactly.
_KEYS = {
    "switches": (_dpid,),
    "ports": (_dpid, _port),
    "links": (_dpid, _port, _dpid, _port),
    "hosts": (_mac,),
    FLOW_ERRORS: (_dpid, lambda v, f: _text(v, f, FLOW_ID_CHARS_MAX, 1)),
    FLOW_STATE: (_dpid, lambda v, f: _text(v, f, FLOW_ID_CHARS_MAX, 1)),
}
_VALUES = {
    "switches": {
        "name": lambda v, f: _text(v, f, NAME_CHARS_MAX),
        "site": lambda v, f: _text(v, f, NAME_CHARS_MAX),
        "master": lambda v, f: _text(v, f, NAME_CHARS_MAX),
        "generation_id": lambda v, f: _int(v, f, INT63_MAX),
        "connected": _bool,
    },
    "ports": {
        "name": lambda v, f: _text(v, f, NAME_CHARS_MAX),
        "mac": lambda v, f: _mac(v, f, empty_ok=True),
        "up": _bool,
    },
    "links": {"up": _bool, "latency_ms": _latency},
    "hosts": {
        "ip": _ip,
        "dpid": _dpid,
        "port_no": _port,
        "vlan": lambda v, f: _int(v, f, VLAN_MAX),
        "last_seen_ms": lambda v, f: _int(v, f, INT63_MAX),
    },
    FLOW_ERRORS: {"error": lambda v, f: _text(v, f, ERROR_CHARS_MAX)},
    FLOW_STATE: {
        "state": _flow_state,
        "packets": lambda v, f: _int(v, f, INT63_MAX),
        "bytes": lambda v, f: _int(v, f, INT63_MAX),
        "seen_ms": lambda v, f: _int(v, f, INT63_MAX),
    },
}


def check_report_row(table: str, key: tuple, values: Mapping[str, object], where: str) -> None:
    """ReportError unless one reported row (an upsert) is valid; `where` names the row in
    the message (e.g. "rows[3]")."""
    if table not in TOPOLOGY_TABLES:
        raise ReportError(f"{where}: table {_show(table)} is not topology "
                          f"({', '.join(sorted(TOPOLOGY_TABLES))})")
    names, checks = _TABLES[table].primary_key, _KEYS[table]
    if len(key) != len(names):
        raise ReportError(f"{where} ({table}): the key needs {len(names)} values "
                          f"({', '.join(names)})")
    row = f"{where} ({table} {'/'.join(str(k)[:40] for k in key)})"
    try:
        for check, name, value in zip(checks, names, key, strict=True):
            check(value, name)
        if table == "links" and key[:2] == key[2:]:
            raise ReportError("a link needs two different ends (src and dst are one port)")
        allowed = _VALUES[table]
        for name, value in values.items():
            check = allowed.get(name)
            if check is None:
                raise ReportError(f"{_show(name)} is not a column a report sets here "
                                  f"({', '.join(sorted(allowed))})")
            if value is not None:
                check(value, name)
    except ReportError as exc:
        raise ReportError(f"{row}: {exc}") from None


def check_report(rows: Iterable[tuple[str, tuple, Mapping[str, object]]]) -> None:
    """Check every upserted row of a report (table, key, values); the first bad one is a
    ReportError naming it by its position, rows[i]."""
    for i, (table, key, values) in enumerate(rows):
        check_report_row(table, tuple(key), values, f"rows[{i}]")
