"""OpenFlow intents as values: what pure forwarding logic asks a switch to do.

The os-ken shim (controller/openflow/ofmsg.py) turns these into OpenFlow 1.3
messages; unit tests apply them to a fake flow table. Nothing here knows os-ken.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "PORT_CONTROLLER",
    "PORT_FLOOD",
    "PORT_IN",
    "NO_BUFFER",
    "Output",
    "Match",
    "FlowAdd",
    "FlowDelete",
    "PacketOut",
    "RoleRequest",
    "FlowStatsRequest",
    "ROLE_NOCHANGE",
    "ROLE_EQUAL",
    "ROLE_MASTER",
    "ROLE_SLAVE",
    "Intent",
]

# Reserved OpenFlow 1.3 port numbers (OFPP_*), so the core need not import os-ken.
PORT_IN = 0xFFFFFFF8
PORT_FLOOD = 0xFFFFFFFB
PORT_CONTROLLER = 0xFFFFFFFD
NO_BUFFER = 0xFFFFFFFF


@dataclass(frozen=True)
class Output:
    """Send the packet out of `port` (a number or a reserved PORT_* value)."""

    port: int


@dataclass(frozen=True)
class Match:
    """The subset of OXM fields Synod's forwarding uses; None means wildcard."""

    in_port: int | None = None
    eth_src: str | None = None
    eth_dst: str | None = None
    eth_type: int | None = None
    vlan_vid: int | None = None
    ip_proto: int | None = None
    ipv4_src: str | None = None  # "a.b.c.d" or "a.b.c.d/len"
    ipv4_dst: str | None = None
    tcp_src: int | None = None
    tcp_dst: int | None = None
    udp_src: int | None = None
    udp_dst: int | None = None

    def fields(self) -> dict[str, object]:
        """The non-wildcard fields, named as OpenFlow names them."""
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def covers(self, other: Match) -> bool:
        """True if every packet matched by `other` is matched by self (non-strict delete)."""
        return all(getattr(other, k) == v for k, v in self.fields().items())


@dataclass(frozen=True)
class FlowAdd:
    """Install (or replace) a flow entry in table 0 of switch `dpid`."""

    dpid: int
    priority: int
    match: Match
    actions: tuple[Output, ...]
    idle_timeout_s: int = 0
    hard_timeout_s: int = 0
    cookie: int = 0
    table_id: int = 0


@dataclass(frozen=True)
class FlowDelete:
    """Delete every flow in table 0 that `match` covers and whose cookie equals `cookie`."""

    dpid: int
    match: Match
    cookie: int
    cookie_mask: int = 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True)
class PacketOut:
    """Send a packet that came to the controller back out through the switch."""

    dpid: int
    in_port: int
    actions: tuple[Output, ...]
    buffer_id: int = NO_BUFFER
    data: bytes = field(default=b"", repr=False)


ROLE_NOCHANGE, ROLE_EQUAL, ROLE_MASTER, ROLE_SLAVE = 0, 1, 2, 3


@dataclass(frozen=True)
class RoleRequest:
    """Ask switch `dpid` for a controller role (OpenFlow 1.3 section 6.3.7).

    ROLE_NOCHANGE only reads the current role and generation id.
    """

    dpid: int
    role: int
    generation_id: int = 0


@dataclass(frozen=True)
class FlowStatsRequest:
    """Read the flows of table 0 whose cookie matches `cookie` under `cookie_mask`."""

    dpid: int
    cookie: int = 0
    cookie_mask: int = 0


Intent = FlowAdd | FlowDelete | PacketOut | RoleRequest | FlowStatsRequest
