"""gRPC servicers of the northbound and local APIs: authenticate, translate, call, answer."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import time

import grpc
from synod.v1 import local_pb2, local_pb2_grpc, northbound_pb2, northbound_pb2_grpc

import controller
from controller.agreement import Refused, lineage_of
from controller.agreement.checkpoint import CHECKPOINT
from controller.agreement.membership import (
    LEAVE_SLOT,
    RELEASE_SLOT,
    membership_slot,
    plan_leave,
    plan_release,
)
from controller.agreement.upgrade import SCHEMA
from controller.forwarding.reports import TOPOLOGY_TABLES as REPORT_TABLES
from controller.replication import Upsert, decode, encode
from controller.replication.reserved import FLOW_ERRORS, INTERNAL, flow_stats_key
from controller.replication.schema import FLOW_STATE

from . import codec
from .access import AccessCheck
from .admit import admit
from .auth import Authenticator, Denied
from .config import ApiConfig
from .engine import (
    Engine,
    EngineError,
    NoQuorum,
    NotMember,
    QuorumTimeout,
    SchemaNotDecided,
    SlotRefused,
    SlotWatcher,
    Watcher,
    WriteRefused,
)
from .guard import source_of
from .join import JOIN_SLOT, JoinError, check_join_request
from .lineages import LineageError
from .metrics import Metrics
from .slots import decision_summary
from .sqlquery import QueryBusy, QueryInvalid, QueryLimit, SqlPool, readable_tables, run_query
from .tokens import Role, new_token, record_from_row, token_key

__all__ = ["Api", "servicers"]

_CODES = {
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "permission_denied": grpc.StatusCode.PERMISSION_DENIED,
    "resource_exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
}

STATUS_CHARS_MAX = 1_000  # of any status message an API call ends with


class _BoundedStatus:
    """A servicer context whose status message (abort, set_details) is cut at
    STATUS_CHARS_MAX: the backstop behind codec.clip, so no error echoes unbounded input or
    outgrows gRPC's limit on a status message (decision 0060). Every API method gets one
    (servicers() wraps them), so the servicers' own aborts are bounded as well as
    Api.call's. Everything else goes to the real context."""

    def __init__(self, context) -> None:
        self._context = context

    def __getattr__(self, name: str):
        return getattr(self._context, name)

    async def abort(self, code, details: str = "", *args, **kwargs):
        await self._context.abort(code, codec.clip(details, STATUS_CHARS_MAX), *args, **kwargs)

    def set_details(self, details: str) -> None:
        self._context.set_details(codec.clip(details, STATUS_CHARS_MAX))


def _with_bounded_status(method):
    """An RPC method (a coroutine or an async generator) called with a _BoundedStatus."""
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def replies(request, context):
            stream = method(request, _BoundedStatus(context))
            async with contextlib.aclosing(stream):  # its finally runs when the call ends
                async for reply in stream:
                    yield reply

        return replies

    @functools.wraps(method)
    async def reply(request, context):
        return await method(request, _BoundedStatus(context))

    return reply


def _bounded(servicer, service):
    """servicer with each method of `service` (a descriptor) given a _BoundedStatus; one not
    implemented (the generated stub, a fixed UNIMPLEMENTED message) is left as it is."""
    for rpc in service.methods:
        method = getattr(servicer, rpc.name)
        if inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method):
            setattr(servicer, rpc.name, _with_bounded_status(method))
    return servicer


class Api:
    """Shared by the servicers: the engine, auth, limits, and helpers they all use."""

    def __init__(self, engine: Engine, config: ApiConfig, metrics: Metrics, links, store_path):
        self.config = config
        self.metrics = metrics
        self.store_path = store_path
        self.auth = Authenticator(
            self._kv, config.rate_per_s, config.burst, config.inflight_per_client_max
        )
        self.secession = None  # server._Secession: moves the node into a seceded lineage
        # Users' SQL on its own bounded threads, never the engine's commit thread.
        self.sql = SqlPool(config.sql_workers, config.sql_per_token_max, config.sql_queued_max)
        self.rebind(engine, links)

    def close(self) -> None:
        """Release what the Api owns (the SQL threads); the server calls it when it stops."""
        self.sql.close()

    def rebind(self, engine: Engine, links) -> None:
        """Serve another engine (the node moved into a new lineage by secession)."""
        self.engine = engine
        self.links = links
        self.schema = engine.schema
        self.readable = readable_tables(self.schema.names)  # what users' SQL may read
        agreement = engine.agreement
        self.access = AccessCheck(
            (lambda: None) if agreement is None else agreement.policy
        )

    def _kv(self, key: str) -> bytes | None:
        row = self.engine.row(INTERNAL, (key,))
        return None if row is None else row.get("value")  # type: ignore[return-value]

    guard = None  # guard.Guard of the API server (set by server.serve): failed logins

    @contextlib.asynccontextmanager
    async def call(self, context: grpc.aio.ServicerContext, role: Role, method: str):
        """Authenticate and admit one call; map known errors to statuses naming the problem.
        A source banned for failed logins is refused before any token lookup; a failed
        login is counted against its source and logged (guard.py). The context is a
        _BoundedStatus: every status message is bounded (decision 0060)."""
        self.metrics.inc(f"api_calls|method={method}")
        guard = self.guard
        if guard is not None and guard.bans and not guard.admits(source_of(context.peer())):
            self.metrics.inc("api_denied|banned")
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                "too many failed logins from this address: banned for a while")
        header = dict(context.invocation_metadata()).get("authorization")
        try:
            record = self.auth.authenticate(header, role)
            client = record.id
            self.auth.admit(client)
        except Denied as exc:
            self.metrics.inc(f"api_denied|{exc.code}")
            if guard is not None and exc.code == "unauthenticated":
                guard.failed_login(source_of(context.peer()), header, str(exc), method)
            await context.abort(_CODES[exc.code], str(exc))
        try:
            yield record
        except Denied as exc:  # a write or proposal the access policy refuses
            self.metrics.inc(f"api_denied|{exc.code}")
            await context.abort(_CODES[exc.code], str(exc))
        except codec.CodecError as exc:
            self.metrics.inc("api_bad_request")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except QuorumTimeout as exc:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))
        except NotMember as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except NoQuorum as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except (SlotRefused, SchemaNotDecided) as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except WriteRefused as exc:
            self.metrics.inc("api_bad_request")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc)[:1000])
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no answer in time")
        except EngineError as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        finally:
            self.auth.release(client)

    def check_write(self, record, mutations) -> None:
        """Denied unless the token's role may write every table of mutations (decision 0034)."""
        count, limit = len(mutations), self.engine.mutations_max
        if count > limit:  # one write is one op: over the op's limit every peer refuses it
            raise codec.CodecError(
                f"{count} rows in one write; at most {limit} (mutations_max, the limit of "
                "one op): split the write (`synod put --from FILE` does)"
            )
        self.access.write(record.role, (m.table for m in mutations))

    def check_read(self, record, table: str) -> None:
        """The reserved `internal` table (token records, peer addresses) is read by admins
        alone; every other table by any valid token."""
        if table == INTERNAL and record.role < Role.ADMIN:
            raise Denied(
                "permission_denied",
                f"role {record.role.label} may not read table 'internal' (admins only)",
            )

    async def write(self, mutations, ack: int, timeout_ms: int):
        level = codec.ack_level(ack)
        timeout = timeout_ms or self.config.quorum_timeout_ms
        result = await self.engine.write(mutations, level, timeout)
        return northbound_pb2.WriteResponse(
            op_id=result.op_id,
            seq=result.seq,
            ack=northbound_pb2.ACK_QUORUM if level == "quorum" else northbound_pb2.ACK_LOCAL,
            holders=result.holders,
        )

    async def stream(self, context, table_filter, snapshot, make_event, changes_only=False):
        """Snapshot then changes for rows accepted by table_filter(table, key, values)."""
        q: asyncio.Queue = asyncio.Queue(self.config.watch_queue_max)
        w = Watcher(lambda r: table_filter(r.table, r.key, r.values), q)
        self.engine.watchers.add(w)  # before the snapshot, so no change falls in between
        try:
            if not changes_only:
                for table, key, values in snapshot():
                    yield make_event(table, key, values, True)
            while True:
                row = await q.get()
                if row is None:
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, w.reason)
                yield make_event(row.table, row.key, row.values, False)
        finally:
            self.engine.watchers.discard(w)


class Cluster(northbound_pb2_grpc.ClusterServiceServicer):
    def __init__(self, api: Api) -> None:
        self.api = api

    async def GetStatus(self, request, context):
        async with self.api.call(context, Role.VIEWER, "GetStatus"):
            e = self.api.engine
            counters = e.counters()
            counters.update(self.api.metrics.counters)
            d = e.digest()
            return codec.status_pb(
                node_id=e.node_id,
                cluster_id=e.cluster_id.hex(),
                cluster_name=e.genesis.name,
                synod_version=controller.__version__,
                version_vector=e.version_vector(),
                state_digest=d.state,
                op_digest=d.ops,
                ops=d.count,
                members=len(e.members),
                peers_up=sum(self.api.links.up().values()),
                counters=counters,
                uptime_s=e.uptime_s(),
                schema_reads=e.schema_reads(),
                schema_decided=e.decided_schema(),
            )

    async def ListMembers(self, request, context):
        async with self.api.call(context, Role.VIEWER, "ListMembers"):
            e, up = self.api.engine, self.api.links.up()
            now = time.monotonic()
            members = []
            for node_id in sorted(e.members):
                me = node_id == e.node_id
                seen = e.last_seen.get(node_id)
                members.append(
                    dict(
                        node_id=node_id,
                        address=self.api.links.address_of(node_id),
                        up=me or up.get(node_id, False),
                        self=me,
                        version_vector=(
                            e.version_vector() if me else e.peer_vectors.get(node_id, {})
                        ),
                        last_seen_ms_ago=0
                        if me
                        else (-1 if seen is None else int((now - seen) * 1000)),
                    )
                )
            return codec.members_pb(members)

    async def GetDigest(self, request, context):
        async with self.api.call(context, Role.VIEWER, "GetDigest"):
            e = self.api.engine
            d = e.digest()
            return codec.digest_pb(e.node_id, d.state, d.ops, d.count)

    async def GetSchema(self, request, context):
        async with self.api.call(context, Role.VIEWER, "GetSchema"):
            return codec.schema_pb(self.api.schema)

    async def ListConflicts(self, request, context):
        async with self.api.call(context, Role.VIEWER, "ListConflicts"):
            out = northbound_pb2.ListConflictsResponse()
            for author, seq in sorted(self.api.engine.forks().items()):
                out.conflicts.add(
                    kind="equivocation",
                    description=f"node {author} signed two ops at seq {seq}; its ops from "
                    f"there on are kept as evidence and do not change the tables",
                )
            rows = self.api.engine.rows("conflicts")
            for (_,), v in sorted(rows.items(), key=lambda kv: (kv[1]["kind"], kv[1]["name"])):
                out.conflicts.add(**_conflict_fields(v))
            return out


class Rows(northbound_pb2_grpc.RowServiceServicer):
    def __init__(self, api: Api) -> None:
        self.api = api

    async def Put(self, request, context):
        async with self.api.call(context, Role.VIEWER, "Put") as record:
            mutations = codec.put_mutations(self.api.schema, request.rows)
            self.api.check_write(record, mutations)
            self._check_flows(mutations)
            _check_services(self.api.engine, mutations)
            return await self.api.write(mutations, request.ack, request.timeout_ms)

    def _check_flows(self, mutations) -> None:
        """Refuse a flow a switch could not take (controller/forwarding/flowspec.py rules):
        bad match fields or actions, a switch the fabric does not have, a port it lacks."""
        if not any(m.table == "flows" for m in mutations):
            return
        from controller.forwarding.flowspec import FlowSpecError, parse_dpid, spec_from_row

        engine = self.api.engine
        switches = {str(k[0]).lower() for k in engine.rows("switches")}
        ports_of: dict[str, list[int]] = {}  # each switch's ports, read once per call
        for k in engine.rows("ports"):
            ports_of.setdefault(str(k[0]).lower(), []).append(int(k[1]))
        for m in mutations:
            if m.table != "flows":
                continue
            row = dict(engine.row("flows", m.key) or {})
            row.update(m.values)
            row["dpid"], row["flow_id"] = m.key
            try:
                dpid = parse_dpid(row["dpid"])
                ports = ports_of.get(f"{dpid:016x}", [])
                if switches and f"{dpid:016x}" not in switches:
                    raise FlowSpecError(f"no switch {dpid:016x} in this fabric "
                                        f"(known: {', '.join(sorted(switches))})")
                spec_from_row(row, known_ports=ports or None)
            except FlowSpecError as exc:
                raise codec.CodecError(
                    f"flow {codec.clip(m.key[0], 40)}/{codec.clip(m.key[1], 60)}: "
                    f"{codec.clip(str(exc), 300)}") from None

    async def Delete(self, request, context):
        async with self.api.call(context, Role.VIEWER, "Delete") as record:
            mutations = codec.delete_mutations(self.api.schema, request.table, request.keys)
            self.api.check_write(record, mutations)
            _check_service_deletes(self.api.engine, mutations)
            return await self.api.write(mutations, request.ack, request.timeout_ms)

    async def Get(self, request, context):
        async with self.api.call(context, Role.VIEWER, "Get") as record:
            self.api.check_read(record, request.table)
            key = codec.key_from_pb(self.api.schema, request.table, request.key)
            values = self.api.engine.row(request.table, key)
            if values is None:
                return northbound_pb2.GetResponse(found=False)
            return northbound_pb2.GetResponse(
                found=True, row=codec.row_pb(request.table, key, values)
            )

    async def List(self, request, context):
        async with self.api.call(context, Role.VIEWER, "List") as record:
            schema = self.api.schema
            table = codec.table_of(schema, request.table)
            self.api.check_read(record, request.table)
            prefix = codec.canonical_key(request.table,
                                         codec.values_from_pb(request.key_prefix),
                                         table.key_columns)
            limit = min(
                request.limit or self.api.config.list_rows_max, self.api.config.list_rows_max
            )
            rows = self.api.engine.rows(request.table)
            out = northbound_pb2.ListResponse()
            for key in sorted(rows, key=_sort_key):
                if key[: len(prefix)] != prefix:
                    continue
                if len(out.rows) >= limit:
                    out.truncated = True
                    break
                out.rows.append(codec.row_pb(request.table, key, rows[key]))
            return out

    async def Watch(self, request, context):
        async with self.api.call(context, Role.VIEWER, "Watch") as record:
            codec.table_of(self.api.schema, request.table)
            self.api.check_read(record, request.table)
            table = request.table
            engine = self.api.engine

            def snapshot():
                for key, values in sorted(
                    engine.rows(table).items(), key=lambda kv: _sort_key(kv[0])
                ):
                    yield table, key, values

            async for event in self.api.stream(
                context,
                lambda t, k, v: t == table,
                snapshot,
                codec.row_event_pb,
                request.changes_only,
            ):
                yield event

    async def Query(self, request, context):
        async with self.api.call(context, Role.VIEWER, "Query") as record:
            cfg = self.api.config
            rows_max = min(request.row_limit or cfg.sql_rows_max, cfg.sql_rows_max)
            params = codec.values_from_pb(request.params)
            query = functools.partial(
                run_query,
                self.api.store_path,
                request.sql,
                params,
                cfg.sql_time_ms_max,
                rows_max,
                readable=self.api.readable,
                value_bytes_max=cfg.sql_value_bytes_max,
                result_bytes_max=cfg.message_bytes_max // 2,  # values, and the message's own
            )
            try:
                columns, rows = await self.api.sql.run(record.id, query)
            except QueryBusy as exc:
                self.api.metrics.inc("sql_refused|busy")
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"SQL refused: {exc}")
            except QueryLimit as exc:
                self.api.metrics.inc("sql_refused|limit")
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
            except (QueryInvalid, ValueError, OverflowError) as exc:
                self.api.metrics.inc("sql_refused|invalid")
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"SQL refused: {codec.clip(str(exc), 300)}"
                )
            return codec.query_pb(columns, rows)


def _sort_key(key: tuple) -> tuple:
    return tuple((type(v).__name__, v) for v in key)


class Slots(northbound_pb2_grpc.SlotServiceServicer):
    """Decided slots (the agreement layer, controller/agreement, driven by the engine), and
    a join (Propose on `membership/join`), answered by an invitation op (see join.py)."""

    def __init__(self, api: Api) -> None:
        self.api = api

    async def _join(self, request, context):
        async with self.api.call(context, Role.ADMIN, "Propose") as record:
            engine = self.api.engine
            try:
                req = check_join_request(request.value, engine.cluster_id)
            except JoinError as exc:
                self.api.metrics.inc("joins_refused")
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            if engine.agreement is not None:
                self.api.access.propose(record.role, "membership")
            bundle = await admit(engine, req, record.id, self.api.links.addresses())
            self.api.metrics.inc("joins_admitted")
            return northbound_pb2.Slot(slot=JOIN_SLOT, decided=True, value=bundle.to_bytes())

    async def _need_agreement(self, context) -> None:
        if self.api.engine.agreement is None:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                "slots need the agreement layer, off on this node (agreement.enabled = false)",
            )

    async def _members_change(self, request, context):
        """`membership/leave` ({node, for_good}) and `membership/release` ({nodes}): the
        node builds the next membership from its chain (`plan_leave`, `plan_release`) and
        proposes it in `membership/<n+1>`; the answer is that slot (decision 0070)."""
        async with self.api.call(context, Role.ADMIN, "Propose") as record:
            await self._need_agreement(context)
            self.api.access.propose(record.role, "membership")
            try:
                value = decode(request.value)
            except Exception as exc:  # Rejected, or anything the decoder raises
                raise codec.CodecError(f"value must be CBOR: {exc}") from None
            agreement = self.api.engine.agreement
            chain = agreement.ledger.memberships
            try:
                if request.slot == LEAVE_SLOT:
                    ok = isinstance(value, dict) and set(value) == {"node", "for_good"}
                    if not ok or not isinstance(value["node"], str) \
                            or not isinstance(value["for_good"], bool):
                        raise codec.CodecError(f"{LEAVE_SLOT}: a map of node and for_good")
                    new = plan_leave(chain, value["node"], value["for_good"])
                else:
                    ok = isinstance(value, dict) and set(value) == {"nodes"}
                    if not ok or not isinstance(value["nodes"], list) \
                            or not all(isinstance(n, str) for n in value["nodes"]):
                        raise codec.CodecError(f"{RELEASE_SLOT}: a map of nodes (a list)")
                    new = plan_release(chain, value["nodes"])
                    older = self.api.engine.members_on_older_code()
                    if older:
                        await context.abort(
                            grpc.StatusCode.FAILED_PRECONDITION,
                            f"member(s) {', '.join(n[:16] for n in older[:4])} run older code "
                            "or have not said hello to this node: older code refuses a "
                            "release and would stop following membership changes; upgrade "
                            "every member first (or ask the node every member links to)")
            except Refused as exc:
                raise codec.CodecError(exc.detail) from None
            slot = membership_slot(new.version)
            timeout = request.timeout_ms or agreement.config.timeout_ms
            await self.api.engine.propose(slot, new.to_value(), timeout)
            decision = self.api.engine.decided(slot)
            assert decision is not None  # the engine answers once the slot is decided
            return northbound_pb2.Slot(**decision_summary(decision))

    async def Propose(self, request, context):
        if request.slot == JOIN_SLOT:
            return await self._join(request, context)
        if request.slot in (LEAVE_SLOT, RELEASE_SLOT):
            return await self._members_change(request, context)
        kind = request.slot.partition("/")[0]
        async with self.api.call(context, Role.VIEWER, "Propose") as record:
            if kind in (CHECKPOINT, SCHEMA):  # the voters' own (decisions 0070, 0037)
                raise Denied(
                    "permission_denied",
                    f"{request.slot}: {kind} slots are proposed by the nodes themselves",
                )
            self.api.access.propose(record.role, kind)
            await self._need_agreement(context)
            try:
                value = decode(request.value)
            except Exception as exc:  # Rejected, or anything the decoder raises
                raise codec.CodecError(f"value must be CBOR: {exc}") from None
            timeout = request.timeout_ms or self.api.engine.agreement.config.timeout_ms
            await self.api.engine.propose(request.slot, value, timeout)
            decision = self.api.engine.decided(request.slot)
            assert decision is not None  # the engine answers once the slot is decided
            return northbound_pb2.Slot(**decision_summary(decision))

    async def GetSlot(self, request, context):
        async with self.api.call(context, Role.VIEWER, "GetSlot"):
            await self._need_agreement(context)
            decision = self.api.engine.decided(request.slot)
            if decision is None:
                return northbound_pb2.Slot(slot=request.slot, decided=False)
            return northbound_pb2.Slot(**decision_summary(decision))

    async def WatchSlots(self, request, context):
        async with self.api.call(context, Role.VIEWER, "WatchSlots"):
            await self._need_agreement(context)
            engine = self.api.engine
            w = SlotWatcher(request.prefix, asyncio.Queue(self.api.config.watch_queue_max))
            engine.slot_watchers.add(w)  # before the snapshot, so no decision falls between
            try:
                # In pages: a long archive (decision 0103) is read between other work.
                for page in engine.decision_pages(request.prefix):
                    for decision in page:
                        yield northbound_pb2.Slot(**decision_summary(decision))
                    await asyncio.sleep(0)
                while True:
                    decision = await w.queue.get()
                    if decision is None:
                        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, w.reason)
                    yield northbound_pb2.Slot(**decision_summary(decision))
            finally:
                engine.slot_watchers.discard(w)


class Admin(northbound_pb2_grpc.AdminServiceServicer):
    def __init__(self, api: Api) -> None:
        self.api = api

    async def CreateToken(self, request, context):
        async with self.api.call(context, Role.ADMIN, "CreateToken") as admin:
            self.api.access.tokens(admin.role)
            try:
                role = Role.parse(request.role)
            except Exception as exc:  # TokenError
                raise codec.CodecError(str(exc)) from None
            now_ms = int(time.time() * 1000)
            if request.expires_ms and request.expires_ms <= now_ms:
                raise codec.CodecError(f"expires_ms {request.expires_ms} is not in the future "
                                       f"(now {now_ms} on this node)")
            token, record = new_token(role, request.description[:200], now_ms,
                                      max(request.expires_ms, 0))
            await self.api.write(
                [Upsert(INTERNAL, (token_key(record.id),), {"value": record.to_row()})],
                northbound_pb2.ACK_LOCAL,
                0,
            )
            return northbound_pb2.CreateTokenResponse(token=token,
                                                      info=codec.token_pb(record, now_ms))

    async def ListTokens(self, request, context):
        async with self.api.call(context, Role.ADMIN, "ListTokens"):
            out = northbound_pb2.ListTokensResponse()
            for (key,), values in sorted(self.api.engine.rows(INTERNAL).items()):
                record = record_from_row(key, values.get("value"))  # type: ignore[arg-type]
                if record is not None:
                    out.tokens.append(codec.token_pb(record, int(time.time() * 1000)))
            return out

    async def RevokeToken(self, request, context):
        async with self.api.call(context, Role.ADMIN, "RevokeToken") as admin:
            self.api.access.tokens(admin.role)
            record = self.api.auth.record(request.id)
            if record is None:
                await context.abort(grpc.StatusCode.NOT_FOUND,
                                    f"no token {codec.clip(request.id, 40)!r}")
            from dataclasses import replace

            revoked = replace(record, revoked=True)
            await self.api.write(
                [Upsert(INTERNAL, (token_key(record.id),), {"value": revoked.to_row()})],
                northbound_pb2.ACK_LOCAL,
                0,
            )
            return codec.token_pb(revoked, int(time.time() * 1000))


class Local(local_pb2_grpc.LocalServiceServicer):
    """For the site's controller and edge agent (operator tokens)."""

    TOPOLOGY_TABLES = REPORT_TABLES  # controller/forwarding/reports.py

    def __init__(self, api: Api) -> None:
        self.api = api

    async def WatchFlows(self, request, context):
        async with self.api.call(context, Role.OPERATOR, "WatchFlows"):
            dpids = set(request.dpids)
            engine = self.api.engine

            def wanted(table, key, values):
                return table == "flows" and (not dpids or key[0] in dpids)

            def snapshot():
                for key, values in sorted(engine.rows("flows").items()):
                    if not dpids or key[0] in dpids:
                        yield "flows", key, values

            async for event in self.api.stream(
                context, wanted, snapshot, lambda t, k, v, s: codec.flow_event_pb(k, v, s)
            ):
                yield event

    async def ReportTopology(self, request, context):
        async with self.api.call(context, Role.OPERATOR, "ReportTopology") as record:
            for row in list(request.rows) + list(request.gone):
                if row.table not in self.TOPOLOGY_TABLES:
                    raise codec.CodecError(
                        f"table {codec.clip(row.table, 40)!r} is not topology "
                        f"({', '.join(sorted(self.TOPOLOGY_TABLES))})"
                    )
            mutations: list = []
            if request.rows:
                mutations += codec.put_mutations(self.api.schema, request.rows,
                                                 canonical=False)
                _check_report(mutations)
            for row in request.gone:
                mutations += codec.delete_mutations(
                    self.api.schema, row.table, [northbound_pb2.KeyList(key=row.key)],
                    canonical=False)
            if not mutations:
                raise codec.CodecError("report has no rows")
            reported = (FLOW_ERRORS, FLOW_STATE)  # reserved tables only reports write
            if any(m.table in reported for m in mutations):
                self.api.access.report(record.role, "flow errors and flow state")
            self.api.check_write(record, [m for m in mutations if m.table not in reported])
            done = await self.api.write(mutations, northbound_pb2.ACK_LOCAL, 0)
            return local_pb2.ReportResponse(op_id=done.op_id, rows=len(mutations))

    async def ReportFlowStats(self, request, context):
        async with self.api.call(context, Role.OPERATOR, "ReportFlowStats") as record:
            if not request.dpid:
                raise codec.CodecError("dpid is required")
            self.api.access.report(record.role, "flow statistics")
            dpid = _dpid_text(request.dpid)

            value = encode(
                [
                    request.flows_installed,
                    request.flows_missing,
                    request.flows_unexpected,
                    request.details,
                ]
            )
            done = await self.api.write(
                [Upsert(INTERNAL, (flow_stats_key(dpid),), {"value": value})],
                northbound_pb2.ACK_LOCAL,
                0,
            )
            return local_pb2.ReportResponse(op_id=done.op_id, rows=1)

    async def WatchServices(self, request, context):
        async with self.api.call(context, Role.OPERATOR, "WatchServices"):
            engine = self.api.engine
            me = self.api.engine.node_id

            def placed_here(name) -> bool:
                p = engine.row("placements", (name,))
                return p is not None and p.get("node") == me

            # A placement change sends its service again (deleted when it moved away), so
            # an agent learns of a service placed on it after the service was written; only
            # placements naming this node, or of services this stream has sent, are looked at.
            sent: set = set()

            def wanted(table, key, values):
                if table == "services":
                    return placed_here(key[0])
                return table == "placements" and (
                    key[0] in sent or (values is not None and values.get("node") == me))

            def snapshot():
                for key, values in sorted(engine.rows("services").items()):
                    if placed_here(key[0]):
                        yield "services", key, values
                yield "", (), None  # the end of the snapshot

            def event(table, key, values, snap):
                if not table:
                    return local_pb2.ServiceEvent(snapshot_done=True)
                placement = engine.row("placements", key)
                if table == "placements":
                    values = engine.row("services", key) if placed_here(key[0]) else None
                out = codec.service_event_pb(key, values, snap)
                (sent.discard if values is None else sent.add)(key[0])
                if placement is not None:
                    out.placement.CopyFrom(codec.row_pb("placements", key, placement))
                return out

            async for ev in self.api.stream(context, wanted, snapshot, event):
                yield ev

    async def ReportServiceState(self, request, context):
        async with self.api.call(context, Role.OPERATOR, "ReportServiceState") as record:
            if not request.service or not request.state:
                raise codec.CodecError("service and state are required")
            self.api.access.write(record.role, ["placements"])
            placed = self.api.engine.row("placements", (request.service,))
            if placed is not None and placed.get("node") not in (None, "",
                                                                 self.api.engine.node_id):
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"service {codec.clip(request.service, 64)!r} is placed on node "
                    f"{str(placed.get('node'))[:16]}, not here: its state is that node's "
                    "to report")
            # Only the state, once the row exists: node and generation are the placement's
            # (decided elsewhere), and a report merged later must not move them back.
            values = {"state": request.state} if placed is not None else {
                "node": self.api.engine.node_id, "state": request.state,
                "generation": request.generation}
            done = await self.api.write(
                [Upsert("placements", (request.service,), values)],
                northbound_pb2.ACK_LOCAL,
                0,
            )
            return local_pb2.ReportResponse(op_id=done.op_id, rows=1)


def _check_services(engine, mutations) -> None:
    """Refuse service rows no edge agent could run, as `synod services deploy` does before
    sending them (edge_agent/deploy.py, check_rows): the spec with its keys' paths, MAC and
    IPv4 clashes, the placed node's bridges and capacity. Nothing is written."""
    if not any(m.table in ("services", "placements") for m in mutations):
        return
    from edge_agent.deploy import AGENT_KEY_PREFIX, agents_of, check_rows
    from edge_agent.spec import SpecError

    after = {t: {str(k[0]): dict(v) for k, v in engine.rows(t).items()}
             for t in ("services", "placements")}
    kv = {str(k[0]): v.get("value") for k, v in engine.rows("kv").items()
          if str(k[0]).startswith(AGENT_KEY_PREFIX)}
    touched, written = set(), set()
    for m in mutations:
        if m.table in after:
            touched.add(str(m.key[0]))
            after[m.table].setdefault(str(m.key[0]), {}).update(m.values)
            if m.table == "services":
                written.add(str(m.key[0]))
        elif m.table == "kv" and str(m.key[0]).startswith(AGENT_KEY_PREFIX):
            kv[str(m.key[0])] = m.values.get("value")
    lives = {name: _life(engine, name) for name in written}
    try:
        check_rows(touched, after["services"], after["placements"], agents_of(kv), lives,
                   written)
    except SpecError as exc:
        raise codec.CodecError(codec.clip(str(exc), 400)) from None


def _check_service_deletes(engine, mutations) -> None:
    """A services row whose life is decided in slots goes once `remove` is decided
    (`synod services rm` decides it first; decision 0082): nothing is deleted otherwise."""
    for m in mutations:
        if m.table != "services":
            continue
        life = _life(engine, str(m.key[0]))
        if life.n > 0 and life.phase != "absent":
            raise codec.CodecError(
                f"services/{codec.clip(str(m.key[0]), 40)}: service/{m.key[0]}/{life.n} "
                f"decided it {life.phase}: `synod services rm` decides its removal before "
                "the row goes")


def _life(engine, name: str):
    """The latest decided service/<name>/<n> here, as a LifeState (n = 0: none)."""
    from controller.agreement.lifecycle import LifeState, lifecycle_of, state_after

    latest = LifeState()
    for d in engine.decisions(f"service/{name}/"):
        where = lifecycle_of(d.slot)
        if where is not None and where[0] == name and where[1] > latest.n:
            latest = state_after(where[1], d.value)
    return latest


def _check_report(mutations) -> None:
    """Topology rows as flows are checked (controller/forwarding/reports.py): real dpids,
    OpenFlow port numbers, MACs, values in range; CodecError naming the row and field."""
    from controller.forwarding.reports import ReportError, check_report

    try:
        check_report((m.table, m.key, m.values) for m in mutations)
    except ReportError as exc:
        raise codec.CodecError(codec.clip(str(exc), 400)) from None


def _dpid_text(value: str) -> str:
    """A report's datapath id as 16 hex digits (CodecError naming the bad value)."""
    from controller.forwarding.flowspec import FlowSpecError, parse_dpid

    try:
        return f"{parse_dpid(value):016x}"
    except FlowSpecError as exc:
        raise codec.CodecError(str(exc)[:200]) from None


def _json(value) -> str:
    """A CBOR value as JSON text (bytes as hex), for the Conflict message."""
    return json.dumps(codec.json_plain(value), sort_keys=True)


def _conflict_fields(v: dict) -> dict:
    """A row of the replicated `conflicts` table as a Conflict message's fields."""
    kept, lost = decode(v["kept"]), decode(v["lost"])
    key = decode(v["row_key"])
    if v["kind"] == "slot":
        what = f"slot {v['name']} was decided {_json(kept)} by lineage " \
               f"{v['kept_lineage'][:12]} and {_json(lost)} by {v['lost_lineage'][:12]}; " \
               f"{_json(kept)} stands"
    elif v["kind"] == "placement" and isinstance(kept, dict) and isinstance(lost, dict):
        what = f"service {_json(key)} ran twice while apart: generation " \
               f"{kept.get('generation')} on {str(kept.get('node'))[:12]} and generation " \
               f"{lost.get('generation')} on {str(lost.get('node'))[:12]} (decision 0081 " \
               f"section 4); generation {kept.get('generation')} stands, the other is stopped"
    else:
        what = f"{v['name']} {_json(key)} column {v['column_name']}: {_json(kept)} " \
               f"(by {v['kept_author'][:12]}) kept, {_json(lost)} (by {v['lost_author'][:12]}) " \
               "discarded; both were written while apart"
    return {
        "kind": v["kind"],
        "description": what,
        "name": v["name"],
        "key": _json(key),
        "column": v["column_name"],
        "kept": _json(kept),
        "kept_author": v["kept_author"],
        "kept_hlc": v["kept_hlc"],
        "kept_lineage": v["kept_lineage"],
        "lost": _json(lost),
        "lost_author": v["lost_author"],
        "lost_hlc": v["lost_hlc"],
        "lost_lineage": v["lost_lineage"],
    }


class Lineages(northbound_pb2_grpc.LineageServiceServicer):
    """This node's lineage, the lineages it met, and secession (controller.node.lineages)."""

    def __init__(self, api: Api) -> None:
        self.api = api

    async def GetLineage(self, request, context):
        async with self.api.call(context, Role.VIEWER, "GetLineage"):
            engine = self.api.engine
            out = northbound_pb2.LineageInfo()
            voters = engine.agreement.membership().voters if engine.agreement else engine.members
            _lineage_pb(out.lineage, engine.genesis, voters)
            keeper = engine.keeper
            for m in keeper.info() if keeper is not None else []:
                met = out.met.add(relation=m["relation"], slot=m["slot"], decided=m["decided"],
                                  joined=m["joined"], reported=m["reported"])
                _lineage_pb(met.lineage, m["genesis"], m["genesis"].member_ids)
            return out

    async def Secede(self, request, context):
        async with self.api.call(context, Role.ADMIN, "Secede"):
            if self.api.secession is None:
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, "secession is off here")
            try:
                done = await self.api.secession.secede(list(request.voters),
                                                       request.confirmed_by)
            except LineageError as exc:
                self.api.metrics.inc("secessions_refused")
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            self.api.metrics.inc("secessions")
            g = done["genesis"]
            return northbound_pb2.SecedeResponse(
                cluster_id=g.cluster_id.hex(), genesis=g.raw,
                moved=done["moved"], unreached=done["unreached"])


def _lineage_pb(out, genesis, voters) -> None:
    lin = lineage_of(genesis)
    out.cluster_id = genesis.cluster_id.hex()
    out.name = genesis.name
    out.root = lin.root.hex()
    out.ancestors.extend(a.hex() for a in lin.ancestors)
    for author, seq in lin.fork_vector.items():
        out.fork_vector[author] = seq
    out.left.extend(lin.left)
    out.confirmed_by = lin.confirmed_by
    out.voters.extend(sorted(voters))


def servicers(api: Api, server: grpc.aio.Server) -> list[str]:
    """Register every API servicer on server, each method given a _BoundedStatus context;
    returns the full service names."""
    nb, local = northbound_pb2.DESCRIPTOR.services_by_name, local_pb2.DESCRIPTOR.services_by_name
    for add, servicer, service in (
        (northbound_pb2_grpc.add_ClusterServiceServicer_to_server, Cluster(api),
         nb["ClusterService"]),
        (northbound_pb2_grpc.add_RowServiceServicer_to_server, Rows(api), nb["RowService"]),
        (northbound_pb2_grpc.add_SlotServiceServicer_to_server, Slots(api), nb["SlotService"]),
        (northbound_pb2_grpc.add_AdminServiceServicer_to_server, Admin(api),
         nb["AdminService"]),
        (local_pb2_grpc.add_LocalServiceServicer_to_server, Local(api), local["LocalService"]),
        (northbound_pb2_grpc.add_LineageServiceServicer_to_server, Lineages(api),
         nb["LineageService"]),
    ):
        add(_bounded(servicer, service), server)
    return [s.full_name for s in nb.values()] + [s.full_name for s in local.values()]
