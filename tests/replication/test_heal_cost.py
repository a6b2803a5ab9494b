"""The heal's cheaper paths (decision 0099) give exactly what the plain definitions give.

The state and op-set digests are compared with a from-scratch reference written here from
DESIGN §2 (one libsodium from_uniform per row version or op id, PyNaCl's add one point at
a time); the op decoder's byte-level split of [unsigned, signature] and the faster plainness
check are compared with the general decoder and the former rule on fuzzed inputs.
"""

from __future__ import annotations

import enum
import hashlib
import random
from typing import Any

import cbor2
import pytest
from nacl.bindings import crypto_core_ed25519_add, crypto_core_ed25519_from_uniform

from controller.replication import (
    Delete,
    Reason,
    Rejected,
    Upsert,
    UsageError,
    decode,
    decode_message,
    encode,
    encode_message,
)
from controller.replication.crdt import row_version_bytes
from controller.replication.digest import IDENTITY_POINT, Ecmh, point_of, points_of
from controller.replication.encoding import check_plain
from controller.replication.op import _split_outer

from .conftest import Net

# ----------------------------------------------------------------- the reference definitions


def _ref_point(element: bytes, person: bytes) -> bytes:
    h = hashlib.blake2b(element, digest_size=32, person=person).digest()
    return crypto_core_ed25519_from_uniform(h)


def _ref_sum(points: list[bytes]) -> bytes:
    acc = IDENTITY_POINT
    for p in points:
        acc = crypto_core_ed25519_add(acc, p)
    return acc


def ref_state_digest(replica: Any) -> bytes:
    """ECMH over every row version, computed from nothing (tombstones included)."""
    points = []
    for table, key, row in replica.tables.all_rows():
        element = cbor2.dumps([table, list(key), row.to_plain()], canonical=True)
        points.append(_ref_point(element, b"synod-ecmh"))
    return _ref_sum(points)


def ref_op_digest(replica: Any) -> bytes:
    return _ref_sum([_ref_point(op.id, b"synod-opset") for op in replica.log()])


def _mutation(rng: random.Random) -> Any:
    key = (f"{rng.randrange(4):016x}", f"f{rng.randrange(12)}")
    if rng.random() < 0.2:
        return Delete("flows", key)
    values = {"priority": rng.randrange(100), "match": f"m{rng.randrange(5)}"}
    if rng.random() < 0.3:
        values["actions"] = rng.choice(["output:1", "drop", None])
    return Upsert("flows", key, values)


def _step(net: Net, rng: random.Random, delivered: list[int]) -> None:
    """Deliver some of the messages waiting, drop none: a slow, reordering network."""
    net.now_ms += 10
    for r in net.replicas:
        while r.has_ready():
            rd = r.ready()
            r.advance(rd)
            for out in rd.messages:
                net.pending.append(out)  # type: ignore[attr-defined]
    pending = net.pending  # type: ignore[attr-defined]
    rng.shuffle(pending)
    for _ in range(rng.randrange(len(pending) + 1)):
        out = pending.pop()
        msg = decode_message(encode_message(out.message), 1 << 24)
        net.by_id[out.to].receive(msg, net.now_ms)
        delivered[0] += 1


@pytest.mark.parametrize("seed", range(6))
def test_digests_equal_the_reference_definition_on_random_histories(seed: int) -> None:
    """Writes, partial syncs, ready() and digests in random order: at every digest request
    the folded digests equal a from-scratch sum (a stale cached row encoding, a point
    counted twice or a missed subtraction would each make them differ)."""
    rng = random.Random(seed)
    net = Net(3, seed=seed)
    net.pending = []  # type: ignore[attr-defined]
    delivered = [0]
    checked = 0
    for _ in range(120):
        r = rng.choice(net.replicas)
        roll = rng.random()
        if roll < 0.45:
            r.write([_mutation(rng) for _ in range(rng.randrange(1, 4))], net.now_ms)
        elif roll < 0.6:
            r.sync_with(rng.choice(r.peers), net.now_ms)
        elif roll < 0.8:
            _step(net, rng, delivered)
        elif roll < 0.88:
            r.fold_digests(rng.randrange(0, 6))  # a part of the work, ahead of a request
        else:
            assert r.state_digest() == ref_state_digest(r)
            assert r.op_digest() == ref_op_digest(r)
            checked += 1
    net.pump(rounds=60)
    digests = set()
    for r in net.replicas:
        assert r.state_digest() == ref_state_digest(r)
        assert r.op_digest() == ref_op_digest(r)
        digests.add((r.state_digest(), r.op_digest()))
    assert len(digests) == 1, "the replicas did not converge"
    assert checked > 0 and delivered[0] > 0


def test_a_row_changed_after_ready_is_hashed_in_its_new_version() -> None:
    """ready() keeps each dirty row's encoding for the digest; a later change must drop it."""
    net = Net(2)
    a, b = net.replicas
    a.write([Upsert("kv", ("k",), {"value": b"1"})], net.now_ms)
    a.advance(a.ready())  # the row's encoding is kept for the digest...
    op = b.write([Upsert("kv", ("k",), {"value": b"2"})], net.now_ms + 5)
    a.receive_op(op.raw, net.now_ms + 10)  # ...and this op changes the row again
    assert a.row("kv", ("k",)) == {"value": b"2"}
    assert a.state_digest() == ref_state_digest(a)


def test_fold_digests_does_bounded_work_and_the_digests_are_the_same() -> None:
    net = Net(2)
    a, b = net.replicas
    for i in range(30):
        a.write([Upsert("kv", (f"k{i % 20}",), {"value": bytes([i])})], net.now_ms + i)
    net.pump(rounds=20)
    pending = a.fold_digests(0)
    assert pending == 30 + 20  # 30 op ids, 20 rows (10 written twice: one point each)
    assert a.fold_digests(7) == pending - 7
    assert a.fold_digests(35) == pending - 42
    assert a.fold_digests(100) == 0
    assert a.state_digest() == ref_state_digest(a) == b.state_digest()
    assert a.op_digest() == ref_op_digest(a) == b.op_digest()
    with pytest.raises(UsageError):
        a.fold_digests(-1)


def test_row_version_bytes_from_the_stored_meta_are_the_same_bytes() -> None:
    net = Net(1)
    (a,) = net.replicas
    rng = random.Random(5)
    for i in range(40):
        a.write([_mutation(rng)], net.now_ms + i)
    for table, key, row in a.tables.all_rows():
        meta = encode(row.to_plain())
        assert row_version_bytes(table, key, row, meta) == row_version_bytes(table, key, row)
        assert row_version_bytes(table, key, row) == cbor2.dumps(
            [table, list(key), row.to_plain()], canonical=True
        )


def test_points_of_and_update_equal_point_by_point() -> None:
    rng = random.Random(3)
    elements = [rng.randbytes(rng.randrange(0, 70)) for _ in range(300)]
    points = [point_of(e) for e in elements]
    assert points_of(elements) == points
    assert points_of(elements, person=b"synod-opset") == [
        point_of(e, person=b"synod-opset") for e in elements
    ]
    acc = Ecmh()
    acc.update(points[:200])
    acc.update(points[200:], removed=points[:50])
    assert acc.value == _ref_sum(points[50:])
    one = Ecmh()
    for p in points[50:]:
        one.add(p)
    assert one.value == acc.value
    with pytest.raises(ValueError):
        Ecmh().update([b"\x01" * 31])


# ----------------------------------------------------------------- the op's outer split


def _general_split(raw: bytes) -> tuple[bytes, bytes] | None:
    """The former rule: decode() then the shape check."""
    try:
        outer = decode(raw)
    except Rejected:
        return None
    if not (isinstance(outer, list) and len(outer) == 2):
        return None
    u, s = outer
    if not (isinstance(u, bytes) and isinstance(s, bytes) and len(s) == 64):
        return None
    return u, s


def _wrap(unsigned: bytes, sig: bytes) -> bytes:
    return cbor2.dumps([unsigned, sig], canonical=True)


def test_the_outer_split_accepts_exactly_what_the_general_decoder_accepts() -> None:
    rng = random.Random(11)
    sig = bytes(range(64))
    cases = [_wrap(rng.randbytes(n), sig) for n in (0, 1, 23, 24, 255, 256, 65535, 65536)]
    # non-shortest headers, wrong signature sizes, trailing and missing bytes, other shapes
    body = rng.randbytes(10)
    cases += [
        b"\x82\x58\x0a" + body + b"\x58\x40" + sig,
        b"\x82\x59\x00\x0a" + body + b"\x58\x40" + sig,
        b"\x82\x4a" + body + b"\x59\x00\x40" + sig,
        b"\x82\x4a" + body + b"\x58\x3f" + sig[:63],
        _wrap(body, sig) + b"\x00",
        _wrap(body, sig)[:-1],
        b"\x83\x4a" + body + b"\x58\x40" + sig + b"\x40",
        b"\x82\x5f\x4a" + body + b"\xff\x58\x40" + sig,  # indefinite length
        cbor2.dumps([body.hex(), sig], canonical=True),
    ]
    for _ in range(3000):
        raw = bytearray(rng.choice(cases[:4]))
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(min(len(raw), 80))
            raw[i] = rng.randrange(256)
        cases.append(bytes(raw))
    accepted = 0
    for raw in cases:
        assert _split_outer(raw) == _general_split(raw), raw[:12].hex()
        accepted += _split_outer(raw) is not None
    assert accepted >= 8


def test_a_malformed_or_forged_op_is_refused_as_before() -> None:
    net = Net(2)
    a, b = net.replicas
    op = b.write([Upsert("kv", ("k",), {"value": b"v"})], net.now_ms)
    u, s = _split_outer(op.raw) or (b"", b"")
    assert a.receive_op(_wrap(u, s[:63]), net.now_ms) == Reason.MALFORMED
    assert a.receive_op(b"\x82\x58\x03abc\x58\x40" + s, net.now_ms) == Reason.MALFORMED
    forged = bytearray(s)
    forged[0] ^= 1
    assert a.receive_op(_wrap(u, bytes(forged)), net.now_ms) == Reason.BAD_SIGNATURE
    assert a.counters["applied"] == 0
    assert a.receive_op(op.raw, net.now_ms) is None
    assert a.counters["applied"] == 1


# ----------------------------------------------------------------- plainness, as before


def _former_check_plain(value: Any, depth: int = 0) -> None:
    if depth > 32:
        raise Rejected(Reason.MALFORMED, "nested too deeply")
    if isinstance(value, list):
        for item in value:
            _former_check_plain(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise Rejected(Reason.MALFORMED, "map key not text or int")
            _former_check_plain(item, depth + 1)
    elif not isinstance(value, int | str | bytes | float | bool | type(None)):
        raise Rejected(Reason.MALFORMED, f"unsupported type {type(value).__name__}")


class _Small(enum.IntEnum):
    ONE = 1


def _nest(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def _verdict(check: Any, value: Any) -> str | None:
    try:
        check(value)
    except Rejected as exc:
        return str(exc)
    return None


@pytest.mark.parametrize(
    "value",
    [
        _nest(32, 1),
        _nest(33, 1),
        _nest(32, []),
        _nest(33, []),
        _nest(31, {"a": 1}),
        _nest(32, {"a": 1}),
        _nest(32, {}),
        [1, "x", b"y", 1.5, None, True, {"k": [1, {2: b""}]}],
        {True: 1},
        {1.5: 1},
        {"a": {(1,): 2}},
        [_Small.ONE, {"e": _Small.ONE}],
        [set()],
        [(1, 2)],
        {"a": [1, [2, [3, cbor2.CBORTag(1, 2)]]]},
    ],
)
def test_check_plain_gives_the_former_verdict(value: Any) -> None:
    assert _verdict(check_plain, value) == _verdict(_former_check_plain, value)


# ----------------------------------------------------------------- signatures, as before


def test_open_signed_gives_verify_signatures_verdict() -> None:
    from controller.replication import Identity
    from controller.replication.identity import open_signed, verify_signature

    rng = random.Random(9)
    me, other = Identity.from_seed(rng.randbytes(32)), Identity.from_seed(rng.randbytes(32))
    for size in (0, 1, 290, 5000):
        message = rng.randbytes(size)
        sig = me.sign(message)
        bad = bytes([sig[0] ^ 1]) + sig[1:]
        cases = [
            (me.public_key, message, sig),
            (other.public_key, message, sig),
            (me.public_key, message + b"x", sig),
            (me.public_key, message, bad),
            (me.public_key, message, bytes(64)),
        ]
        verdicts = [open_signed(*c) for c in cases]
        assert verdicts == [verify_signature(*c) for c in cases]
        assert verdicts == [True, False, False, False, False]
