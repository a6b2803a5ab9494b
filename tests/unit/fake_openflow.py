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

HOP_LIMIT = 64  # bound on forwarding steps, so a loop fails a test instead of hanging


def frame(dst: str, src: str, ethertype: int = 0x0800, payload: bytes = b"x" * 46) -> bytes:
    return (bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", ""))
            + ethertype.to_bytes(2, "big") + payload)


def fields_of(in_port: int, data: bytes) -> dict[str, object]:
    mac = lambda raw: ":".join(f"{b:02x}" for b in raw)  # noqa: E731
    return {"in_port": in_port, "eth_dst": mac(data[0:6]), "eth_src": mac(data[6:12]),
            "eth_type": int.from_bytes(data[12:14], "big")}


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
    """Switches, hosts and links driven by a controller logic object.

    `send(host, frame)` injects a frame at a host and returns the hosts that received
    it (one entry per copy, so a duplicate delivery shows). The logic is called on
    table misses and its intents applied as a switch would: flow-mods change tables,
    packet-outs emit frames (with their own data) from the switch they name.
    """

    def __init__(self, logic, packet_limit: int = HOP_LIMIT * 16,
                 owners: dict[int, object] | None = None) -> None:
        self.logic = logic
        self.owners = owners or {}  # dpid -> the logic (controller) that masters it
        self.packet_limit = packet_limit
        self.switches: dict[int, FakeSwitch] = {}
        self.links: dict[tuple[int, int], tuple[str, object]] = {}  # (dpid, port) -> peer
        self.down: set[tuple[int, int]] = set()
        self.host_port: dict[str, tuple[int, int]] = {}
        self.packet_ins = 0
        self.now_ms = 0
        self._received: list[tuple[str, bytes]] = []
        self._queue: list[tuple[int, int, bytes]] = []

    def add_switch(self, dpid: int, ports: int) -> None:
        self.switches[dpid] = FakeSwitch(dpid, list(range(1, ports + 1)))
        connected = self.owner(dpid).switch_connected
        try:
            intents = connected(dpid, {p: True for p in range(1, ports + 1)}, self.now_ms)
        except TypeError:  # the learning switch takes only the dpid
            intents = connected(dpid)
        self.apply(intents)

    def link(self, a: tuple[int, int], b: tuple[int, int]) -> None:
        self.links[a] = ("switch", b)
        self.links[b] = ("switch", a)

    def attach(self, host: str, at: tuple[int, int]) -> None:
        self.links[at] = ("host", host)
        self.host_port[host] = at

    def set_link(self, a: tuple[int, int], up: bool) -> None:
        """Take a switch-to-switch link down or up, telling the logic about both ends."""
        _, b = self.links[a]
        for end in (a, b):
            if up:
                self.down.discard(end)  # type: ignore[arg-type]
            else:
                self.down.add(end)  # type: ignore[arg-type]
            self.apply(self.owner(end[0]).port_changed(end[0], end[1], up, self.now_ms))  # type: ignore[index]

    def owner(self, dpid: int):
        return self.owners.get(dpid, self.logic)

    def tick(self, ms: int) -> None:
        self.now_ms += ms
        for logic in {id(x): x for x in [self.logic, *self.owners.values()]}.values():
            self.apply(logic.tick(self.now_ms))

    def send(self, host: str, data: bytes) -> list[str]:
        self._received = []
        dpid, port = self.host_port[host]
        self._queue.append((dpid, port, data))
        self._run()
        return [h for h, d in self._received if d == data]

    def apply(self, intents) -> None:
        for intent in intents:
            if isinstance(intent, PacketOut):
                self._emit(intent.dpid, intent.in_port, intent.actions, intent.data)
            else:
                self.switches[intent.dpid].apply(intent)
        self._run()

    def _emit(self, dpid: int, in_port: int, actions, data: bytes) -> None:
        switch = self.switches[dpid]
        for action in actions:
            ports = ([p for p in switch.ports if p != in_port] if action.port == PORT_FLOOD
                     else [action.port])
            for port in ports:
                if (dpid, port) in self.down:
                    continue
                peer = self.links.get((dpid, port))
                if peer is None:
                    continue
                kind, where = peer
                if (kind == "switch" and where in self.down):
                    continue
                if kind == "host":
                    self._received.append((where, data))  # type: ignore[arg-type]
                else:
                    self._queue.append((where[0], where[1], data))  # type: ignore[index]

    def _run(self) -> None:
        handled = 0
        while self._queue:
            handled += 1
            assert handled <= self.packet_limit, "forwarding loop or broadcast storm"
            dpid, in_port, data = self._queue.pop(0)
            entry = self.switches[dpid].lookup(in_port, data)
            if entry is None:
                continue
            if any(a.port == PORT_CONTROLLER for a in entry.actions):
                self.packet_ins += 1
                intents = self.owner(dpid).packet_in(dpid, in_port, data, self.now_ms)
                # The learning switch answers with a packet-out for this packet only.
                for intent in intents:
                    if isinstance(intent, PacketOut):
                        self._emit(intent.dpid, intent.in_port, intent.actions, intent.data)
                    else:
                        self.switches[intent.dpid].apply(intent)
            else:
                self._emit(dpid, in_port, entry.actions, data)
