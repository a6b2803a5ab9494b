"""X.509 for mTLS: a cluster CA, node certificates bound to node keys, and their checks.

A node certificate has common name = node id, DNS names "<node id>.node.synod" (peers pin
a node by it), "node.synod" and "localhost", IP 127.0.0.1, and an extension holding the
node's Ed25519 signature over the certificate's public key: a CA cannot hand a member's
identity to a key the member never signed for.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

from controller.replication import Identity, node_id_of
from controller.replication.identity import verify_signature

from .errors import NodeBaseError

__all__ = [
    "BINDING_OID",
    "CertError",
    "KeyPair",
    "check_node_cert",
    "issue_node_cert",
    "make_ca",
    "node_dns_name",
]

BINDING_OID = ObjectIdentifier("1.3.6.1.4.1.59999.7.1")  # synod node-key binding
_BINDING_PREFIX = b"synod-tls-binding\x00"
VALID_DAYS = 3650


class CertError(NodeBaseError):
    """A certificate that does not identify a member; the message says why."""


@dataclass(frozen=True)
class KeyPair:
    key_pem: bytes
    cert_pem: bytes


def node_dns_name(node_id: str) -> str:
    return f"{node_id}.node.synod"


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017 (3.11 alias exists)


def make_ca(name: str) -> KeyPair:
    """A self-signed CA for one cluster."""
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"synod CA {name}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return KeyPair(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def _spki(cert_or_key) -> bytes:
    return cert_or_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def issue_node_cert(
    ca: KeyPair,
    identity: Identity,
    extra_hosts: tuple[str, ...] = (),
    *,
    valid_days: float = VALID_DAYS,
    not_before: datetime.datetime | None = None,
) -> KeyPair:
    """A TLS key and certificate for identity, signed by ca and bound to the node key
    (valid from not_before, default 5 minutes ago, for valid_days)."""
    ca_key = serialization.load_pem_private_key(ca.key_pem, None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    key = _new_key()
    start = not_before or _now() - datetime.timedelta(minutes=5)
    node_id = identity.node_id
    binding = identity.sign(_BINDING_PREFIX + _spki(key))
    # DER OCTET STRING holding pubkey (32) + signature (64), so strict parsers accept it.
    payload = identity.public_key + binding
    der = bytes([0x04, len(payload)]) + payload
    names: list[x509.GeneralName] = [
        x509.DNSName(node_dns_name(node_id)),
        x509.DNSName("node.synod"),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    for host in extra_hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=valid_days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.UnrecognizedExtension(BINDING_OID, der), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return KeyPair(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def check_node_cert(cert_pem: bytes, members: dict[str, bytes]) -> str:
    """The node id a (chain-verified) peer certificate proves, or CertError.

    members maps node id -> Ed25519 public key. The TLS layer has already checked the
    chain to the cluster CA; here: the common name is a member and the binding holds.
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise CertError(f"unreadable certificate: {exc}") from None
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    node_id = str(cns[0].value) if cns else ""
    public_key = members.get(node_id)
    if public_key is None:
        raise CertError(f"certificate names {node_id!r}, not a member of this cluster")
    try:
        ext = cert.extensions.get_extension_for_oid(BINDING_OID).value
    except x509.ExtensionNotFound:
        raise CertError(f"certificate of {node_id} has no node-key binding") from None
    der = ext.value  # type: ignore[attr-defined]
    payload = der[2:]
    if len(der) != 98 or der[:2] != b"\x04\x60" or payload[:32] != public_key:
        raise CertError(f"certificate of {node_id} is bound to another key")
    if node_id_of(payload[:32]) != node_id or not verify_signature(
        public_key, _BINDING_PREFIX + _spki(cert), payload[32:]
    ):
        raise CertError(f"certificate of {node_id}: node-key binding signature is invalid")
    return node_id
