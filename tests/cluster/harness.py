"""Real `synod node` processes on loopback, a TCP proxy per directed link, and a nemesis.

Every wait is bounded; stop() kills whatever was started (process groups), also on failure.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from synod.v1 import northbound_pb2 as nb

from controller.node.client import Client, ClientError
from controller.node.datadir import init_data_dirs
from controller.node.pki import KeyPair
from topologies.mgmt import WanProxy

SYNOD = [sys.executable, "-c", "from controller.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reserve_port(held: dict[int, socket.socket]) -> int:
    """A free loopback port, kept bound (SO_REUSEPORT, not listening) in `held` until the
    caller closes it: connect() never picks a port a socket is bound to, so no outbound
    connection of the run can take it between the pick and the node's bind (CI once failed
    twice in one run with "Address already in use" on a node's port at start). gRPC
    servers bind with SO_REUSEPORT too, and only listening sockets get connections."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    held[port] = s
    return port


# A TCP relay per directed link that the nemesis can cut and heal: the emulation's.
LinkProxy = WanProxy


class NodeProcess:
    def __init__(self, index: int, data: Path, api_port: int, peer_port: int,
                 peers: list[str], log: Path) -> None:
        self.index, self.data, self.log = index, data, log
        self.api_port, self.peer_port, self.peers = api_port, peer_port, peers
        self.proc: subprocess.Popen | None = None
        self.pids: list[int] = []
        self.extra_args: list[str] = []  # more `synod node run` flags (e.g. --metrics)

    def start(self, timeout_s: float = 30, wait_ready: bool = True) -> None:
        """Start `synod node run`; wait (bounded) for its ready line unless wait_ready is
        false (a test that watches the start itself)."""
        args = [*SYNOD, "node", "run", "--data", str(self.data),
                "--api", f"127.0.0.1:{self.api_port}",
                "--peer-listen", f"127.0.0.1:{self.peer_port}"]
        for p in self.peers:
            args += ["--peer", p]
        args += self.extra_args
        logf = open(self.log, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=logf,
                                     start_new_session=True)
        logf.close()
        self.pids.append(self.proc.pid)
        if not wait_ready:
            return
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(self.proc.stdout.readline().decode()),
                                  daemon=True)
        reader.start()
        reader.join(timeout_s)
        if not ready or not ready[0].startswith("{"):
            if ready:  # end of its output: it is exiting; let its code be read
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            died = self.died()
            self.kill()
            raise RuntimeError(died or f"node {self.index} did not start in {timeout_s} s: "
                                       f"{self.log_tail()}")
        self.info = json.loads(ready[0])

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError as exc:
            return f"(no log: {exc})"

    def died(self) -> str | None:
        """What to say when the process has exited (its code and the tail of its log);
        None while it runs."""
        code = self.proc.poll() if self.proc is not None else None
        if code is None:
            return None
        return f"node {self.index} exited with code {code}: {self.log_tail()}"

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    def __init__(self, root: Path, n: int, seed: int) -> None:
        self.root, self.n, self.rng = root, n, random.Random(seed)
        self.dirs = [root / f"n{i}" for i in range(n)]
        init_data_dirs(self.dirs, f"cluster-{seed}")
        self.token = (self.dirs[0] / "admin.token").read_text().strip()
        self.ca = str(self.dirs[0] / "ca.crt")
        self.held: dict[int, socket.socket] = {}  # the nodes' ports, until stop()
        peer_ports = [reserve_port(self.held) for _ in range(n)]
        self.proxies = {(i, j): LinkProxy(peer_ports[j])
                        for i in range(n) for j in range(n) if i != j}
        self.nodes = [
            NodeProcess(i, self.dirs[i], reserve_port(self.held), peer_ports[i],
                        [f"127.0.0.1:{self.proxies[(i, j)].port}" for j in range(n) if j != i],
                        root / f"n{i}.log")
            for i in range(n)
        ]

    def start(self, ready_s: float = 30.0) -> None:
        """Start every node, then wait until each one knows the admin token (the founder's
        first op, which the others receive by sync): a test's first call to any node then
        cannot meet "unknown token" because it came a few hundred ms too early."""
        for node in self.nodes:
            node.start()
        waiting = set(range(len(self.nodes)))
        deadline = time.monotonic() + ready_s
        while waiting and time.monotonic() < deadline:
            for i in sorted(waiting):
                died = self.nodes[i].died()
                if died is not None:  # it will never accept the token: say why now
                    raise RuntimeError(f"{died}\n(while waiting for the admin token)")
                try:
                    with self.client(i, timeout_s=2) as c:
                        c.call(c.cluster.GetStatus, nb.GetStatusRequest())
                    waiting.discard(i)
                except ClientError:
                    pass
            if waiting:
                time.sleep(0.05)
        if waiting:
            raise RuntimeError(f"nodes {sorted(waiting)} did not accept the admin token "
                               f"within {ready_s} s of starting")

    def join_node(self, via: int = 0, extra_args: list[str] | None = None) -> NodeProcess:
        """Prepare a new node with the cluster's CA, `synod join` it through node `via`
        (a real CLI process), start it with the peers from its invitation; it is then
        nodes[-1] (stopped with the rest). Does not change n (the nemesis's range)."""
        i = len(self.nodes)
        data = self.root / f"n{i}"
        ca = KeyPair((self.dirs[0] / "ca.key").read_bytes(), (self.dirs[0] / "ca.crt").read_bytes())
        init_data_dirs([data], None, ca)
        peer_port = reserve_port(self.held)
        self.joined = self.run_join(data, via, peer_port)
        node = NodeProcess(i, data, reserve_port(self.held), peer_port, [],
                           self.root / f"n{i}.log")
        node.extra_args = list(extra_args or [])
        self.nodes.append(node)
        self.dirs.append(data)
        node.start()
        return node

    def run_join(self, data: Path, via: int, peer_port: int) -> dict:
        """`synod join` as a real CLI process; its JSON summary, or RuntimeError."""
        args = [*SYNOD, "join", "--data", str(data),
                "--via", f"127.0.0.1:{self.nodes[via].api_port}",
                "--advertise", f"127.0.0.1:{peer_port}", "--json"]
        done = subprocess.run(args, capture_output=True, timeout=60,
                              env={**os.environ, "SYNOD_TOKEN": self.token})
        if done.returncode != 0:
            raise RuntimeError(f"synod join failed: {done.stderr.decode()[-2000:]}")
        return json.loads(done.stdout)

    def client(self, i: int, timeout_s: float = 5) -> Client:
        return Client(f"127.0.0.1:{self.nodes[i].api_port}", self.token, self.ca,
                      timeout_s=timeout_s)

    def isolate(self, i: int) -> None:
        for (a, b), p in self.proxies.items():
            if i in (a, b):
                p.cut()

    def partition(self, *groups: set[int]) -> None:
        """Cut every link between nodes of different groups (nodes in no group: all cut)."""
        side = {i: g for g, members in enumerate(groups) for i in members}
        for (a, b), p in self.proxies.items():
            if side.get(a, -1 - a) != side.get(b, -1 - b):
                p.cut()

    def heal(self) -> None:
        for p in self.proxies.values():
            p.heal()

    def stop(self) -> list[int]:
        """Stop everything; return pids still alive afterwards (should be none)."""
        for node in self.nodes:
            node.stop()
        for node in self.nodes:
            node.kill()
        for p in self.proxies.values():
            p.close()
        for sock in self.held.values():
            sock.close()
        self.held.clear()
        leaked = []
        for node in self.nodes:
            for pid in node.pids:
                try:
                    os.kill(pid, 0)
                    leaked.append(pid)
                except ProcessLookupError:
                    pass
        return leaked


def wait_for(pred, timeout_s: float, interval_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if pred():
                return True
        except Exception:  # noqa: BLE001 - a node restarting is expected here
            pass
        time.sleep(interval_s)
    return False
