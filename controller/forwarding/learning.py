"""L2 learning switch logic: packet-ins and switch events in, OpenFlow intents out.

Pure and deterministic: time comes in as `now_ms`, nothing is sent from here.
Good for loop-free topologies (the cloud-edge star); path computation over the
replicated topology replaces flooding later.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.forwarding.intents import (
    NO_BUFFER,
    PORT_CONTROLLER,
    PORT_FLOOD,
    FlowAdd,
    FlowDelete,
    Intent,
    Match,
    Output,
    PacketOut,
)

__all__ = ["L2_COOKIE", "LearningConfig", "LearningSwitch", "parse_ethernet"]

# Every flow this app installs carries this cookie, so Synod's flows can be told
# from anyone else's (and deleted by cookie without touching the others).
L2_COOKIE = 0x53594E0D00000001  # "SYN" + app 0x0D + instance 1

ETH_TYPE_LLDP = 0x88CC
_ETH_HEADER_LEN = 14


@dataclass(frozen=True)
class LearningConfig:
    """Tunables of the learning switch; defaults suit the emulation."""

    flow_idle_timeout_s: int = 60
    flow_priority: int = 100
    mac_table_size_max: int = 4096
    mac_entry_ttl_ms: int = 300_000


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def parse_ethernet(frame: bytes) -> tuple[str, str, int] | None:
    """Return (dst, src, ethertype) of an Ethernet frame, or None if it is too short."""
    if len(frame) < _ETH_HEADER_LEN:
        return None
    ethertype = int.from_bytes(frame[12:14], "big")
    return _mac(frame[0:6]), _mac(frame[6:12]), ethertype


def _is_group_address(mac: str) -> bool:
    # The I/G bit (least significant bit of the first octet) marks broadcast/multicast.
    return int(mac[0:2], 16) & 1 == 1


class LearningSwitch:
    """MAC learning for many switches; one instance serves a whole controller."""

    def __init__(self, config: LearningConfig | None = None) -> None:
        self.config = config or LearningConfig()
        # dpid -> mac -> (port, last_seen_ms). Insertion order doubles as age order.
        self._tables: dict[int, dict[str, tuple[int, int]]] = {}

    def switch_connected(self, dpid: int) -> list[Intent]:
        """A switch (re)connected: send unmatched packets to us, forget old learning.

        Flows already on the switch are left alone (no wipe): they age out on their own.
        """
        self._tables[dpid] = {}
        table_miss = FlowAdd(
            dpid=dpid,
            priority=0,
            match=Match(),
            actions=(Output(PORT_CONTROLLER),),
            cookie=L2_COOKIE,
        )
        return [table_miss]

    def switch_disconnected(self, dpid: int) -> None:
        """Drop what we learned about a switch that went away."""
        self._tables.pop(dpid, None)

    def lookup(self, dpid: int, mac: str) -> int | None:
        """The port where `mac` was last seen on `dpid`, if known."""
        entry = self._tables.get(dpid, {}).get(mac)
        return None if entry is None else entry[0]

    def packet_in(
        self,
        dpid: int,
        in_port: int,
        frame: bytes,
        now_ms: int,
        buffer_id: int = NO_BUFFER,
    ) -> list[Intent]:
        """Learn the source, then forward: a flow plus packet-out if known, else flood."""
        parsed = parse_ethernet(frame)
        if parsed is None:
            return []
        dst, src, ethertype = parsed
        if ethertype == ETH_TYPE_LLDP:
            return []  # link discovery is not forwarded
        intents: list[Intent] = []
        table = self._tables.setdefault(dpid, {})
        if not _is_group_address(src):
            intents.extend(self._learn(dpid, table, src, in_port, now_ms))

        out_port = self._fresh_port(table, dst, now_ms)
        data = frame if buffer_id == NO_BUFFER else b""
        if out_port is None or _is_group_address(dst):
            actions = (Output(PORT_FLOOD),)
        elif out_port == in_port:
            return intents  # the destination is behind the port it came from: drop
        else:
            actions = (Output(out_port),)
            intents.append(
                FlowAdd(
                    dpid=dpid,
                    priority=self.config.flow_priority,
                    match=Match(in_port=in_port, eth_src=src, eth_dst=dst),
                    actions=actions,
                    idle_timeout_s=self.config.flow_idle_timeout_s,
                    cookie=L2_COOKIE,
                )
            )
        intents.append(
            PacketOut(dpid=dpid, in_port=in_port, actions=actions, buffer_id=buffer_id, data=data)
        )
        return intents

    def _learn(
        self, dpid: int, table: dict[str, tuple[int, int]], mac: str, port: int, now_ms: int
    ) -> list[Intent]:
        previous = table.pop(mac, None)
        table[mac] = (port, now_ms)
        while len(table) > self.config.mac_table_size_max:
            table.pop(next(iter(table)))  # evict the least recently seen
        if previous is not None and previous[0] != port:
            # The host moved: flows that send to its old port are now wrong.
            return [FlowDelete(dpid=dpid, match=Match(eth_dst=mac), cookie=L2_COOKIE)]
        return []

    def _fresh_port(
        self, table: dict[str, tuple[int, int]], mac: str, now_ms: int
    ) -> int | None:
        entry = table.get(mac)
        if entry is None:
            return None
        port, seen_ms = entry
        if now_ms - seen_ms > self.config.mac_entry_ttl_ms:
            del table[mac]
            return None
        return port
