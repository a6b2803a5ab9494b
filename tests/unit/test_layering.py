"""Import rules that keep the layering honest (STYLE.md habits 1, 4 and 6)."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SANS_IO = ["controller/replication", "controller/agreement", "controller/forwarding"]
FORBIDDEN_IN_CORE = {"os_ken", "grpc", "sqlite3", "socket", "asyncio", "time", "random",
                     "subprocess", "threading", "synod", "mininet"}


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _py_files(*dirs: str) -> list[pathlib.Path]:
    return sorted(p for d in dirs for p in (ROOT / d).rglob("*.py"))


@pytest.mark.parametrize("path", _py_files(*SANS_IO), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_is_sans_io(path):
    bad = _imports(path) & FORBIDDEN_IN_CORE
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}: the core takes no I/O"


# The os-ken app's logic, moved out of it (issue 11): a move back into an I/O package, or
# a rename that drops one from the scan above, fails here.
FORWARDING_CORES = ["controller/forwarding/reconciler.py", "controller/forwarding/ranking.py",
                    "controller/forwarding/mastership.py", "controller/forwarding/fabric.py"]


# The lineage coordinator (issue 11): the node's Keeper and the reunion simulator carry
# out its actions; it must stay in the scan and not log.
LINEAGE_CORES = ["controller/agreement/coordinator.py"]


@pytest.mark.parametrize("name", FORWARDING_CORES + LINEAGE_CORES)
def test_extracted_cores_are_scanned_and_do_not_log(name):
    path = ROOT / name
    assert path in _py_files(*SANS_IO), f"{name} is not under a sans-I/O package"
    # They return notes (FlowRefused, Audited, ...) and the shim logs them.
    assert "logging" not in _imports(path), f"{name} logs: return a note for the shim"


def test_only_openflow_package_imports_os_ken():
    offenders = [str(p.relative_to(ROOT)) for p in _py_files("controller", "edge_agent")
                 if "os_ken" in _imports(p) and "controller/openflow" not in str(p)]
    assert offenders == []


def test_generated_protobuf_stays_out_of_the_core():
    offenders = [str(p.relative_to(ROOT)) for p in _py_files(*SANS_IO)
                 if "synod" in _imports(p) or "google" in _imports(p)]
    assert offenders == []


def test_every_package_states_its_job():
    for init in _py_files("controller", "edge_agent", "topologies"):
        if init.name != "__init__.py":
            continue
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init.relative_to(ROOT)} has no docstring"


def test_servicers_ask_the_engine_not_its_replica():
    """Only the engine's round touches the Replica (docs/node.md, "The engine round"): the
    gRPC servicers and the peer links use the engine's query methods (issue 11)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "controller" / "node"
    offenders = []
    for name in ("api.py", "peers.py"):
        tree = ast.parse((root / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "replica":
                offenders.append(f"{name}:{node.lineno}")
    assert offenders == [], f"reaches into engine.replica: {offenders}"
