"""LLDP frames for link discovery: build one per switch port, parse what comes back.

A Synod LLDP frame names the sending switch (chassis id "dpid:<16 hex>") and port
(port id = the port number, 4 bytes), so a packet-in of it on another switch is a
directed link (src dpid, src port) -> (dst dpid, in_port).

It may also carry a *stamp* (an organisationally specific TLV, OUI "SYN", subtype 1) for
measuring the link's latency: the sending controller's id (8 random bytes per process),
its monotonic clock when it sent the frame, and optionally an *echo*: the id and time of
a frame it received, sent straight back. A frame that comes back to the controller that
stamped it gives a one-way time (sent and received on the same clock); a foreign frame is
answered with an echo, so its sender gets a round trip on its own clock (decision 0036).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LLDP_DST", "ETH_TYPE_LLDP", "Stamp", "build_lldp", "parse_lldp", "parse_stamp"]

LLDP_DST = "01:80:c2:00:00:0e"  # nearest-bridge group address: switches never forward it
ETH_TYPE_LLDP = 0x88CC
_CHASSIS_PREFIX = b"dpid:"
_TLV_END, _TLV_CHASSIS, _TLV_PORT, _TLV_TTL, _TLV_ORG = 0, 1, 2, 3, 127
_STAMP_OUI, _STAMP_SUBTYPE = b"SYN", 1
_STAMP_LEN = 3 + 1 + 8 + 8  # OUI, subtype, origin, sent_ms; + 16 with an echo
_CHASSIS_LOCAL, _PORT_LOCAL = 7, 7  # "locally assigned" subtypes
TTL_S = 120


def _tlv(kind: int, value: bytes) -> bytes:
    return ((kind << 9) | len(value)).to_bytes(2, "big") + value


@dataclass(frozen=True)
class Stamp:
    """Who sent a probe and when (its own monotonic ms); `echo`: the (origin, sent_ms) of
    the frame this one answers."""

    origin: bytes  # 8 bytes
    sent_ms: int
    echo: tuple[bytes, int] | None = None

    def tlv(self) -> bytes:
        body = _STAMP_OUI + bytes([_STAMP_SUBTYPE]) + self.origin + _u64(self.sent_ms)
        if self.echo is not None:
            body += self.echo[0] + _u64(self.echo[1])
        return _tlv(_TLV_ORG, body)


def _u64(n: int) -> bytes:
    return (n & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")


def build_lldp(dpid: int, port: int, src_mac: str = "02:00:00:00:00:01",
               stamp: Stamp | None = None) -> bytes:
    """An LLDP frame announcing (dpid, port), stamped if `stamp` is given."""
    chassis = bytes([_CHASSIS_LOCAL]) + _CHASSIS_PREFIX + f"{dpid:016x}".encode()
    port_id = bytes([_PORT_LOCAL]) + port.to_bytes(4, "big")
    header = (bytes.fromhex(LLDP_DST.replace(":", "")) + bytes.fromhex(src_mac.replace(":", ""))
              + ETH_TYPE_LLDP.to_bytes(2, "big"))
    return (header + _tlv(_TLV_CHASSIS, chassis) + _tlv(_TLV_PORT, port_id)
            + _tlv(_TLV_TTL, TTL_S.to_bytes(2, "big"))
            + (stamp.tlv() if stamp is not None else b"") + _tlv(_TLV_END, b""))


def parse_stamp(frame: bytes) -> Stamp | None:
    """The stamp of a Synod LLDP frame; None when it has none (or a malformed one)."""
    if len(frame) < 14 or int.from_bytes(frame[12:14], "big") != ETH_TYPE_LLDP:
        return None
    pos = 14
    while pos + 2 <= len(frame):
        header = int.from_bytes(frame[pos:pos + 2], "big")
        kind, length = header >> 9, header & 0x1FF
        value = frame[pos + 2:pos + 2 + length]
        if len(value) != length or kind == _TLV_END:
            return None
        if kind == _TLV_ORG and value[:4] == _STAMP_OUI + bytes([_STAMP_SUBTYPE]):
            if length == _STAMP_LEN:
                echo = None
            elif length == _STAMP_LEN + 16:
                echo = (value[20:28], int.from_bytes(value[28:36], "big"))
            else:
                return None
            return Stamp(value[4:12], int.from_bytes(value[12:20], "big"), echo)
        pos += 2 + length
    return None


def parse_lldp(frame: bytes) -> tuple[int, int] | None:
    """(dpid, port) from a Synod LLDP frame; None for anything else (other LLDP too)."""
    if len(frame) < 14 or int.from_bytes(frame[12:14], "big") != ETH_TYPE_LLDP:
        return None
    pos, dpid, port = 14, None, None
    while pos + 2 <= len(frame):
        header = int.from_bytes(frame[pos:pos + 2], "big")
        kind, length = header >> 9, header & 0x1FF
        value = frame[pos + 2:pos + 2 + length]
        if len(value) != length or kind == _TLV_END:
            break
        if kind == _TLV_CHASSIS and value[:1] == bytes([_CHASSIS_LOCAL]):
            text = value[1:]
            if text.startswith(_CHASSIS_PREFIX):
                try:
                    dpid = int(text[len(_CHASSIS_PREFIX):], 16)
                except ValueError:
                    return None
        elif kind == _TLV_PORT and value[:1] == bytes([_PORT_LOCAL]) and length == 5:
            port = int.from_bytes(value[1:], "big")
        pos += 2 + length
    if dpid is None or port is None:
        return None
    return dpid, port
