"""LLDP frames for link discovery: build one per switch port, parse what comes back.

A Synod LLDP frame names the sending switch (chassis id "dpid:<16 hex>") and port
(port id = the port number, 4 bytes), so a packet-in of it on another switch is a
directed link (src dpid, src port) -> (dst dpid, in_port).
"""

from __future__ import annotations

__all__ = ["LLDP_DST", "ETH_TYPE_LLDP", "build_lldp", "parse_lldp"]

LLDP_DST = "01:80:c2:00:00:0e"  # nearest-bridge group address: switches never forward it
ETH_TYPE_LLDP = 0x88CC
_CHASSIS_PREFIX = b"dpid:"
_TLV_END, _TLV_CHASSIS, _TLV_PORT, _TLV_TTL = 0, 1, 2, 3
_CHASSIS_LOCAL, _PORT_LOCAL = 7, 7  # "locally assigned" subtypes
TTL_S = 120


def _tlv(kind: int, value: bytes) -> bytes:
    return ((kind << 9) | len(value)).to_bytes(2, "big") + value


def build_lldp(dpid: int, port: int, src_mac: str = "02:00:00:00:00:01") -> bytes:
    """An LLDP frame announcing (dpid, port)."""
    chassis = bytes([_CHASSIS_LOCAL]) + _CHASSIS_PREFIX + f"{dpid:016x}".encode()
    port_id = bytes([_PORT_LOCAL]) + port.to_bytes(4, "big")
    header = (bytes.fromhex(LLDP_DST.replace(":", "")) + bytes.fromhex(src_mac.replace(":", ""))
              + ETH_TYPE_LLDP.to_bytes(2, "big"))
    return (header + _tlv(_TLV_CHASSIS, chassis) + _tlv(_TLV_PORT, port_id)
            + _tlv(_TLV_TTL, TTL_S.to_bytes(2, "big")) + _tlv(_TLV_END, b""))


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
