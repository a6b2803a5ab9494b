"""Lineages on disk (moves that survive a crash half-way), secession notices, and the
LineageService's refusals on a running node."""

from __future__ import annotations

import os

import grpc
import pytest
from synod.v1 import northbound_pb2 as nb

from controller.agreement import secede
from controller.node.client import ClientError
from controller.node.datadir import DataDir, DataDirError, init_data_dirs
from controller.node.lineages import (
    LineageError,
    begin_move,
    check_notice,
    finish_move,
    held_lineages,
    lineage_dir,
)
from controller.replication import Identity, make_genesis

from .conftest import InProcessNode


def _child(d: DataDir):
    parent = d.genesis()
    founder = d.identity()
    voters = parent.member_ids
    return secede(founder, parent, voters, [founder.node_id], {founder.node_id: 3}, 1,
                  confirmed_by="ops")


@pytest.fixture
def datadir(tmp_path) -> DataDir:
    dirs = [tmp_path / f"n{i}" for i in range(3)]
    init_data_dirs(dirs, "lin")
    return DataDir(dirs[0])


def test_a_move_and_its_return(datadir):
    d = datadir
    parent = d.genesis()
    child = _child(d)
    store_bytes = d.store_file.read_bytes()
    begin_move(d, parent, child, {"x" * 32: b"k" * 32})
    assert d.genesis().cluster_id == parent.cluster_id  # nothing moved before finish
    assert finish_move(d).cluster_id == child.cluster_id
    assert d.genesis().cluster_id == child.cluster_id and not d.store_file.exists()
    assert (lineage_dir(d, parent.cluster_id) / "store.db").read_bytes() == store_bytes
    assert set(held_lineages(d)) == {parent.cluster_id, child.cluster_id}
    assert finish_move(d) is None  # nothing in progress
    # Home again: the parent's store comes back, the child's goes away.
    d.store_file.write_bytes(b"child store")
    begin_move(d, child, parent)
    finish_move(d)
    assert d.genesis().cluster_id == parent.cluster_id
    assert d.store_file.read_bytes() == store_bytes
    assert (lineage_dir(d, child.cluster_id) / "store.db").read_bytes() == b"child store"


def test_a_move_interrupted_half_way_finishes_on_the_next_start(datadir):
    d = datadir
    parent, child = d.genesis(), _child(d)
    begin_move(d, parent, child)
    away = lineage_dir(d, parent.cluster_id)
    os.replace(d.store_file, away / "store.db")  # the crash hit after the first rename
    finish_move(d)
    assert d.genesis().cluster_id == child.cluster_id
    assert (away / "store.db").exists() and not d.store_file.exists()
    assert not (d.path / "moving.cbor").exists()


def test_a_damaged_lineage_dir_is_named(datadir):
    d = datadir
    bad = lineage_dir(d, b"\x01" * 32)
    bad.mkdir(parents=True)
    (bad / "genesis.cbor").write_bytes(d.genesis().raw)  # a genesis under the wrong id
    with pytest.raises(DataDirError, match="holds cluster"):
        held_lineages(d)
    (bad / "genesis.cbor").write_bytes(b"junk")
    with pytest.raises(DataDirError, match="invalid genesis"):
        held_lineages(d)


def test_a_secession_notice_is_checked(datadir):
    d = datadir
    parent, child = d.genesis(), _child(d)
    me = d.identity().node_id
    check_notice(parent, child, me, me)
    other = [n for n in parent.member_ids if n != me][0]
    with pytest.raises(LineageError, match="not among the seceding voters"):
        check_notice(parent, child, other, me)
    with pytest.raises(LineageError, match="caller"):
        check_notice(parent, child, me, other)
    stranger = Identity.from_seed(b"s" * 32)
    unrelated = make_genesis(stranger, "other", [stranger.public_key], 1)
    with pytest.raises(LineageError, match="did not secede from"):
        check_notice(parent, unrelated, me, me)


def test_secede_refusals_say_why(tmp_path):
    dirs = [tmp_path / f"n{i}" for i in range(3)]
    init_data_dirs(dirs, "three")
    node = InProcessNode(dirs[0]).start()
    try:
        ids = sorted(DataDir(p).identity().node_id for p in dirs)
        me = DataDir(dirs[0]).identity().node_id
        other = [n for n in ids if n != me]
        with node.client() as c:
            cases = [
                (nb.SecedeRequest(voters=[], confirmed_by=""), "confirmed by an operator"),
                (nb.SecedeRequest(voters=[other[0]], confirmed_by="ops"), "majority"),
                (nb.SecedeRequest(voters=["nobody-at-all"], confirmed_by="ops"), "not one voter"),
                (nb.SecedeRequest(voters=["ab"], confirmed_by="ops"), "not one voter"),
            ]
            for request, why in cases:
                with pytest.raises(ClientError) as e:
                    c.call(c.lineage.Secede, request)
                assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION, e.value
                assert why in str(e.value)
            info = c.call(c.lineage.GetLineage, nb.GetLineageRequest())
            assert info.lineage.name == "three" and not info.lineage.ancestors
            assert sorted(info.lineage.voters) == ids and not info.met
            # Nobody but the nodes writes the report table.
            row = c.row("conflicts", "x", {"kind": "row"})
            with pytest.raises(ClientError, match="written by the nodes alone"):
                c.call(c.rows.Put, nb.PutRequest(rows=[row]))
        with node.client(token="") as anon, pytest.raises(ClientError) as e:
            anon.call(anon.lineage.Secede, nb.SecedeRequest(confirmed_by="ops"))
        assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        node.stop()


def test_no_compaction_while_another_lineage_is_held(datadir):
    """A reunion report needs both sides' ops from the fork on (decision 0070): a node
    holding another lineage (met, seceded from, or its own child) pauses compaction."""
    import random

    from controller.agreement import Agreement, AgreementConfig, AgreementReplica
    from controller.node.lineages import NODE_SCHEMA, Keeper, keep_genesis

    g, me = datadir.genesis(), datadir.identity()

    def keeper() -> Keeper:
        replica = AgreementReplica(me, g, random.Random(1), schema=NODE_SCHEMA)
        agreement = Agreement(replica, random.Random(2), AgreementConfig(compact=True))
        return Keeper(datadir, me, replica, agreement, lambda store, gen: None)  # type: ignore[arg-type,return-value]

    k = keeper()
    assert not k.agreement.compaction_paused
    stranger = Identity.from_seed(b"o" * 32)
    other = make_genesis(stranger, "other", [stranger.public_key], 0)
    k.meet(other.raw, "someone")
    assert k.agreement.compaction_paused
    keep_genesis(datadir, _child(datadir))  # on disk at the next start
    assert keeper().agreement.compaction_paused
