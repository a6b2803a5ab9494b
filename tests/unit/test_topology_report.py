"""controller/openflow/node_link.py topology_changes: the ports, links and hosts tables say
what each switch's master observes, also when a previous master's retraction races it
(issue 17: edge1's ports retracted by the cloud just after edge1 wrote them, for good)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from controller.forwarding.topology import PortRef
from controller.openflow.node_link import TopologySync, topology_changes, topology_rows

CLOUD, E1 = 0x1, 0x101
CLOUD_T, E1_T = "0000000000000001", "0000000000000101"
HOST = "22:e4:c8:3f:4c:6c"


def _report(site: str, master_of: list[int], host_port: int | None = None) -> dict:
    ports = {dpid: {1: True, 2: True} for dpid in master_of}
    links = [(PortRef(CLOUD, 1), PortRef(E1, 1))] if E1 in master_of else []
    hosts = {HOST: PortRef(E1, host_port)} if host_port and E1 in master_of else {}
    return {"ports": ports, "links": links, "hosts": hosts, "site": site,
            "switches": {dpid: (site, site, 7) for dpid in master_of},
            "connected": master_of, "host_ips": {HOST: "10.0.1.1"}}


def _rows(report: dict) -> dict:
    return {k: r for k, r in topology_rows(report).items() if r[0] != "switches"}


def _plain(rows: dict) -> dict[str, list[dict]]:
    """Rows as the node lists them (row_plain: key0.. then the columns)."""
    tables: dict[str, list[dict]] = {"ports": [], "links": [], "hosts": [], "switches": []}
    for table, key, values in rows.values():
        tables[table].append({**{f"key{i}": k for i, k in enumerate(key)}, **values})
    return tables


def test_rows_the_table_already_holds_are_not_written_again():
    ours = _rows(_report("edge1", [E1], host_port=2))
    assert topology_changes(ours, ours, _plain(ours), "edge1") == ([], [])


def test_rows_missing_from_the_table_are_written_again_whatever_was_sent_before():
    ours = _rows(_report("edge1", [E1], host_port=2))
    put, gone = topology_changes(ours, ours, _plain({}), "edge1")
    assert sorted(r[0] for r in put) == ["hosts", "links", "ports", "ports"] and gone == []


def test_a_row_no_longer_observed_is_retracted_while_the_table_holds_ours():
    before = _rows(_report("edge1", [E1], host_port=2))
    after = _rows(_report("edge1", [E1]))
    put, gone = topology_changes(after, before, _plain(before), "edge1")
    assert put == [] and gone == [("hosts", [HOST], {})]


def test_a_row_someone_else_wrote_since_is_theirs():
    before = _rows(_report("edge1", [E1], host_port=2))
    moved = _rows(_report("edge1", [E1], host_port=5))  # the host seen elsewhere since
    put, gone = topology_changes({}, before, _plain(moved), "edge1")
    hosts_gone = [g for g in gone if g[0] == "hosts"]
    assert put == [] and hosts_gone == []


def test_a_previous_master_leaves_the_rows_of_a_switch_the_table_says_another_masters():
    cloud_saw = _rows(_report("cloud", [E1], host_port=2))  # the cloud mastered e1s1
    table = _plain(cloud_saw)  # edge1 took over and wrote the same rows, and its switch row
    table["switches"] = [{"key0": E1_T, "master": "edge1"}]
    assert topology_changes({}, cloud_saw, table, "cloud") == ([], [])
    table["switches"] = [{"key0": E1_T, "master": "cloud"}]  # not yet taken over: retract
    _, gone = topology_changes({}, cloud_saw, table, "cloud")
    assert len(gone) == len(cloud_saw)


class _Node:
    """One node's topology tables in memory, with the two calls a round makes."""

    def __init__(self) -> None:
        self.rows: dict[tuple, object] = {}
        self.reports = self.lists = 0
        self.rows_api = SimpleNamespace(List=self._list)
        self.local = SimpleNamespace(ReportTopology=self._report)
        self.cluster = SimpleNamespace(GetDigest=self._digest)

    def client(self):
        return SimpleNamespace(rows=self.rows_api, local=self.local, cluster=self.cluster,
                               call=self._call)

    @staticmethod
    def _call(method, request, timeout_s=None):
        return method(request)

    def _digest(self, request):
        state = repr(sorted((k, r.SerializeToString()) for k, r in self.rows.items()))
        return SimpleNamespace(state_digest=state.encode()[-64:] + bytes([len(state) % 256]),
                               ops=self.reports)

    def _list(self, request):
        self.lists += 1
        return SimpleNamespace(rows=[r for (t, *_), r in sorted(self.rows.items(),
                                                                 key=lambda kv: str(kv[0]))
                                     if t == request.table])

    def _report(self, request):
        from controller.node import codec

        self.reports += 1
        for row in request.rows:
            key = (row.table, *(codec.value_from_pb(v) for v in row.key))
            old = self.rows.get(key)
            if old is not None:
                for name, v in old.values.items():
                    if name not in row.values:
                        row.values[name].CopyFrom(v)
            self.rows[key] = row
        for row in request.gone:
            self.rows.pop((row.table, *(codec.value_from_pb(v) for v in row.key)), None)


def _sync(node: _Node, report: dict) -> TopologySync:
    link = SimpleNamespace(client=node.client, stopping=threading.Event())
    return TopologySync(link, lambda: report["now"], lambda *a: None)


def _table(node: _Node, table: str) -> set:
    from controller.node import codec

    return {tuple(codec.value_from_pb(v) for v in r.key) for (t, *_), r in node.rows.items()
            if t == table}


def test_a_takeover_raced_by_the_previous_masters_retraction_converges():
    """The failing run's order: the cloud masters e1s1 for a second and reports its ports;
    edge1 takes over and reports the same rows; then the cloud, no longer master, retracts
    what it had reported. Each round reads the table, so edge1's next round rewrites what
    the retraction took; the table ends holding edge1's ports, link and host."""
    node = _Node()  # one replicated state: both controllers' nodes hold the same rows
    cloud_obs = {"now": _report("cloud", [CLOUD, E1], host_port=2)}
    edge1_obs = {"now": _report("edge1", [E1], host_port=2)}
    cloud, edge1 = _sync(node, cloud_obs), _sync(node, edge1_obs)
    cloud._round(node.client())
    edge1._round(node.client())  # takes over: its switch row names edge1 now
    cloud_obs["now"] = _report("cloud", [CLOUD])
    cloud._round(node.client())  # the old master's round: e1s1 is edge1's, left alone
    want = {(E1_T, 1), (E1_T, 2)}
    assert want <= _table(node, "ports")
    # The same race, lost: the retraction lands before edge1's switch row (as a node that
    # had not yet received it would apply it); edge1's next round writes its rows again.
    node.rows.pop(("switches", E1_T))
    node.rows.pop(("ports", E1_T, 1))
    node.rows.pop(("hosts", HOST))
    edge1._round(node.client())
    assert want <= _table(node, "ports") and (HOST,) in _table(node, "hosts")
    assert (E1_T,) in _table(node, "switches")
    reports = node.reports
    edge1._round(node.client())  # and once the table holds them, a round writes nothing
    assert node.reports == reports


def test_an_idle_round_reads_the_digest_not_the_tables():
    node = _Node()
    obs = {"now": _report("edge1", [E1], host_port=2)}
    edge1 = _sync(node, obs)
    edge1._round(node.client())  # reads, writes its rows
    edge1._round(node.client())  # its own write moved the digest: reads once more
    lists = node.lists
    for _ in range(5):
        edge1._round(node.client())
    assert node.lists == lists  # nothing changed anywhere: no table read
    node.rows.pop(("ports", E1_T, 1))  # another controller's retraction lands
    node.reports += 1
    edge1._round(node.client())
    assert node.lists == lists + len(("ports", "links", "hosts", "switches"))
    assert (E1_T, 1) in _table(node, "ports")  # and the row is written again
