"""Version vectors sent as their changes since the last one a peer holds (decision 0101).

An idle anti-entropy exchange carried both sides' whole version vectors, one entry per
author: a hub linked to N sites sent and received O(N) bytes N times a round, O(N^2) in
all. To a peer that said in its hello that it takes them, a node sends only the entries
that changed since the last vector it sent that peer, naming that vector by its hash, and
the hash of the new whole one; the peer keeps the last vector it had from each peer and
rebuilds the whole. Idle, a vector costs two hashes and no entries.

A receiver that does not hold the named base (a message lost or overtaken, a restart)
cannot rebuild the vector. It asks for the whole one (`resync` on its next message to that
peer) and meanwhile works from the older vector it does hold, if any: that one is below
the true vector, so at worst it sends ops the peer already has, and it never reports the
peer as holding more than it said (Replica.peer_vectors, which compaction trusts, only
takes exact vectors).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from .identity import NodeId

__all__ = ["VECTOR_HASH_BYTES", "vector_hash", "vector_delta", "VectorDeltas"]

VECTOR_HASH_BYTES = 16


def vector_hash(vector: Mapping[NodeId, int]) -> bytes:
    """A vector's identity, independent of the order of its entries."""
    parts = []
    for author in sorted(vector):
        name = author.encode()
        parts.append(len(name).to_bytes(2, "big") + name + vector[author].to_bytes(8, "big"))
    return hashlib.blake2b(b"".join(parts), digest_size=VECTOR_HASH_BYTES).digest()


def vector_delta(base: Mapping[NodeId, int], new: Mapping[NodeId, int]) -> dict[NodeId, int]:
    """The entries of new that differ from base; an author base has and new lacks is 0
    (a whole vector never holds a 0: Dag.vector drops them)."""
    out = {a: s for a, s in new.items() if base.get(a) != s}
    out.update((a, 0) for a in base if a not in new)
    return out


class VectorDeltas:
    """One replica's memory of the vectors it sent each peer and had from each peer.

    Bounded by the peers: set_peers() forgets the others, and only peers are remembered.
    """

    def __init__(self, entries_max: int = 65_536) -> None:
        self.entries_max = entries_max  # authors in one rebuilt vector (a peer's bound)
        self._sent: dict[NodeId, tuple[bytes, dict[NodeId, int]]] = {}
        self._got: dict[NodeId, tuple[bytes, dict[NodeId, int]]] = {}
        self.resync_due: set[NodeId] = set()  # peers to ask for their whole vector
        # The last vector hashed (a copy) and its hash. A hub sends the same vector to each
        # of its N peers in turn, and idle every peer's vector equals its own: those cost
        # one comparison (in C) instead of a hash over N entries each, the largest item of
        # the simulator's profile at 50 sites.
        self._hashed: tuple[dict[NodeId, int], bytes] = ({}, b"")

    def _hash(self, vector: Mapping[NodeId, int]) -> bytes:
        if self._hashed[1] and self._hashed[0] == vector:
            return self._hashed[1]
        digest = vector_hash(vector)
        self._hashed = (dict(vector), digest)
        return digest

    def outgoing(
        self, peer: NodeId, vector: Mapping[NodeId, int]
    ) -> tuple[dict[NodeId, int], bytes, bytes]:
        """What to send peer for vector: (entries, base hash or b"" for whole, hash)."""
        digest = self._hash(vector)
        prev = self._sent.get(peer)
        self._sent[peer] = (digest, dict(vector))
        if prev is None:
            return dict(vector), b"", digest
        return vector_delta(prev[1], vector), prev[0], digest

    def incoming(
        self, peer: NodeId, entries: Mapping[NodeId, int], base: bytes, digest: bytes
    ) -> dict[NodeId, int] | None:
        """The whole vector a message from peer carries, or None when it is a change to a
        vector this replica does not hold (then peer is asked for the whole one)."""
        if not base:  # whole (b"" as the hash of one sent without: no delta names it)
            whole = dict(entries)
        else:
            held = self._got.get(peer)
            if held is None or held[0] != base:
                self.resync_due.add(peer)
                return None
            whole = dict(held[1])
            for author, seq in entries.items():
                if seq:
                    whole[author] = seq
                else:
                    whole.pop(author, None)
        # The sender names the whole vector: a delta that does not rebuild it, or one that
        # would grow the memory past its bound, is not kept (a peer cannot pile up authors).
        if len(whole) > self.entries_max or (digest and self._hash(whole) != digest):
            self._got.pop(peer, None)
            self.resync_due.add(peer)
            return None
        self._got[peer] = (digest, whole)
        return dict(whole)

    def held(self, peer: NodeId) -> dict[NodeId, int] | None:
        """The last whole vector had from peer (older than one that could not be rebuilt)."""
        held = self._got.get(peer)
        return None if held is None else dict(held[1])

    def resync(self, peer: NodeId) -> None:
        """peer could not rebuild our last vector: send it whole next time."""
        self._sent.pop(peer, None)

    def set_peers(self, peers: Iterable[NodeId]) -> None:
        keep = set(peers)
        for memory in (self._sent, self._got):
            for peer in [p for p in memory if p not in keep]:
                del memory[peer]
        self.resync_due &= keep
