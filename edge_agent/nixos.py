"""NixOS services: a spec rendered as a complete NixOS configuration, and that configuration
as a mathematical object — a set of (option path, value) elements with an ECMH digest.
Pure: no I/O (the agent runs Nix; tests check the text with nix-instantiate).

    elements(spec) -> the sorted (path, value) pairs the configuration sets
    render(spec)   -> the Nix text: those options, flat, plus the spec's module fragment
    state_object(spec) -> StateObject(elements, digest): digest = the sum of each element's
                       point on edwards25519 (the tables' group, controller/replication),
                       so two configurations differ element by element (diff) and the
                       digest of a configuration is checked in 32 bytes.

The same spec always renders the same bytes. The fragment is an element too (by its hash),
so changing a single package in it changes the object.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from controller.replication.digest import Ecmh, point_of
from edge_agent.spec import ServiceSpec

__all__ = ["StateObject", "diff", "digest_of", "elements", "render", "state_object"]

STATE_VERSION = "23.11"
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_'-]*$")
FRAGMENT_PATH = ("imports", "synod-fragment")  # its value: BLAKE2b of the fragment text
ELEMENT_PERSON = b"synod-nixos"

Path = tuple[str, ...]


def elements(spec: ServiceSpec) -> tuple[tuple[Path, Any], ...]:
    """The options the rendered configuration sets, sorted by path."""
    out: list[tuple[Path, Any]] = [
        (("networking", "hostName"), spec.name),
        (("networking", "useDHCP"), False),
        (("networking", "firewall", "enable"), True),
        (("networking", "firewall", "allowedTCPPorts"),
         sorted({spec.http_port, spec.health.port})),
        (("boot", "kernelParams"), ["console=ttyS0"]),
        (("system", "stateVersion"), STATE_VERSION),
    ]
    for i, nic in enumerate(spec.nics):
        name = f"nic{i}"
        link = ("systemd", "network", "links", f"10-{name}")
        out += [(link + ("matchConfig", "MACAddress"), nic.mac),
                (link + ("linkConfig", "Name"), name),
                (("networking", "interfaces", name, "useDHCP"), False)]
        addr, prefix = nic.ipv4.split("/")
        where = name
        if nic.vlan is not None:
            where = f"{name}v{nic.vlan}"
            out += [(("networking", "vlans", where, "id"), nic.vlan),
                    (("networking", "vlans", where, "interface"), name)]
        out.append((("networking", "interfaces", where, "ipv4", "addresses"),
                    [{"address": addr, "prefixLength": int(prefix)}]))
    if spec.nixos:
        out.append((FRAGMENT_PATH, hashlib.blake2b(spec.nixos.encode(),
                                                   digest_size=32).hexdigest()))
    return tuple(sorted(out, key=lambda e: e[0]))


def _attr(segment: str) -> str:
    return segment if IDENT_RE.match(segment) else _string(segment)


def _string(text: str) -> str:
    """A Nix double-quoted string: JSON's escapes, plus `${` which Nix would interpolate."""
    return json.dumps(text, ensure_ascii=False).replace("${", "\\${")


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list):
        return "[ " + " ".join(_value(x) for x in v) + " ]" if v else "[ ]"
    if isinstance(v, dict):
        return "{ " + " ".join(f"{_attr(k)} = {_value(x)};" for k, x in sorted(v.items())) + " }"
    raise TypeError(f"no Nix form for {type(v).__name__}")


def render(spec: ServiceSpec) -> str:
    """The complete NixOS configuration (a module) for spec; byte-identical for equal specs."""
    obj = state_object(spec)
    lines = [
        f"# NixOS configuration of service {spec.name}, rendered by Synod (edge_agent/nixos.py).",
        f"# State object: {len(obj.elements)} elements, ECMH {obj.digest.hex()}.",
        "{ config, lib, pkgs, modulesPath, ... }:",
        "{",
        "  imports = [",
        '    (modulesPath + "/profiles/qemu-guest.nix")',
    ]
    if spec.nixos:
        lines += ["    # the spec's module fragment, as written", "    ("]
        lines += [f"      {line}".rstrip() for line in spec.nixos.strip("\n").splitlines()]
        lines += ["    )"]
    lines.append("  ];")
    for path, value in obj.elements:
        if path == FRAGMENT_PATH:
            continue
        lines.append(f"  {'.'.join(_attr(p) for p in path)} = {_value(value)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class StateObject:
    elements: tuple[tuple[Path, Any], ...]
    digest: bytes  # 32 bytes: the ECMH sum of the elements' points


def _element_bytes(path: Path, value: Any) -> bytes:
    return json.dumps([list(path), value], sort_keys=True, separators=(",", ":")).encode()


def state_object(spec: ServiceSpec) -> StateObject:
    els = elements(spec)
    return StateObject(els, digest_of(els))


def digest_of(els: Iterable[tuple[Path, Any]]) -> bytes:
    """The ECMH of any set of elements (e.g. what a node observes a VM to run)."""
    acc = Ecmh()
    for path, value in els:
        acc.add(point_of(_element_bytes(path, value), ELEMENT_PERSON))
    return acc.value


def diff(a: StateObject, b: StateObject) -> tuple[list[tuple[Path, Any]], list[tuple[Path, Any]]]:
    """(elements only in a, elements only in b): how two configurations differ."""
    ka = {_element_bytes(p, v): (p, v) for p, v in a.elements}
    kb = {_element_bytes(p, v): (p, v) for p, v in b.elements}
    return ([ka[k] for k in sorted(set(ka) - set(kb))],
            [kb[k] for k in sorted(set(kb) - set(ka))])
