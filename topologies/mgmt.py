"""The emulated management WAN: TCP relays on loopback that a scenario can cut and heal.

Nodes and controllers all run on this machine's loopback; whatever crosses a site
boundary (node to node, switch to a remote backup controller) goes through a
WanProxy, so cutting a site's WAN cuts exactly those connections, like a real
outage: established connections are reset and new ones are refused until healed.
"""

from __future__ import annotations

import socket
import threading

__all__ = ["WanProxy"]

ACCEPT_POLL_S = 0.2
BUFFER_BYTES = 65_536


class WanProxy:
    """Listens on 127.0.0.1:<port>, relays to target; cut() and heal() toggle the link."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(ACCEPT_POLL_S)
        self.port = self.sock.getsockname()[1]
        self.is_cut = False
        self.bytes = 0  # relayed so far, both directions (benchmarks read it)
        self._closed = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name=f"wan-{self.port}",
                                        daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.is_cut:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(BUFFER_BYTES)
                if not data:
                    break
                dst.sendall(data)
                with self._lock:
                    self.bytes += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                self._drop(s)

    def _drop(self, s: socket.socket) -> None:
        with self._lock:
            self._conns.discard(s)
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def cut(self) -> None:
        """Reset every connection through this link and refuse new ones."""
        self.is_cut = True
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            self._drop(s)

    def heal(self) -> None:
        self.is_cut = False

    def close(self) -> None:
        self._closed.set()
        self.cut()
        self.sock.close()
        self._thread.join(timeout=2)
