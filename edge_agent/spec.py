"""Service specs: parse and validate a service description, encode it canonically, check it
against the other services and the chosen node's capacity. Pure: no I/O.

A spec (YAML or JSON, see docs/edge-agent.md):

    name: web                    # [a-z0-9][a-z0-9-]*, at most 32 characters
    image: microvm               # microvm | nixos
    vcpus: 1
    memory_mb: 128               # at least 128 (a microvm with 64 MB hangs at boot)
    nics:
      - {switch: e1s1, mac: "52:54:00:00:01:05", ipv4: 10.0.1.5/24, vlan: 10}
    http_port: 80                # the microvm answers its name there
    health: {tcp: 8080}          # or {http: /healthz, port: 8080}
    restart: local-only          # or {failover-after: 30} (seconds)
    placement: {site: edge1}     # or {node: NODE_ID} or any
    state: running               # or stopped
    nixos: "{ pkgs, ... }: { }"  # image nixos only: a NixOS module fragment

Errors name the path of the bad key: `nics[1].mac: not a MAC address`. The canonical
encoding (sorted keys, defaults filled in, no spaces) makes the same spec the same bytes, and
`spec_hash` the same digest everywhere. In the replicated `services` table the canonical JSON
is the `desired_state` column; the other columns are derived from it (to_row / from_row), so
no schema change was needed (docs/decisions/0080-service-spec-in-existing-columns.md).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Capacity",
    "Health",
    "Nic",
    "ServiceSpec",
    "SpecError",
    "canonical_json",
    "check_capacity",
    "check_clashes",
    "from_row",
    "parse_spec",
    "spec_hash",
    "to_row",
]

IMAGES = ("microvm", "nixos")
STATES = ("running", "stopped")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")  # IFNAMSIZ - 1
VCPUS_MAX = 64
MEMORY_MB_MIN = 128
MEMORY_MB_MAX = 1 << 20
NICS_MAX = 8
NIXOS_BYTES_MAX = 64 << 10
FAILOVER_S_MIN = 15  # the owner must be able to stop before a taker may start (lease.py)
FAILOVER_S_MAX = 86_400


class SpecError(ValueError):
    """A spec is invalid or clashes; the message starts with the path of the bad key."""


@dataclass(frozen=True)
class Nic:
    switch: str
    mac: str  # lower case, colon separated
    ipv4: str  # address/prefix
    vlan: int | None = None

    @property
    def address(self) -> str:
        return self.ipv4.split("/", 1)[0]


@dataclass(frozen=True)
class Health:
    kind: str  # tcp | http
    port: int
    path: str = ""  # http only


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    image: str
    vcpus: int
    memory_mb: int
    nics: tuple[Nic, ...]
    http_port: int
    health: Health
    restart: str  # "local-only" | "failover-after"
    failover_after_s: int  # 0 unless restart == "failover-after"
    placement: str  # "any" | "node" | "site"
    placement_target: str  # node id or site name ("" for any)
    state: str  # running | stopped
    nixos: str = ""

    def plain(self) -> dict[str, Any]:
        """The spec as plain data, every default filled in: what canonical_json encodes."""
        nics = []
        for n in self.nics:
            d: dict[str, Any] = {"switch": n.switch, "mac": n.mac, "ipv4": n.ipv4}
            if n.vlan is not None:
                d["vlan"] = n.vlan
            nics.append(d)
        health: dict[str, Any] = {"tcp": self.health.port} if self.health.kind == "tcp" \
            else {"http": self.health.path, "port": self.health.port}
        out: dict[str, Any] = {
            "name": self.name, "image": self.image, "vcpus": self.vcpus,
            "memory_mb": self.memory_mb, "nics": nics, "http_port": self.http_port,
            "health": health, "restart": self.restart_text, "placement": self.placement_text,
            "state": self.state,
        }
        if self.nixos:
            out["nixos"] = self.nixos
        return out

    @property
    def restart_text(self) -> str:
        if self.restart == "failover-after":
            return f"failover-after:{self.failover_after_s}"
        return self.restart

    @property
    def placement_text(self) -> str:
        return "any" if self.placement == "any" else f"{self.placement}:{self.placement_target}"


@dataclass(frozen=True)
class Capacity:
    """What a node offers to services (its agent's [agent] config, reported in a kv row)."""

    vcpus: int
    memory_mb: int


_KEYS = {"name", "image", "vcpus", "memory_mb", "nics", "http_port", "health", "restart",
         "placement", "state", "nixos"}
_NIC_KEYS = {"switch", "mac", "ipv4", "vlan"}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(f"{path or 'spec'}: expected a mapping, got {_kind(value)}")
    for k in value:
        if not isinstance(k, str):
            raise SpecError(f"{path or 'spec'}: key {k!r} is not a string")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {bool: "true/false", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _unknown(d: Mapping[str, Any], known: set[str], path: str) -> None:
    extra = sorted(set(d) - known)
    if extra:
        raise SpecError(f"{_join(path, extra[0])}: unknown key (known: {', '.join(sorted(known))})")


def _int(value: Any, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{path}: expected a whole number, got {_kind(value)}")
    if not lo <= value <= hi:
        raise SpecError(f"{path}: {value} is out of range ({lo}..{hi})")
    return value


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(f"{path}: expected a non-empty string, got {_kind(value)}")
    return value


def _mac(value: Any, path: str) -> str:
    text = value.lower() if isinstance(value, str) else ""
    if not MAC_RE.match(text):
        raise SpecError(f"{path}: not a MAC address (like 52:54:00:00:01:05)")
    if int(text[:2], 16) & 1:
        raise SpecError(f"{path}: {text} is a multicast MAC address (first octet odd)")
    if text == "00:00:00:00:00:00":
        raise SpecError(f"{path}: the zero MAC address is not allowed")
    return text


def _ipv4(value: Any, path: str) -> str:
    if not isinstance(value, str) or "/" not in value:
        raise SpecError(f"{path}: expected an IPv4 address with its prefix (10.0.1.5/24)")
    try:
        iface = ipaddress.IPv4Interface(value)
    except ValueError:
        raise SpecError(f"{path}: {value!r} is not an IPv4 address/prefix") from None
    net = iface.network
    if net.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address):
        raise SpecError(f"{path}: {iface.ip} is the network or broadcast address of {net}")
    if iface.ip.is_multicast or iface.ip.is_unspecified or iface.ip.is_loopback:
        raise SpecError(f"{path}: {iface.ip} is not a host address")
    return f"{iface.ip}/{net.prefixlen}"


def _nic(value: Any, path: str) -> Nic:
    d = _mapping(value, path)
    _unknown(d, _NIC_KEYS, path)
    for k in ("switch", "mac", "ipv4"):
        if k not in d:
            raise SpecError(f"{_join(path, k)}: required")
    switch = _str(d["switch"], _join(path, "switch"))
    if not IFNAME_RE.match(switch):
        raise SpecError(f"{_join(path, 'switch')}: {switch!r} is not a bridge name "
                        "(letters, digits, _.-; at most 15)")
    vlan = None if d.get("vlan") is None else _int(d["vlan"], _join(path, "vlan"), 1, 4094)
    return Nic(switch, _mac(d["mac"], _join(path, "mac")), _ipv4(d["ipv4"], _join(path, "ipv4")),
               vlan)


def _health(value: Any, http_port: int) -> Health:
    if value is None:
        return Health("tcp", http_port)
    d = _mapping(value, "health")
    _unknown(d, {"tcp", "http", "port"}, "health")
    if ("tcp" in d) == ("http" in d):
        raise SpecError("health: give exactly one of tcp (a port) or http (a path)")
    if "tcp" in d:
        if "port" in d:
            raise SpecError("health.port: only with http (tcp names its port)")
        return Health("tcp", _int(d["tcp"], "health.tcp", 1, 65535))
    path = _str(d["http"], "health.http")
    if not path.startswith("/") or any(c.isspace() for c in path):
        raise SpecError(f"health.http: {path!r} is not an absolute URL path")
    port = _int(d.get("port", http_port), "health.port", 1, 65535)
    return Health("http", port, path)


def _restart(value: Any) -> tuple[str, int]:
    if value is None or value == "local-only":
        return "local-only", 0
    if isinstance(value, str) and value.startswith("failover-after:"):
        text = value.split(":", 1)[1].strip()
        if not text.isdigit():
            raise SpecError(f"restart: {value!r}: failover-after needs whole seconds")
        value = {"failover-after": int(text)}
    if isinstance(value, Mapping):
        _unknown(value, {"failover-after"}, "restart")
        if "failover-after" in value:
            return "failover-after", _int(value["failover-after"], "restart.failover-after",
                                          FAILOVER_S_MIN, FAILOVER_S_MAX)
    raise SpecError("restart: expected local-only or {failover-after: SECONDS}")


def _placement(value: Any) -> tuple[str, str]:
    if value is None or value == "any":
        return "any", ""
    if isinstance(value, str) and ":" in value:
        kind, target = value.split(":", 1)
        value = {kind: target}
    if isinstance(value, Mapping):
        _unknown(value, {"node", "site"}, "placement")
        if len(value) == 1:
            kind = next(iter(value))
            target = _str(value[kind], f"placement.{kind}")
            if len(target) > 128 or any(c.isspace() for c in target):
                raise SpecError(f"placement.{kind}: {target[:40]!r} is not a {kind} name")
            return kind, target
    raise SpecError("placement: expected any, {node: NODE_ID} or {site: SITE}")


def parse_spec(raw: Any) -> ServiceSpec:
    """A validated spec from plain data (parsed YAML/JSON); SpecError names the bad key."""
    d = _mapping(raw, "")
    _unknown(d, _KEYS, "")
    if "name" not in d:
        raise SpecError("name: required")
    name = _str(d["name"], "name")
    if not NAME_RE.match(name):
        raise SpecError(f"name: {name[:40]!r} must be lower-case letters, digits and '-', "
                        "at most 32, starting with a letter or digit")
    image = d.get("image", "microvm")
    if image not in IMAGES:
        raise SpecError(f"image: {str(image)[:40]!r} is not one of {', '.join(IMAGES)}")
    vcpus = _int(d.get("vcpus", 1), "vcpus", 1, VCPUS_MAX)
    memory_mb = _int(d.get("memory_mb", MEMORY_MB_MIN), "memory_mb", MEMORY_MB_MIN,
                     MEMORY_MB_MAX)
    nics_raw = d.get("nics", [])
    if not isinstance(nics_raw, list):
        raise SpecError(f"nics: expected a list, got {_kind(nics_raw)}")
    if len(nics_raw) > NICS_MAX:
        raise SpecError(f"nics: at most {NICS_MAX} NICs, got {len(nics_raw)}")
    nics = tuple(_nic(n, f"nics[{i}]") for i, n in enumerate(nics_raw))
    seen: dict[tuple[str, str], int] = {}
    for i, n in enumerate(nics):
        for what, value in (("mac", n.mac), ("ipv4", n.address)):
            if (what, value) in seen:
                raise SpecError(f"nics[{i}].{what}: {value} is also nics[{seen[(what, value)]}]")
            seen[(what, value)] = i
    http_port = _int(d.get("http_port", 80), "http_port", 1, 65535)
    health = _health(d.get("health"), http_port)
    restart, failover_after_s = _restart(d.get("restart"))
    placement, target = _placement(d.get("placement"))
    state = d.get("state", "running")
    if state not in STATES:
        raise SpecError(f"state: {str(state)[:40]!r} is not one of {', '.join(STATES)}")
    nixos = d.get("nixos", "")
    if image == "nixos":
        nixos = _str(nixos, "nixos")
        if len(nixos.encode()) > NIXOS_BYTES_MAX:
            raise SpecError(f"nixos: longer than {NIXOS_BYTES_MAX} bytes")
    elif nixos:
        raise SpecError("nixos: only for image nixos (a microvm has no NixOS module)")
    return ServiceSpec(name, image, vcpus, memory_mb, nics, http_port, health, restart,
                       failover_after_s, placement, target, state, nixos)


def canonical_json(spec: ServiceSpec) -> str:
    """The one encoding of a spec: sorted keys, defaults filled in, no spaces, ASCII."""
    return json.dumps(spec.plain(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def spec_hash(spec: ServiceSpec) -> str:
    """BLAKE2b-256 of the canonical encoding, hex: equal specs, equal hashes, anywhere."""
    return hashlib.blake2b(canonical_json(spec).encode(), digest_size=32).hexdigest()


def to_row(spec: ServiceSpec) -> dict[str, Any]:
    """Column values of the services row (the key is the name). desired_state holds the
    canonical spec; the other columns are derived copies for SQL and `services list`."""
    return {
        "image": spec.image,
        "vcpus": spec.vcpus,
        "memory_mb": spec.memory_mb,
        "nics": json.dumps(spec.plain()["nics"], sort_keys=True, separators=(",", ":")),
        "restart_policy": spec.restart_text,
        "placement": spec.placement_text,
        "desired_state": canonical_json(spec),
    }


def from_row(name: str, values: Mapping[str, Any]) -> ServiceSpec:
    """The spec of a services row. A row written by this module carries the canonical spec
    in desired_state; an older row (`services deploy NAME --image ...`) is read from its
    columns. SpecError if it does not describe a valid service."""
    desired = values.get("desired_state") or ""
    if isinstance(desired, str) and desired.startswith("{"):
        try:
            raw = json.loads(desired)
        except ValueError:
            raise SpecError("desired_state: not valid JSON") from None
        spec = parse_spec(raw)
        if spec.name != name:
            raise SpecError(f"name: the row is {name!r} but its spec says {spec.name!r}")
        return spec
    raw = {"name": name, "image": values.get("image") or "microvm",
           "vcpus": values.get("vcpus") or 1, "memory_mb": values.get("memory_mb") or 128,
           "state": "stopped" if desired == "stopped" else "running"}
    nics = values.get("nics")
    if nics:
        try:
            raw["nics"] = json.loads(nics) if isinstance(nics, str) else nics
        except ValueError:
            raise SpecError("nics: not valid JSON") from None
    policy = values.get("restart_policy") or ""
    if policy and policy != "always":  # the old flag's default
        raw["restart"] = policy
    placement = values.get("placement") or ""
    if placement:
        raw["placement"] = placement if ":" in placement or placement == "any" \
            else {"site": placement}
    return parse_spec(raw)


def check_clashes(spec: ServiceSpec, others: Iterable[ServiceSpec]) -> None:
    """SpecError if a NIC of spec has the MAC or IPv4 address of another service's NIC
    (the same service under its own name is not an other: a redeploy may keep them)."""
    used: dict[tuple[str, str], str] = {}
    for other in others:
        if other.name == spec.name:
            continue
        for n in other.nics:
            used[("mac", n.mac)] = other.name
            used[("ipv4", n.address)] = other.name
    for i, n in enumerate(spec.nics):
        for what, value in (("mac", n.mac), ("ipv4", n.address)):
            holder = used.get((what, value))
            if holder is not None:
                raise SpecError(f"nics[{i}].{what}: {value} is already used by service {holder!r}")


def check_capacity(spec: ServiceSpec, capacity: Capacity, node: str,
                   others_on_node: Iterable[ServiceSpec]) -> None:
    """SpecError if spec, with the running services already placed on node, needs more
    vCPUs or memory than the node declares."""
    others = [o for o in others_on_node if o.name != spec.name and o.state == "running"]
    vcpus = spec.vcpus + sum(o.vcpus for o in others)
    memory_mb = spec.memory_mb + sum(o.memory_mb for o in others)
    if vcpus > capacity.vcpus:
        raise SpecError(f"vcpus: {spec.vcpus} more would make {vcpus} on node {node[:16]}, "
                        f"which offers {capacity.vcpus}")
    if memory_mb > capacity.memory_mb:
        raise SpecError(f"memory_mb: {spec.memory_mb} more would make {memory_mb} MB on node "
                        f"{node[:16]}, which offers {capacity.memory_mb} MB")
