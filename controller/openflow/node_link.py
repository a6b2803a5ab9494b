"""The controller's link to its local node: desired flows down, observed topology up.

Runs in its own thread with reconnects and capped back-off. While the node is
unreachable the controller keeps its switches exactly as they are (nothing is
wiped) and keeps retrying.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from controller.forwarding.flowspec import FlowSpec, FlowSpecError, spec_from_row
from controller.forwarding.reports import ERROR_CHARS_MAX
from controller.openflow.shim import now_ms
from controller.replication.reserved import FLOW_ERRORS

__all__ = ["NodeLink", "TopologySync", "remote_ips", "remote_view", "row_dict",
           "switch_row_changes",
           "topology_changes", "topology_rows"]

LOG = logging.getLogger("synod.controller.node_link")
BACKOFF_S_MIN = 0.2
BACKOFF_S_MAX = 5.0
RESYNC_S = 30.0  # full re-read of the flows table, a safety net under the watch
WATCH_SETTLE_S = 0.2  # let the watch register before the snapshot read closes the gap
WATCH_QUEUE_MAX = 100_000  # watch events read ahead of the switches (bounded)
BATCH_MAX = 5_000
BATCH_WAIT_S = 0.005


def row_dict(row, codec) -> dict[str, object]:
    """A flows Row (key dpid/flow_id plus values) as a column -> value dict."""
    out: dict[str, object] = {name: codec.value_from_pb(v) for name, v in row.values.items()}
    key = [codec.value_from_pb(v) for v in row.key]
    if len(key) == 2:
        out["dpid"], out["flow_id"] = key
    return out


class NodeLink:
    """Keeps `on_flows(dpid -> cookie -> spec)` fed from the node's flows table."""

    def __init__(self, server: str, token_file: str, ca_file: str, insecure: bool,
                 on_flows: Callable[[dict[int, dict[int, FlowSpec]]], None],
                 stopping: threading.Event,
                 on_changes: Callable[[list[tuple[int, int, FlowSpec | None]]], None]
                 | None = None) -> None:
        self.server = server
        self.token_file = token_file
        self.ca_file = ca_file
        self.insecure = insecure
        self.on_flows = on_flows
        self.on_changes = on_changes
        self.stopping = stopping
        self.specs: dict[tuple[object, object], FlowSpec] = {}
        self.synced = threading.Event()  # the desired set has been read at least once
        self.rows: dict[tuple[object, object], dict[str, object]] = {}
        self.rejected: dict[tuple[object, object], str] = {}
        self._listed: set[bytes] = set()  # the last listing's rows, until its snapshot ends
        self.connected = threading.Event()
        self._client = None
        self._lock = threading.Lock()

    def _token(self) -> str:
        if not self.token_file:
            return ""
        return Path(self.token_file).read_text().strip()

    def client(self):
        """The current API client (None while disconnected), for topology reports."""
        return self._client

    def run(self) -> None:
        from controller.node.client import Client, ClientError

        backoff = BACKOFF_S_MIN
        while not self.stopping.is_set():
            try:
                client = Client(server=self.server, token=self._token(),
                                ca_file=self.ca_file or None, insecure=self.insecure)
            except (ClientError, OSError) as e:
                LOG.error("node link: %s", e)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_S_MAX)
                continue
            try:
                self._session(client)
                backoff = BACKOFF_S_MIN
            except ClientError as e:
                if self.connected.is_set():
                    LOG.warning("node link lost (%s); switches are left as they are", e)
                else:
                    LOG.info("node %s not reachable yet (%s); retrying", self.server, e)
            finally:
                self.connected.clear()
                self._client = None
                client.close()
            self.stopping.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_S_MAX)

    def _session(self, client) -> None:
        import grpc
        from synod.v1 import local_pb2, northbound_pb2

        from controller.node import codec
        from controller.node.client import ClientError

        watch = client.local.WatchFlows(local_pb2.WatchFlowsRequest(), metadata=client.metadata)
        timer = threading.Timer(RESYNC_S, watch.cancel)
        try:
            self.stopping.wait(WATCH_SETTLE_S)
            listed = client.call(client.rows.List, northbound_pb2.ListRequest(table="flows"))
            with self._lock:
                self.rows = {}
                for row in listed.rows:
                    d = row_dict(row, codec)
                    self.rows[(d.get("dpid"), d.get("flow_id"))] = d
                # The watch opens with a snapshot of the same rows: recognised by bytes.
                self._listed = {row.SerializeToString(deterministic=True) for row in listed.rows}
            self._publish()
            self.synced.set()
            self._client = client
            if not self.connected.is_set():
                LOG.info("node link up: %s (%d desired flows)", self.server, len(self.rows))
            self.connected.set()
            timer.start()
            events: queue.Queue = queue.Queue(WATCH_QUEUE_MAX)
            reader = threading.Thread(target=self._read, args=(watch, events), daemon=True)
            reader.start()
            try:
                # Apply changes in batches: whatever arrived within a few ms goes to the
                # switches together (and costs one lock round, not one per row).
                while not self.stopping.is_set():
                    try:
                        first = events.get(timeout=0.5)
                    except queue.Empty:
                        if not reader.is_alive():
                            break
                        continue
                    batch = [first]
                    while len(batch) < BATCH_MAX:
                        try:
                            batch.append(events.get(timeout=BATCH_WAIT_S))
                        except queue.Empty:
                            break
                    if any(isinstance(e, Exception) for e in batch):
                        raise next(e for e in batch if isinstance(e, Exception))
                    self._apply([e for e in batch if e is not None], codec)
                    if None in batch:
                        break
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.CANCELLED:  # type: ignore[attr-defined]
                    return  # our periodic resync (or shutdown): reconnect quietly
                raise ClientError(f"{e.code().name.lower()}: {e.details()}") from None  # type: ignore[attr-defined]
        finally:
            timer.cancel()
            watch.cancel()

    @staticmethod
    def _read(watch, events: queue.Queue) -> None:
        try:
            for event in watch:
                events.put(event)
        except Exception as e:  # handed to the session loop, which decides
            events.put(e)
            return
        events.put(None)

    def _apply(self, batch, codec) -> None:
        """Parse only the rows that changed and hand the app the differences.

        A row equal to the one held is skipped: the watch opens with a snapshot of the
        whole table, taken just before the listing, so without this every row would be
        parsed twice and handed over as a deletion plus the row at every (re)connect. A
        snapshot row whose bytes the listing held is skipped unparsed; any other row is
        parsed and compared with the one held.
        """
        changes: list[tuple[int, int, FlowSpec | None]] = []
        for event in batch:
            if not event.snapshot:
                self._listed = set()  # the snapshot is over
            elif self._listed and event.flow.SerializeToString(deterministic=True) in self._listed:
                continue  # this very row came in the listing: held and parsed already
            d = row_dict(event.flow, codec)
            key = (d.get("dpid"), d.get("flow_id"))
            with self._lock:
                if (not event.deleted and self.rows.get(key) == d
                        and (key in self.specs or key in self.rejected)):
                    # The watch's opening snapshot repeats what the listing gave (and a
                    # resync repeats every row): not a change, nothing to parse again.
                    continue
                old = self.specs.pop(key, None)
                self.rejected.pop(key, None)
                if event.deleted:
                    self.rows.pop(key, None)
                else:
                    self.rows[key] = d
            if old is not None:
                changes.append((old.dpid, old.cookie, None))
            if event.deleted:
                continue
            try:
                spec = spec_from_row(d)
            except FlowSpecError as e:
                self.rejected[key] = str(e)
                LOG.error("flow %s/%s cannot be installed: %s", key[0], key[1], e)
                continue
            self.specs[key] = spec
            changes.append((spec.dpid, spec.cookie, spec))
        if changes and self.on_changes is not None:
            self.on_changes(changes)
        elif changes:
            self._publish()

    def _publish(self) -> None:
        by_dpid: dict[int, dict[int, FlowSpec]] = {}
        rejected: dict[tuple[object, object], str] = {}
        with self._lock:
            rows = list(self.rows.items())
        specs: dict[tuple[object, object], FlowSpec] = {}
        for key, row in rows:
            try:
                spec = spec_from_row(row)
            except FlowSpecError as e:
                rejected[key] = str(e)
                continue
            specs[key] = spec
            by_dpid.setdefault(spec.dpid, {})[spec.cookie] = spec
        self.specs = specs
        for key in rejected.keys() - self.rejected.keys():
            LOG.error("flow %s/%s cannot be installed: %s", key[0], key[1], rejected[key])
        self.rejected = rejected
        self.on_flows(by_dpid)


TOPOLOGY_INTERVAL_S = 1.0
FINAL_ROUND_S = 1.0  # per call of the last report at stop (the launcher gives apps 3 s)
TOPOLOGY_TABLES = ("ports", "links", "hosts", "switches")
KEY_COLUMNS = {"ports": 2, "links": 4, "hosts": 1}  # of the tables topology_changes writes



def _hex(dpid: int) -> str:
    return f"{dpid:016x}"


def topology_rows(report: dict) -> dict[tuple, tuple[str, list, dict]]:
    """(table, key) -> (table, key values, column values) for what a controller observes.

    `report` holds: ports {dpid: {port: up}}, links [(src PortRef, dst PortRef)] and
    optionally their latency {src PortRef: ms},
    hosts {mac: PortRef}, switches {dpid: (home site, master site, generation id)}, and
    optionally port_ids {dpid: {port: (name, MAC)}} from port-desc and port-status.
    """
    rows: dict[tuple, tuple[str, list, dict]] = {}
    for dpid, (home, master, generation) in report["switches"].items():
        key = [_hex(dpid)]
        rows[("switches", *key)] = ("switches", key, {
            "name": "", "site": home or "", "master": master, "generation_id": generation,
            "connected": True})
    port_ids = report.get("port_ids", {})
    for dpid, ports in report["ports"].items():
        for port, up in ports.items():
            key = [_hex(dpid), port]
            name, mac = port_ids.get(dpid, {}).get(port, ("", ""))
            rows[("ports", *key)] = ("ports", key, {"name": name, "mac": mac, "up": bool(up)})
    latency = report.get("latency", {})
    for src, dst in report["links"]:
        key = [_hex(src.dpid), src.port, _hex(dst.dpid), dst.port]
        rows[("links", *key)] = ("links", key, {"up": True,
                                                "latency_ms": float(latency.get(src, 0.0))})
    ips = report.get("host_ips", {})
    for mac, at in report["hosts"].items():
        rows[("hosts", mac)] = ("hosts", [mac], {
            "ip": ips.get(mac, ""), "dpid": _hex(at.dpid), "port_no": at.port, "vlan": 0,
            "last_seen_ms": 0})
    return rows


def switch_row_changes(ours: dict[tuple, tuple[str, list, dict]], table: list[dict],
                       site: str, connected: frozenset[str] = frozenset()) -> tuple[list, list]:
    """What to write to the switches table so it says what this controller sees.

    `ours`: the switches rows of topology_rows() (the switches we master now); `table`:
    the replicated switches rows (row_plain form). Returns (rows to put, keys to retract):
    put each of ours that the table lacks or holds differently (another writer, or a
    retraction that raced our report, is overwritten next round); retract each row that
    names this site as master for a switch we neither master nor are `connected` to (dpid
    texts): its connections died, or an earlier run of ours wrote the row. A switch still
    connected to us that another controller took over keeps its row until the new master
    overwrites it, so the row never goes missing during a takeover. A row naming another
    master is that master's to keep or retract. Convergent: called every round with a
    fresh read, a lost race costs one round.
    """
    present = {}
    for row in table:
        if isinstance(row.get("key0"), str):
            present[row["key0"]] = row
    put = []
    for (_, dpid), (table_name, key, values) in ours.items():
        now = present.get(dpid)
        if now is None or any(now.get(name) != value for name, value in values.items()):
            put.append((table_name, key, values))
    mine = {dpid for (_, dpid) in ours}
    retract: list[tuple[str, list, dict]] = [
        ("switches", [dpid], {}) for dpid, row in sorted(present.items())
        if row.get("master") == site and dpid not in mine and dpid not in connected]
    return put, retract


def _switch_of(table: str, key: tuple, values: dict) -> object:
    """The switch (dpid text) a topology row describes: its port's, the link's receiving
    end (the controller that hears the LLDP reports it), the host's attachment."""
    if table == "ports":
        return key[0]
    if table == "links":
        return key[2]
    return values.get("dpid")


def topology_changes(ours: dict[tuple, tuple[str, list, dict]],
                     reported: dict[tuple, tuple[str, list, dict]],
                     tables: dict[str, list[dict]], site: str) -> tuple[list, list]:
    """What to write to the ports, links and hosts tables so they say what we observe.

    `ours`: the rows of topology_rows() other than switches; `reported`: those of the last
    round; `tables`: the replicated tables now (row_plain form, switches included).
    Returns (rows to put, rows to retract). Put each of ours that the table lacks or holds
    differently: compared with the table, not with what we sent last, because another
    controller may have retracted or overwritten the row since (the switch's previous
    master retracting its rows after we took over wrote the same keys; issue 17's stuck
    ping was that race, lost for good when only our own changes were sent). Retract a row
    we reported and no longer observe only while the table still holds our values and its
    switch is not mastered by another site: otherwise the row is someone else's now.
    Convergent: called every round with a fresh read, a lost race costs one round.
    """
    present: dict[tuple, dict] = {}
    for table, key_len in KEY_COLUMNS.items():
        for row in tables.get(table, []):
            present[(table, *(row.get(f"key{i}") for i in range(key_len)))] = row
    masters = {row.get("key0"): row.get("master") for row in tables.get("switches", [])}

    def holds(k: tuple, values: dict) -> bool:
        now = present.get(k)
        return now is not None and all(now.get(n) == v for n, v in values.items())

    put = [r for k, r in ours.items() if not holds(k, r[2])]
    gone = []
    for k, (table, key, values) in reported.items():
        if k in ours or not holds(k, values):
            continue
        master = masters.get(_switch_of(table, tuple(key), values))
        if master in (None, "", site):
            gone.append((table, key, {}))
    return put, gone


def flow_status_rows(errors: dict[tuple[int, str], str]) -> dict[tuple, tuple[str, list, dict]]:
    """flow_errors rows (dpid, flow id) -> the switch's error, shown by `flows list`."""
    return {(FLOW_ERRORS, _hex(dpid), flow_id): (FLOW_ERRORS, [_hex(dpid), flow_id],
                                                 {"error": text[:ERROR_CHARS_MAX]})
            for (dpid, flow_id), text in errors.items()}


FLOW_COUNTERS_MS = 10_000  # a flow's packet and byte counters are reported this often
FLOW_STATE_RETRY_MS = 5_000  # after the node refused flow_state (schema/2 not decided yet)
REPORT_ROWS_MAX = 2_000  # rows per ReportTopology call (one op each; mutations_max 10,000)


def flow_state_changes(states: dict, sent: dict, now_ms: int, wall_ms: int,
                       counters_ms: int = FLOW_COUNTERS_MS) -> tuple[list, list, dict]:
    """What to write to flow_state so it says what our audits see (decision 0037's table).

    `states`: dpid -> flow id -> FlowState (the switches we master); `sent`: (dpid text,
    flow id) -> (state, packets, bytes, when sent) as last reported. A row is written when
    its state changed, or its counters changed and were last written `counters_ms` ago or
    more (counters move with every packet: reporting each audit would rewrite every row
    every two seconds); rows of flows no longer ours are retracted. Returns (rows to put,
    rows to retract, the new `sent`)."""
    rows, new_sent = [], {}
    for dpid, flows in states.items():
        for flow_id, st in flows.items():
            key = (_hex(dpid), flow_id)
            last = sent.get(key)
            if (last is None or last[0] != st.state
                    or ((last[1], last[2]) != (st.packets, st.bytes)
                        and now_ms - last[3] >= counters_ms)):
                rows.append(("flow_state", list(key), {
                    "state": st.state[:ERROR_CHARS_MAX], "packets": st.packets,
                    "bytes": st.bytes, "seen_ms": wall_ms}))
                new_sent[key] = (st.state, st.packets, st.bytes, now_ms)
            else:
                new_sent[key] = last
    gone = [("flow_state", list(k), {}) for k in sent if k not in new_sent]
    return rows, gone, new_sent


def remote_view(tables: dict[str, list[dict]]):
    """The replicated topology tables as (ports, links, hosts) for Fabric.set_remote."""
    from controller.forwarding.topology import PortRef

    ports: dict[int, dict[int, bool]] = {}
    links: dict = {}
    hosts: dict = {}
    for row in tables.get("ports", []):
        try:
            ports.setdefault(int(row["key0"], 16), {})[int(row["key1"])] = bool(row.get("up"))
        except (KeyError, ValueError, TypeError):
            continue
    for row in tables.get("links", []):
        try:
            src = PortRef(int(row["key0"], 16), int(row["key1"]))
            dst = PortRef(int(row["key2"], 16), int(row["key3"]))
        except (KeyError, ValueError, TypeError):
            continue
        if row.get("up", True):
            links[src] = dst
    for row in tables.get("hosts", []):
        try:
            hosts[row["key0"]] = PortRef(int(row["dpid"], 16), int(row["port_no"]))
        except (KeyError, ValueError, TypeError):
            continue
    return ports, links, hosts


def remote_ips(tables: dict[str, list[dict]]) -> dict[str, str]:
    """Host MAC -> IPv4 address, from the replicated hosts table (rows that have one)."""
    out = {}
    for row in tables.get("hosts", []):
        mac, ip = row.get("key0"), row.get("ip")
        if isinstance(mac, str) and isinstance(ip, str) and ip:
            out[mac] = ip
    return out


class TopologySync:
    """Every second: read the replicated topology, write where it differs from what we
    observe, hand what the others observe to the app."""

    def __init__(self, link: NodeLink, observe: Callable[[], dict],
                 on_remote: Callable[[object, object, object, object], None]) -> None:
        self.link, self.observe, self.on_remote = link, observe, on_remote
        self.reported: dict[tuple, tuple[str, list, dict]] = {}
        self.status: dict[tuple, tuple[str, list, dict]] = {}
        self.flow_state: dict[tuple, tuple] = {}  # see flow_state_changes
        self._flow_state_at = 0  # monotonic ms before which flow_state is not reported
        self._tables: dict[str, list[dict]] | None = None  # the last read (_tables_now)
        self._state: tuple[bytes, int] | None = None  # the node's digest and ops at it

    def run(self) -> None:
        while not self.link.stopping.wait(TOPOLOGY_INTERVAL_S):
            client = self.link.client()
            if client is None:
                continue
            try:
                self._round(client)
            except Exception as e:  # the node may go away between rounds: try next time
                LOG.info("topology sync: %s", e)
                self.reported, self.status = {}, {}  # resend everything after a reconnect
                self.flow_state = {}
                self._tables = self._state = None

    def final_round(self) -> None:
        """One last report as the controller stops (bounded by FINAL_ROUND_S per call): the
        rows of switches already gone (a network torn down just before its controllers)
        are retracted instead of naming this controller for good. Switches still connected
        keep their rows for the controller that takes them over."""
        client = self.link.client()
        if client is None:
            return
        try:
            self._round(client, final=True)
        except Exception as e:  # stopping anyway: say why the rows may be left
            LOG.info("topology sync at stop: %s", e)

    def _report_flow_state(self, client, states: dict, pb) -> None:
        from synod.v1 import local_pb2

        from controller.node.client import ClientError

        now = now_ms()
        if now < self._flow_state_at:
            return
        rows, gone, sent = flow_state_changes(states, self.flow_state, now,
                                              int(time.time() * 1000))
        try:
            for i in range(0, max(len(rows), len(gone)), REPORT_ROWS_MAX):
                put, drop = rows[i:i + REPORT_ROWS_MAX], gone[i:i + REPORT_ROWS_MAX]
                client.call(client.local.ReportTopology, local_pb2.TopologyReport(
                    rows=[pb(*r) for r in put], gone=[pb(t, k) for t, k, _ in drop]))
        except ClientError as e:
            # Never let it hold up the topology: it is reported last in a round, and any
            # refusal waits a few seconds. Most likely: the cluster has not decided the
            # schema version that has flow_state yet (our report asked for it: 0037).
            LOG.info("flow state not reported yet: %s", e)
            self._flow_state_at = now + FLOW_STATE_RETRY_MS
            return
        self.flow_state = sent

    def _round(self, client, final: bool = False) -> None:
        """Read the replicated topology, write where it differs from what we observe
        (switch_row_changes, topology_changes), then hand the others' part to the app."""
        from synod.v1 import local_pb2, northbound_pb2

        from controller.node import codec

        timeout_s = FINAL_ROUND_S if final else None
        observed = self.observe()
        tables, fresh = self._tables_now(client, timeout_s, final)
        rows = topology_rows(observed)
        switches = {k: r for k, r in rows.items() if r[0] == "switches"}
        rows = {k: r for k, r in rows.items() if r[0] != "switches"}
        site = observed.get("site", "")
        changed, gone = topology_changes(rows, self.reported, tables, site)
        put, retract = switch_row_changes(switches, tables["switches"], site,
                                          frozenset(map(_hex, observed.get("connected", ()))))
        for _table, key, _ in retract:
            LOG.info("switch %s is no longer ours: retracting its row", key[0])
        changed += put
        gone += retract

        def pb(table, key, values=None):
            row = northbound_pb2.Row(table=table, key=[codec.value_pb(v) for v in key])
            for name, value in (values or {}).items():
                row.values[name].CopyFrom(codec.value_pb(value))
            return row

        if changed or gone:
            client.call(client.local.ReportTopology, local_pb2.TopologyReport(
                rows=[pb(*r) for r in changed], gone=[pb(t, k) for t, k, _ in gone]),
                timeout_s)
        self.reported = rows
        if final:
            return
        status = flow_status_rows(observed.get("flow_errors", {}))
        new_status = [r for k, r in status.items() if self.status.get(k) != r]
        cleared = [r for k, r in self.status.items() if k not in status]
        if new_status or cleared:
            client.call(client.local.ReportTopology, local_pb2.TopologyReport(
                rows=[pb(*r) for r in new_status], gone=[pb(t, k) for t, k, _ in cleared]))
        self.status = status
        if fresh:
            ports, links, hosts = remote_view(tables)
            self.on_remote(ports, links, hosts, remote_ips(tables))
        self._report_flow_state(client, observed.get("flow_states", {}), pb)

    def _tables_now(self, client, timeout_s: float | None,
                    final: bool) -> tuple[dict[str, list[dict]], bool]:
        """The replicated topology tables, and whether they were read just now. They are
        read again only when the node's state digest moved since the last read (one small
        call instead of four whole tables in an idle round, whose size grows with the
        sites: decision 0097); always at stop. Any write anywhere moves the digest, our
        own reports too, so a change is seen at most one round late."""
        from synod.v1 import northbound_pb2

        from controller.node.client import row_plain

        state = None
        if not final:
            d = client.call(client.cluster.GetDigest, northbound_pb2.GetDigestRequest())
            state = (bytes(d.state_digest), int(d.ops))
            if state == self._state and self._tables is not None:
                return self._tables, False
        tables = {}
        for table in TOPOLOGY_TABLES:
            listed = client.call(client.rows.List, northbound_pb2.ListRequest(table=table),
                                 timeout_s)
            tables[table] = [row_plain(r) for r in listed.rows]
        self._tables, self._state = tables, state
        return tables, True
