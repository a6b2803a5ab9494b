"""The agent's driver without QEMU: what it makes of the rows a node sends (a fake link)."""

from __future__ import annotations

import threading
from pathlib import Path

from edge_agent.driver import Agent, AgentOptions
from edge_agent.link import Desired as Rows
from edge_agent.nixos import render
from edge_agent.spec import parse_spec, to_row


class FakeLink:
    def __init__(self, rows: dict) -> None:
        self.lock = threading.Lock()
        self.desired = Rows(rows, {n: 3 for n in rows}, True)
        self.connected = threading.Event()
        self.decisions = {"placement/web/3": "node-1", "placement/elsewhere/3": "node-2"}
        self.asked: list[str] = []

    def decided_node(self, slot: str):
        self.asked.append(slot)
        node = self.decisions.get(slot)
        return (node, "") if node else (None, "not decided yet")


def test_rows_become_desired_services_with_reasons(tmp_path: Path):
    nixos = parse_spec({"name": "nx", "image": "nixos", "nixos": "{ }", "placement": "site:s"})
    rows = {"web": to_row(parse_spec({"name": "web"})), "nx": to_row(nixos),
            "bad": {"image": "docker", "desired_state": "running"},
            "elsewhere": to_row(parse_spec({"name": "elsewhere"})),
            "waiting": to_row(parse_spec({"name": "waiting"}))}
    link = FakeLink(rows)
    agent = Agent(AgentOptions(site="s", node="x", token_file="t", state_dir=tmp_path),
                  link, "node-1")
    d = agent.desired()
    # placement `any`: started only on a decision naming this node
    assert d["elsewhere"].spec is None
    assert d["elsewhere"].error == "placement/elsewhere/3 was decided for node node-2, not " \
        "this one"
    assert d["waiting"].error == "pending: placement/waiting/3 not decided yet"
    agent.desired()
    assert link.asked.count("placement/web/3") == 1  # a decision is asked for once
    assert link.asked.count("placement/waiting/3") == 2  # an undecided one again
    assert d["web"].spec is not None and len(d["web"].hash) == 64 and d["web"].generation == 3
    assert d["bad"].spec is None
    assert d["bad"].error == "invalid spec: image: 'docker' is not one of microvm, nixos"
    # a NixOS service: its configuration is rendered, and the reason says why no VM runs
    assert d["nx"].spec is None and d["nx"].error.startswith("image_unavailable: ")
    rendered = tmp_path / "nixos" / "nx" / "configuration.nix"
    assert rendered.read_text() == render(nixos)
    assert str(rendered) in d["nx"].error
    # the desired hash covers the image too: a new image is drift
    before = d["web"].hash
    from edge_agent.microvm import Image

    agent.image = Image(Path("k"), Path("i"), "another-image-key")
    assert agent.desired()["web"].hash != before
