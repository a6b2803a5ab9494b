"""The runtime's pure parts and its refusals that need no QEMU: names, console facts, a
pid that is not our QEMU, a state folder that cannot be written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_agent.microvm import Image, kernel_cmdline
from edge_agent.qemu import Runtime, RuntimeError_, _pid_is_ours, console_facts, tap_mac, tap_name
from edge_agent.spec import parse_spec


def test_tap_names_and_macs_are_deterministic_short_and_unicast():
    assert tap_name("web", 0) == tap_name("web", 0) != tap_name("web", 1)
    assert tap_name("web", 0) != tap_name("db", 0)
    assert tap_name("web", 0, "node-a") != tap_name("web", 0, "node-b")  # two agents, one host
    assert all(len(tap_name("a" * 32, i)) <= 15 for i in range(8))
    mac = tap_mac("web", 0)
    assert mac == tap_mac("web", 0) != tap_mac("web", 1)
    first = int(mac[:2], 16)
    assert first & 1 == 0 and first & 2 == 2  # unicast, locally administered


CONSOLE = """SeaBIOS
synod-microvm: eth0 52:54:00:00:00:01 10.0.0.1/24
synod-microvm: ready web http 80 health 8080/healthz
synod-microvm: health ok
synod-microvm: health fail
"""


@pytest.mark.parametrize(("text", "facts"), [
    ("", (False, None, "")),
    ("synod-microvm: ready web http 80 health 80", (True, None, "")),
    (CONSOLE, (True, False, "")),
    (CONSOLE + "synod-microvm: health ok\n", (True, True, "")),
    ("[    0.9] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\r\n",
     (False, None, "kernel panic: VFS: Unable to mount root fs on unknown-block(0,0)")),
])
def test_console_facts(text, facts):
    assert console_facts(text) == facts


def test_kernel_cmdline_carries_the_nics_and_health():
    line = kernel_cmdline("web", [("52:54:00:00:00:01", "10.0.0.1/24", None),
                                  ("52:54:00:00:00:02", "10.1.0.1/24", 7)], 80, 8080, "/h")
    assert "synod.nic0=52:54:00:00:00:01,10.0.0.1/24 " in line + " "
    assert "synod.nic1=52:54:00:00:00:02,10.1.0.1/24,7" in line
    assert "synod.healthpath=/h" in line and "panic=1" in line
    assert "healthpath" not in kernel_cmdline("web", [], 80, 80)


def test_a_pid_that_is_not_our_qemu_is_not_taken_for_it(tmp_path):
    pidfile = tmp_path / "qemu.pid"
    pidfile.write_text(str(os.getpid()))
    assert not _pid_is_ours(os.getpid(), pidfile)  # this is python, not QEMU
    assert not _pid_is_ours(2 ** 22 + 12345, pidfile)  # no such process


def test_an_unwritable_state_folder_is_a_reason_not_a_crash(tmp_path):
    rt = Runtime(tmp_path, "owner")
    (tmp_path / "vms" / "web").write_text("a file where the folder goes")
    image = Image(Path("/nonexistent/k"), Path("/nonexistent/i"), "key")
    with pytest.raises(RuntimeError_, match="web: cannot create"):
        rt.start(parse_spec({"name": "web"}), image, "h", 0)
    assert rt.scan() == {}


def test_qemu_pids_finds_qemu_processes_naming_a_folder(tmp_path):
    """Found by /proc: a process whose argv[0] is QEMU's and whose command line names the
    folder; not one naming another folder, nor a non-QEMU process naming this one."""
    import subprocess
    import sys

    from edge_agent.qemu import qemu_pids

    mine, other = tmp_path / "mine", tmp_path / "other"
    nap = "import time; time.sleep(30)"
    procs = [subprocess.Popen(["bash", "-c", f'exec -a qemu-system-x86_64 {sys.executable} '
                               f'-c "{nap}" {folder}']) for folder in (mine, other)]
    procs.append(subprocess.Popen([sys.executable, "-c", nap, str(mine)]))
    try:
        import time

        for _ in range(100):  # bash has exec'd once the cmdline says so
            if len(qemu_pids(tmp_path)) == 2:
                break
            time.sleep(0.02)
        assert qemu_pids(mine) == [procs[0].pid]
        assert qemu_pids(other) == [procs[1].pid]
        assert qemu_pids(mine, other) == sorted(p.pid for p in procs[:2])
    finally:
        for p in procs:
            p.kill()
            p.wait(5)
