"""Flow-stats replies to our own requests, read from their bytes instead of os-ken's objects.

os-ken parses every message a switch sends, in the connection's receive thread, into
objects (for a flow-stats reply: an OFPFlowStats, an OFPMatch and instruction and action
objects per flow), and Synod then converted those for its audit: 0.45 s plus 0.2 s for
10,000 flows (docs/decisions/0098). os-ken has no per-connection hook for that, so
`install()` wraps the one function its receive loop calls (os_ken.ofproto.ofproto_parser
.msg). The wrapper looks only at multipart replies whose transaction id was registered
with `expect()` on that very connection — the requests Synod's controller sends with its
own xids — and parses those with controller.forwarding.readback; every other message
(other apps' stats, our replies it cannot judge the same way) goes to os-ken's parser
untouched. A parsed part is handed to the registered callback and os-ken dispatches
nothing for it.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

from os_ken.ofproto import ofproto_parser

from controller.forwarding.audit import InstalledFlow
from controller.forwarding.readback import OFPT_MULTIPART_REPLY, NotPlain, parse_flow_stats_reply

__all__ = ["Deliver", "EXPECTED_MAX", "expect", "forget", "install"]

LOG = logging.getLogger("synod.controller.rawstats")
EXPECTED_MAX = 1024  # outstanding requests remembered; the oldest is dropped beyond that

# (the datapath, whether more parts follow, its flows)
Deliver = Callable[[object, bool, list[InstalledFlow]], None]

_lock = threading.Lock()
_expected: OrderedDict[int, tuple[object, Deliver]] = OrderedDict()  # xid -> (dp, deliver)
_osken_msg = None


def install() -> None:
    """Put the wrapper in front of os-ken's message parser (once per process)."""
    global _osken_msg
    with _lock:
        if _osken_msg is None:
            _osken_msg = ofproto_parser.msg
            ofproto_parser.msg = _msg


def expect(datapath: object, xid: int, deliver: Deliver) -> None:
    """The flow-stats reply with `xid` on `datapath` goes to `deliver`, part by part,
    from the connection's receive thread, until the last part."""
    assert _osken_msg is not None, "install() first"
    with _lock:
        _expected[xid] = (datapath, deliver)
        _expected.move_to_end(xid)
        while len(_expected) > EXPECTED_MAX:
            _expected.popitem(last=False)


def forget(datapath: object) -> None:
    """Drop what is expected on a connection that is gone."""
    with _lock:
        for xid in [x for x, (dp, _) in _expected.items() if dp is datapath]:
            del _expected[xid]


def _msg(datapath, version, msg_type, msg_len, xid, buf):
    if msg_type == OFPT_MULTIPART_REPLY and xid in _expected:
        with _lock:
            entry = _expected.get(xid)
        if entry is not None and entry[0] is datapath:
            try:
                flows, more = parse_flow_stats_reply(buf[:msg_len])
            except NotPlain as e:
                LOG.debug("flow-stats reply xid %#x left to os-ken: %s", xid, e)
                if msg_len >= 12 and not buf[11] & 1:  # its last part (no REPLY_MORE flag)
                    with _lock:
                        _expected.pop(xid, None)
            else:
                if not more:
                    with _lock:
                        _expected.pop(xid, None)
                try:
                    entry[1](datapath, more, flows)
                except Exception:  # the receive loop must not end over it
                    LOG.exception("delivering flow-stats reply xid %#x failed", xid)
                return None  # handled: os-ken dispatches no event for it
    assert _osken_msg is not None
    return _osken_msg(datapath, version, msg_type, msg_len, xid, buf)
