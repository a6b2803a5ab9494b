"""Node identities (Ed25519), node ids derived from public keys, and the signed genesis record."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.signing

try:  # PyNaCl's cffi module: libsodium's crypto_sign_open without the wrapper's checks
    from nacl._sodium import ffi as _ffi
    from nacl._sodium import lib as _lib
except ImportError:  # pragma: no cover - another PyNaCl layout: the public binding does it
    _ffi = _lib = None

from .encoding import decode, encode
from .errors import Reason, Rejected, UsageError

__all__ = [
    "NodeId",
    "Identity",
    "node_id_of",
    "verify_signature",
    "Genesis",
    "make_genesis",
    "decode_genesis",
    "hash32",
    "open_signed",
]

NodeId = str  # 32 lowercase hex characters: the first 16 bytes of BLAKE2b(public key)


def hash32(data: bytes, person: bytes = b"") -> bytes:
    """BLAKE2b-256 with an optional personalisation (domain separation)."""
    return hashlib.blake2b(data, digest_size=32, person=person).digest()


def node_id_of(public_key: bytes) -> NodeId:
    """The node id for an Ed25519 public key: short, stable, and bound to the key."""
    if len(public_key) != 32:
        raise UsageError("an Ed25519 public key is 32 bytes")
    return hashlib.blake2b(public_key, digest_size=16, person=b"synod-node-id").hexdigest()


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when signature is a valid Ed25519 signature of message under public_key."""
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError, TypeError):
        return False
    return True


def open_signed(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """verify_signature for the hot path (a 32-byte key and a 64-byte signature, as the
    callers have checked): the same libsodium check, crypto_sign_open on signature +
    message, called through cffi directly.

    PyNaCl 1.6 exposes no crypto_sign_verify_detached and libsodium has no batch
    verification: crypto_sign_open is verify_detached plus a copy of the message, so each
    signature costs one full Ed25519 verification whichever way it is called."""
    if _lib is None:  # pragma: no cover
        try:
            nacl.bindings.crypto_sign_open(signature + message, public_key)
        except nacl.exceptions.BadSignatureError:
            return False
        return True
    assert len(public_key) == 32 and len(signature) == 64
    signed = signature + message
    out = _ffi.new("unsigned char[]", len(signed))
    return _lib.crypto_sign_open(out, _ffi.NULL, signed, len(signed), public_key) == 0


@dataclass(frozen=True)
class Identity:
    """A node's signing key. Never serialised by this package: the caller stores the seed."""

    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise UsageError("an Ed25519 seed is 32 bytes")
        object.__setattr__(self, "_key", nacl.signing.SigningKey(self.seed))

    @classmethod
    def generate(cls) -> Identity:
        """A fresh identity from libsodium's CSPRNG (use from_seed for reproducible tests)."""
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        return cls(seed)

    @property
    def public_key(self) -> bytes:
        return bytes(self._key.verify_key)  # type: ignore[attr-defined]

    @property
    def node_id(self) -> NodeId:
        return node_id_of(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message).signature  # type: ignore[attr-defined]


_GENESIS_PREFIX = b"synod-genesis\x00"


@dataclass(frozen=True)
class Genesis:
    """The signed record a cluster is born from; cluster_id is the hash of its bytes."""

    name: str
    created_ms: int
    members: tuple[bytes, ...]  # founding members' public keys, sorted
    policy: Any  # plain CBOR value (maps, lists, scalars): the initial access policy
    founder: bytes  # public key of the signer, one of members
    signature: bytes
    raw: bytes  # the canonical bytes, as signed and hashed

    @property
    def cluster_id(self) -> bytes:
        return hash32(self.raw, person=b"synod-cluster")

    @property
    def member_ids(self) -> dict[NodeId, bytes]:
        return {node_id_of(pk): pk for pk in self.members}


def make_genesis(
    founder: Identity, name: str, members: list[bytes], created_ms: int, policy: Any = None
) -> Genesis:
    """Create and sign a genesis record. members are public keys; the founder must be one."""
    keys = tuple(sorted(set(members)))
    if founder.public_key not in keys:
        raise UsageError("the founder must be a member")
    unsigned = encode([name, created_ms, list(keys), policy, founder.public_key])
    signature = founder.sign(_GENESIS_PREFIX + unsigned)
    return decode_genesis(encode([unsigned, signature]))


def decode_genesis(raw: bytes) -> Genesis:
    """Decode and verify a genesis record (signature by its founder, founder a member)."""
    outer = decode(raw)
    if not (
        isinstance(outer, list) and len(outer) == 2 and all(isinstance(x, bytes) for x in outer)
    ):
        raise Rejected(Reason.MALFORMED, "genesis is [unsigned, signature]")
    unsigned, signature = outer
    fields = decode(unsigned)
    if not (isinstance(fields, list) and len(fields) == 5):
        raise Rejected(Reason.MALFORMED, "genesis has 5 fields")
    name, created_ms, keys, policy, founder = fields
    ok = (
        isinstance(name, str)
        and isinstance(created_ms, int)
        and isinstance(keys, list)
        and all(isinstance(k, bytes) and len(k) == 32 for k in keys)
        and keys == sorted(set(keys))
        and isinstance(founder, bytes)
        and founder in keys
    )
    if not ok:
        raise Rejected(Reason.MALFORMED, "genesis fields")
    if not verify_signature(founder, _GENESIS_PREFIX + unsigned, signature):
        raise Rejected(Reason.BAD_SIGNATURE, "genesis")
    return Genesis(name, created_ms, tuple(keys), policy, founder, signature, bytes(raw))
