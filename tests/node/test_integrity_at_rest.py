"""Integrity at rest (decision 0060), node level: a store that lost its history is refused
at start (and `--start-empty` starts anyway), a value edited inside a table is rewritten
from the log before users' SQL reads it, and data files and directories are private."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from synod.v1 import northbound_pb2 as nb

from controller.node.codec import value_pb
from controller.node.datadir import DataDir, DataDirError, init_data_dirs
from controller.node.lineages import keep_genesis
from controller.replication import make_genesis
from controller.replication.identity import Identity
from controller.store import SqliteStore

from . import conftest
from .conftest import InProcessNode, free_port


def _put_kv(node: InProcessNode, key: str, value: bytes) -> None:
    row = nb.Row(table="kv", key=[value_pb(key)], values={"value": value_pb(value)})
    with node.client() as c:
        c.call(c.rows.Put, nb.PutRequest(rows=[row]))


def _solo_with_history(tmp_path: Path) -> Path:
    d = tmp_path / "solo"
    init_data_dirs([d], "solo")
    node = InProcessNode(d).start()
    try:
        _put_kv(node, "k", b"right")
    finally:
        node.stop()
    return d


def _modes(root: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for p in root.rglob("*"):
        out[str(p.relative_to(root))] = stat.S_IMODE(p.stat().st_mode)
    return out


def _lose(d: Path, how: str) -> None:
    store = DataDir(d).store_file
    if how == "truncated":
        store.write_bytes(b"")
        for extra in ("-wal", "-shm"):
            Path(f"{store}{extra}").unlink(missing_ok=True)
    elif how == "deleted":
        for extra in ("", "-wal", "-shm"):
            Path(f"{store}{extra}").unlink(missing_ok=True)
    else:  # replaced by a valid store of the same cluster that holds no ops
        for extra in ("", "-wal", "-shm"):
            Path(f"{store}{extra}").unlink(missing_ok=True)
        genesis = DataDir(d).genesis()
        s = SqliteStore(store)
        s.init(genesis)
        s.close()


@pytest.mark.parametrize("how, says", [
    ("truncated", "is empty (0 bytes)"),
    ("deleted", "is missing"),
    ("emptied", "holds no ops"),
])
def test_a_store_that_lost_the_nodes_history_is_refused_then_started_empty_on_purpose(
        tmp_path, monkeypatch, how, says):
    d = _solo_with_history(tmp_path)
    _lose(d, how)
    with pytest.raises(DataDirError) as e:
        InProcessNode(d).start()
    message = str(e.value)
    assert str(DataDir(d).store_file) in message and says in message
    assert "history.cbor" in message and "--start-empty" in message
    assert re.search(r"held [1-9]\d* ops", message)
    if how != "emptied":  # refused before the store was opened: nothing was made
        assert not DataDir(d).store_file.exists() or not DataDir(d).store_file.stat().st_size
    monkeypatch.setattr(conftest, "serve", functools.partial(conftest.serve, start_empty=True))
    node = InProcessNode(d).start()
    assert node.info["ops"] == 0
    node.stop()
    monkeypatch.undo()
    node = InProcessNode(d).start()  # the history now says: an empty store, which it is
    assert node.info["ops"] == 0
    node.stop()


def test_a_node_that_never_restarted_is_protected_too(tmp_path):
    """The first start records the store; a member that only synced (no restart, no own
    op) loses nothing silently either."""
    dirs = [tmp_path / f"n{i}" for i in (1, 2)]
    init_data_dirs(dirs, "pair")
    assert DataDir(dirs[0]).history()  # synod init seeded the founder's store: recorded
    assert not DataDir(dirs[1]).history_file.exists()
    InProcessNode(dirs[1]).start().stop()
    (h,) = DataDir(dirs[1]).history().values()
    assert (h.ops, h.own_seq) == (0, 0)
    _lose(dirs[1], "deleted")
    with pytest.raises(DataDirError, match="is missing"):
        InProcessNode(dirs[1]).start()


def test_a_value_edited_inside_the_kv_table_is_rewritten_from_the_log_at_start(
        tmp_path, caplog):
    d = _solo_with_history(tmp_path)
    conn = sqlite3.connect(DataDir(d).store_file)  # the file stays valid SQLite
    conn.execute("UPDATE kv SET value = X'77726f6e67' WHERE key = 'k'")
    conn.commit()
    conn.close()
    with caplog.at_level(logging.WARNING, logger="synod.store"):
        node = InProcessNode(d).start()
    try:
        assert any("table kv, key ['k']: column value differs" in m for m in caplog.messages)
        with node.client() as c:
            got = c.call(c.rows.Get, nb.GetRequest(table="kv", key=[value_pb("k")]))
            assert got.row.values["value"].blob_value == b"right"
            q = c.call(c.rows.Query, nb.QueryRequest(sql="SELECT value FROM kv"))
            assert [r.values[0].blob_value for r in q.rows] == [b"right"]  # rewritten at start
    finally:
        node.stop()


def test_init_makes_private_files_and_directories(tmp_path):
    dirs = [tmp_path / "a", tmp_path / "b"]
    init_data_dirs(dirs, "private")
    for d in dirs:
        for name, mode in _modes(d).items():
            want = 0o700 if (d / name).is_dir() else 0o600
            assert mode == want, f"{d / name}: {oct(mode)}"


def test_lineage_directories_are_private(tmp_path):
    d = tmp_path / "n"
    init_data_dirs([d], "home")
    other = make_genesis(Identity.from_seed(b"\x07" * 32), "other",
                         [Identity.from_seed(b"\x07" * 32).public_key], 0)
    keep_genesis(DataDir(d), other)
    assert stat.S_IMODE((d / "lineages").stat().st_mode) == 0o700
    sub = d / "lineages" / other.cluster_id.hex()
    assert stat.S_IMODE(sub.stat().st_mode) == 0o700
    assert stat.S_IMODE((sub / "genesis.cbor").stat().st_mode) == 0o600


def test_loose_modes_of_an_older_data_dir_are_tightened_at_start(tmp_path):
    d = _solo_with_history(tmp_path)
    os.chmod(d, 0o755)
    os.chmod(DataDir(d).store_file, 0o644)
    os.chmod(DataDir(d).genesis_file, 0o664)
    InProcessNode(d).start().stop()
    modes = _modes(d)
    assert modes["."] == 0o700
    assert {n: m for n, m in modes.items() if n != "." and m != 0o600} == {}


def test_synod_node_run_refuses_a_lost_store_and_starts_empty_with_the_flag(tmp_path):
    """The real command: the error is one line naming the file and the flag; with
    --start-empty the node starts, and whatever it creates is 0600 (umask 077)."""
    d = _solo_with_history(tmp_path)
    _lose(d, "deleted")
    cmd = [sys.executable, "-c", "from controller.cli import main; main()", "node", "run",
           "--data", str(d), "--api", f"127.0.0.1:{free_port()}",
           "--peer-listen", f"127.0.0.1:{free_port()}", "--insecure-loopback"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stderr
    error = [line for line in done.stderr.splitlines() if line.startswith("synod: error")]
    assert len(error) == 1 and "store.db is missing" in error[0] and "--start-empty" in error[0]
    proc = subprocess.Popen([*cmd, "--start-empty"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready" and ready["ops"] == 0
    finally:
        proc.terminate()
        proc.wait(15)
    modes = _modes(d)
    assert modes["."] == 0o700 and "store.db" in modes and "history.cbor" in modes
    assert {n: m for n, m in modes.items() if n != "." and m != 0o600} == {}
