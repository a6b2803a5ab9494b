"""Snapshot catch-up (controller/node/snapshot.py, decision 0070 part 3): the stream's
framing, and the checks a joining node makes before it starts from a peer's checkpoint."""

from __future__ import annotations

import random

import pytest

from controller.agreement import AgreementReplica
from controller.node import snapshot
from controller.node.snapshot import SnapshotError
from controller.replication import DEFAULT_SCHEMA, Identity, decode, encode
from controller.store import SqliteStore
from tests.agreement.conftest import Net
from tests.agreement.test_checkpoint import churn, compacted

JOINER = Identity.from_seed(b"\x09" * 32)  # a node that is not a member yet


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A 3-voter cluster compacted to a checkpoint; what its node 0 would serve, and the
    checkpoint."""
    tmp = tmp_path_factory.mktemp("snap")
    net = Net(3, checkpoint_ops=20, checkpoint_stagger_ms=50, compact=True, store_dir=tmp)
    churn(net, 0, 0, 40, keys=12)
    churn(net, 1, 40, 10, keys=12)
    net.run(rounds=300, until=lambda: compacted(net, 1))
    cps = net[0].agreement.checkpoints
    got = snapshot.read_compaction(tmp / f"{net[0].id[:8]}.db")
    assert got is not None
    return net, got, cps.decided(cps.final_n)


def _check(net, record, rows):
    return snapshot.check(record, rows, JOINER, net.genesis,
                          replica_cls=AgreementReplica, schema=DEFAULT_SCHEMA)


def test_a_served_checkpoint_checks_out_and_installs(served, tmp_path):
    net, (record, rows), cp = served
    replica = _check(net, record, rows)
    assert replica.restored_checkpoint == cp.n and dict(replica.dag.base) == dict(cp.cut)
    assert replica.state_digest() == cp.state and replica.op_count() == cp.count
    store = SqliteStore(tmp_path / "joiner.db")
    store.init(net.genesis)
    assert store.is_empty()
    snapshot.install(store, replica, record, rows)
    assert not store.is_empty()
    stored = store.load()
    again = AgreementReplica.recover(JOINER, net.genesis, random.Random(0),
                                     stored.log, stored.evidence, compaction=stored.compaction)
    assert again.state_digest() == cp.state
    assert store.rows("kv") == again.rows("kv")  # the materialised tables were written
    store.close()


def test_chunks_round_trip_and_bounded(served):
    _, (record, rows), _ = served
    parts = list(snapshot.chunks(record, rows, chunk_bytes=200))
    assert len(parts) > 2 and parts[-1].last and not any(p.last for p in parts[:-1])
    assert all(p.ByteSize() < 200 + 400 for p in parts[1:])  # one row may overshoot
    assert snapshot.collect(iter(parts), 1 << 30) == (record, rows)
    assert snapshot.collect(iter([]), 1 << 30) is None  # the peer had nothing to give


@pytest.mark.parametrize("cut, why", [
    (lambda p: p[:-1], "cut short"),
    (lambda p: [*p, p[-1]], "after the last"),
    (lambda p: p[1:], "no compaction record"),
])
def test_a_truncated_or_padded_stream_is_refused(served, cut, why):
    _, (record, rows), _ = served
    parts = list(snapshot.chunks(record, rows, chunk_bytes=200))
    with pytest.raises(SnapshotError, match=why):
        snapshot.collect(iter(cut(parts)), 1 << 30)


def test_an_oversized_stream_is_refused(served):
    _, (record, rows), _ = served
    with pytest.raises(SnapshotError, match="larger than"):
        snapshot.collect(snapshot.chunks(record, rows, chunk_bytes=200), 300)


def test_forged_rows_are_refused(served):
    net, (record, rows), _ = served
    table, key, meta, point = rows[0]
    plain = decode(meta)
    plain[0] += 2  # another version of that row
    forged = ((table, key, encode(plain), point), *rows[1:])
    with pytest.raises(SnapshotError, match="certified digest"):
        _check(net, record, forged)
    with pytest.raises(SnapshotError, match="certified digest"):
        _check(net, record, rows[1:])  # a row left out


def test_a_record_without_its_certificate_is_refused(served):
    """The checkpoint must be decided by votes the joiner can verify: strip them and the
    snapshot is only a peer's claim."""
    net, (record, rows), _ = served
    plain = decode(record)
    extra = decode(plain["extra"])
    extra["certificate"] = []
    plain["extra"] = encode(extra)
    with pytest.raises(SnapshotError, match="do not decide"):
        _check(net, encode(plain), rows)


def test_a_forged_vote_in_the_record_is_refused(served):
    net, (record, rows), _ = served
    plain = decode(record)
    extra = decode(plain["extra"])
    vote = bytearray(extra["certificate"][0])
    vote[-1] ^= 1  # the signature's last byte
    extra["certificate"][0] = bytes(vote)
    plain["extra"] = encode(extra)
    with pytest.raises(SnapshotError, match="bad_signature|do not decide"):
        _check(net, encode(plain), rows)


def _forge(record: bytes, **changes) -> bytes:
    plain = decode(record)
    plain.update(changes)
    return encode(plain)


@pytest.mark.parametrize("change", [
    {"fork_proof": {"x": 5}, "forks": {"x": 1}},
    {"fork_proof": {"x": [b"a"]}, "forks": {"x": 1}},
    {"pruned": 12_345},
    {"opset": bytes(32)},
    {"frontier": []},
])
def test_a_record_a_peer_forged_is_refused_not_a_crash(served, change):
    net, (record, rows), _ = served
    with pytest.raises(SnapshotError):
        _check(net, _forge(record, **change), rows)


def test_forks_in_a_snapshot_are_refused_and_keys_must_be_scalars(served):
    net, (record, rows), _ = served
    voter = net[0].id
    forged = _forge(record, forks={voter: 1}, fork_proof={voter: [b"\x01" * 32, b"\x02" * 32]})
    with pytest.raises(SnapshotError, match="forks"):
        _check(net, forged, rows)
    table, key, meta, point = rows[0]
    with pytest.raises(SnapshotError, match="scalar"):
        _check(net, record, ((table, (["a"],), meta, point), *rows[1:]))


def test_the_record_does_not_grow_with_old_checkpoints(tmp_path):
    """Only the newest checkpoint's certificate travels (in the record's extra): after
    several compactions the retained votes hold no older checkpoint's."""
    from controller.agreement.messages import from_body
    from controller.replication import decode_op

    net = Net(3, checkpoint_ops=20, checkpoint_stagger_ms=50, compact=True, store_dir=tmp_path)
    for start in (0, 100, 200):
        churn(net, 0, start, 30, keys=12)
        net.run(rounds=400, until=lambda: compacted(net, 1 + start // 100))
    record, _ = snapshot.read_compaction(tmp_path / f"{net[0].id[:8]}.db")
    retained = [decode_op(r, DEFAULT_SCHEMA, 16, 10_000) for r in decode(record)["retained"]]
    slots = {from_body(op.body.kind, op.body.data).slot for op in retained
             if getattr(op.body, "kind", "") in ("accepted", "promise", "prepare", "accept")}
    assert not any(s.startswith("checkpoint/") for s in slots), slots


@pytest.fixture(scope="module")
def served_with_archive(tmp_path_factory):
    """A cluster whose node 0 archived decided slots (decision 0103) and would serve them."""
    from tests.agreement.test_archive import grown

    tmp = tmp_path_factory.mktemp("snap-archive")
    net = Net(3, checkpoint_ops=20, checkpoint_stagger_ms=50, compact=True, store_dir=tmp)
    grown(net, [f"app/s{i}" for i in range(5)], 1)
    grown(net, [], 2)
    got = snapshot.read_compaction(tmp / f"{net[0].id[:8]}.db")
    assert got is not None
    return net, got


def test_archived_decisions_travel_with_a_snapshot_and_are_installed(served_with_archive,
                                                                     tmp_path):
    net, (record, rows) = served_with_archive
    archived = [r for r in rows if r[0] == snapshot.ARCHIVED]
    assert [r[1][0] for r in archived if r[1][0].startswith("slot:app/")] == [
        f"slot:app/s{i}" for i in range(5)]
    parts = list(snapshot.chunks(record, rows, chunk_bytes=300))
    assert snapshot.collect(iter(parts), 1 << 30) == (record, rows)
    replica = _check(net, record, rows)
    store = SqliteStore(tmp_path / "joiner.db")
    store.init(net.genesis)
    snapshot.install(store, replica, record, rows)
    assert replica.ledger.decided("app/s3").value == {"v": "app/s3"}
    assert len(list(store.archived_items("slot:app/"))) == 5
    stored = store.load()
    again = AgreementReplica.recover(JOINER, net.genesis, random.Random(0), stored.log,
                                     stored.evidence, compaction=stored.compaction,
                                     archive=store)
    assert again.ledger.decided("app/s0").value == {"v": "app/s0"}
    assert "app/s0" not in again.ledger.slots
    store.close()


def _with_archived(rows, slot_key, change):
    out = []
    for r in rows:
        if r[0] == snapshot.ARCHIVED and r[1][0] == slot_key:
            r = change(r)
        out.append(r)
    return tuple(out)


def _flip_signature(r):
    plain = decode(r[2])
    vote = bytearray(plain[3][0])
    vote[-1] ^= 1
    plain[3][0] = bytes(vote)
    return (r[0], r[1], encode(plain), r[3])


@pytest.mark.parametrize("change, why", [
    (_flip_signature, "bad signature"),
    (lambda r: (r[0], ("slot:app/other",), r[2], r[3]), "certifies 'app/s1'"),
    (lambda r: (r[0], ("app/s1",), r[2], r[3]), "not a decided slot"),
    (lambda r: (r[0], r[1], b"\xa0", r[3]), "bad_certificate|unreadable"),
])
def test_a_forged_archived_decision_is_refused(served_with_archive, change, why):
    net, (record, rows) = served_with_archive
    forged = _with_archived(rows, "slot:app/s1", change)
    assert forged != rows
    with pytest.raises(SnapshotError, match=why):
        _check(net, record, forged)


def test_an_archived_decision_from_above_the_cut_or_twice_is_refused(served_with_archive):
    """Only what the serving ledger settled inside the snapshot's cut: a real certificate
    decided later (the snapshot's own checkpoint: its votes follow its cut) is refused, and
    so is a row given twice (before any signature is checked)."""
    from controller.agreement.checkpoint import checkpoint_slot

    net, (record, rows) = served_with_archive
    n = decode(decode(record)["extra"])["checkpoint"]
    cert = net[0].agreement.decided(checkpoint_slot(n)).certificate
    later = (snapshot.ARCHIVED, (f"slot:checkpoint/{n}",), encode(cert.to_plain()), b"")
    with pytest.raises(SnapshotError, match="above the snapshot's cut"):
        _check(net, record, (*rows, later))
    one = next(r for r in rows if r[0] == snapshot.ARCHIVED)
    with pytest.raises(SnapshotError, match="twice"):
        _check(net, record, (*rows, one))
