"""Secession and reunion across 3 real node processes (`synod secede`, `synod reunion`).

Node 2 is cut off; its operator secedes it (a new lineage of one voter), so it decides
alone. Both sides write the same key and decide the same slot differently. After the
heal each side votes merge; every node then holds both DAGs (equal op-set and state
digests), the conflict report names the slot and the row with both values, node 2
returns home to the parent lineage (slots are decided by all three again), and after a
restart it joins its seceded lineage again from its own stores.
"""

from __future__ import annotations

import json
import os
import subprocess

import grpc
import pytest
from synod.v1 import northbound_pb2 as nb

from controller.node import codec, datadir
from controller.node.client import ClientError
from controller.replication import decode, encode

from .harness import SYNOD, wait_for

pytestmark = pytest.mark.cluster


def _cli(cluster, i: int, *args: str) -> dict:
    done = subprocess.run(
        [*SYNOD, *args, "--server", f"127.0.0.1:{cluster.nodes[i].api_port}",
         "--ca", cluster.ca, "--json"],
        capture_output=True, timeout=120, env={**os.environ, "SYNOD_TOKEN": cluster.token},
    )
    if done.returncode != 0:
        raise RuntimeError(f"synod {' '.join(args)}: {done.stderr.decode()[-2000:]}")
    return json.loads(done.stdout)


def _put(cluster, i: int, key: str, value: bytes) -> None:
    with cluster.client(i) as c:
        row = c.row("kv", key, {"value": value.hex()})
        c.call(c.rows.Put, nb.PutRequest(rows=[row]))


def _get(cluster, i: int, key: str) -> bytes | None:
    with cluster.client(i) as c:
        pb_key = [codec.value_pb(v) for v in c.key("kv", key)]
        r = c.call(c.rows.Get, nb.GetRequest(table="kv", key=pb_key))
        return r.row.values["value"].blob_value if r.found else None


def _propose(cluster, i: int, slot: str, value, timeout_ms: int = 5_000):
    with cluster.client(i, timeout_s=timeout_ms / 1000 + 5) as c:
        req = nb.ProposeRequest(slot=slot, value=encode(value), timeout_ms=timeout_ms)
        return decode(c.call(c.slots.Propose, req).value)


def _digests(cluster, nodes=range(3)) -> set[tuple[bytes, bytes]]:
    out = set()
    for i in nodes:
        with cluster.client(i) as c:
            d = c.call(c.cluster.GetDigest, nb.GetDigestRequest())
            out.add((d.state_digest, d.op_digest))
    return out


def _lineage(cluster, i: int):
    with cluster.client(i) as c:
        return c.call(c.lineage.GetLineage, nb.GetLineageRequest())


def _link_up(cluster, i: int, node_id: str) -> bool:
    """Node i's peer link to node_id has found it (so node i knows its address)."""
    with cluster.client(i) as c:
        members = c.call(c.cluster.ListMembers, nb.ListMembersRequest()).members
        return any(m.node_id == node_id and m.up for m in members)


def _slot_value(cluster, i: int, slot: str):
    with cluster.client(i) as c:
        r = c.call(c.slots.GetSlot, nb.GetSlotRequest(slot=slot))
    return decode(r.value) if r.decided else None


def _conflicts(cluster, i: int) -> dict[tuple[str, str], tuple[str, str]]:
    with cluster.client(i) as c:
        r = c.call(c.cluster.ListConflicts, nb.ListConflictsRequest())
    return {(x.kind, x.name): (x.kept, x.lost) for x in r.conflicts if x.kind in ("slot", "row")}


def test_secede_decide_apart_then_reunite_with_a_conflict_report(make_cluster):
    cluster = make_cluster(3)
    a_id = _lineage(cluster, 0).lineage.cluster_id
    _put(cluster, 0, "shared", b"before")
    assert wait_for(lambda: _get(cluster, 2, "shared") == b"before", 15)

    # Cut off, node 2 cannot decide; a majority secession is refused with a reason.
    cluster.isolate(2)
    me = cluster.nodes[2].info["node_id"]
    others = [cluster.nodes[i].info["node_id"] for i in (0, 1)]
    with pytest.raises(RuntimeError, match="majority"):
        _cli(cluster, 2, "secede", others[0], "--confirmed-by", "ops", "--yes")
    with pytest.raises(ClientError) as e:
        _propose(cluster, 2, "alloc/pool/1", "b-side", timeout_ms=1_500)
    assert e.value.code == grpc.StatusCode.UNAVAILABLE

    # The operator secedes node 2 alone: a new lineage whose parent is the cluster.
    done = _cli(cluster, 2, "secede", "--confirmed-by", "ops@site-2", "--yes")
    b_id = done["cluster_id"]
    assert b_id != a_id and done["moved"] == [me]
    lin = _lineage(cluster, 2).lineage
    assert lin.cluster_id == b_id and list(lin.ancestors) == [a_id]
    assert lin.confirmed_by == "ops@site-2" and sorted(lin.left) == sorted(others)
    assert _get(cluster, 2, "shared") == b"before"  # the fork copy carries the rows over

    # Apart: each side decides the slot and writes the key (node 2 last: its write wins).
    assert _propose(cluster, 2, "alloc/pool/1", "b-side") == "b-side"
    assert _propose(cluster, 0, "alloc/pool/1", "a-side") == "a-side"
    _put(cluster, 0, "shared", b"a-wrote")
    _put(cluster, 2, "shared", b"b-wrote")
    _put(cluster, 2, "only-b", b"b")

    # Healed: the sides meet (Hello carries the genesis); each side votes merge.
    cluster.heal()
    assert wait_for(lambda: any(m.lineage.cluster_id == b_id for m in _lineage(cluster, 0).met),
                    20)
    met = {m.lineage.cluster_id: m for m in _lineage(cluster, 0).met}
    assert met[b_id].relation == "b_seceded_from_a" and not met[b_id].joined
    assert _get(cluster, 0, "only-b") is None  # nothing merges before both sides decide
    assert _cli(cluster, 0, "reunion", "merge", b_id[:12])["value"] == "merge"
    assert _cli(cluster, 2, "reunion", "merge", a_id[:12])["value"] == "merge"

    # One op set and one state everywhere; the report names both conflicts.
    assert wait_for(lambda: len(_digests(cluster)) == 1, 30), _digests(cluster)
    for i in range(3):
        assert _get(cluster, i, "only-b") == b"b"
        assert _get(cluster, i, "shared") == b"b-wrote"
    expected = {
        ("slot", "alloc/pool/1"): ('"a-side"', '"b-side"'),
        ("row", "kv"): (json.dumps(b"b-wrote".hex()), json.dumps(b"a-wrote".hex())),
    }
    assert wait_for(lambda: all(_conflicts(cluster, i) == expected for i in range(3)), 20), [
        _conflicts(cluster, i) for i in range(3)
    ]

    # The report written, node 2 returns home: the parent is its lineage again, its
    # seceded lineage stays joined (read-only), and slots are decided by all three.
    assert wait_for(lambda: _lineage(cluster, 2).lineage.cluster_id == a_id, 20)
    assert [(m.lineage.cluster_id, m.joined) for m in _lineage(cluster, 2).met] == [(b_id, True)]
    assert _propose(cluster, 2, "alloc/pool/2", "together") == "together"
    assert wait_for(lambda: _slot_value(cluster, 0, "alloc/pool/2") == "together", 10)

    # A restarted node joins the other lineage again from its stores; writes still merge.
    cluster.nodes[2].stop()
    cluster.nodes[2].start()
    assert _lineage(cluster, 2).lineage.cluster_id == a_id
    assert [(m.lineage.cluster_id, m.joined) for m in _lineage(cluster, 2).met] == [(b_id, True)]
    _put(cluster, 2, "after", b"restart")
    assert wait_for(lambda: _get(cluster, 0, "after") == b"restart", 20)
    assert wait_for(lambda: len(_digests(cluster)) == 1, 30), _digests(cluster)
    assert all(_conflicts(cluster, i) == expected for i in range(3))


def test_two_voters_secede_together_and_merge_back_by_policy(make_cluster, monkeypatch):
    """5 nodes split 3|2; node 3 secedes with node 4 (told over the peer API). The policy
    says auto_merge=related, so after the heal both sides vote merge by themselves."""
    access = {**datadir.GENESIS_POLICY["access"], "auto_merge": "related"}
    monkeypatch.setattr(datadir, "GENESIS_POLICY", {"access": access})
    cluster = make_cluster(5)
    assert wait_for(lambda: all(_lineage(cluster, i) for i in range(5)), 15)  # token synced
    a_id = _lineage(cluster, 0).lineage.cluster_id
    ids = [n.info["node_id"] for n in cluster.nodes]
    # Node 3 tells node 4 over their link: it must have found node 4 first (a link still
    # retrying at start knows an address, not whose it is: "no known peer address").
    assert wait_for(lambda: _link_up(cluster, 3, ids[4]), 15)

    cluster.partition({0, 1, 2}, {3, 4})
    done = _cli(cluster, 3, "secede", ids[4][:10], "--confirmed-by", "ops", "--yes")
    b_id = done["cluster_id"]
    assert sorted(done["moved"]) == sorted(ids[3:]) and not done.get("unreached"), done
    assert wait_for(lambda: _lineage(cluster, 4).lineage.cluster_id == b_id, 15)
    again = _cli(cluster, 3, "secede", ids[4][:10], "--confirmed-by", "ops", "--yes")
    assert again["cluster_id"] == b_id and sorted(again["moved"]) == sorted(ids[3:])
    assert _propose(cluster, 4, "alloc/ip/1", "from-b") == "from-b"  # 2 of 2 voters
    assert _propose(cluster, 1, "alloc/ip/1", "from-a") == "from-a"  # 3 of 5 voters
    _put(cluster, 4, "k", b"b")
    _put(cluster, 1, "k", b"a")

    cluster.heal()
    assert wait_for(lambda: len(_digests(cluster, range(5))) == 1, 40), "one op set"
    assert wait_for(lambda: all(_lineage(cluster, i).lineage.cluster_id == a_id
                                for i in (3, 4)), 20)
    assert wait_for(lambda: len(_conflicts(cluster, 0)) == 2, 20), _conflicts(cluster, 0)
    report = _conflicts(cluster, 0)
    assert report[("slot", "alloc/ip/1")] == ('"from-a"', '"from-b"')
    assert report[("row", "kv")] == (json.dumps(b"a".hex()), json.dumps(b"b".hex()))
    for i in range(5):
        assert _get(cluster, i, "k") == b"a"
    assert _propose(cluster, 4, "alloc/ip/2", "whole") == "whole"
    assert wait_for(lambda: _slot_value(cluster, 0, "alloc/ip/2") == "whole", 10)
    assert wait_for(lambda: len(_digests(cluster, range(5))) == 1, 30), "one op set"
