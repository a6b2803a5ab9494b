"""The CLI's schema cache (docs/operations.md): one call per write or read, and a stale
cache refreshed when it explains a failure, with the command run once more."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner
from synod.v1 import northbound_pb2 as nb

from controller.cli import cli
from controller.node.client import _cache_file


def _run(node, *args):
    opts = ["--server", node.api, "--insecure", "--token", node.admin_token]
    return CliRunner().invoke(cli, [*args, *opts], catch_exceptions=False)


def _cache(node) -> Path:
    return _cache_file(node.api)


def _schema_calls(node) -> int:
    with node.client() as c:
        status = c.call(c.cluster.GetStatus, nb.GetStatusRequest())
    return status.counters.get("api_calls|method=GetSchema", 0)


def test_the_schema_is_fetched_once_then_read_from_the_cache(solo):
    assert os.environ["XDG_CACHE_HOME"] in str(_cache(solo))  # tests/conftest.py's, not ~
    r = _run(solo, "put", "kv", "a", "value=01")
    assert r.exit_code == 0, r.output
    assert _cache(solo).exists()
    fetched = _schema_calls(solo)
    for args in (("put", "kv", "b", "value=02"), ("get", "kv", "b"), ("list", "kv"),
                 ("del", "kv", "a")):
        r = _run(solo, *args)
        assert r.exit_code == 0, r.output
    assert _schema_calls(solo) == fetched


def _stale(node, kv_columns: list) -> None:
    path = _cache(node)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"server": node.api, "tables": {"kv": kv_columns}}))


def test_a_cache_missing_a_column_is_refreshed_and_the_command_runs_again(solo):
    _stale(solo, [["key", "text", True]])  # no `value` column
    r = _run(solo, "put", "kv", "c", "value=0a")
    assert r.exit_code == 0, r.output
    assert ["value", "blob", False] in json.loads(_cache(solo).read_text())["tables"]["kv"]
    _stale(solo, [["key", "text", True]])
    r = _run(solo, "get", "kv", "c", "--json")  # the row has a column the cache lacks
    assert r.exit_code == 0 and json.loads(r.stdout) == [{"key": "c", "value": "0a"}]


def test_a_cache_with_a_wrong_type_is_refreshed_after_the_node_refuses(solo):
    _stale(solo, [["key", "text", True], ["value", "int", False]])  # value is a blob
    r = _run(solo, "put", "kv", "d", "value=10")  # sent as int 10: the node refuses it
    assert r.exit_code == 0, r.output
    with solo.client() as c:
        got = c.call(c.rows.Get, nb.GetRequest(table="kv", key=[nb.Value(text_value="d")]))
    assert got.row.values["value"].blob_value == b"\x10"  # written as hex, the second time


def test_an_unknown_table_is_an_error_once_the_schema_is_fresh(solo):
    r = _run(solo, "get", "nope", "x")
    assert r.exit_code == 1 and "unknown table 'nope'" in r.output


def test_the_cache_keeps_a_bounded_number_of_servers(tmp_path, monkeypatch):
    from controller.node import client

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(client, "SCHEMA_CACHE_FILES_MAX", 3)
    for port in range(10):
        client._save_schema(f"127.0.0.1:{port}", {"kv": [client.Column("key", "text", True)]})
    kept = sorted(p.name for p in (tmp_path / "synod" / "schema").glob("*.json"))
    assert len(kept) == 3 and "127.0.0.1_9.json" in kept
    assert client._load_schema("127.0.0.1:9") == {"kv": [client.Column("key", "text", True)]}
