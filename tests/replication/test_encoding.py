"""Canonical CBOR: round trips, byte stability, strictness, and a decoder fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.replication import (
    DEFAULT_SCHEMA,
    Identity,
    Reason,
    Rejected,
    decode,
    decode_message,
    decode_op,
    encode,
)
from controller.replication.op import RowMutation, RowsBody, sign_op

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)


@given(plain)
def test_decode_inverts_encode(value: object) -> None:
    assert decode(encode(value)) == value


def test_encoding_is_byte_stable() -> None:
    # Fixed bytes: a change here changes every op id and signature on the wire.
    value = {"b": [1, -2, b"\x00"], "a": "x", "c": None, "d": 1.5}
    assert encode(value).hex() == "a461616178616283012141006163f66164f93e00"


@pytest.mark.parametrize(
    "data",
    [
        bytes.fromhex("1817"),  # 23 in a 2-byte form: not shortest
        bytes.fromhex("a2616202616101"),  # map keys out of order
        bytes.fromhex("9f01ff"),  # indefinite-length array
        bytes.fromhex("c11a00000000"),  # tag 1 (date)
        bytes.fromhex("0101"),  # trailing bytes
        b"",
        bytes.fromhex("5a ffffffff"),  # a 4 GiB byte string announced, 0 bytes given
    ],
)
def test_non_canonical_or_broken_input_is_rejected(data: bytes) -> None:
    with pytest.raises(Rejected) as err:
        decode(data)
    assert err.value.reason == Reason.MALFORMED


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_fuzz_decoders_only_ever_reject(data: bytes) -> None:
    for fn in (
        decode,
        lambda d: decode_op(d, DEFAULT_SCHEMA, 16, 100),
        lambda d: decode_message(d, 1 << 20),
    ):
        try:
            fn(data)
        except Rejected:
            pass


def _op() -> bytes:
    ident = Identity.from_seed(b"\x07" * 32)
    body = RowsBody((RowMutation("kv", ("k",), 1, {"value": b"v"}),))
    return sign_op(ident, b"\x00" * 32, 1, 5 << 16, (), body).raw


@settings(max_examples=300)
@given(st.data())
def test_fuzz_mutated_ops_are_rejected_or_identical(data: st.DataObject) -> None:
    raw = bytearray(_op())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        op = decode_op(bytes(raw), DEFAULT_SCHEMA, 16, 100)
    except Rejected:
        return
    assert op.raw == bytes(raw)  # whatever decodes is exactly its own canonical bytes
