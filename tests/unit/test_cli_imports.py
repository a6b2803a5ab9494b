"""`synod` loads its command list on every call (`synod get` included): that must not
import the replication core, the agreement layer, the edge agent's driver or gRPC, which
only the commands that use them load (decision 0035: each costs tens of ms per call)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("controller.agreement", "controller.replication", "edge_agent.driver",
         "edge_agent.deploy", "grpc", "os_ken", "mininet")


def test_loading_the_cli_imports_none_of_the_heavy_modules():
    code = ("import sys, controller.cli\n"
            f"print('\\n'.join(sorted(m for m in sys.modules if m.startswith({HEAVY!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == [], f"controller.cli imports {out}"
