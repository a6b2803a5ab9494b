"""controller/openflow/node_link.py switch_row_changes: the switches table follows mastership."""

from __future__ import annotations

from controller.openflow.node_link import switch_row_changes, topology_rows

DP1, DP2, DP3 = "0000000000000001", "0000000000000002", "0000000000000003"


def _ours(*dpids: int, site: str = "edge1", generation: int = 5) -> dict:
    report = {"ports": {}, "links": [], "hosts": {},
              "switches": {d: ("edge1", site, generation) for d in dpids}}
    return {k: r for k, r in topology_rows(report).items() if r[0] == "switches"}


def _row(dpid: str, master: str, generation: int = 5, connected: bool = True) -> dict:
    return {"key0": dpid, "connected": connected, "generation_id": generation,
            "master": master, "name": "", "site": "edge1"}


def test_a_switch_we_master_is_written_once_then_left_alone():
    put, retract = switch_row_changes(_ours(1), [], "edge1")
    assert [(t, k) for t, k, _ in put] == [("switches", [DP1])] and retract == []
    assert put[0][2]["connected"] is True and put[0][2]["master"] == "edge1"
    assert switch_row_changes(_ours(1), [_row(DP1, "edge1")], "edge1") == ([], [])


def test_a_switch_that_went_away_is_retracted_by_its_master():
    put, retract = switch_row_changes(_ours(), [_row(DP1, "edge1"), _row(DP2, "edge1")],
                                      "edge1")
    assert put == [] and [k for _, k, _ in retract] == [[DP1], [DP2]]


def test_rows_of_another_master_are_theirs():
    assert switch_row_changes(_ours(1), [_row(DP1, "edge1"), _row(DP3, "edge2")],
                              "edge1") == ([], [])


def test_a_row_overwritten_or_retracted_by_a_racing_controller_is_rewritten():
    put, _ = switch_row_changes(_ours(1, generation=7), [_row(DP1, "edge2", 6)], "edge1")
    assert [k for _, k, _ in put] == [[DP1]] and put[0][2]["generation_id"] == 7
    put, _ = switch_row_changes(_ours(1), [_row(DP1, "edge1", connected=False)], "edge1")
    assert [k for _, k, _ in put] == [[DP1]]


def test_a_switch_taken_over_while_still_connected_keeps_its_row_for_the_new_master():
    table = [_row(DP1, "edge1")]
    assert switch_row_changes(_ours(), table, "edge1", frozenset({DP1})) == ([], [])
    _, retract = switch_row_changes(_ours(), table, "edge1", frozenset({DP2}))
    assert [k for _, k, _ in retract] == [[DP1]]


class _FakeClient:
    """The two calls a topology round makes of the node API, recorded."""

    def __init__(self, table_rows) -> None:
        from types import SimpleNamespace

        self.table_rows, self.reports, self.timeouts = table_rows, [], []
        self.rows = SimpleNamespace(List=self._list)
        self.local = SimpleNamespace(ReportTopology=self.reports.append)

    def _list(self, request):
        from types import SimpleNamespace

        return SimpleNamespace(rows=self.table_rows if request.table == "switches" else [])

    def call(self, method, request, timeout_s=None):
        self.timeouts.append(timeout_s)
        return method(request)


def _sync(client, connected):
    import threading
    from types import SimpleNamespace

    from controller.openflow.node_link import TopologySync

    link = SimpleNamespace(client=lambda: client, stopping=threading.Event())
    observed = {"ports": {}, "links": [], "hosts": {}, "switches": {}, "site": "edge1",
                "connected": connected}
    remote = []
    return TopologySync(link, lambda: observed, lambda *a: remote.append(a)), remote


def test_a_stopping_controller_retracts_the_rows_of_switches_already_gone():
    from synod.v1 import northbound_pb2 as nb

    from controller.node.codec import value_pb

    row = nb.Row(table="switches", key=[value_pb(DP1)])
    row.values["master"].CopyFrom(value_pb("edge1"))
    client = _FakeClient([row])
    sync, remote = _sync(client, connected=[])
    sync.final_round()
    assert [[k.text_value for k in g.key] for r in client.reports for g in r.gone] == [[DP1]]
    assert remote == [] and set(client.timeouts) == {1.0}  # bounded, no remote read
    client = _FakeClient([row])
    sync, _ = _sync(client, connected=[1])  # still connected: the next master's to rewrite
    sync.final_round()
    assert client.reports == []
