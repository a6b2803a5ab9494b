"""The agent's link to its local node: the services placed here (WatchServices), state
reports (ReportServiceState) and the agent's capacity row, over gRPC. Reconnects with
back-off; while the node is away the agent keeps its VMs as they are and reports later.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Desired", "NodeLink"]

LOG = logging.getLogger("synod.agent.link")
BACKOFF_S_MIN = 0.2
BACKOFF_S_MAX = 5.0
RESYNC_S = 300.0  # the watch is reopened this often (a fresh snapshot)


@dataclass
class Desired:
    """Rows of the services placed here, as the watch last told (guarded by NodeLink.lock)."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # service -> its columns
    generations: dict[str, int] = field(default_factory=dict)
    synced: bool = False  # a whole snapshot has arrived since the (re)connect


class NodeLink:
    """One thread watching the node; `changed` is set on every change of `desired`."""

    def __init__(self, server: str, token_file: str, ca_file: str, insecure: bool,
                 timeout_s: float = 5.0) -> None:
        self.server, self.token_file, self.ca_file = server, token_file, ca_file
        self.insecure, self.timeout_s = insecure, timeout_s
        self.lock = threading.Lock()
        self.desired = Desired()
        self.changed = threading.Event()
        self.connected = threading.Event()
        self.stopping = threading.Event()
        self._client = None
        self.thread = threading.Thread(target=self._run, name="agent-node-link", daemon=True)

    def _token(self) -> str:
        return Path(self.token_file).read_text().strip() if self.token_file else ""

    def client(self):
        from controller.node.client import Client

        return Client(self.server, self._token(), self.ca_file or None, self.insecure,
                      self.timeout_s)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        c = self._client
        if c is not None:
            c.close()
        self.thread.join(5)

    def _run(self) -> None:
        from controller.node.client import ClientError

        backoff = BACKOFF_S_MIN
        while not self.stopping.is_set():
            try:
                client = self.client()
            except (ClientError, OSError) as e:
                LOG.error("node link: %s", e)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_S_MAX)
                continue
            self._client = client
            try:
                self._session(client)
                backoff = BACKOFF_S_MIN
            except ClientError as e:
                if self.connected.is_set():
                    LOG.warning("node link lost (%s); VMs are left as they are", e)
                else:
                    LOG.info("node %s not reachable yet (%s); retrying", self.server, e)
            except Exception as e:  # noqa: BLE001 - the link must not die; log and retry
                LOG.warning("node link: %s: %s", type(e).__name__, e)
            finally:
                self.connected.clear()
                self._client = None
                client.close()
            self.stopping.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_S_MAX)

    def _session(self, client) -> None:
        import grpc
        from synod.v1 import local_pb2

        from controller.node import codec_lite as cl
        from controller.node.client import ClientError

        watch = client.local.WatchServices(local_pb2.WatchServicesRequest(),
                                           metadata=client.metadata)
        timer = threading.Timer(RESYNC_S, watch.cancel)
        timer.start()
        fresh: dict[str, dict[str, Any]] = {}
        generations: dict[str, int] = {}
        try:
            for event in watch:
                if self.stopping.is_set():
                    return
                if event.snapshot_done:
                    with self.lock:
                        self.desired = Desired(fresh, generations, True)
                    self.connected.set()
                    self.changed.set()
                    LOG.info("node link up: %s (%d services placed here)", self.server,
                             len(fresh))
                    continue
                name = str(cl.value(event.service.key[0])) if event.service.key \
                    else ""
                if not name:
                    continue
                values = None if event.deleted else {
                    k: cl.value(v) for k, v in event.service.values.items()}
                generation = int(cl.value(event.placement.values["generation"])
                                 or 0) if "generation" in event.placement.values else 0
                if event.snapshot:
                    if values is not None:
                        fresh[name] = values
                        generations[name] = generation
                    continue
                with self.lock:
                    if values is None:
                        self.desired.rows.pop(name, None)
                        self.desired.generations.pop(name, None)
                    else:
                        self.desired.rows[name] = values
                        self.desired.generations[name] = generation
                self.changed.set()
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.CANCELLED:  # type: ignore[attr-defined]
                return  # our periodic resync, or shutdown
            raise ClientError(client.explain(e.code(), e.details() or "")) from None  # type: ignore[attr-defined]
        finally:
            timer.cancel()
            watch.cancel()

    # ----------------------------------------------------------- calls from the driver
    def report(self, service: str, state: str, generation: int) -> str | None:
        """Send one state report; None when the node took it, else why not (one line)."""
        from synod.v1 import local_pb2

        from controller.node.client import ClientError

        c = self._client
        if c is None or not self.connected.is_set():
            return "node not connected"
        try:
            c.call(c.local.ReportServiceState, local_pb2.ServiceStateReport(
                service=service, state=state[:1000], generation=generation))
        except ClientError as e:
            return str(e)
        return None

    def decided_node(self, slot: str) -> tuple[str | None, str]:
        """(the node a placement slot decided, "") or (None, why not: undecided, or the
        node not reachable)."""
        from synod.v1 import northbound_pb2 as nb

        from controller.node.client import ClientError
        from controller.replication import decode

        c = self._client
        if c is None or not self.connected.is_set():
            return None, "node not connected"
        try:
            r = c.call(c.slots.GetSlot, nb.GetSlotRequest(slot=slot))
        except ClientError as e:
            return None, str(e)
        if not r.decided:
            return None, "not decided yet"
        try:
            value = decode(r.value)
        except Exception:  # noqa: BLE001 - not CBOR: not a placement decision
            return None, "its decided value is not a placement"
        node = value.get("node") if isinstance(value, dict) else None
        return (node, "") if isinstance(node, str) else (None, "its value names no node")

    def members(self) -> list | None:
        """The members as this node sees them (lease.Contact), or None (node away)."""
        from synod.v1 import northbound_pb2 as nb

        from controller.node.client import ClientError
        from edge_agent.lease import Contact

        c = self._client
        if c is None or not self.connected.is_set():
            return None
        try:
            r = c.call(c.cluster.ListMembers, nb.ListMembersRequest())
        except ClientError:
            return None
        return [Contact(m.node_id, int(m.last_seen_ms_ago), bool(m.self))
                for m in r.members]

    def table(self, name: str) -> dict[str, dict[str, Any]] | None:
        """Every row of a one-column-key table (services, placements), or None."""
        from synod.v1 import northbound_pb2 as nb

        from controller.node import codec_lite as cl
        from controller.node.client import ClientError

        c = self._client
        if c is None or not self.connected.is_set():
            return None
        try:
            r = c.call(c.rows.List, nb.ListRequest(table=name))
        except ClientError:
            return None
        return {str(cl.value(row.key[0])): {k: cl.value(v) for k, v in row.values.items()}
                for row in r.rows}

    def propose_placement(self, slot: str, value: dict[str, Any]) -> str | None:
        """Propose a placement value ({node, spec_hash, lease_ms}: lease.placement_value)
        for a slot; the node decided (maybe another), or None."""
        from synod.v1 import northbound_pb2 as nb

        from controller.node.client import ClientError
        from controller.replication import decode, encode

        c = self._client
        if c is None:
            return None
        try:
            r = c.call(c.slots.Propose, nb.ProposeRequest(
                slot=slot, value=encode(value), timeout_ms=5_000), 10.0)
        except ClientError as e:
            LOG.info("%s: %s", slot, e)
            return None
        value = decode(r.value) if r.decided else None
        return value.get("node") if isinstance(value, dict) else None

    def put_row(self, table: str, key: str, values: dict[str, Any]) -> str | None:
        """Write one row's columns; None when written, else why not."""
        from synod.v1 import northbound_pb2 as nb

        from controller.node import codec_lite as cl
        from controller.node.client import ClientError

        c = self._client
        if c is None:
            return "node not connected"
        row = nb.Row(table=table, key=cl.values([key]))
        for k, v in values.items():
            row.values[k].CopyFrom(cl.value_pb(v))
        try:
            c.call(c.rows.Put, nb.PutRequest(rows=[row], ack=nb.ACK_LOCAL))
        except ClientError as e:
            return str(e)
        return None

    def put_kv(self, key: str, value: bytes) -> str | None:
        """Write the agent's own kv row (its capacity); None when written, else why not."""
        from synod.v1 import northbound_pb2 as nb

        from controller.node import codec_lite as cl
        from controller.node.client import ClientError

        c = self._client
        if c is None:
            return "node not connected"
        row = nb.Row(table="kv", key=cl.values([key]))
        row.values["value"].CopyFrom(cl.value_pb(value))
        try:
            c.call(c.rows.Put, nb.PutRequest(rows=[row], ack=nb.ACK_LOCAL))
        except ClientError as e:
            return str(e)
        return None


