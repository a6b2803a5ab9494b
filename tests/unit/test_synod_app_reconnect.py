"""The site controller when a switch reconnects before its old connection is seen to die.

OVS opens the new connection (e.g. its controller target changed) at the moment it
closes the old one, and os-ken may deliver the new connection's replies before the old
connection's DEAD event. Measured in the Mininet fencing test: about one run in three
before the controller kept the newest connection; the switch then had no controller
starting it until it reconnected again.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from controller.openflow import synod_app
from controller.openflow.options import ControllerOptions

DPID = 0x101


class FakeDatapath:
    """What the app uses of an os-ken Datapath: its id, its protocol, and sending."""

    ofproto = ofproto_v1_3
    ofproto_parser = ofproto_v1_3_parser

    def __init__(self) -> None:
        self.id = None  # os-ken learns it from the features reply
        self.sent: list = []

    def send_msg(self, msg) -> None:
        self.sent.append(msg)

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def role_requests(self) -> list:
        return [m for m in self.sent if isinstance(m, ofproto_v1_3_parser.OFPRoleRequest)]


@pytest.fixture
def app(monkeypatch):
    monkeypatch.setattr(synod_app.hub, "spawn", lambda *_a, **_k: None)  # no loops
    monkeypatch.setattr(synod_app.options, "load", lambda: ControllerOptions(
        site="edge1", index=1, controllers=(("edge1", "127.0.0.1", 1), ("cloud", "127.0.0.1", 2)),
        node="", node_token_file="", node_ca="", node_insecure=False, audit_interval_ms=2000))
    return synod_app.SynodController()


def _features(app, dp) -> None:
    dp.id = DPID
    app._on_features(SimpleNamespace(msg=SimpleNamespace(datapath=dp, datapath_id=DPID)))


def _desc(app, dp) -> None:
    body = SimpleNamespace(dp_desc="mininet synod-site=edge1")
    app._on_desc(SimpleNamespace(msg=SimpleNamespace(datapath=dp, body=body)))


def _port_desc(app, dp) -> None:
    port = SimpleNamespace(port_no=1, state=0, config=0, name=b"s1-eth1",
                           hw_addr="aa:00:00:00:00:01")
    app._on_port_desc(SimpleNamespace(msg=SimpleNamespace(datapath=dp, body=[port], flags=0)))


def _dead(app, dp) -> None:
    app._on_dead(SimpleNamespace(datapath=dp))


def _connect(app, dp) -> None:
    _features(app, dp)
    _desc(app, dp)
    _port_desc(app, dp)


def test_a_new_connection_ready_before_the_old_one_dies_takes_over(app):
    old, new = FakeDatapath(), FakeDatapath()
    _connect(app, old)
    assert app.datapaths[DPID] is old
    _connect(app, new)  # os-ken has not yet reported `old` dead
    assert app.datapaths[DPID] is new
    assert new.role_requests(), "the new connection must start by reading its role"
    _dead(app, old)  # late: it must not undo the new connection
    assert app.datapaths[DPID] is new and app.home[DPID] == "edge1"


def test_the_old_connection_dying_while_the_new_one_starts_changes_nothing(app):
    old, new = FakeDatapath(), FakeDatapath()
    _connect(app, old)
    _features(app, new)
    _desc(app, new)
    _dead(app, old)  # between the new connection's two replies
    assert DPID not in app.datapaths
    _port_desc(app, new)
    assert app.datapaths[DPID] is new and new.role_requests()


def test_late_replies_on_a_replaced_connection_are_ignored(app):
    old, new = FakeDatapath(), FakeDatapath()
    _features(app, old)
    _features(app, new)
    _desc(app, old)
    _port_desc(app, old)
    assert DPID not in app.datapaths and not old.role_requests()
    _desc(app, new)
    _port_desc(app, new)
    assert app.datapaths[DPID] is new


def test_a_plain_disconnect_then_reconnect_still_works(app):
    old, new = FakeDatapath(), FakeDatapath()
    _connect(app, old)
    _dead(app, old)
    assert DPID not in app.datapaths and DPID not in app.home
    _connect(app, new)
    assert app.datapaths[DPID] is new
