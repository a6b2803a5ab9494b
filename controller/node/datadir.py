"""A node's data directory: key, TLS material, genesis, store; and `synod init`.

Integrity at rest (decision 0060): every file is written 0600 and the directories are
0700 (looser modes left by older versions are tightened at start), and `history.cbor`
remembers, per lineage, that this directory held a store and how much it held, so a store
that went missing or empty is refused at start instead of quietly starting a new node.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from controller.replication import (
    Genesis,
    Identity,
    Replica,
    Upsert,
    decode,
    decode_genesis,
    encode,
    make_genesis,
)
from controller.replication.errors import Rejected
from controller.replication.schema import INTERNAL

from . import pki
from .errors import NodeBaseError
from .tokens import Role, new_token, token_key

__all__ = [
    "DataDir",
    "DataDirError",
    "StoreHistory",
    "init_data_dirs",
    "make_dirs",
    "write_atomic",
]

log = logging.getLogger("synod.node")

FILE_MODE = 0o600  # every file of a data directory: keys, tokens, store, certificates
DIR_MODE = 0o700  # the data directory and lineages/


class DataDirError(NodeBaseError):
    """A data directory that is missing, incomplete or damaged; the message names the file."""


@dataclass(frozen=True)
class StoreHistory:
    """What history.cbor remembers of this node's store of one lineage, as of the last
    start (or `synod init`): that it existed, how many ops it held, the highest seq of
    this node's own chain in it, and when that was recorded."""

    ops: int
    own_seq: int
    at_ms: int

    def to_plain(self) -> dict:
        return {"ops": self.ops, "own_seq": self.own_seq, "at_ms": self.at_ms}


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
    client_config = property(lambda self: self.path / "client.toml")  # for the synod CLI
    join_file = property(lambda self: self.path / "join.cbor")  # invitation bundle (synod join)
    history_file = property(lambda self: self.path / "history.cbor")  # what the store held

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

    # ------------------------------------------------------------ integrity at rest
    def tighten_modes(self) -> list[Path]:
        """Make the directory tree 0700 and its files 0600 where group or others had any
        access (data directories made before decision 0060). Returns what was changed."""
        changed = []
        for root, dirs, files in os.walk(self.path):
            for name in [".", *dirs, *files]:
                p = Path(root) / name if name != "." else Path(root)
                try:
                    st = p.lstat()
                except FileNotFoundError:
                    continue
                if stat.S_ISLNK(st.st_mode) or not st.st_mode & 0o077:
                    continue
                os.chmod(p, stat.S_IMODE(st.st_mode) & 0o700)
                changed.append(p)
        if changed:
            log.warning("%s: took group and other access away from %d file(s) and "
                        "directories (data files are 0600, directories 0700)",
                        self.path, len(changed))
        return changed

    def history(self) -> dict[bytes, StoreHistory]:
        """What history.cbor remembers, by cluster id (empty when there is no file)."""
        if not self.history_file.exists():
            return {}
        try:
            plain = decode(self._read(self.history_file))
            return {bytes.fromhex(cid): StoreHistory(int(h["ops"]), int(h["own_seq"]),
                                                     int(h["at_ms"]))
                    for cid, h in plain["lineages"].items()}
        except DataDirError:
            raise
        except Exception as exc:  # noqa: BLE001 - any damage: named, and the node stops
            raise DataDirError(
                f"{self.history_file}: unreadable ({exc}); if the store is intact, delete "
                "the file and start again (the node writes it anew)"
            ) from None

    def note_history(self, cluster_id: bytes, ops: int, own_seq: int) -> None:
        """Remember that this directory holds a store of cluster_id with ops ops and this
        node's chain up to own_seq (written atomically; at start and by `synod init`)."""
        held = self.history()
        held[cluster_id] = StoreHistory(ops, own_seq, int(time.time() * 1000))
        write_atomic(self.history_file, encode(
            {"lineages": {cid.hex(): h.to_plain() for cid, h in sorted(held.items())}}))

    def check_store(self, cluster_id: bytes, ops: int | None = None, own_seq: int = 0) -> None:
        """Refuse (DataDirError) a store that lost the history history.cbor remembers for
        cluster_id: ops None looks at the file before it is opened (missing or 0 bytes);
        else ops and own_seq are what the opened store holds (no ops while the history
        says some is refused; an own chain shorter than remembered is logged: an older
        copy, or `synod node repair`). `synod node run --start-empty` skips this check."""
        h = self.history().get(cluster_id)
        if h is None:
            return
        f = self.store_file
        when = datetime.fromtimestamp(h.at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if ops is None:
            size = f.stat().st_size if f.exists() else None
            if size:
                return
            what = "is missing" if size is None else "is empty (0 bytes)"
        elif ops == 0 and h.ops > 0:
            what = "holds no ops"
        else:
            if own_seq < h.own_seq:
                log.warning("%s holds this node's own chain up to seq %d, but it reached seq "
                            "%d at %s (%s): an older copy of the store? Seqs it signs again "
                            "may be held by peers already (equivocation)",
                            f, own_seq, h.own_seq, when, self.history_file.name)
            return
        raise DataDirError(
            f"{f} {what}, but {self.history_file} says this node's store of cluster "
            f"{cluster_id.hex()[:16]} held {h.ops} ops (its own chain up to seq {h.own_seq}) "
            f"at {when}. Starting empty would serve no data and could make this node sign "
            "seqs it signed before (its peers would take it for an equivocator). Restore "
            f"{f.name} (with its -wal file) from a backup, or, to start empty on purpose and "
            "catch up from the peers, run `synod node run --start-empty` once"
        )


def write_atomic(path: Path, data: bytes) -> None:
    """Write a data-dir file (0600) so a crash leaves the old or the new content, never a mix."""
    make_dirs(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_dirs(path: Path) -> None:
    """`mkdir -p` where every directory it makes is 0700 (Path.mkdir gives parents the
    default mode)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for p in reversed(missing):
        p.mkdir(mode=DIR_MODE, exist_ok=True)


def make_data_dir(path: Path) -> None:
    """Create (or take over) a data directory: 0700 whoever made it."""
    make_dirs(path)
    os.chmod(path, DIR_MODE)


def _prepare(path: Path, ca: pki.KeyPair, hosts: tuple[str, ...]) -> Identity:
    d = DataDir(path)
    make_data_dir(path)
    if d.node_key.exists():
        raise DataDirError(f"{d.node_key}: exists already; refusing to overwrite a node key")
    identity = Identity.generate()
    _write(d.node_key, identity.seed.hex().encode() + b"\n")
    node = pki.issue_node_cert(ca, identity, hosts)
    _write(d.tls_key, node.key_pem)
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
            "operator": ["master", "placement", "alloc", "service"],
            "node": ["master", "placement", "alloc", "service", "reunion", "membership"],
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
        make_data_dir(paths[0])
        if DataDir(paths[0]).ca_key.exists():
            raise DataDirError(f"{DataDir(paths[0]).ca_key}: exists already")
        _write(DataDir(paths[0]).ca_key, ca.key_pem)
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
    _write(DataDir(paths[0]).admin_token, token.encode() + b"\n")
    client_config = DataDir(paths[0]).client_config
    _write(client_config, _CLIENT_CONFIG.format(path=client_config.resolve()).encode())
    summary.update(
        cluster_id=genesis.cluster_id.hex(),
        cluster=cluster_name,
        admin_token_file=str(DataDir(paths[0]).admin_token),
        client_config=str(client_config),
    )
    return summary


# The synod CLI's settings for the founder's directory (controller/node/clientconf.py).
_CLIENT_CONFIG = """\
# Settings of the synod command line for this cluster (docs/operations.md). Use them with
#   export SYNOD_CONFIG={path}
# or copy this file to ~/.config/synod/client.toml. Relative paths are read from this
# file's directory; flags and SYNOD_* variables win over these.
server = "127.0.0.1:7000"  # a node's default api.listen: change it to your node's --api
ca = "ca.crt"
token = "@admin.token"
"""


def _seed_store(d: DataDir, identity: Identity, genesis: Genesis, mutations: list) -> None:
    import random

    from controller.store import SqliteStore, open_replica, persist

    store = SqliteStore(d.store_file)
    try:
        replica: Replica = open_replica(store, identity, random.Random(), genesis)
        replica.write(mutations, int(time.time() * 1000))
        persist(store, replica)
        d.note_history(genesis.cluster_id, replica.op_count(),
                       replica.version_vector().get(identity.node_id, 0))
    finally:
        store.close()
