"""`synod put TABLE --from FILE.jsonl`: bulk import in batches against an in-process node."""

from __future__ import annotations

import json

from click.testing import CliRunner
from synod.v1 import northbound_pb2 as nb

from controller.cli import cli

DP1 = "0000000000000001"


def _run(node, *args, token=None):
    opts = ["--server", node.api, "--insecure", "--token", token or node.admin_token]
    return CliRunner().invoke(cli, [*args, *opts], catch_exceptions=False)


def _flows(n: int, start: int = 0) -> list[dict]:
    return [
        {"dpid": DP1, "flow_id": f"f{i}", "priority": 100 + i, "match": "in_port=1",
         "actions": "output:2", "cookie": "0x10"}
        for i in range(start, start + n)
    ]


def _write(path, objs, extra: str = "") -> str:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs) + extra)
    return str(path)


def _count(node, table: str) -> int:
    with node.client() as c:
        return len(c.call(c.rows.List, nb.ListRequest(table=table)).rows)


def test_bulk_import_in_batches(solo, tmp_path):
    path = _write(tmp_path / "flows.jsonl", _flows(25), extra="\n")  # a blank line is skipped
    r = _run(solo, "put", "flows", "--from", path, "--batch-rows", "7", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["rows"] == 25 and out["batches"] == 4 and out["table"] == "flows"
    assert _count(solo, "flows") == 25
    with solo.client() as c:
        got = c.call(c.rows.Get, nb.GetRequest(table="flows", key=[
            nb.Value(text_value=DP1), nb.Value(text_value="f24")]))
        assert got.row.values["priority"].int_value == 124
        assert got.row.values["cookie"].int_value == 16  # "0x10" read as an int column
    r = _run(solo, "put", "kv", "--from", _write(tmp_path / "kv.jsonl", [
        {"key": f"k{i}", "value": f"{i:02x}"} for i in range(3)]))
    assert r.exit_code == 0 and "ok 3 row(s) into kv in 1 write(s)" in r.stdout


def test_a_bad_line_writes_nothing_and_names_the_line(solo, tmp_path):
    for extra, needle in (
        ("{not json\n", "flows.jsonl:4: not JSON"),
        ('{"dpid": "x"}\n', "flows.jsonl:4: missing key column(s) flow_id"),
        ('{"dpid": "x", "flow_id": "y", "prio": 1}\n', "flows.jsonl:4: flows has no column"),
        ('{"dpid": "x", "flow_id": "y", "priority": "high"}\n',
         "flows.jsonl:4: column priority is int"),
    ):
        path = _write(tmp_path / "flows.jsonl", _flows(3), extra)
        r = _run(solo, "put", "flows", "--from", path)
        assert r.exit_code == 1 and needle in r.output, r.output
    assert _count(solo, "flows") == 0


def test_a_refused_batch_says_how_far_the_import_got(solo, tmp_path):
    rows = _flows(5) + [{"dpid": DP1, "flow_id": "bad", "actions": "explode"}] + _flows(4, 5)
    r = _run(solo, "put", "flows", "--from", _write(tmp_path / "f.jsonl", rows),
             "--batch-rows", "5")
    assert r.exit_code == 1
    assert "rows 6-10 of 10; the 5 before them are written" in r.output, r.output
    assert _count(solo, "flows") == 5


def test_import_is_checked_against_the_policy_and_usage(solo, tmp_path):
    with solo.client() as admin:
        viewer = admin.call(admin.admin.CreateToken, nb.CreateTokenRequest(role="viewer")).token
    path = _write(tmp_path / "flows.jsonl", _flows(2))
    r = _run(solo, "put", "flows", "--from", path, token=viewer)
    assert r.exit_code == 1 and "role viewer may not write table 'flows'" in r.output
    r = _run(solo, "put", "flows", f"{DP1}/f1", "--from", path)
    assert r.exit_code == 2 and "not both" in r.output
    r = _run(solo, "put", "flows")
    assert r.exit_code == 2 and "missing KEY" in r.output
