"""Static checks of what runs on real machines: the Vagrantfile (`vagrant validate`), the
provisioning script (shellcheck) and the systemd units (parsed; no systemd here)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import click
import pytest

from controller.up import up_command

REPO = Path(__file__).resolve().parents[2]
VAGRANT = REPO / "vagrant"
UNITS = REPO / "deploy" / "systemd"


def vagrant(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    if shutil.which("vagrant") is None:
        pytest.fail("vagrant is missing: run ./synod.sh (it installs vagrant, vagrant-libvirt)")
    home = tmp_path / "vagrant-home"
    home.mkdir(exist_ok=True)
    full = dict(os.environ, VAGRANT_HOME=str(home), VAGRANT_CHECKPOINT_DISABLE="1",
                VAGRANT_DOTFILE_PATH=str(tmp_path / "dot"), **env)
    for key in ("SYNOD_EDGES", "SYNOD_MEMORY_MB", "SYNOD_TUNNEL", "VAGRANT_DEFAULT_PROVIDER"):
        if key not in env:
            full.pop(key, None)
    return subprocess.run(["vagrant", *args], cwd=VAGRANT, env=full, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.parametrize("edges", ["1", "3"])
def test_vagrant_validate_libvirt(tmp_path, edges):
    secret = VAGRANT / ".synod-secret"
    had_secret = secret.exists()  # a developer's own `vagrant up` may have made one
    r = vagrant(tmp_path, "validate", VAGRANT_DEFAULT_PROVIDER="libvirt", SYNOD_EDGES=edges)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "validated successfully" in r.stdout
    assert secret.exists() == had_secret  # only provisioning commands make the secret


def test_vagrant_validate_virtualbox(tmp_path):
    # VirtualBox is not installed here, and Vagrant refuses to validate for a provider it
    # cannot find (`VBoxManage --version`): give it one that only answers that question.
    # Everything Vagrant checks in the Vagrantfile is still checked.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "VBoxManage").write_text("#!/bin/sh\necho 7.0.14r161095\n")
    (fake / "VBoxManage").chmod(0o755)
    r = vagrant(tmp_path, "validate", VAGRANT_DEFAULT_PROVIDER="virtualbox",
                PATH=f"{fake}:{os.environ['PATH']}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "validated successfully" in r.stdout


@pytest.mark.parametrize("env, line", [
    ({"VAGRANT_DEFAULT_PROVIDER": "hyperv"},
     "synod vagrant: provider hyperv is not supported: use libvirt or virtualbox"),
    ({"SYNOD_MEMORY_MB": "512"}, "synod vagrant: SYNOD_MEMORY_MB=512 is too little"),
    ({"SYNOD_EDGES": "0"}, "synod vagrant: SYNOD_EDGES=0 is not a whole number in 1..20"),
    ({"SYNOD_EDGES": "three"}, "synod vagrant: SYNOD_EDGES=three is not a whole number"),
    ({"SYNOD_TUNNEL": "ipip"}, "synod vagrant: SYNOD_TUNNEL=ipip: use vxlan or gre"),
])
def test_vagrant_bad_settings_are_one_line(tmp_path, env, line):
    r = vagrant(tmp_path, "validate", **env)
    assert r.returncode == 1
    assert r.stderr.strip().startswith(line), r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr


def test_vagrant_up_with_an_unsupported_provider_stops_before_any_vm(tmp_path):
    r = vagrant(tmp_path, "up", "--provider=hyperv")
    assert r.returncode == 1 and "provider hyperv is not supported" in r.stderr
    assert not (tmp_path / "dot" / "machines").exists()  # no VM was created


def test_provisioning_script_passes_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is missing: run ./synod.sh (it installs shellcheck)")
    r = subprocess.run(["shellcheck", "--severity=style", str(VAGRANT / "synod-site.sh")],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stdout


def test_the_vagrantfile_calls_only_steps_the_script_has():
    script = (VAGRANT / "synod-site.sh").read_text()
    known = set(re.search(r"^\s+(check\|[\w|]+)\)", script, re.M).group(1).split("|"))
    used = set(re.findall(r"\$S (\w+)", (VAGRANT / "Vagrantfile").read_text()))
    assert {"install", "bridge", "tunnel", "found", "join", "host"} <= used <= known


def test_bad_step_arguments_are_one_line(tmp_path):
    env = dict(os.environ, SYNOD_DATA_ROOT=str(tmp_path))
    for args, needle in [
        (["tunnel", "--site", "e1", "--local", "10.0.0.1", "--peer", "cloud"],
         "synod-site: e1: step tunnel: "),
        (["bridge", "--site", "e1", "--dpid", "0x1", "--datapath", "dpdk"],
         "synod-site: e1: step bridge: --datapath dpdk: use system or netdev"),
        (["join", "--site", "e1"], "synod-site: e1: step join: --ip is required"),
        (["check", "--site", "e1", "--memory-mb-min", "99999999"],
         "synod-site: e1: step check: "),
        (["found", "--site", "cloud", "--ip", "1.2.3.4", "--controllers", "x",
          "--bootstrap", str(tmp_path)], "synod-site: cloud: step found: SYNOD_SECRET is not set"),
    ]:
        env.pop("SYNOD_SECRET", None)
        r = subprocess.run(["bash", str(VAGRANT / "synod-site.sh"), *args], env=env,
                           capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode != 0 and r.stderr.startswith(needle), (args, r.stderr)
        assert r.stderr.count("\n") == 1, r.stderr


# ----------------------------------------------------------------------------- systemd
# The directives these units use, by section; a typo is an unknown key (systemd would only
# warn and carry on without the hardening).
DIRECTIVES = {
    "Unit": {"Description", "Documentation", "Wants", "After", "Requires", "BindsTo"},
    "Service": {
        "Type", "User", "Group", "ExecStart", "Restart", "RestartSec", "KillMode",
        "TimeoutStopSec", "StartLimitIntervalSec", "StartLimitBurst", "UMask", "LimitNOFILE",
        "NoNewPrivileges", "ProtectSystem", "ReadWritePaths", "ProtectHome", "PrivateTmp",
        "PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectKernelTunables",
        "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock",
        "ProtectHostname", "RestrictNamespaces", "LockPersonality", "RestrictRealtime",
        "RestrictSUIDSGID", "RemoveIPC", "CapabilityBoundingSet", "AmbientCapabilities",
        "SystemCallArchitectures", "SystemCallFilter", "RestrictAddressFamilies",
    },
    "Install": {"WantedBy"},
}
BOOLEAN = {"NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices",
           "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
           "ProtectControlGroups", "ProtectClock", "ProtectHostname", "RestrictNamespaces",
           "LockPersonality", "RestrictRealtime", "RestrictSUIDSGID", "RemoveIPC"}


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            assert current in DIRECTIVES, f"{path.name}:{n}: unknown section [{current}]"
            sections[current] = []
            continue
        assert current is not None and "=" in line, f"{path.name}:{n}: not KEY=VALUE"
        key, _, value = line.partition("=")
        assert key in DIRECTIVES[current], f"{path.name}:{n}: unknown {current} key {key}"
        sections[current].append((key, value))
    return sections


UNIT_FILES = sorted(UNITS.glob("*.service"))


def test_there_is_a_unit_per_daemon_and_one_for_the_site():
    assert {p.name for p in UNIT_FILES} == {"synod-up.service", "synod-node.service",
                                           "synod-controller.service", "synod-agent.service"}


@pytest.mark.parametrize("path", UNIT_FILES, ids=lambda p: p.name)
def test_unit_parses_and_its_command_is_valid(path):
    unit = parse_unit(path)
    service = dict(unit["Service"])
    assert service["Restart"] in ("on-failure", "always")
    assert service["Type"] == "simple" and service["UMask"] == "0077"
    assert service["NoNewPrivileges"] == "yes"
    for key, value in unit["Service"]:
        if key in BOOLEAN:
            assert value in ("yes", "no"), f"{path.name}: {key}={value}"
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == "/usr/local/bin/synod" and argv[1] == "up"
    # the same options `synod up` accepts (click parses them; nothing runs)
    ctx = up_command.make_context("up", argv[2:])
    assert ctx.params["config_file"] == "/etc/synod/site.toml"
    only = ctx.params["only"]
    assert path.name == f"synod-{only}.service" if only else path.name == "synod-up.service"
    if service.get("ProtectSystem") == "strict":
        assert "/var/lib/synod" in service["ReadWritePaths"].split()  # the data directory
    assert dict(unit["Install"])["WantedBy"] == "multi-user.target"


def test_unprivileged_units_drop_every_capability():
    for name in ("synod-node.service", "synod-controller.service"):
        service = dict(parse_unit(UNITS / name)["Service"])
        assert service["User"] == "synod" and service["CapabilityBoundingSet"] == ""
        assert service["PrivateDevices"] == "yes"


def test_the_agent_unit_keeps_what_vms_need():
    service = parse_unit(UNITS / "synod-agent.service")["Service"]
    devices = [v for k, v in service if k == "DeviceAllow"]
    assert devices == ["/dev/kvm rw", "/dev/net/tun rw"]
    assert dict(service)["DevicePolicy"] == "closed"
    assert "/run/openvswitch" in dict(service)["ReadWritePaths"]
    assert "CAP_NET_ADMIN" in dict(service)["CapabilityBoundingSet"]


def test_an_unknown_daemon_for_only_is_refused():
    with pytest.raises(click.BadParameter):
        up_command.make_context("up", ["--config", "x", "--only", "nodes"])
