"""Service specs: validation with key paths, canonical bytes, clashes, capacity (tables)."""

from __future__ import annotations

import copy

import pytest
import yaml

from edge_agent.spec import (
    Capacity,
    SpecError,
    canonical_json,
    check_capacity,
    check_clashes,
    from_row,
    parse_spec,
    spec_hash,
    to_row,
)

GOOD = {
    "name": "web",
    "image": "microvm",
    "vcpus": 1,
    "memory_mb": 128,
    "nics": [{"switch": "e1s1", "mac": "52:54:00:00:01:05", "ipv4": "10.0.1.5/24"},
             {"switch": "e1s1", "mac": "52:54:00:00:01:06", "ipv4": "10.0.2.5/24", "vlan": 20}],
    "health": {"tcp": 8080},
    "restart": {"failover-after": 30},
    "placement": {"site": "edge1"},
}


def _with(path: str, value):
    """GOOD with the key at path (a.b[1].c) set to value (or removed when value is DEL)."""
    raw = copy.deepcopy(GOOD)
    parts = path.replace("[", ".").replace("]", "").split(".")
    target = raw
    for p in parts[:-1]:
        target = target[int(p)] if p.isdigit() else target[p]
    last = parts[-1]
    if value is DEL:
        del target[int(last) if last.isdigit() else last]
    else:
        target[int(last) if last.isdigit() else last] = value
    return raw


DEL = object()

BAD = [
    ("nics[1].mac", "52:54:00:zz:01:06", "nics[1].mac: not a MAC address"),
    ("nics[0].mac", "01:00:5e:00:00:01", "nics[0].mac: 01:00:5e:00:00:01 is a multicast"),
    ("nics[0].ipv4", "10.0.1.5", "nics[0].ipv4: expected an IPv4 address with its prefix"),
    ("nics[0].ipv4", "10.0.1.0/24", "nics[0].ipv4: 10.0.1.0 is the network or broadcast"),
    ("nics[0].ipv4", "10.0.1.300/24", "nics[0].ipv4: '10.0.1.300/24' is not an IPv4"),
    ("nics[1].vlan", 5000, "nics[1].vlan: 5000 is out of range (1..4094)"),
    ("nics[0].switch", "a/b", "nics[0].switch: 'a/b' is not a bridge name"),
    ("nics[0].colour", "red", "nics[0].colour: unknown key"),
    ("nics[1].mac", "52:54:00:00:01:05", "nics[1].mac: 52:54:00:00:01:05 is also nics[0]"),
    ("nics[0].switch", DEL, "nics[0].switch: required"),
    ("colour", "red", "colour: unknown key"),
    ("name", "Web!", "name: 'Web!' must be lower-case"),
    ("name", DEL, "name: required"),
    ("image", "docker", "image: 'docker' is not one of microvm, nixos"),
    ("vcpus", 0, "vcpus: 0 is out of range"),
    ("vcpus", True, "vcpus: expected a whole number, got true/false"),
    ("memory_mb", 64, "memory_mb: 64 is out of range (128.."),
    ("health", {"tcp": 80, "http": "/"}, "health: give exactly one of"),
    ("health", {"http": "x"}, "health.http: 'x' is not an absolute URL path"),
    ("health", {"tcp": 80, "port": 1}, "health.port: only with http"),
    ("restart", "sometimes", "restart: expected local-only or {failover-after: SECONDS}"),
    ("restart", {"failover-after": 0}, "restart.failover-after: 0 is out of range"),
    ("placement", {"rack": "r1"}, "placement.rack: unknown key"),
    ("placement", {"node": "", }, "placement.node: expected a non-empty string"),
    ("state", "paused", "state: 'paused' is not one of running, stopped"),
    ("nixos", "{ }: { }", "nixos: only for image nixos"),
    ("nics", "e1s1", "nics: expected a list, got a string"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD, ids=[b[2][:40] for b in BAD])
def test_bad_specs_are_refused_naming_the_key(path, value, message):
    with pytest.raises(SpecError) as e:
        parse_spec(_with(path, value))
    assert str(e.value).startswith(message), str(e.value)


def test_defaults_and_forms_are_filled_in_canonically():
    spec = parse_spec({"name": "x"})
    assert (spec.image, spec.vcpus, spec.memory_mb, spec.nics, spec.state) == \
        ("microvm", 1, 128, (), "running")
    assert spec.health.kind == "tcp" and spec.health.port == 80
    assert spec.restart_text == "local-only" and spec.placement_text == "any"
    # the short string forms mean the same as the mappings: same bytes, same hash
    short = parse_spec({**GOOD, "restart": "failover-after:30", "placement": "site:edge1"})
    assert canonical_json(short) == canonical_json(parse_spec(GOOD))


def test_same_spec_same_bytes_whatever_the_key_order_or_case():
    reordered = dict(reversed(list(copy.deepcopy(GOOD).items())))
    reordered["nics"][0]["mac"] = "52:54:00:00:01:05".upper()
    a, b = parse_spec(GOOD), parse_spec(reordered)
    assert canonical_json(a) == canonical_json(b)
    assert spec_hash(a) == spec_hash(b) and len(spec_hash(a)) == 64
    assert spec_hash(parse_spec(_with("memory_mb", 256))) != spec_hash(a)
    assert " " not in canonical_json(a)


def test_yaml_text_parses_to_the_same_spec():
    text = """
name: web
nics:
  - {switch: e1s1, mac: "52:54:00:00:01:05", ipv4: 10.0.1.5/24}
  - {switch: e1s1, mac: "52:54:00:00:01:06", ipv4: 10.0.2.5/24, vlan: 20}
health: {tcp: 8080}
restart: {failover-after: 30}
placement: {site: edge1}
"""
    assert spec_hash(parse_spec(yaml.safe_load(text))) == spec_hash(parse_spec(GOOD))


def test_row_round_trip_and_old_rows():
    spec = parse_spec(GOOD)
    row = to_row(spec)
    assert from_row("web", row) == spec
    assert row["placement"] == "site:edge1" and row["restart_policy"] == "failover-after:30"
    with pytest.raises(SpecError, match="the row is 'other'"):
        from_row("other", row)
    # a row written by the old flag form: `services deploy NAME --image microvm`
    old = from_row("legacy", {"image": "microvm", "vcpus": 1, "memory_mb": 128,
                              "placement": "edge2", "restart_policy": "always",
                              "desired_state": "running"})
    assert old.placement_text == "site:edge2" and old.restart == "local-only"
    with pytest.raises(SpecError, match="image: 'debian' is not one of"):
        from_row("legacy", {"image": "debian", "desired_state": "running"})


def test_clashes_with_other_services():
    web = parse_spec(GOOD)
    same_mac = parse_spec({"name": "db", "nics": [
        {"switch": "e2s1", "mac": "52:54:00:00:01:06", "ipv4": "10.9.0.1/24"}]})
    same_ip = parse_spec({"name": "db", "nics": [
        {"switch": "e2s1", "mac": "52:54:00:00:09:06", "ipv4": "10.0.1.5/16"}]})
    with pytest.raises(SpecError, match=r"nics\[0\].mac: 52:54:00:00:01:06 is already used "
                                        "by service 'web'"):
        check_clashes(same_mac, [web])
    with pytest.raises(SpecError, match=r"nics\[0\].ipv4: 10.0.1.5 is already used"):
        check_clashes(same_ip, [web])
    check_clashes(web, [web])  # a redeploy of itself is not a clash
    check_clashes(parse_spec({"name": "free"}), [web, same_mac])


def test_capacity_counts_running_services_on_the_node():
    cap = Capacity(vcpus=3, memory_mb=512)
    a = parse_spec({"name": "a", "memory_mb": 256})
    b = parse_spec({"name": "b", "memory_mb": 256})
    stopped = parse_spec({"name": "s", "memory_mb": 256, "state": "stopped"})
    check_capacity(parse_spec({"name": "c", "memory_mb": 256}), cap, "n1", [a, stopped])
    with pytest.raises(SpecError, match="memory_mb: 256 more would make 768 MB on node n1, "
                                        "which offers 512 MB"):
        check_capacity(parse_spec({"name": "c", "memory_mb": 256}), cap, "n1", [a, b])
    with pytest.raises(SpecError, match="vcpus: 3 more would make 4"):
        check_capacity(parse_spec({"name": "c", "vcpus": 3}), cap, "n1", [a])
    check_capacity(a, cap, "n1", [a, b])  # redeploying a itself counts it once
