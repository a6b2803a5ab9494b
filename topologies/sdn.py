"""A Synod cluster for an emulation: one node and one controller per site, a cuttable WAN.

Every site (cloud, edge1, ...) gets a `synod node` (its own data directory, mTLS to
its peers) and a `synod-controller` running the Synod app, both started and supervised
by the site's own `synod up` from a site file, as on a real site. Everything listens on
loopback; what crosses a site boundary goes through a WanProxy (topologies.mgmt):
node-to-node links, and each switch's connection to its backup controller at
another site. Cutting a site's WAN cuts those, plus its Mininet WAN link.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from topologies.mgmt import WanProxy
from topologies.netctl import (
    OWNER_ENV,
    EmulationError,
    Progress,
    stop_process,
)

__all__ = ["SdnCluster"]

NODE_READY_TIMEOUT_S = 60
CLOUD = "cloud"


# Listening ports are picked below the kernel's ephemeral range (32768-60999 by default):
# a port picked there and released until the daemon binds it could meanwhile become the
# source port of one of the many outgoing connections (20 sites: the bind failed once).
PORT_RANGE = (20_000, 32_000)
_picked: set[int] = set()


def _free_port() -> int:
    import random

    first = random.randrange(*PORT_RANGE)
    size = PORT_RANGE[1] - PORT_RANGE[0]
    for i in range(size):
        port = PORT_RANGE[0] + (first - PORT_RANGE[0] + i) % size
        if port in _picked:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _picked.add(port)
        return port
    raise EmulationError(f"no free port in {PORT_RANGE[0]}-{PORT_RANGE[1]}")


def _synod() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "synod")
    return [script] if os.path.exists(script) else [
        sys.executable, "-c", "from controller.cli import main; main()"]


class SdnCluster:
    """Nodes and controllers for the given sites; `with SdnCluster(...) as c:` stops all."""

    def __init__(self, sites: list[str], workdir: Path, progress: Progress) -> None:
        self.sites, self.workdir, self.progress = sites, workdir, progress
        self.index = {site: i + 1 for i, site in enumerate(sites)}
        self.api = {s: _free_port() for s in sites}
        self.peer = {s: _free_port() for s in sites}
        self.of = {s: _free_port() for s in sites}
        self.dirs = {s: workdir / s for s in sites}
        self.ups: dict[str, subprocess.Popen] = {}  # each site's `synod up`
        self.proxies: dict[tuple[str, str], WanProxy] = {}  # (from site, to site)
        self.token_file = self.dirs[sites[0]] / "admin.token"
        self.ca = self.dirs[sites[0]] / "ca.crt"
        self.web = {s: _free_port() for s in sites}  # each node's read-only web view
        self.metrics = {s: _free_port() for s in sites}  # each node's Prometheus text
        self.viewer_token = ""  # made once the nodes run (web_url)
        self._clients: dict = {}  # site -> API client (digests)

    # --- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> SdnCluster:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start(self) -> None:
        self.progress(f"creating a {len(self.sites)}-node cluster in {self.workdir}")
        args = [*_synod(), "init", "--new-cluster", "emulation"]
        for site in self.sites:
            args += ["--data", str(self.dirs[site])]
        done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise EmulationError(f"synod init failed: {done.stderr.strip()[-300:]}")
        for a in self.sites:
            for b in self.sites:
                if a != b and (CLOUD in (a, b)):
                    self.proxies[(a, b)] = WanProxy(self.peer[b])
        for site in self.sites:
            self._write_site_file(site)
        for site in self.sites:
            self._up(site)

    def _write_site_file(self, site: str) -> None:
        """`synod init --site` on the directory made above: it keeps the node and writes
        the site file (loopback ports, peers through the WAN relays, the controllers)."""
        peers = []
        for other in self.sites:
            if (site, other) in self.proxies:
                peers += ["--peer", f"127.0.0.1:{self.proxies[(site, other)].port}"]
        controllers = ",".join(f"{s}=127.0.0.1:{self.of[s]}" for s in self.sites)
        done = subprocess.run(
            [*_synod(), "init", "--site", site, "--data", str(self.dirs[site]),
             "--api", f"127.0.0.1:{self.api[site]}",
             "--peer-listen", f"127.0.0.1:{self.peer[site]}", *peers,
             "--of-listen", f"127.0.0.1:{self.of[site]}", "--controllers", controllers,
             "--controller-index", str(self.index[site]),
             "--controller-token", str(self.token_file.resolve())],
            capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise EmulationError(f"synod init --site {site} failed: {done.stderr.strip()}")
        with open(self.dirs[site] / "site.toml", "a") as f:
            f.write(f'\n[web]\nlisten = "127.0.0.1:{self.web[site]}"\n'
                    f'\n[metrics]\nlisten = "127.0.0.1:{self.metrics[site]}"\n')

    def _up(self, site: str) -> None:
        """The site's `synod up`, in the foreground (it stops its daemons on SIGTERM)."""
        proc = subprocess.Popen(
            [*_synod(), "up", "--config", str(self.dirs[site] / "site.toml")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env=dict(os.environ, **{OWNER_ENV: str(os.getpid())}))  # for --cleanup
        self.ups[site] = proc
        line: list[bytes] = []
        stdout = proc.stdout
        assert stdout is not None  # stdout=PIPE above
        reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(NODE_READY_TIMEOUT_S)
        if not line or not line[0].startswith(b"{"):
            stop_process(proc)
            assert proc.stderr is not None
            said = proc.stderr.read().decode(errors="replace").strip().splitlines()[-1:]
            raise EmulationError(f"site {site} did not start: {said[0] if said else ''} "
                                 f"(logs in {self.dirs[site] / 'logs'})")
        # its stderr (the supervisor's JSON lines) goes on filling a pipe nobody reads
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # type: ignore[union-attr]
        self.progress(f"site {site} up: node and controller (api 127.0.0.1:{self.api[site]}, "
                      f"OpenFlow 127.0.0.1:{self.of[site]})")

    def stop(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        for proc in self.ups.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        for proc in self.ups.values():
            try:
                proc.wait(timeout=30)  # it waits for its daemons (SIGKILL after 10 s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for proxy in self.proxies.values():
            proxy.close()
        self.proxies.clear()

    # --- the WAN -----------------------------------------------------------------------

    def controller_targets(self, home: str) -> list[str]:
        """OpenFlow targets for a switch of `home`: its own controller, then a backup
        across the WAN (the cloud's for an edge switch, edge1's for the cloud)."""
        targets = [f"tcp:127.0.0.1:{self.of[home]}"]
        backup = CLOUD if home != CLOUD else next((s for s in self.sites if s != CLOUD), None)
        if backup is not None:
            proxy = self.proxies.setdefault((f"switch:{home}", backup), WanProxy(self.of[backup]))
            targets.append(f"tcp:127.0.0.1:{proxy.port}")
        return targets

    def target_sites(self) -> dict[str, str]:
        """OpenFlow target -> the site whose controller is behind it (see controller_targets)."""
        sites = {f"tcp:127.0.0.1:{port}": site for site, port in self.of.items()}
        for (origin, backup), proxy in self.proxies.items():
            if origin.startswith("switch:"):
                sites[f"tcp:127.0.0.1:{proxy.port}"] = backup
        return sites

    def _wan_of(self, site: str) -> list[WanProxy]:
        """Every relay that crosses `site`'s WAN: its node links, its switches' links to
        remote controllers, and remote switches' links to its controller."""
        return [proxy for (a, b), proxy in self.proxies.items()
                if site in (a, b) or a == f"switch:{site}"]

    def cut(self, site: str) -> None:
        for proxy in self._wan_of(site):
            proxy.cut()

    def heal(self, site: str) -> None:
        for proxy in self._wan_of(site):
            proxy.heal()

    # --- the API -----------------------------------------------------------------------

    def synod(self, site: str, *args: str, timeout_s: float = 30) -> str:
        """One CLI call at a site's node; any failure, a timeout included, is an
        EmulationError naming the call, the site and the cause."""
        what = f"synod {' '.join(args)} at {site}"
        try:
            done = subprocess.run(
                [*_synod(), *args, "--server", f"127.0.0.1:{self.api[site]}",
                 "--token", f"@{self.token_file}", "--ca", str(self.ca),
                 "--timeout", f"{timeout_s:g}"],
                capture_output=True, text=True, timeout=timeout_s + 10, check=False)
        except subprocess.TimeoutExpired:
            raise EmulationError(f"{what}: no answer within {timeout_s + 10:g} s (the "
                                 f"node's log: {self.dirs[site] / 'logs'})") from None
        if done.returncode != 0:
            raise EmulationError(f"{what}: {done.stderr.strip()}")
        return done.stdout

    def pids(self) -> dict[str, int]:
        """'node-SITE' / 'controller-SITE' -> pid of that daemon (children of synod up)."""
        parent = {proc.pid: site for site, proc in self.ups.items()}
        out = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid in parent:
                kind = "controller" if any(b"synod-controller" in a for a in cmdline) else \
                    "node" if b"node" in cmdline and b"run" in cmdline else ""
                if kind:
                    out[f"{kind}-{parent[ppid]}"] = int(entry.name)
        return out

    def wan_bytes(self) -> int:
        """Bytes relayed so far by the node-to-node WAN links (both directions)."""
        return sum(proxy.bytes for (a, _), proxy in self.proxies.items()
                   if not a.startswith("switch:"))

    def web_url(self, site: str, with_token: bool = True) -> str:
        """The site node's web view (docs/web.md); with a viewer token in the fragment,
        which the browser keeps in the tab and never sends to a server."""
        if not self.viewer_token:
            self.viewer_token = self.synod(site, "token", "create", "--role", "viewer",
                                           "--description", "synod emulate web view").strip()
        url = f"https://127.0.0.1:{self.web[site]}/"
        return f"{url}#token={self.viewer_token}" if with_token else url

    def digest(self, site: str) -> str:
        return json.loads(self.synod(site, "digest", "--json"))["state_digest"]

    def digests(self, timeout_s: float = 10) -> dict[str, str]:
        """Every node's state digest, read one after another over open API channels: all
        within a few ms, where a CLI call per node took seconds at 10 sites and a write in
        between (a link's latency) left them unequal however long the wait."""
        from synod.v1 import northbound_pb2

        from controller.node.client import Client, ClientError

        out = {}
        for site in self.sites:
            client = self._clients.get(site)
            if client is None:
                client = self._clients[site] = Client(
                    server=f"127.0.0.1:{self.api[site]}",
                    token=self.token_file.read_text().strip(), ca_file=str(self.ca),
                    timeout_s=timeout_s)
            try:
                d = client.call(client.cluster.GetDigest, northbound_pb2.GetDigestRequest())
            except ClientError as e:
                raise EmulationError(f"the digest of {site}'s node: {e}") from None
            out[site] = bytes(d.state_digest).hex()
        return out

    def masters(self, site: str) -> dict[str, tuple[str, int]]:
        """dpid -> (master site, generation id), as the replicated switches table says."""
        rows = json.loads(self.synod(site, "list", "switches", "--json"))
        return {str(r["dpid"]): (str(r.get("master") or ""), int(r.get("generation_id") or 0))
                for r in rows}

    def wait(self, predicate, timeout_s: float, interval_s: float = 0.3) -> float | None:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            try:
                if predicate():
                    return time.monotonic() - started
            except EmulationError:
                pass
            time.sleep(interval_s)
        return None
