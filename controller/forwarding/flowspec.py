"""Replicated flows: parse and validate rows of the `flows` table into FlowSpec values.

Text formats (as `synod flows add` takes them, close to ovs-ofctl):
  match    "in_port=1,eth_type=0x0800,ipv4_dst=10.1.0.0/16,ip_proto=6,tcp_dst=80"
  actions  "output:2,output:3" | "controller" | "flood" | "drop" (or empty: drop)
Prerequisites are added as OpenFlow requires them (ipv4_* implies eth_type=0x0800,
tcp_* implies ip_proto=6, udp_* ip_proto=17); a contradicting value is an error.

Every replicated flow is installed with a cookie derived from (dpid, flow_id), in a
cookie space no other Synod app uses, so the audit can tell them apart.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

from controller.forwarding.intents import (
    PORT_CONTROLLER,
    PORT_FLOOD,
    FlowAdd,
    Match,
    Output,
)

__all__ = [
    "FLOW_COOKIE_MASK",
    "FLOW_COOKIE_SPACE",
    "FlowSpec",
    "FlowSpecError",
    "flow_cookie",
    "is_mac",
    "parse_actions",
    "parse_dpid",
    "parse_match",
    "spec_from_row",
]

FLOW_COOKIE_SPACE = 0x5346 << 48  # "SF": Synod replicated flows; low 48 bits hash the key
FLOW_COOKIE_MASK = 0xFFFF << 48
PORT_MAX = 0xFFFFFF00  # OFPP_MAX: highest physical port number

_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_INT_FIELDS = {"in_port": (1, PORT_MAX), "eth_type": (0, 0xFFFF), "vlan_vid": (0, 4095),
               "ip_proto": (0, 255), "tcp_src": (0, 65535), "tcp_dst": (0, 65535),
               "udp_src": (0, 65535), "udp_dst": (0, 65535)}
_MAC_FIELDS = ("eth_src", "eth_dst")
_IPV4_FIELDS = ("ipv4_src", "ipv4_dst")
KNOWN_FIELDS = tuple(sorted((*_INT_FIELDS, *_MAC_FIELDS, *_IPV4_FIELDS)))
ETH_TYPE_IPV4 = 0x0800
_OCTETS = frozenset(str(n) for n in range(256))  # dotted-quad parts in canonical form


class FlowSpecError(ValueError):
    """A flow row that cannot be installed; the message says which part and why."""


@dataclass(frozen=True)
class FlowSpec:
    """One desired flow on one switch, validated."""

    dpid: int
    flow_id: str
    table_id: int
    priority: int
    match: Match
    actions: tuple[Output, ...]
    idle_timeout_s: int = 0
    hard_timeout_s: int = 0

    @cached_property
    def cookie(self) -> int:
        return flow_cookie(self.dpid, self.flow_id)

    @cached_property
    def _intent(self) -> FlowAdd:
        return FlowAdd(self.dpid, self.priority, self.match, self.actions,
                       self.idle_timeout_s, self.hard_timeout_s, self.cookie, self.table_id)

    def to_intent(self) -> FlowAdd:
        """The FlowAdd that installs this flow: the same object every time, so that the
        shim's encoded-bytes cache (wire.FlowModCache) recognises it by identity."""
        return self._intent


def flow_cookie(dpid: int, flow_id: str) -> int:
    digest = hashlib.blake2b(f"{dpid:016x}/{flow_id}".encode(), digest_size=6).digest()
    return FLOW_COOKIE_SPACE | int.from_bytes(digest, "big")


def is_mac(text: str) -> bool:
    """Is text a MAC address as the tables hold one: six lowercase hex pairs, aa:bb:cc:dd:ee:ff?"""
    return _MAC.fullmatch(text) is not None


def parse_dpid(value: object) -> int:
    """A datapath id from an int, "0x..."-prefixed or bare 16-hex text."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip():
        text = value.strip().lower()
        try:
            number = int(text, 16) if not text.isdigit() or len(text) == 16 else int(text)
        except ValueError:
            raise FlowSpecError(f"dpid {value!r} is not a number") from None
    else:
        raise FlowSpecError(f"dpid {value!r} is not a number")
    if not 0 < number < 2**64:
        raise FlowSpecError(f"dpid {value!r} is out of range")
    return number


def _int(field: str, text: str, low: int, high: int) -> int:
    try:
        number = int(text, 0)
    except ValueError:
        raise FlowSpecError(f"match field {field}: {text!r} is not a number") from None
    if not low <= number <= high:
        raise FlowSpecError(f"match field {field}: {number} is outside {low}..{high}")
    return number


def parse_match(text: str) -> Match:
    """Parse "field=value,..." into a Match, adding OpenFlow prerequisites."""
    fields: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not value:
            raise FlowSpecError(f"match item {item!r} is not field=value")
        if name in fields:
            raise FlowSpecError(f"match field {name} given twice")
        if name in _INT_FIELDS:
            fields[name] = _int(name, value, *_INT_FIELDS[name])
        elif name in _MAC_FIELDS:
            if not is_mac(value.lower()):
                raise FlowSpecError(f"match field {name}: {value!r} is not a MAC address")
            fields[name] = value.lower()
        elif name in _IPV4_FIELDS:
            addr, slash, plen = value.partition("/")
            if (not slash or plen == "32") and addr.count(".") == 3 and \
                    all(octet in _OCTETS for octet in addr.split(".")):
                # A plain address, or one with /32 (a host route: ipaddress writes it as
                # the address alone), already in canonical form: no ipaddress parse.
                fields[name] = addr
                continue
            try:
                net = ipaddress.IPv4Network(value, strict=True)
            except ValueError as e:
                raise FlowSpecError(f"match field {name}: {e}") from None
            fields[name] = str(net.network_address) if net.prefixlen == 32 else str(net)
        else:
            raise FlowSpecError(f"unknown match field {name!r} (known: {', '.join(KNOWN_FIELDS)})")
    _require(fields, "tcp_src", "tcp_dst", field="ip_proto", value=6)
    _require(fields, "udp_src", "udp_dst", field="ip_proto", value=17)
    _require(fields, "ipv4_src", "ipv4_dst", "ip_proto", field="eth_type", value=ETH_TYPE_IPV4)
    if "tcp_src" in fields or "tcp_dst" in fields:
        if "udp_src" in fields or "udp_dst" in fields:
            raise FlowSpecError("a flow cannot match both tcp and udp ports")
    return Match(**fields)  # type: ignore[arg-type]


def _require(fields: dict[str, object], *users: str, field: str, value: int) -> None:
    if not any(u in fields for u in users):
        return
    have = fields.setdefault(field, value)
    if have != value:
        raise FlowSpecError(f"{'/'.join(u for u in users if u in fields)} needs "
                            f"{field}={value:#x}, not {have}")


def parse_actions(text: str) -> tuple[Output, ...]:
    """Parse "output:N,controller,flood,drop" into Output actions (drop = none)."""
    actions: list[Output] = []
    items = [part.strip() for part in text.split(",") if part.strip()]
    for item in items:
        word = item.lower()
        if word == "drop":
            if len(items) > 1:
                raise FlowSpecError("action drop cannot be combined with other actions")
        elif word == "controller":
            actions.append(Output(PORT_CONTROLLER))
        elif word == "flood":
            actions.append(Output(PORT_FLOOD))
        elif word.startswith("output:"):
            port = word.removeprefix("output:")
            try:
                number = int(port, 0)
            except ValueError:
                raise FlowSpecError(f"action {item!r}: port is not a number") from None
            if not 1 <= number <= PORT_MAX:
                raise FlowSpecError(f"action {item!r}: port must be 1..{PORT_MAX}")
            actions.append(Output(number))
        else:
            raise FlowSpecError(f"unknown action {item!r} (known: output:N, controller, "
                                "flood, drop)")
    return tuple(actions)


def _bounded(row: Mapping[str, object], name: str, low: int, high: int, default: int) -> int:
    value = row.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, str):
        try:
            value = int(value, 0)
        except ValueError:
            raise FlowSpecError(f"{name}: {value!r} is not a number") from None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise FlowSpecError(f"{name} must be {low}..{high}, got {value!r}")
    return value


def spec_from_row(row: Mapping[str, object], known_ports: Iterable[int] | None = None) -> FlowSpec:
    """Validate a `flows` row (column name -> value). known_ports, if given, must hold
    every in_port and output port the flow names."""
    flow_id = row.get("flow_id")
    if not isinstance(flow_id, str) or not flow_id:
        raise FlowSpecError("flow_id must be a non-empty string")
    spec = FlowSpec(
        dpid=parse_dpid(row.get("dpid")),
        flow_id=flow_id,
        table_id=_bounded(row, "table_id", 0, 254, 0),
        priority=_bounded(row, "priority", 0, 65535, 100),
        match=parse_match(str(row.get("match") or "")),
        actions=parse_actions(str(row.get("actions") or "")),
        idle_timeout_s=_bounded(row, "idle_timeout", 0, 65535, 0),
        hard_timeout_s=_bounded(row, "hard_timeout", 0, 65535, 0),
    )
    if known_ports is not None:
        ports = set(known_ports)
        named = [a.port for a in spec.actions if a.port <= PORT_MAX]
        if spec.match.in_port is not None:
            named.append(spec.match.in_port)
        unknown = sorted(p for p in named if p not in ports)
        if unknown:
            raise FlowSpecError(f"switch {spec.dpid:016x} has no port "
                                f"{', '.join(map(str, unknown))}")
    return spec
