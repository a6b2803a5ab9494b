"""`synod init --site` and `synod up`/`down` with real node and controller processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller.node.config import load_config
from controller.up import site_daemons

pytestmark = pytest.mark.cluster

SYNOD = [os.path.join(os.path.dirname(sys.executable), "synod")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def synod(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*SYNOD, *args], capture_output=True, text=True, timeout=timeout_s,
                          check=False)


def pids_of(data: Path) -> dict[str, int]:
    """The daemons `synod up` runs, from its log (the latest spawn of each)."""
    pids = {}
    for line in (data / "logs" / "up.log").read_text().splitlines():
        if not line.startswith("{"):
            continue  # synod up's own one-line error
        event = json.loads(line)
        if event["event"] == "spawned":
            pids[event["daemon"]] = event["pid"]
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def wait_for(pred, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def site(tmp_path):
    """A founded one-node site with a controller, its file, and a `down` at the end."""
    data = tmp_path / "cloud"
    of_port = free_port()
    r = synod("init", "--site", "cloud", "--data", str(data), "--new-cluster", "t",
              "--api", f"127.0.0.1:{free_port()}", "--peer-listen", f"127.0.0.1:{free_port()}",
              "--of-listen", f"127.0.0.1:{of_port}")
    assert r.returncode == 0, r.stderr
    config = data / "site.toml"
    started: list[int] = []
    yield data, config, of_port, started
    synod("down", "--config", str(config))
    for pid in started:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    if (data / "logs" / "up.log").exists():
        left = [p for p in pids_of(data).values() if alive(p)]
        assert not left, f"daemons left running: {left}"


def test_init_site_is_idempotent_and_refuses_to_clobber(site):
    data, config, _, _ = site
    text = config.read_text()
    assert 'site = "cloud"' in text and "[controller]\nenabled = true" in text
    assert load_config(config).controller.token_file == "admin.token"  # founder's token
    again = synod("init", "--site", "cloud", "--data", str(data), "--new-cluster", "t",
                  "--api", load_config(config).api.listen,
                  "--peer-listen", load_config(config).peer.listen,
                  "--of-listen", load_config(config).controller.listen)
    assert again.returncode == 0, again.stderr
    assert "holds a node already: kept" in again.stdout and "up to date" in again.stdout
    other = synod("init", "--site", "cloud", "--data", str(data), "--api", "127.0.0.1:1",
                  "--advertise", "127.0.0.1:2")
    assert other.returncode == 1
    assert other.stderr.count("\n") == 1 and "exists with other settings" in other.stderr


def test_init_site_needs_an_address_peers_can_dial(tmp_path):
    r = synod("init", "--site", "e1", "--data", str(tmp_path / "e1"))
    assert r.returncode == 1 and "give --advertise" in r.stderr


def test_daemons_come_from_the_site_file(site):
    data, config, of_port, _ = site
    cfg = load_config(config)
    node, controller = site_daemons(cfg, config)
    assert node.argv[1:] == ("node", "run", "--config", str(config), "--data", str(data))
    assert controller.ready_tcp == ("127.0.0.1", of_port)
    argv = controller.argv
    assert argv[argv.index("--node-token-file") + 1] == str(data / "admin.token")
    assert argv[argv.index("--controllers") + 1] == f"cloud=127.0.0.1:{of_port}"
    assert argv[-1] == "controller.openflow.synod_app"


def test_up_supervises_restarts_and_stops(site):
    data, config, of_port, started = site
    t0 = time.monotonic()
    r = synod("up", "--config", str(config), "--detach")
    ready_s = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("site cloud up: node pid"), r.stdout
    print(f"synod up --detach: node and controller ready in {ready_s:.2f} s")
    pids = pids_of(data)
    started += pids.values()
    socket.create_connection(("127.0.0.1", of_port), timeout=2).close()
    status = synod("status", "--json", "--server", load_config(config).api.listen,
                   "--token", f"@{data / 'admin.token'}", "--ca", str(data / "ca.crt"))
    assert status.returncode == 0 and json.loads(status.stdout)["cluster_name"] == "t"

    # idempotent: a second up (detached or not) says it runs already
    for args in (["--detach"], []):
        again = synod("up", "--config", str(config), *args, timeout_s=20)
        assert again.returncode == 0 and "already running" in again.stdout

    # a crashed controller is restarted (first back-off 500 ms) and listens again
    os.kill(pids["controller"], signal.SIGKILL)
    assert wait_for(lambda: pids_of(data)["controller"] != pids["controller"], 10)
    new = pids_of(data)["controller"]
    started.append(new)
    assert wait_for(lambda: _listens(of_port), 20)
    assert alive(pids["node"])  # the node was not touched

    t0 = time.monotonic()
    down = synod("down", "--config", str(config))
    print(f"synod down: {time.monotonic() - t0:.2f} s")
    assert down.returncode == 0 and down.stdout.strip() == "site cloud stopped"
    assert not alive(new) and not alive(pids["node"])
    assert synod("down", "--config", str(config)).stdout.strip() == "site cloud is not running"
    events = [json.loads(ln)["event"] for ln in (data / "logs/up.log").read_text().splitlines()
              if ln.startswith("{")]
    assert events[-1] == "exit" and (data / "logs" / "node.log").stat().st_size > 0


def _listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def test_foreground_up_prints_ready_and_stops_on_sigterm(site):
    data, config, _, started = site
    proc = subprocess.Popen([*SYNOD, "up", "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    started.append(proc.pid)
    try:
        line = proc.stdout.readline()  # bounded by the supervisor's own ready timeout
        ready = json.loads(line)
        assert ready["event"] == "ready" and set(ready["daemons"]) == {"node", "controller"}
        started += ready["daemons"].values()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        print(f"SIGTERM to exit: {time.monotonic() - t0:.2f} s")
        assert not any(alive(p) for p in ready["daemons"].values())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_daemon_that_cannot_start_stops_up_with_the_reason(site):
    data, config, of_port, started = site
    with socket.socket() as busy:  # the controller's port is taken (bound, not listening)
        busy.bind(("127.0.0.1", of_port))
        r = synod("up", "--config", str(config), "--detach")
    assert r.returncode == 1
    line = r.stderr.strip()
    assert "\n" not in line, line
    assert "site cloud: step run: controller exited with code 1 before it was ready" in line
    assert "controller.log ends: synod-controller: error:" in line, line
    assert "in use" in line or "listen" in line, line
    assert synod("down", "--config", str(config)).stdout.strip() == "site cloud is not running"


@pytest.mark.parametrize("edit, needle", [
    (lambda t: t.replace("[controller]\n", "[controller]\nlisten_port = 1\n"),
     "controller.listen_port: unknown key"),
    (lambda t: t.replace("restarts_max = 10", "restarts_max = -1"),
     "up.restarts_max: expected a non-negative integer"),
    (lambda t: t.replace("[controller]\n", "[controler]\n"), "controler: unknown key"),
])
def test_a_typo_is_one_line_naming_the_key(site, edit, needle):
    _, config, _, _ = site
    config.write_text(edit(config.read_text()))
    r = synod("up", "--config", str(config))
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert needle in r.stderr and "step config" in r.stderr and "synod config check" in r.stderr


def test_a_node_in_no_cluster_is_named_with_the_fix(tmp_path):
    data = tmp_path / "e1"
    r = synod("init", "--site", "e1", "--data", str(data), "--advertise", "127.0.0.1:7999")
    assert r.returncode == 0, r.stderr
    r = synod("up", "--config", str(data / "site.toml"))
    assert r.returncode == 1
    assert "site e1: step check:" in r.stderr and "synod join" in r.stderr


def test_the_agent_runs_only_when_the_site_file_enables_it(site):
    data, config, _, started = site
    cfg = load_config(config)
    assert [d.name for d in site_daemons(cfg, config)] == ["node", "controller"]
    config.write_text(config.read_text().replace("[agent]\nenabled = false",
                                                 "[agent]\nenabled = true"))
    cfg = load_config(config)
    agent = site_daemons(cfg, config)[-1]
    assert agent.name == "agent" and agent.ready_tcp is None  # ready = its JSON line
    assert agent.argv[1:3] == ("agent", "run")
    assert agent.argv[agent.argv.index("--node-token-file") + 1] == str(data / "admin.token")
    assert agent.argv[agent.argv.index("--state-dir") + 1] == f"{data}/agent"
    r = synod("up", "--config", str(config), "--detach")
    assert r.returncode == 0, r.stderr
    assert ", agent pid " in r.stdout, r.stdout
    pids = pids_of(data)
    started += pids.values()
    assert set(pids) == {"node", "controller", "agent"}
    assert (data / "logs" / "agent.log").stat().st_size > 0
    down = synod("down", "--config", str(config))
    assert down.returncode == 0 and not any(alive(p) for p in pids.values())


def test_a_bad_agent_placeholder_is_named(site):
    _, config, _, _ = site
    config.write_text(config.read_text().replace(
        "[agent]\nenabled = false", '[agent]\nenabled = true\nargs = ["--site", "{sight}"]'))
    r = synod("up", "--config", str(config))
    assert r.returncode == 1 and "agent.args: unknown placeholder 'sight'" in r.stderr
