"""The controller's node link hands the app only what changed in the flows table.

The watch (node `WatchFlows`) opens with a snapshot of every row, taken just before the
link lists the table, and the link reconnects every RESYNC_S: each time, every row arrives
again, equal to the one held. Those must not be parsed again nor handed over as changes
(issue 14: at 10,000 flows that was 0.25 s of CPU per resync, and at a controller's start
it competed with the takeover of its switches).
"""

from __future__ import annotations

import threading

import pytest

from controller.forwarding.flowspec import flow_cookie
from controller.node import codec
from controller.openflow import node_link
from controller.openflow.node_link import NodeLink, row_dict

DPID = 0x101


def _values(flow: int, port: int = 2) -> dict:
    return {"priority": 300, "match": f"ipv4_dst=10.0.0.{flow}", "actions": f"output:{port}"}


def _link() -> tuple[NodeLink, list, list]:
    published: list = []
    changes: list = []
    link = NodeLink("127.0.0.1:1", "", "", True, on_flows=published.append,
                    stopping=threading.Event(), on_changes=changes.extend)
    return link, published, changes


def _list(link: NodeLink, rows: dict, keep_bytes: bool = False) -> None:
    """What _session does with the listing: hold the rows (and, with keep_bytes, their
    bytes, as _session does) and publish them."""
    link.rows = {}
    listed = [codec.row_pb("flows", k, v) for k, v in rows.items()]
    for row in listed:
        d = row_dict(row, codec)
        link.rows[(d["dpid"], d["flow_id"])] = d
    if keep_bytes:
        link._listed = {row.SerializeToString(deterministic=True) for row in listed}
    link._publish()


@pytest.mark.parametrize("keep_bytes", [False, True], ids=["compared", "by-bytes"])
def test_the_watch_snapshot_repeating_the_listing_is_no_change(keep_bytes, monkeypatch):
    link, published, changes = _link()
    rows = {(DPID, f"f{i}"): _values(i) for i in range(1, 6)}
    rows[(DPID, "bad")] = {"priority": 300, "match": "nonsense=1", "actions": "output:2"}
    _list(link, rows, keep_bytes)
    if keep_bytes:  # recognised without parsing the row at all
        monkeypatch.setattr(node_link, "row_dict", _not_called)
    assert len(published) == 1 and len(published[0][DPID]) == 5
    assert (DPID, "bad") in link.rejected
    specs_before = dict(link.specs)

    snapshot = [codec.flow_event_pb(k, v, True) for k, v in rows.items()]
    link._apply(snapshot, codec)

    assert changes == []  # nothing handed over: every row equals the one listed
    assert len(published) == 1  # and no republish
    assert link.specs == specs_before
    assert all(link.specs[k] is specs_before[k] for k in specs_before)  # not parsed again


def _not_called(*_a):
    raise AssertionError("a row the listing held was parsed again")


def test_after_the_snapshot_rows_are_compared_not_matched_by_bytes():
    """Once a change has come, the listing's bytes say nothing more: a row put back to its
    listed value after a change is a change again."""
    link, _, changes = _link()
    rows = {(DPID, "f1"): _values(1)}
    _list(link, rows, keep_bytes=True)
    link._apply([codec.flow_event_pb((DPID, "f1"), _values(1, port=3))], codec)
    changes.clear()
    link._apply([codec.flow_event_pb((DPID, "f1"), _values(1), True)], codec)
    assert [c[2].actions for c in changes if c[2] is not None] == \
        [link.specs[(DPID, "f1")].actions]
    assert link.rows[(DPID, "f1")]["actions"] == "output:2"


def test_a_changed_or_deleted_row_is_still_handed_over():
    link, _, changes = _link()
    rows = {(DPID, f"f{i}"): _values(i) for i in range(1, 4)}
    _list(link, rows)
    old = link.specs[(DPID, "f1")]

    link._apply([codec.flow_event_pb((DPID, "f1"), _values(1, port=3)),  # changed
                 codec.flow_event_pb((DPID, "f2"), None),  # deleted
                 codec.flow_event_pb((DPID, "f3"), _values(3)),  # unchanged
                 codec.flow_event_pb((DPID, "f9"), _values(9))], codec)  # new

    new = link.specs[(DPID, "f1")]
    assert new.actions != old.actions
    assert changes == [(DPID, old.cookie, None), (DPID, new.cookie, new),
                       (DPID, flow_cookie(DPID, "f2"), None),
                       (DPID, link.specs[(DPID, "f9")].cookie, link.specs[(DPID, "f9")])]
    assert (DPID, "f2") not in link.rows and (DPID, "f2") not in link.specs
    assert set(link.specs) == {(DPID, "f1"), (DPID, "f3"), (DPID, "f9")}
