"""The NixOS renderer: byte-identical text, checked by Nix itself offline (Debian's
nix-instantiate: --parse, and --eval of the module applied to stub arguments), and the
configuration as an ECMH state object that differs element by element."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from edge_agent.nixos import FRAGMENT_PATH, diff, digest_of, elements, render, state_object
from edge_agent.spec import parse_spec

FRAGMENT = """{ pkgs, ... }: {
  environment.systemPackages = [ pkgs.hello ];
  services.nginx.enable = true;
  users.users.web = { isSystemUser = true; group = "web"; description = "a \\"quoted\\" ${"x"}"; };
}"""
RAW = {"name": "web", "image": "nixos", "nixos": FRAGMENT, "http_port": 80,
       "health": {"http": "/healthz", "port": 8080},
       "nics": [{"switch": "e1s1", "mac": "52:54:00:00:01:32", "ipv4": "10.1.0.50/8"},
                {"switch": "e1s1", "mac": "52:54:00:00:01:33", "ipv4": "192.168.7.2/24",
                 "vlan": 7}]}
NIX = shutil.which("nix-instantiate")
needs_nix = pytest.mark.skipif(NIX is None, reason="nix-instantiate not installed (nix-bin)")


def _nix(*args: str, cwd) -> str:
    done = subprocess.run([NIX, *args], capture_output=True, text=True, timeout=60, cwd=cwd,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _nest(els) -> dict:
    out: dict = {}
    for path, value in els:
        if path == FRAGMENT_PATH:
            continue
        d = out
        for p in path[:-1]:
            d = d.setdefault(p, {})
        d[path[-1]] = value
    return out


def test_same_spec_same_bytes_and_a_change_is_one_element():
    a = parse_spec(RAW)
    assert render(a) == render(parse_spec(dict(reversed(list(RAW.items())))))
    b = parse_spec({**RAW, "nixos": FRAGMENT.replace("pkgs.hello", "pkgs.curl")})
    oa, ob = state_object(a), state_object(b)
    assert oa.digest != ob.digest and len(oa.digest) == 32
    only_a, only_b = diff(oa, ob)
    assert [p for p, _ in only_a] == [FRAGMENT_PATH] == [p for p, _ in only_b]
    c = parse_spec({**RAW, "http_port": 81})
    only_a, only_c = diff(oa, state_object(c))
    assert only_a == [(("networking", "firewall", "allowedTCPPorts"), [80, 8080])]
    assert only_c == [(("networking", "firewall", "allowedTCPPorts"), [81, 8080])]


def test_the_digest_is_a_multiset_hash_of_the_elements():
    els = list(elements(parse_spec(RAW)))
    assert digest_of(els) == digest_of(reversed(els))  # order never matters
    # the digest of a union is the sum of the digests: checked through the group
    from controller.replication.digest import Ecmh

    half = len(els) // 2
    acc = Ecmh(digest_of(els[:half]))
    acc.add(digest_of(els[half:]))
    assert acc.value == state_object(parse_spec(RAW)).digest


@needs_nix
def test_nix_parses_it_and_evaluates_it_to_the_elements(tmp_path):
    spec = parse_spec(RAW)
    (tmp_path / "configuration.nix").write_text(render(spec))
    _nix("--parse", "configuration.nix", cwd=tmp_path)
    (tmp_path / "check.nix").write_text("""
let
  m = import ./configuration.nix { config = {}; lib = {}; pkgs = {}; modulesPath = "/m"; };
  fragment = builtins.elemAt m.imports 1;
  applied = fragment { config = {}; lib = {}; pkgs = { hello = "hello-stub"; }; };
in {
  options = removeAttrs m [ "imports" ];
  first = builtins.elemAt m.imports 0;
  fragment = applied;
}
""")
    got = json.loads(_nix("--eval", "--strict", "--json", "check.nix", cwd=tmp_path))
    assert got["options"] == _nest(elements(spec))
    assert got["first"] == "/m/profiles/qemu-guest.nix"
    assert got["fragment"]["environment"]["systemPackages"] == ["hello-stub"]
    assert got["fragment"]["users"]["users"]["web"]["description"] == 'a "quoted" x'


@needs_nix
def test_a_spec_without_fragment_or_nics_renders_too(tmp_path):
    spec = parse_spec({"name": "bare", "image": "nixos", "nixos": "{ }"})
    (tmp_path / "c.nix").write_text(render(spec))
    _nix("--parse", "c.nix", cwd=tmp_path)
