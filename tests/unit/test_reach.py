"""topologies/reach.py: the echo it sends, the replies it accepts, the order of sends."""

from __future__ import annotations

import socket
import struct

from topologies.reach import (
    Reach,
    _checksum,
    _interleaved,
    describe_pairs,
    echo_request,
    parse_reply,
)


def _ip_packet(src: str, icmp: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0,
                         socket.inet_aton(src), socket.inet_aton("10.0.0.1"))
    return header + icmp


def test_an_echo_request_has_a_valid_checksum():
    packet = echo_request(0x1234, 7)
    assert packet[0] == 8 and packet[1] == 0
    assert struct.unpack("!HH", packet[4:8]) == (0x1234, 7)
    assert _checksum(packet) == 0  # a correct checksum sums to zero


def test_only_echo_replies_are_parsed():
    reply = b"\x00" + echo_request(0x1234, 7)[1:]
    assert parse_reply(_ip_packet("10.3.0.2", reply)) == ("10.3.0.2", 0x1234, 7)
    assert parse_reply(_ip_packet("10.3.0.2", echo_request(0x1234, 7))) is None  # a request
    assert parse_reply(b"\x60" + bytes(40)) is None  # not IPv4
    assert parse_reply(b"") is None


def test_sends_interleave_sources():
    pairs = [(a, b) for a in "abc" for b in "abc" if a != b]
    order = _interleaved(pairs)
    assert sorted(order) == sorted(pairs)
    assert [p[0] for p in order[:3]] == ["a", "b", "c"]
    assert len({p[1] for p in order[:3]}) > 1


def test_a_reach_says_when_all_answered_and_names_the_rest():
    site = {"h1": "s1", "h2": "s1", "h3": "s2"}
    pairs = [(a, b) for a in site for b in site if a != b]
    done = Reach({p: 0.2 * i for i, p in enumerate(pairs)})
    assert done.took == 0.2 * (len(pairs) - 1) and done.missing == []
    part = Reach({p: (None if p[1] == "h3" else 1.0) for p in pairs})
    assert part.took is None and part.results()[("h1", "h2")]
    assert describe_pairs(part.missing, site, pairs) == "s1 -> s2: all 2"
    assert describe_pairs([("h1", "h3")], site, pairs) == "h1 -> h3"


def test_a_phase_check_names_the_pairs_that_did_not_answer():
    from topologies.scenario import Phase

    sites = {"h1": "cloud", "h2": "edge1", "h3": "edge1"}
    ok = Phase("before", {("h1", "h2"): True, ("h2", "h1"): True}, sites)
    assert ok.all_answered("before: all") == ("before: all", True)
    bad = Phase("after", {("h1", "h2"): False, ("h1", "h3"): False, ("h2", "h3"): True}, sites)
    line, passed = bad.all_answered("after: all")
    assert not passed
    assert line == "after: all: 2 of 3 pairs did not answer: cloud -> edge1: all 2"
