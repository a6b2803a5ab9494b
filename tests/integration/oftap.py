"""A relay between a switch and its controller that can speak inside that controller's session.

The switch connects to the tap, the tap connects to the controller, and whole OpenFlow
messages are relayed both ways. A test can send a message into the session as if the
controller had sent it: the switch applies that connection's role (and generation id
bookkeeping) to it, and its replies to the test's transaction ids come back to the test
instead of the controller. The tap also remembers the last MASTER role reply the switch
sent the controller, i.e. the generation id the controller holds.

Everything is bounded: socket waits time out, threads are daemons joined on close.
"""

from __future__ import annotations

import queue
import socket
import struct
import threading
from dataclasses import dataclass

__all__ = ["OFPT", "OpenFlowTap", "Reply", "barrier_request", "role_request"]

OFP_VERSION = 0x04
HEADER = struct.Struct("!BBHI")
ROLE_BODY = struct.Struct("!I4xQ")
ERROR_BODY = struct.Struct("!HH")
OFPCR_ROLE_MASTER = 2
IO_TIMEOUT_S = 1.0
ACCEPT_BACKLOG = 4


class OFPT:
    ERROR, ECHO_REQUEST, FLOW_MOD = 1, 2, 14
    BARRIER_REQUEST, BARRIER_REPLY, ROLE_REQUEST, ROLE_REPLY = 20, 21, 24, 25


@dataclass(frozen=True)
class Reply:
    """A message the switch sent back for one of the test's transaction ids."""

    type: int
    xid: int
    body: bytes

    @property
    def error(self) -> tuple[int, int] | None:
        """(type, code) when this is an OFPT_ERROR."""
        if self.type != OFPT.ERROR or len(self.body) < ERROR_BODY.size:
            return None
        return ERROR_BODY.unpack_from(self.body)


def role_request(xid: int, role: int, generation_id: int) -> bytes:
    body = ROLE_BODY.pack(role, generation_id)
    return HEADER.pack(OFP_VERSION, OFPT.ROLE_REQUEST, HEADER.size + len(body), xid) + body


def barrier_request(xid: int) -> bytes:
    return HEADER.pack(OFP_VERSION, OFPT.BARRIER_REQUEST, HEADER.size, xid)


def _read_message(sock: socket.socket, stop: threading.Event) -> bytes | None:
    """One whole OpenFlow message, or None when the peer closed or we are stopping."""
    data = b""
    need = HEADER.size
    while len(data) < need:
        try:
            chunk = sock.recv(need - len(data))
        except TimeoutError:
            if stop.is_set():
                return None
            continue
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
        if len(data) == HEADER.size:
            need = HEADER.unpack(data)[2]
            if need < HEADER.size:
                return None  # not OpenFlow
    return data


class _Session:
    """One switch connection and its relayed controller connection."""

    def __init__(self, switch: socket.socket, controller: socket.socket) -> None:
        self.switch, self.controller = switch, controller
        self.send_lock = threading.Lock()  # whole messages only, from either source
        self.stop = threading.Event()

    def close(self) -> None:
        self.stop.set()
        for sock in (self.switch, self.controller):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class OpenFlowTap:
    """`with OpenFlowTap(controller_port) as tap:` point a switch at tcp:127.0.0.1:tap.port."""

    def __init__(self, controller_port: int, host: str = "127.0.0.1") -> None:
        self.controller = (host, controller_port)
        self.listener = socket.create_server((host, 0), backlog=ACCEPT_BACKLOG)
        self.listener.settimeout(IO_TIMEOUT_S)
        self.port = self.listener.getsockname()[1]
        self.master_generation: int | None = None  # from the last MASTER role reply relayed
        self._session: _Session | None = None
        self._ours: dict[int, queue.Queue[Reply]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        self._threads[0].start()

    def __enter__(self) -> OpenFlowTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()
        for thread in self._threads:
            thread.join(timeout=5)

    # --- speaking inside the controller's session --------------------------------------

    def exchange(self, messages: list[bytes], timeout_s: float) -> dict[int, list[Reply]]:
        """Send messages into the session, then a barrier; the switch's replies by xid.

        The switch answers in order and the barrier reply comes after every reply to
        what preceded it, so once it is in, every error the messages caused is in too.
        """
        session = self._session
        if session is None:
            raise RuntimeError("no switch is connected to the tap")
        xids = [HEADER.unpack_from(m)[3] for m in messages]
        barrier_xid = max(xids, default=0) + 1
        replies: queue.Queue[Reply] = queue.Queue()
        with self._lock:
            for xid in [*xids, barrier_xid]:
                self._ours[xid] = replies
        try:
            with session.send_lock:
                session.switch.sendall(b"".join(messages) + barrier_request(barrier_xid))
            got: dict[int, list[Reply]] = {xid: [] for xid in xids}
            while True:
                reply = replies.get(timeout=timeout_s)
                if reply.xid == barrier_xid and reply.type == OFPT.BARRIER_REPLY:
                    return got
                got.setdefault(reply.xid, []).append(reply)
        finally:
            with self._lock:
                for xid in [*xids, barrier_xid]:
                    self._ours.pop(xid, None)

    # --- relaying ----------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                switch, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                controller = socket.create_connection(self.controller, timeout=IO_TIMEOUT_S)
            except OSError:
                switch.close()
                continue
            for sock in (switch, controller):
                sock.settimeout(IO_TIMEOUT_S)
            session = _Session(switch, controller)
            with self._lock:
                old, self._session = self._session, session
            if old is not None:
                old.close()
            for target in (self._to_controller, self._to_switch):
                thread = threading.Thread(target=target, args=(session,), daemon=True)
                thread.start()
                self._threads.append(thread)

    def _to_controller(self, session: _Session) -> None:
        while (msg := _read_message(session.switch, session.stop)) is not None:
            _version, kind, _length, xid = HEADER.unpack_from(msg)
            with self._lock:
                ours = self._ours.get(xid)
            if ours is not None and kind != OFPT.ECHO_REQUEST:
                ours.put(Reply(kind, xid, msg[HEADER.size:]))
                continue
            if kind == OFPT.ROLE_REPLY:
                role, generation = ROLE_BODY.unpack_from(msg, HEADER.size)
                if role == OFPCR_ROLE_MASTER:
                    self.master_generation = generation
            if not _send(session.controller, msg):
                break
        session.close()

    def _to_switch(self, session: _Session) -> None:
        while (msg := _read_message(session.controller, session.stop)) is not None:
            with session.send_lock:
                if not _send(session.switch, msg):
                    break
        session.close()


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False
