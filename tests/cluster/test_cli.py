"""The `synod` CLI as scripts use it, against real node processes: `--json` read with `jq`
(every field, numbers as numbers, hex bytes), connection settings from flags, variables and
the client.toml `synod init` writes, errors naming the flag or variable to fix, no schema
fetch per write, and the node's metrics endpoint parsed with prometheus_client."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request

import pytest

from tests.node.test_metrics import check_conventions, families, sample

from .harness import SYNOD, Cluster, free_port, wait_for

pytestmark = pytest.mark.cluster

HEX64 = "^[0-9a-f]{64}$"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if shutil.which("jq") is None:
        pytest.fail("jq is not installed (./synod.sh installs it)", pytrace=False)
    c = Cluster(tmp_path_factory.mktemp("cli"), 3, seed=15)
    c.metrics_port = free_port()
    c.nodes[0].extra_args = ["--metrics", f"127.0.0.1:{c.metrics_port}"]
    try:
        c.start()
        yield c
    finally:
        leaked = c.stop()
        assert not leaked, f"processes left running: {leaked}"


def synod(cluster, *args: str, node: int = 0, env: dict | None = None,
          check: bool = True) -> subprocess.CompletedProcess:
    """A real `synod` process; the connection comes from SYNOD_* variables by default."""
    base = {**os.environ, "SYNOD_SERVER": f"127.0.0.1:{cluster.nodes[node].api_port}",
            "SYNOD_CA": cluster.ca, "SYNOD_TOKEN": f"@{cluster.dirs[0] / 'admin.token'}"}
    done = subprocess.run([*SYNOD, *args], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in {**base, **(env or {})}.items() if v is not None})
    if check:
        assert done.returncode == 0, f"synod {' '.join(args)}: {done.stderr}"
    return done


def jq(program: str, text: str) -> str:
    """`jq -e PROGRAM`: fails the test unless the last output is neither false nor null."""
    done = subprocess.run(["jq", "-e", program], input=text, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, f"jq -e '{program}' on {text[:2000]}: {done.stderr}"
    return done.stdout.strip()


def test_json_output_for_scripts(cluster):
    status = synod(cluster, "status", "--json").stdout
    jq('.ops | type == "number"', status)  # uint64: a number, not a string
    jq(f'(.state_digest | test("{HEX64}")) and (.op_digest | test("{HEX64}"))', status)
    jq('.counters | to_entries | all(.value | type == "number")', status)
    jq('.version_vector | to_entries | all(.value | type == "number")', status)
    digest = synod(cluster, "digest", "--json").stdout
    assert jq(".state_digest", digest) == jq(".state_digest", status)  # one hex form

    members = synod(cluster, "members", "--json").stdout
    jq('length == 3 and all(has("up") and has("address") and has("last_seen_ms_ago"))',
       members)
    jq('[.[] | select(.self)] | length == 1', members)

    put = synod(cluster, "put", "kv", "cli-json", "value=00ff", "--quorum", "--json").stdout
    jq('(.seq | type == "number") and .ack == "ACK_QUORUM" and .holders >= 2', put)
    got = synod(cluster, "get", "kv", "cli-json", "--json").stdout
    assert json.loads(jq('.[0]', got)) == {"key": "cli-json", "value": "00ff"}  # hex blob
    rows = synod(cluster, "sql", "SELECT key, value FROM kv WHERE key = 'cli-json'",
                 "--json").stdout
    jq('.[0].value == "00ff"', rows)  # bytes as hex here too, not a Python repr

    flows = synod(cluster, "flows", "add", "0000000000000001", "f1", "--json").stdout
    jq('.op_id | test("^[0-9a-f]+$")', flows)
    listed = synod(cluster, "flows", "list", "--json").stdout
    jq('.[0] | has("match") and has("cookie") and has("status") and (.priority == 100)', listed)

    slot = synod(cluster, "slots", "alloc/vlan/7", "--propose", '{"owner": "web"}',
                 "--json").stdout
    jq('.decided and .value.owner == "web" and (.membership_version | type == "number")',
       slot)
    jq('(.certificate | test("^[0-9a-f]+$")) and (.voters | length >= 2)', slot)
    human = synod(cluster, "slots", "alloc/vlan/7").stdout
    assert 'decided {"owner": "web"}' in human and "b'" not in human  # no Python repr
    missing = synod(cluster, "slots", "alloc/vlan/8", "--json").stdout
    jq('.decided == false and .value == null and .voters == []', missing)

    tokens = synod(cluster, "token", "list", "--json").stdout
    jq('.[0] | .revoked == false and .expired == false and .expires_ms == 0 '
       'and (.created_ms | type == "number")', tokens)  # defaults present
    jq('.lineage.voters | length == 3', synod(cluster, "lineage", "--json").stdout)
    assert json.loads(synod(cluster, "conflicts", "--json").stdout) == []


def test_connection_settings_and_their_errors(cluster):
    api = f"127.0.0.1:{cluster.nodes[1].api_port}"
    client_toml = cluster.dirs[0] / "client.toml"  # written by `synod init --new-cluster`
    assert client_toml.exists()
    only_file = {"SYNOD_CA": None, "SYNOD_TOKEN": None, "SYNOD_SERVER": None,
                 "SYNOD_CONFIG": str(client_toml)}
    # CA and token from the file, the server as a global option before the subcommand
    done = synod(cluster, "--server", api, "--json", "digest", env=only_file)
    jq(".ops > 0", done.stdout)
    # ... or after it, or from the variable
    synod(cluster, "digest", "--server", api, env=only_file)
    synod(cluster, "digest", env={**only_file, "SYNOD_SERVER": api})

    no_ca = synod(cluster, "status", env={"SYNOD_CA": None}, check=False)
    assert no_ca.returncode == 1
    assert "--ca FILE or SYNOD_CA" in no_ca.stderr
    assert no_ca.stderr.count("\n") == 1, no_ca.stderr  # one line: no gRPC core log line
    no_token = synod(cluster, "status", env={"SYNOD_TOKEN": None}, check=False)
    assert no_token.returncode == 1 and "SYNOD_TOKEN" in no_token.stderr
    assert "--token" in no_token.stderr
    bad = synod(cluster, "status", env={"SYNOD_TOKEN": "synod_0123456789abcdef.x"}, check=False)
    assert "unknown token" in bad.stderr and "(token from SYNOD_TOKEN)" in bad.stderr
    plain = synod(cluster, "status", "--insecure", check=False)
    assert plain.returncode == 1 and "drop --insecure" in plain.stderr
    nobody = synod(cluster, "status", env={"SYNOD_SERVER": f"127.0.0.1:{free_port()}"},
                   check=False)
    assert "nothing answers" in nobody.stderr and "SYNOD_SERVER" in nobody.stderr


def _handled(port: int, method: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        fams = families(answer.read().decode())
    return sample(fams, "grpc_server_handled", "grpc_server_handled_total",
                  grpc_method=method, grpc_code="OK") or 0


def test_metrics_of_a_node_process_and_no_schema_fetch_per_write(cluster):
    port = cluster.metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        fams = families(answer.read().decode())
    check_conventions(fams)
    assert "process_cpu_seconds" in fams and "synod_build_info" in fams

    synod(cluster, "put", "kv", "warm", "value=01")  # fills the client's schema cache
    schema_calls, puts = _handled(port, "GetSchema"), _handled(port, "Put")
    for i in range(3):
        synod(cluster, "put", "kv", f"k{i}", "value=02")
        synod(cluster, "get", "kv", f"k{i}")
    assert _handled(port, "Put") == puts + 3
    assert _handled(port, "GetSchema") == schema_calls  # the schema came from the cache


def test_a_down_member_has_up_false(cluster):
    """Last in this module: it kills a node of the shared cluster."""
    cluster.nodes[2].kill()
    down = cluster.nodes[2].info["node_id"]

    def listed_down() -> bool:
        text = synod(cluster, "members", "--json").stdout
        return jq(f'[.[] | select(.up == false) | .node_id] == ["{down}"]', text) == "true"

    assert wait_for(listed_down, 20), synod(cluster, "members", "--json").stdout
