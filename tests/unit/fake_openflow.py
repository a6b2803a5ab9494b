"""A fake OpenFlow 1.3 table 0 and a fake network of them, for testing pure forwarding logic.

Each FakeSwitch keeps flow entries with OpenFlow's matching rules (highest priority
wins, ADD with an identical match and priority replaces, non-strict DELETE by cookie).
FakeNetwork wires switches and hosts and delivers frames hop by hop, calling the
controller logic on table misses, so a test can watch traffic stop needing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.forwarding.intents import (
    PORT_CONTROLLER,
    PORT_FLOOD,
    FlowAdd,
    FlowDelete,
    Intent,
    Match,
    Output,
    PacketOut,
)

HOP_LIMIT = 64  # bound on forwarding steps for one frame, so a loop fails a test, not hangs


def frame(dst: str, src: str, ethertype: int = 0x0800, payload: bytes = b"x" * 46) -> bytes:
    return (bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", ""))
            + ethertype.to_bytes(2, "big") + payload)


def fields_of(in_port: int, data: bytes) -> dict[str, object]:
    mac = lambda raw: ":".join(f"{b:02x}" for b in raw)  # noqa: E731
    return {"in_port": in_port, "eth_dst": mac(data[0:6]), "eth_src": mac(data[6:12])}


@dataclass
class FlowEntry:
    priority: int
    match: Match
    actions: tuple[Output, ...]
    cookie: int
    packets: int = 0


@dataclass
class FakeSwitch:
    dpid: int
    ports: list[int]
    flows: list[FlowEntry] = field(default_factory=list)

    def apply(self, intent: Intent) -> None:
        if isinstance(intent, FlowAdd):
            self.flows = [f for f in self.flows
                          if not (f.priority == intent.priority and f.match == intent.match)]
            self.flows.append(FlowEntry(intent.priority, intent.match, intent.actions,
                                        intent.cookie))
        elif isinstance(intent, FlowDelete):
            self.flows = [f for f in self.flows
                          if not (intent.match.covers(f.match)
                                  and f.cookie & intent.cookie_mask
                                  == intent.cookie & intent.cookie_mask)]

    def lookup(self, in_port: int, data: bytes) -> FlowEntry | None:
        pkt = fields_of(in_port, data)
        hits = [f for f in self.flows
                if all(pkt[k] == v for k, v in f.match.fields().items())]
        if not hits:
            return None
        best = max(hits, key=lambda f: f.priority)
        best.packets += 1
        return best


class FakeNetwork:
    """Switches, hosts and links; `send(host, frame)` returns the hosts that received it."""

    def __init__(self, logic) -> None:
        self.logic = logic
        self.switches: dict[int, FakeSwitch] = {}
        self.links: dict[tuple[int, int], tuple[str, object]] = {}  # (dpid, port) -> peer
        self.host_port: dict[str, tuple[int, int]] = {}
        self.packet_ins = 0
        self.now_ms = 0

    def add_switch(self, dpid: int, ports: int) -> None:
        self.switches[dpid] = FakeSwitch(dpid, list(range(1, ports + 1)))
        for intent in self.logic.switch_connected(dpid):
            self.switches[dpid].apply(intent)

    def link(self, a: tuple[int, int], b: tuple[int, int]) -> None:
        self.links[a] = ("switch", b)
        self.links[b] = ("switch", a)

    def attach(self, host: str, at: tuple[int, int]) -> None:
        self.links[at] = ("host", host)
        self.host_port[host] = at

    def send(self, host: str, data: bytes) -> list[str]:
        received: list[str] = []
        dpid, port = self.host_port[host]
        queue = [(dpid, port)]
        hops = 0
        while queue:
            hops += 1
            assert hops <= HOP_LIMIT, "forwarding loop"
            dpid, in_port = queue.pop(0)
            for out in self._forward(dpid, in_port, data):
                peer = self.links.get((dpid, out))
                if peer is None:
                    continue
                kind, where = peer
                if kind == "host":
                    received.append(where)  # type: ignore[arg-type]
                else:
                    queue.append(where)  # type: ignore[arg-type]
        return received

    def _forward(self, dpid: int, in_port: int, data: bytes) -> list[int]:
        switch = self.switches[dpid]
        entry = switch.lookup(in_port, data)
        actions: tuple[Output, ...] = entry.actions if entry else ()
        if any(a.port == PORT_CONTROLLER for a in actions):
            self.packet_ins += 1
            actions = ()
            for intent in self.logic.packet_in(dpid, in_port, data, self.now_ms):
                if isinstance(intent, PacketOut):
                    actions += intent.actions
                else:
                    self.switches[intent.dpid].apply(intent)
        ports: list[int] = []
        for action in actions:
            if action.port == PORT_FLOOD:
                ports += [p for p in switch.ports if p != in_port]
            else:
                ports.append(action.port)
        return ports
