"""A node's data directory: key, TLS material, genesis, store; and `synod init`."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from controller.replication import (
    Genesis,
    Identity,
    Replica,
    Upsert,
    decode_genesis,
    make_genesis,
)
from controller.replication.errors import Rejected
from controller.replication.schema import INTERNAL

from . import pki
from .tokens import Role, new_token, token_key

__all__ = ["DataDir", "DataDirError", "init_data_dirs"]


class DataDirError(Exception):
    """A data directory that is missing, incomplete or damaged; the message names the file."""


@dataclass(frozen=True)
class DataDir:
    path: Path

    node_key = property(lambda self: self.path / "node.key")
    ca_cert = property(lambda self: self.path / "ca.crt")
    ca_key = property(lambda self: self.path / "ca.key")
    tls_cert = property(lambda self: self.path / "node.crt")
    tls_key = property(lambda self: self.path / "node-tls.key")
    genesis_file = property(lambda self: self.path / "genesis.cbor")
    store_file = property(lambda self: self.path / "store.db")
    admin_token = property(lambda self: self.path / "admin.token")
    join_file = property(lambda self: self.path / "join.cbor")  # invitation bundle (synod join)

    def _read(self, p: Path) -> bytes:
        try:
            return p.read_bytes()
        except FileNotFoundError:
            raise DataDirError(f"{p}: missing (run `synod init --data {self.path}`)") from None
        except OSError as exc:
            raise DataDirError(f"{p}: cannot read: {exc.strerror}") from None

    def identity(self) -> Identity:
        raw = self._read(self.node_key).strip()
        try:
            return Identity.from_seed(bytes.fromhex(raw.decode()))
        except (ValueError, UnicodeDecodeError):
            raise DataDirError(f"{self.node_key}: not a hex Ed25519 seed") from None

    def genesis(self) -> Genesis | None:
        if not self.genesis_file.exists():
            return None
        try:
            return decode_genesis(self._read(self.genesis_file))
        except Rejected as exc:
            raise DataDirError(f"{self.genesis_file}: invalid genesis: {exc}") from None

    def join_bundle(self) -> bytes | None:
        """The invitation bundle `synod join` stored, or None when the node did not join."""
        if not self.join_file.exists():
            return None
        return self._read(self.join_file)

    def write_join(self, genesis_raw: bytes, bundle: bytes) -> None:
        """Store what `synod join` received: the genesis and the invitation bundle."""
        _write(self.genesis_file, genesis_raw)
        _write(self.join_file, bundle)

    def tls(self) -> tuple[bytes, bytes, bytes]:
        """(CA certificate, node TLS key, node certificate) PEM."""
        return self._read(self.ca_cert), self._read(self.tls_key), self._read(self.tls_cert)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _prepare(path: Path, ca: pki.KeyPair, hosts: tuple[str, ...]) -> Identity:
    d = DataDir(path)
    path.mkdir(parents=True, exist_ok=True)
    if d.node_key.exists():
        raise DataDirError(f"{d.node_key}: exists already; refusing to overwrite a node key")
    identity = Identity.generate()
    _write(d.node_key, identity.seed.hex().encode() + b"\n", private=True)
    node = pki.issue_node_cert(ca, identity, hosts)
    _write(d.tls_key, node.key_pem, private=True)
    _write(d.tls_cert, node.cert_pem)
    _write(d.ca_cert, ca.cert_pem)
    return identity


# The access policy (version 0) of a cluster made by `synod init`: the agreement layer's
# defaults, plus `membership` for nodes, so a member can propose a join for an admin token
# (`synod join`; the API checks the token's role, the voters the node's). Decision 0033.
GENESIS_POLICY = {
    "access": {
        "slots": {
            "admin": ["*"],
            "operator": ["master", "placement", "alloc"],
            "node": ["master", "placement", "alloc", "reunion", "membership"],
            "viewer": [],
        }
    }
}


def init_data_dirs(
    paths: list[Path],
    cluster_name: str | None,
    ca: pki.KeyPair | None = None,
    hosts: tuple[str, ...] = (),
) -> dict[str, object]:
    """Create node data dirs: keys and certificates from one CA (given, or new in the first
    dir), and with cluster_name a genesis naming all of them as founding members, plus an
    admin token whose hash is the first op of the founder's log. Returns a summary."""
    if not paths:
        raise DataDirError("give at least one --data directory")
    if ca is None:
        ca = pki.make_ca(cluster_name or paths[0].name)
        paths[0].mkdir(parents=True, exist_ok=True)
        if DataDir(paths[0]).ca_key.exists():
            raise DataDirError(f"{DataDir(paths[0]).ca_key}: exists already")
        _write(DataDir(paths[0]).ca_key, ca.key_pem, private=True)
    identities = [_prepare(p, ca, hosts) for p in paths]
    summary: dict[str, object] = {
        "nodes": {str(p): i.node_id for p, i in zip(paths, identities, strict=True)}
    }
    if cluster_name is None:
        return summary
    founder = identities[0]
    now_ms = int(time.time() * 1000)
    genesis = make_genesis(
        founder, cluster_name, [i.public_key for i in identities], now_ms, GENESIS_POLICY
    )
    for p in paths:
        _write(DataDir(p).genesis_file, genesis.raw)
    token, record = new_token(Role.ADMIN, "created by synod init", now_ms)
    _seed_store(
        DataDir(paths[0]),
        founder,
        genesis,
        [Upsert(INTERNAL, (token_key(record.id),), {"value": record.to_row()})],
    )
    _write(DataDir(paths[0]).admin_token, token.encode() + b"\n", private=True)
    summary.update(
        cluster_id=genesis.cluster_id.hex(),
        cluster=cluster_name,
        admin_token_file=str(DataDir(paths[0]).admin_token),
    )
    return summary


def _seed_store(d: DataDir, identity: Identity, genesis: Genesis, mutations: list) -> None:
    import random

    from controller.store import SqliteStore, open_replica, persist

    store = SqliteStore(d.store_file)
    try:
        replica: Replica = open_replica(store, identity, random.Random(), genesis)
        replica.write(mutations, int(time.time() * 1000))
        persist(store, replica)
    finally:
        store.close()
