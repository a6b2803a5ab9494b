"""Joining a running cluster: the signed join request, the join bundle, `synod join`.

An admin asks any member (SlotService.Propose on slot `membership/join`, admin token) to
admit a key. With the agreement layer on (and a policy that lets nodes propose
`membership`), the member proposes `membership/<n+1>` = the voters plus the key, waits for
the decision, records the new node's peer address in kv (`peer/<node id>`) and answers the
bundle (genesis, the join's id, peer addresses); every node accepts the new node's ops once
that decision's certificate is in their causal past. Otherwise the member signs a
`member.invite` op (controller.replication.INVITE, decision 0030) instead. The request, the
answer and `synod join` are the same either way.

Schema versions (decision 0037): a joiner whose code reads less than the schema version the
cluster decided would refuse ops writing the newer tables. The request says what the joiner
reads (signed with the key; a request without it, from older code, reads 1) and the member
refuses to admit it; the joiner itself checks the version the member reports (GetStatus,
then the bundle) and refuses before it writes the genesis, so the node cannot start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.replication import (
    Genesis,
    Identity,
    decode,
    decode_genesis,
    encode,
    node_id_of,
)
from controller.replication.address import address_problem
from controller.replication.errors import Rejected
from controller.replication.identity import verify_signature
from controller.replication.schema import SCHEMA_VERSION

from .errors import NodeBaseError

__all__ = [
    "JOIN_SLOT",
    "READS_MAX",
    "JoinBundle",
    "JoinError",
    "JoinRequest",
    "check_join_request",
    "check_reads",
    "join_cluster",
    "make_join_request",
    "read_bundle",
]

JOIN_SLOT = "membership/join"
_PROOF_PREFIX = b"synod-join\x00"
_PROOF_READS_PREFIX = b"synod-join-reads\x00"  # a request that says the schema it reads
READS_MAX = 65_535  # schema versions a join request may name
_PEERS_MAX = 64


class JoinError(NodeBaseError):
    """A join that cannot go ahead; the message says why (whose fault, what to do)."""


@dataclass(frozen=True)
class JoinRequest:
    key: bytes  # the joining node's Ed25519 public key
    address: str  # its peer address, as the members will dial it
    reads: int = 1  # the newest schema version its code reads (not said: 1, older code)

    @property
    def node_id(self) -> str:
        return node_id_of(self.key)


def _proof_message(cluster_id: bytes, key: bytes, address: str, reads: int | None) -> bytes:
    if reads is None:  # the request of older code, which does not say what it reads
        return _PROOF_PREFIX + cluster_id + key + address.encode()
    return _PROOF_READS_PREFIX + cluster_id + key + reads.to_bytes(4, "big") + address.encode()


def make_join_request(
    identity: Identity, cluster_id: bytes, address: str, reads: int | None = None
) -> bytes:
    """The Propose value: the key, the address, the schema version the joiner reads (left
    out when None: a member of older code accepts only the three fields), and proof that
    the joiner holds the key (bound to the cluster id, so it cannot be replayed into
    another cluster, and to what it says it reads)."""
    assert reads is None or 1 <= reads <= READS_MAX, reads
    proof = identity.sign(_proof_message(cluster_id, identity.public_key, address, reads))
    value: dict[str, Any] = {"key": identity.public_key, "address": address, "proof": proof}
    if reads is not None:
        value["reads"] = reads
    return encode(value)


def check_join_request(raw: bytes, cluster_id: bytes) -> JoinRequest:
    """Decode and verify a join request; JoinError says what is wrong with it."""
    try:
        value = decode(raw)
    except Rejected as exc:
        raise JoinError(f"join request is not canonical CBOR: {exc}") from None
    base = {"key", "address", "proof"}
    ok = (
        isinstance(value, dict)
        and set(value) in (base, base | {"reads"})
        and isinstance(value["key"], bytes)
        and len(value["key"]) == 32
        and isinstance(value["address"], str)
        and isinstance(value["proof"], bytes)
        and (type(value.get("reads", 1)) is int and 1 <= value.get("reads", 1) <= READS_MAX)
    )
    if not ok:
        raise JoinError(
            "join request is {key: 32 bytes, address: text, proof: bytes"
            f"[, reads: 1..{READS_MAX}]}}"
        )
    key, address, reads = value["key"], value["address"], value.get("reads")
    _check_address(address)
    message = _proof_message(cluster_id, key, address, reads)
    if not verify_signature(key, message, value["proof"]):
        raise JoinError("join request proof is not the key's signature for this cluster")
    return JoinRequest(key, address, 1 if reads is None else reads)


def check_reads(reads: int, decided: int) -> None:
    """JoinError unless a node reading schema versions up to `reads` may run in a cluster
    that decided `decided` (decision 0037): it would refuse the newer tables' ops."""
    if reads < decided:
        raise JoinError(
            f"this node reads schema up to {reads}; the cluster decided schema/{decided}: "
            "upgrade Synod on this node first"
        )


def _check_address(address: str) -> None:
    problem = address_problem(address)  # one that members dial: not port 0
    if problem is not None:
        raise JoinError(f"peer address {problem}")


@dataclass(frozen=True)
class JoinBundle:
    """What the inviting member answers: enough for the new node to start and sync."""

    genesis: Genesis
    # the invitation op, or the hash of the decided membership that admitted the key
    # (b"" when the key is a founding member)
    invite_id: bytes
    inviter: str  # node id of the member that signed the invitation
    peers: tuple[str, ...]  # peer addresses of members, as the inviter knows them
    # The schema version decided when the member answered (0: older code did not say)
    schema: int = 0

    def to_bytes(self) -> bytes:
        return encode(
            {
                "genesis": self.genesis.raw,
                "invite": self.invite_id,
                "inviter": self.inviter,
                "peers": list(self.peers),
                "schema": self.schema,
            }
        )


def read_bundle(raw: bytes) -> JoinBundle:
    """Decode a bundle (from the wire or DIR/join.cbor); JoinError if it is not one."""
    try:
        value: Any = decode(raw)
        genesis = decode_genesis(value["genesis"])
        peers = value["peers"]
        schema = value.get("schema", 0)  # older members do not say
        ok = (
            isinstance(value["invite"], bytes)
            and isinstance(value["inviter"], str)
            and isinstance(peers, list)
            and len(peers) <= _PEERS_MAX
            and all(isinstance(p, str) for p in peers)
            and type(schema) is int
            and 0 <= schema <= READS_MAX
        )
    except (Rejected, KeyError, TypeError) as exc:
        raise JoinError(f"not an invitation bundle: {exc}") from None
    if not ok:
        raise JoinError("not an invitation bundle")
    for p in peers:
        _check_address(p)
    return JoinBundle(genesis, value["invite"], value["inviter"], tuple(peers), schema)


def join_cluster(
    data: Path,
    via: str,
    token: str,
    advertise: str,
    *,
    insecure: bool = False,
    timeout_s: float = 10.0,
    reads: int = SCHEMA_VERSION,
) -> dict[str, Any]:
    """Ask the member at `via` (its API address) to admit the node in `data`; write the
    genesis and the bundle into `data`. Idempotent: joining again re-uses the invitation.

    `reads` is the newest schema version this node's code reads (a test lowers it to play
    older code). JoinError, before anything is asked or written, when the cluster decided
    a newer one; the member refuses such a join too (decision 0037)."""
    from synod.v1 import northbound_pb2 as nb

    from .client import Client, ClientError
    from .datadir import DataDir

    d = DataDir(data)
    identity = d.identity()
    _check_address(advertise)
    held = d.genesis()
    try:
        with Client(via, token, str(d.ca_cert), insecure, timeout_s) as client:
            status = client.call(client.cluster.GetStatus, nb.GetStatusRequest())
            cluster_id = bytes.fromhex(status.cluster_id)
            if held is not None and held.cluster_id != cluster_id:
                raise JoinError(f"{d.genesis_file}: this node belongs to another cluster")
            said = status.schema_decided  # 0: a member of older code, which does not say
            if said:
                check_reads(reads, said)
            request = make_join_request(identity, cluster_id, advertise, reads if said else None)
            slot = client.call(
                client.slots.Propose, nb.ProposeRequest(slot=JOIN_SLOT, value=request)
            )
    except ClientError as exc:
        raise JoinError(f"{via}: {exc}") from None
    if not slot.decided:
        raise JoinError(f"{via}: the invitation was not made")
    bundle = read_bundle(slot.value)
    if bundle.genesis.cluster_id != cluster_id:
        raise JoinError(f"{via}: answered with another cluster's genesis")
    check_reads(reads, bundle.schema)  # decided while the join was under way
    d.write_join(bundle.genesis.raw, bundle.to_bytes())
    return {
        "node_id": identity.node_id,
        "cluster": bundle.genesis.name,
        "cluster_id": cluster_id.hex(),
        "invite": bundle.invite_id.hex(),
        "inviter": bundle.inviter,
        "peers": list(bundle.peers),
    }
