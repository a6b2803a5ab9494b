"""controller/replication/address.py: the one HOST:PORT check (config, joins, peer rows)."""

from __future__ import annotations

import pytest

from controller.replication.address import ADDRESS_BYTES_MAX, address_problem
from controller.replication.reserved import check_internal_row, peer_key

PEER = peer_key("ab" * 16)


@pytest.mark.parametrize("address", [
    "127.0.0.1:7100", "node-1.example:1", "h:65535", "[::1]:80", "[fe80::1%eth0]:7000",
    "h:" + "0" * 3 + "80",  # leading zeros are still port 80
    "é" * 10 + ":80",  # a name need not be ASCII
])
def test_good_addresses(address):
    assert address_problem(address) is None
    assert address_problem(address, listen=True) is None


@pytest.mark.parametrize("address, why", [
    ("", "no :PORT"),
    ("localhost", "no :PORT"),
    (":80", "no HOST"),
    ("h:", "PORT is not a decimal number"),
    ("h:80 ", "PORT is not a decimal number"),
    ("h:-1", "PORT is not a decimal number"),
    ("h:0x50", "PORT is not a decimal number"),
    ("h:²", "PORT is not a decimal number"),  # str.isdigit, but int() refuses it
    ("h:١٢", "PORT is not a decimal number"),  # Arabic-Indic digits
    ("h:65536", "PORT is not 1..65535"),
    ("h:0", "port 0 is only for a listen address"),
    ("[::1]", "PORT is not a decimal number"),  # an IPv6 address without a port
    ("h" * ADDRESS_BYTES_MAX + ":1", f"longer than {ADDRESS_BYTES_MAX} bytes"),
    ("é" * 128 + ":1", f"longer than {ADDRESS_BYTES_MAX} bytes"),  # 258 bytes of UTF-8
])
def test_bad_addresses_say_why(address, why):
    problem = address_problem(address)
    assert problem is not None and f"is not HOST:PORT ({why}" in problem


def test_port_0_is_for_listen_addresses_only():
    """0 asks the system for a free port; nobody can dial it."""
    assert address_problem("127.0.0.1:0", listen=True) is None
    assert "port 0" in address_problem("127.0.0.1:0")  # type: ignore[operator]
    assert "PORT is not 0..65535" in address_problem("h:65536", listen=True)  # type: ignore[operator]


def test_a_long_address_is_quoted_briefly():
    problem = address_problem("h" * 100_000)
    assert problem is not None and len(problem) < 150 and "(100000 chars)" in problem


@pytest.mark.parametrize("value, needle", [
    (b"127.0.0.1:7101", None),
    (b"[::1]:7101", None),
    (b"no port", "no :PORT"),
    (b"h:0", "port 0"),
    (b"h:\xc2\xb2", "PORT is not a decimal number"),  # "²": was a ValueError, not a refusal
    (b"h:\xff", "not UTF-8"),
])
def test_a_peer_row_address_is_checked_the_same_way(value, needle):
    why = check_internal_row(PEER, {"value": value})
    assert why is None if needle is None else needle in why
