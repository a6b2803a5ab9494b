"""HOST:PORT addresses (peer, API and listen addresses): the one check of their shape."""

from __future__ import annotations

__all__ = ["ADDRESS_BYTES_MAX", "address_problem"]

ADDRESS_BYTES_MAX = 256  # UTF-8 bytes; a peer address is kept in an `internal` row
_PORT_MAX = 65535  # TCP


def address_problem(address: str, *, listen: bool = False) -> str | None:
    """Why `address` is not HOST:PORT, quoting it briefly; None when it is.

    HOST is not empty (a name, an IPv4 address, or an IPv6 one in brackets: [::1]:80).
    PORT is decimal, 1..65535. A listen address may also give port 0, which asks the
    system for a free port (`synod node run` announces the one it got); an address
    others dial (a peer's, the one a node advertises) may not: nothing listens on 0.
    At most ADDRESS_BYTES_MAX bytes of UTF-8. Pure, so every node that checks a peer
    address in a replicated row answers the same.
    """
    host, sep, port = address.rpartition(":")
    low = 0 if listen else 1
    if len(address.encode(errors="surrogatepass")) > ADDRESS_BYTES_MAX:
        why = f"longer than {ADDRESS_BYTES_MAX} bytes"
    elif not sep:
        why = "no :PORT"
    elif not host:
        why = "no HOST"
    elif not (port.isascii() and port.isdigit()):  # int() refuses some Unicode digits ("²")
        why = "PORT is not a decimal number"
    elif int(port) == 0 and not listen:
        why = "port 0 is only for a listen address (any free port); nothing listens on it"
    elif not low <= int(port) <= _PORT_MAX:
        why = f"PORT is not {low}..{_PORT_MAX}"
    else:
        return None
    shown = repr(address) if len(address) <= 80 else f"{address[:60]!r}…({len(address)} chars)"
    return f"{shown} is not HOST:PORT ({why})"
