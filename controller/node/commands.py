"""The `synod` client commands (status, rows, SQL, flows, services, tokens) over the API.

Every command takes --server, --token, --ca, --insecure, --timeout and --json, before or
after the subcommand, with SYNOD_* variables and a client config file behind them
(controller/node/clientconf.py); errors are one line. gRPC is imported inside the
commands, so `synod --help` stays quick.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable

import click

from controller.node import codec_lite as cl

__all__ = ["client_done", "client_options", "given", "quiet_grpc", "register"]


def client_options(f: Callable) -> Callable:
    """The connection options, for the `synod` group and each client command alike. They
    default to None (not given), so that clientconf.resolve can tell a flag from a
    variable, the config file or the default."""
    options = [
        click.option("--server", default=None, metavar="HOST:PORT",
                     help="node API address [env SYNOD_SERVER; default 127.0.0.1:7000]"),
        click.option("--token", default=None,
                     help="bearer token, or @FILE to read it [env SYNOD_TOKEN]"),
        click.option("--ca", "ca", default=None, metavar="FILE",
                     help="CA certificate to verify the node [env SYNOD_CA]"),
        click.option("--insecure", is_flag=True, default=None,
                     help="plaintext (a node run with --insecure-loopback) [env SYNOD_INSECURE]"),
        click.option("--json", "as_json", is_flag=True, default=None,
                     help="print JSON (every field; docs/operations.md)"),
        click.option("--timeout", "timeout_s", type=float, default=None, metavar="SECONDS",
                     help="seconds to wait for an answer [env SYNOD_TIMEOUT; default 10]"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


_SETTINGS = ("server", "token", "ca", "insecure", "timeout_s")


def given(kw: dict) -> dict:
    """Connection flags given after the subcommand, else before it (on the `synod` group)."""
    ctx = click.get_current_context(silent=True)
    before = (ctx.find_root().obj or {}) if ctx is not None else {}
    return {k: kw[k] if kw.get(k) is not None else before.get(k)
            for k in (*_SETTINGS, "as_json")}


_RAN: list[bool] = []  # a client command ran in this process (cli.main leaves fast then)


def client_done() -> bool:
    """Whether a client command ran: nothing of it is left to tidy but the interpreter."""
    return bool(_RAN)


def quiet_grpc() -> None:
    """Before gRPC is imported: its core prints its own lines (a failed TLS handshake) to
    stderr, and the CLI explains the failure in its one error line instead
    (Client.explain). GRPC_VERBOSITY set by the user still wins. Once gRPC is loaded (a
    command run inside another program, e.g. a test) the setting could only leak into
    that program's children, so it is left alone."""
    if "grpc" not in sys.modules:
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")


class _Ctx:
    def __init__(self, kw: dict, error: type[click.ClickException]) -> None:
        from controller.node.client import Client, ClientError
        from controller.node.clientconf import ClientConfigError, resolve

        self.error = error
        flags = given(kw)
        for k in (*_SETTINGS, "as_json"):
            kw.pop(k)
        self.as_json = bool(flags.pop("as_json"))
        try:
            s = resolve(flags)
            self.client = Client(s.server, s.token, s.ca or None, s.insecure, s.timeout_s,
                                 origin=s.origin, schema_cache=True)
        except (ClientError, ClientConfigError) as e:
            raise error(str(e)) from None

    def out(self, plain, human: Callable[[], None]) -> None:
        if self.as_json:
            click.echo(cl.dumps(plain))
        else:
            human()


def _table(rows: list[dict], columns: list[str] | None = None) -> None:
    if not rows:
        click.echo("(none)")
        return
    columns = columns or list(rows[0])
    text = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for t in text:
        click.echo("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip())


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return ",".join(_cell(x) for x in v) or "-"
    return str(v)


def _json_cell(col, v):
    """A JSON value for column col: strings are read by the column's type (as on the
    command line), numbers and booleans pass as they are (an int into a real column
    becomes a float), lists and objects become their JSON text."""
    if v is None:
        raise ValueError(f"column {col.name}: null is not a value (leave the column out)")
    if col.type == "real" and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, (str, bool, int, float)):
        return v
    return json.dumps(v)


_ROOT: list[click.Command] = []  # the commands of the `synod` group itself
_ERROR: list[type[click.ClickException]] = [click.ClickException]  # set by register()


def register(cli: click.Group, error: type[click.ClickException]) -> None:
    """Add the client commands to the `synod` group; their errors raise `error`."""
    _ERROR[0] = error
    for c in [*_ROOT, members, flows, services, token]:
        cli.add_command(c)


def command(group: click.Group | None = None, name: str | None = None, **kw):
    """A client command: the client options, a connected client in ctx, errors as one line.
    A failure that a stale cached schema explains runs the command once more with the
    node's schema: the refused request wrote nothing (an import, which writes in batches
    and reads its input once, uses the node's schema from the start)."""

    def wrap(f):
        @client_options
        @functools.wraps(f)
        def run(**kwargs):
            quiet_grpc()
            _RAN.append(True)
            from controller.node.client import ClientError

            ctx = _Ctx(kwargs, _ERROR[0])
            try:
                with ctx.client:
                    try:
                        f(ctx, **kwargs)
                    except ClientError as e:
                        if not ctx.client.schema_changed(e):
                            raise
                        f(ctx, **kwargs)
            except ClientError as e:
                raise _ERROR[0](str(e)) from None

        if group is None:
            made = click.command(name, **kw)(run)
            _ROOT.append(made)
            return made
        return group.command(name, **kw)(run)

    return wrap


@command()
def status(ctx) -> None:
    """This node's identity, cluster, progress, digests and peers."""
    s = ctx.client.call(ctx.client.cluster.GetStatus, cl.pb().GetStatusRequest())
    plain = cl.message_plain(s)

    def human():
        click.echo(f"node      {s.node_id}")
        click.echo(f"cluster   {s.cluster_name} {s.cluster_id[:16]}…")
        click.echo(f"members   {s.members} ({s.peers_up} peer(s) up)")
        click.echo(f"ops       {s.ops}")
        click.echo(f"digest    {s.state_digest.hex()}")
        if s.schema_reads:  # 0: a node of older code (decision 0037)
            click.echo(f"schema    {s.schema_decided} decided (this node reads {s.schema_reads})")
        click.echo(f"uptime    {s.uptime_s:.1f} s")

    ctx.out(plain, human)

@click.group(invoke_without_command=True)
@client_options
@click.pass_context
def members(cctx, **connection) -> None:
    """Members of the cluster, whether they are reachable, and their progress; with a
    subcommand, remove a voter or forget a former one (decision 0070)."""
    if cctx.invoked_subcommand is None:
        cctx.invoke(members_list, **connection)
        return
    root = cctx.find_root()  # options given before the subcommand reach it (`given`)
    root.obj = {**(root.obj or {}), **{k: v for k, v in connection.items() if v is not None}}

@command(members, "list")
def members_list(ctx) -> None:
    """Members of the cluster, whether they are reachable, and their progress."""
    r = ctx.client.call(ctx.client.cluster.ListMembers, cl.pb().ListMembersRequest())
    rows = [
        {
            "node": m.node_id + (" (self)" if m.self else ""),
            "up": m.up,
            "address": m.address or "-",
            "ops": sum(m.version_vector.values()),
            "last_seen_ms": m.last_seen_ms_ago,
        }
        for m in r.members
    ]
    ctx.out([cl.message_plain(m) for m in r.members], lambda: _table(rows))

def _members_change(ctx, slot: str, value: dict, timeout_ms: int) -> None:
    from controller.replication import decode, encode

    request = cl.pb().ProposeRequest(slot=slot, value=encode(value), timeout_ms=timeout_ms)
    wait_s = max((timeout_ms or 10_000) / 1000 + 5, ctx.client.timeout_s)
    r = ctx.client.call(ctx.client.slots.Propose, request, wait_s)
    decided = decode(r.value)

    def human() -> None:
        voters = ", ".join(n[:12] for n in sorted(decided.get("voters", {})))
        click.echo(f"{r.slot}: decided; voters {voters}")
        if decided.get("released"):
            click.echo(f"  released for good: {', '.join(decided['released'])}")
        elif decided.get("reason"):
            click.echo(f"  reason: {decided['reason']}")

    ctx.out(_slot_plain(r, decided), human)

_TIMEOUT = click.option("--propose-timeout-ms", type=int, default=0,
                        help="give up with 'no quorum reachable' after this long")

@command(members, "remove")
@click.argument("node")
@click.option("--for-good", is_flag=True,
              help="the machine will never come back, not even as a seceded side to "
                   "reunite with: its last op does not pin compaction")
@_TIMEOUT
def members_remove(ctx, node, for_good, propose_timeout_ms) -> None:
    """Remove voter NODE (an id or a prefix of 8+ characters) by a decided membership
    change. Without --for-good the removed voter pins compaction at its last op (it may
    be a seceded side that comes back to reunite); `synod members forget` releases it."""
    from controller.agreement.membership import LEAVE_SLOT

    _members_change(ctx, LEAVE_SLOT, {"node": node, "for_good": for_good},
                    propose_timeout_ms)

@command(members, "forget")
@click.argument("nodes", nargs=-1, required=True)
@_TIMEOUT
def members_forget(ctx, nodes, propose_timeout_ms) -> None:
    """Say that former voters NODES (ids or prefixes of 8+ characters), removed without
    --for-good, are gone for good: a decided release, after which compaction goes past
    their last ops. A side they seceded into can then no longer reunite with this
    cluster: its machines join again as new nodes (docs/operations.md)."""
    from controller.agreement.membership import RELEASE_SLOT

    _members_change(ctx, RELEASE_SLOT, {"nodes": list(nodes)}, propose_timeout_ms)

@command()
def digest(ctx) -> None:
    """The node's 32-byte state digest (equal digests: equal state)."""
    d = ctx.client.call(ctx.client.cluster.GetDigest, cl.pb().GetDigestRequest())
    ctx.out(cl.message_plain(d),
            lambda: click.echo(f"{d.state_digest.hex()}  {d.ops} ops  {d.node_id}"))

@command()
@click.argument("statement")
@click.option("--limit", type=int, default=0, help="row limit (default: the node's)")
def sql(ctx, statement: str, limit: int) -> None:
    """Run a read-only SQL query over the tables."""
    r = ctx.client.call(
        ctx.client.rows.Query, cl.pb().QueryRequest(sql=statement, row_limit=limit)
    )
    rows = [
        dict(zip(r.columns, (cl.value(v) for v in row.values), strict=True)) for row in r.rows
    ]
    ctx.out(rows, lambda: _table(rows, list(r.columns)))

def _put(ctx, table, key, assignments, quorum):
    try:
        pairs = dict(a.split("=", 1) for a in assignments)
    except ValueError:
        raise click.UsageError("values are COLUMN=VALUE") from None
    req = cl.pb().PutRequest(
        rows=[ctx.client.row(table, key, pairs)],
        ack=cl.pb().ACK_QUORUM if quorum else cl.pb().ACK_LOCAL,
    )
    r = ctx.client.call(ctx.client.rows.Put, req)
    ctx.out(cl.message_plain(r),
            lambda: click.echo(f"ok op {r.op_id[:16]} seq {r.seq} held by {r.holders}"))

@command()
@click.argument("table")
@click.argument("key", required=False)
@click.argument("assignments", nargs=-1)
@click.option("--quorum", is_flag=True, help="wait until a majority holds the write")
@click.option(
    "--from",
    "source",
    type=click.File("r", encoding="utf-8"),
    default=None,
    help="import rows from a JSON-lines file (- for stdin): one object per line, "
    "{column: value} with the key columns",
)
@click.option(
    "--batch-rows",
    type=click.IntRange(1, 5_000),
    default=500,
    show_default=True,
    help="rows per write with --from",
)
def put(ctx, table, key, assignments, quorum, source, batch_rows) -> None:
    """Set columns of a row: put TABLE KEY[/KEY2] COL=VALUE...; or import many rows:
    put TABLE --from FILE.jsonl (a progress bar on a terminal)."""
    if source is not None:
        if key is not None or assignments:
            raise click.UsageError("give either KEY COL=VALUE... or --from FILE, not both")
        _import(ctx, table, source, quorum, batch_rows)
        return
    if key is None:
        raise click.UsageError("missing KEY (or --from FILE)")
    _put(ctx, table, key, assignments, quorum)

def _import(ctx, table, source, quorum, batch_rows) -> None:
    """Read every line first (a bad line writes nothing), then write in batches."""
    from .client import ClientError

    name = getattr(source, "name", "-")
    ctx.client.fresh_schema()  # the input is read once: no second try on a stale cache
    keys, values = ctx.client.columns(table)
    key_names = [c.name for c in keys]
    by_name = {c.name: c for c in [*keys, *values]}
    rows: list = []
    for lineno, line in enumerate(source, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise ctx.error(f"{name}:{lineno}: not JSON: {e}") from None
        if not isinstance(obj, dict):
            raise ctx.error(f"{name}:{lineno}: expected a JSON object {{column: value}}")
        missing = [k for k in key_names if k not in obj]
        if missing:
            raise ctx.error(f"{name}:{lineno}: missing key column(s) {', '.join(missing)}")
        unknown = [c for c in obj if c not in by_name]
        if unknown:
            raise ctx.error(
                f"{name}:{lineno}: {table} has no column(s) {', '.join(unknown)} "
                f"({', '.join(by_name)})"
            )
        try:
            rows.append(
                ctx.client.row(
                    table,
                    [_json_cell(by_name[k], obj[k]) for k in key_names],
                    {
                        c: _json_cell(by_name[c], v)
                        for c, v in obj.items()
                        if c not in key_names
                    },
                )
            )
        except (ClientError, ValueError) as e:
            raise ctx.error(f"{name}:{lineno}: {e}") from None
    ack = cl.pb().ACK_QUORUM if quorum else cl.pb().ACK_LOCAL
    batches = [rows[i : i + batch_rows] for i in range(0, len(rows), batch_rows)]
    show_bar = not ctx.as_json and sys.stderr.isatty() and len(batches) > 1
    bar = (
        click.progressbar(length=len(rows), label=f"{table}", file=sys.stderr)
        if show_bar
        else contextlib.nullcontext()
    )
    done, last = 0, None
    with bar:
        for batch in batches:
            try:
                last = ctx.client.call(
                    ctx.client.rows.Put, cl.pb().PutRequest(rows=batch, ack=ack)
                )
            except ClientError as e:
                raise ctx.error(
                    f"{e} (rows {done + 1}-{done + len(batch)} of {len(rows)}; "
                    f"the {done} before them are written)"
                ) from None
            done += len(batch)
            if show_bar:
                bar.update(len(batch))
    # The last write's fields (null when the file held no row), as `put` prints them.
    plain = {"table": table, "rows": done, "batches": len(batches),
             "op_id": None, "seq": None, "ack": None, "holders": None}
    if last is not None:
        plain.update(cl.message_plain(last))
    ctx.out(
        plain,
        lambda: click.echo(f"ok {done} row(s) into {table} in {len(batches)} write(s)"),
    )

def _rows_out(ctx, table, rows, extra=None) -> None:
    """Print rows; `extra(plain_row) -> {column: value}` adds computed columns."""
    from .client import SchemaMiss

    keys, values = ctx.client.columns(table)
    names = [c.name for c in keys] + [c.name for c in values]
    plain = []
    for row in rows:
        unknown = set(row.values) - set(names)
        if unknown or len(row.key) != len(keys):
            raise SchemaMiss(f"{table}: the node's rows do not fit the schema this client "
                             "has of it")
        d = {c.name: cl.value(v) for c, v in zip(keys, row.key, strict=True)}
        d.update(
            {
                c.name: cl.value(row.values[c.name]) if c.name in row.values else None
                for c in values
            }
        )
        if extra is not None:
            added = extra(d)
            names += [n for n in added if n not in names]
            d.update(added)
        plain.append(d)
    ctx.out(
        [{k: cl.json_plain(v) for k, v in d.items()} for d in plain],
        lambda: _table(plain, names),
    )

@command()
@click.argument("table")
@click.argument("key")
def get(ctx, table, key) -> None:
    """Show one row: get TABLE KEY[/KEY2]. Exit 1 if absent."""
    r = ctx.client.call(
        ctx.client.rows.Get,
        cl.pb().GetRequest(table=table, key=cl.values(ctx.client.key(table, key))),
    )
    if not r.found:
        raise ctx.error(f"no row {key!r} in {table}")
    _rows_out(ctx, table, [r.row])

@command(name="del")
@click.argument("table")
@click.argument("keys", nargs=-1, required=True)
@click.option("--quorum", is_flag=True, help="wait until a majority holds the delete")
def delete(ctx, table, keys, quorum) -> None:
    """Delete rows: del TABLE KEY [KEY...]."""
    req = cl.pb().DeleteRequest(
        table=table,
        keys=[cl.pb().KeyList(key=cl.values(ctx.client.key(table, k))) for k in keys],
        ack=cl.pb().ACK_QUORUM if quorum else cl.pb().ACK_LOCAL,
    )
    r = ctx.client.call(ctx.client.rows.Delete, req)
    ctx.out(cl.message_plain(r), lambda: click.echo(f"ok op {r.op_id[:16]} seq {r.seq}"))

def _plain_rows(ctx, table: str) -> list[dict]:
    """Every row of a table as {column: value} (key columns by name)."""
    keys, values = ctx.client.columns(table)
    r = ctx.client.call(ctx.client.rows.List, cl.pb().ListRequest(table=table))
    out = []
    for row in r.rows:
        d = {c.name: cl.value(v) for c, v in zip(keys, row.key, strict=False)}
        d.update({c.name: cl.value(row.values[c.name]) for c in values if c.name in row.values})
        out.append(d)
    return out


def _view(ctx, rows: list[dict]) -> None:
    ctx.out([{k: cl.json_plain(v) for k, v in d.items()} for d in rows],
            lambda: _table(rows))


@command()
def devices(ctx) -> None:
    """Switches a controller masters now (ONOS `devices`), with their port counts."""
    from controller.node import views

    _view(ctx, views.devices(_plain_rows(ctx, "switches"), _plain_rows(ctx, "ports")))


@command()
def links(ctx) -> None:
    """Links between switches, one row per direction (ONOS `links`)."""
    from controller.node import views

    _view(ctx, views.links(_plain_rows(ctx, "links")))


@command()
def hosts(ctx) -> None:
    """Hosts by MAC and where they were seen (ONOS `hosts`)."""
    from controller.node import views

    _view(ctx, views.hosts(_plain_rows(ctx, "hosts")))


@command()
def masters(ctx) -> None:
    """Each controller site and the switches it masters (ONOS `masters`)."""
    from controller.node import views

    _view(ctx, views.masters(_plain_rows(ctx, "switches")))


@command(name="list")
@click.argument("table")
@click.option("--prefix", default="", help="only keys starting with these parts (a/b)")
@click.option("--limit", type=int, default=0)
def list_rows(ctx, table, prefix, limit) -> None:
    """List rows of a table in key order."""
    pre = []
    if prefix:
        keys, _ = ctx.client.columns(table)
        parts = prefix.split("/")
        pre = ctx.client.key(table, parts + ["0"] * (len(keys) - len(parts)))[: len(parts)]
    r = ctx.client.call(
        ctx.client.rows.List,
        cl.pb().ListRequest(table=table, key_prefix=cl.values(pre), limit=limit),
    )
    _rows_out(ctx, table, r.rows)
    if r.truncated and not ctx.as_json:
        click.echo("(truncated)", err=True)

@command()
def conflicts(ctx) -> None:
    """Conflicts on record: equivocations, and each reunion's report (slots decided on
    both sides, columns written on both sides while apart: what was kept, what lost)."""
    r = ctx.client.call(ctx.client.cluster.ListConflicts, cl.pb().ListConflictsRequest())
    rows = [cl.message_plain(c) for c in r.conflicts]
    ctx.out(rows, lambda: [click.echo(f"{c.kind}: {c.description}") for c in r.conflicts]
            or click.echo("no conflicts"))

@command()
def lineage(ctx) -> None:
    """This node's lineage (its cluster, where it seceded from) and the lineages it met."""
    r = ctx.client.call(ctx.client.lineage.GetLineage, cl.pb().GetLineageRequest())
    plain = cl.message_plain(r)

    def human() -> None:
        lin = r.lineage
        click.echo(f"cluster {lin.name} {lin.cluster_id}")
        if lin.ancestors:
            click.echo(f"  seceded from {lin.ancestors[-1]} (confirmed by {lin.confirmed_by})")
            click.echo(f"  voters left behind: {', '.join(lin.left)}")
        click.echo(f"  voters: {', '.join(lin.voters)}")
        for m in r.met:
            state = "joined" if m.joined else (m.decided or "undecided")
            click.echo(f"met {m.lineage.name} {m.lineage.cluster_id}: {m.relation}; "
                       f"{m.slot} {state}" + ("; report written" if m.reported else ""))

    ctx.out(plain, human)

@command()
@click.argument("voters", nargs=-1)
@click.option("--confirmed-by", required=True,
              help="who confirms the secession (recorded in the new lineage)")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def secede(ctx, voters, confirmed_by, yes) -> None:
    """Fork a new lineage for this minority side so it can decide alone.

    VOTERS: node ids (or unique prefixes of 8+ characters) of the voters cut off with
    the node answering; it is added itself. They must be fewer than half the voters.
    Reunion later is a vote on each side (`synod reunion merge`).
    """
    if not yes:
        if not sys.stdin.isatty():
            raise ctx.error("secession forks the cluster: add --yes to confirm")
        click.confirm("Fork a new lineage with these voters?", abort=True)
    request = cl.pb().SecedeRequest(voters=list(voters), confirmed_by=confirmed_by)
    r = ctx.client.call(ctx.client.lineage.Secede, request, max(ctx.client.timeout_s, 90))
    plain = cl.message_plain(r)

    def human() -> None:
        click.echo(f"new lineage {r.cluster_id}")
        click.echo(f"  moved: {', '.join(r.moved)}")
        for u in r.unreached:
            click.echo(f"  not reached (run this again to retry): {u}")

    ctx.out(plain, human)

def _slot_plain(r, decoded) -> dict:
    """A Slot answer as JSON: every field, the value decoded from CBOR (bytes as hex; a
    value that is not CBOR, a join bundle, as its hex), the certificate as hex."""
    plain = cl.message_plain(r)
    plain["value"] = decoded
    return plain

@command()
@click.argument("decision", type=click.Choice(["merge", "stay-apart"]))
@click.argument("cluster")
@click.option("--propose-timeout-ms", type=int, default=0,
              help="give up with 'no quorum reachable' after this long")
def reunion(ctx, decision, cluster, propose_timeout_ms) -> None:
    """Vote this side's decision about another lineage it met (see `synod lineage`):
    proposes DECISION in reunion/<cluster id> and waits until it is decided. Once both
    sides decided merge, every node joins the other DAG and a conflict report is
    written (`synod conflicts`)."""
    from controller.agreement import reunion_slot
    from controller.replication import decode, encode

    info = ctx.client.call(ctx.client.lineage.GetLineage, cl.pb().GetLineageRequest())
    hits = [m.lineage.cluster_id for m in info.met
            if m.lineage.cluster_id.startswith(cluster.lower())]
    if len(hits) != 1:
        met = ", ".join(f"{m.lineage.cluster_id[:16]} ({m.lineage.name})" for m in info.met)
        raise ctx.error(f"{cluster!r} names {len(hits)} of the lineages this node met"
                    f" ({met or 'none yet'})")
    slot = reunion_slot(bytes.fromhex(hits[0]))
    request = cl.pb().ProposeRequest(slot=slot, value=encode(decision),
                                     timeout_ms=propose_timeout_ms)
    wait_s = max((propose_timeout_ms or 10_000) / 1000 + 5, ctx.client.timeout_s)
    r = ctx.client.call(ctx.client.slots.Propose, request, wait_s)
    decided = decode(r.value)
    ctx.out(_slot_plain(r, decided),
            lambda: click.echo(f"{slot}: decided {json.dumps(cl.json_plain(decided))}"))

@command()
@click.argument("slot")
@click.option(
    "--propose",
    "proposal",
    default=None,
    help="propose this value (JSON; anything else is a string) and wait for the decision",
)
@click.option(
    "--propose-timeout-ms",
    type=int,
    default=0,
    help="give up with 'no quorum reachable' after this long (default: the node's)",
)
def slots(ctx, slot, proposal, propose_timeout_ms) -> None:
    """Show an agreed slot's decision and its certificate, or propose a value for it."""
    from controller.replication import decode, encode

    if proposal is None:
        r = ctx.client.call(ctx.client.slots.GetSlot, cl.pb().GetSlotRequest(slot=slot))
    else:
        try:
            value = json.loads(proposal)
        except ValueError:
            value = proposal
        request = cl.pb().ProposeRequest(
            slot=slot, value=encode(value), timeout_ms=propose_timeout_ms
        )
        wait_s = max((propose_timeout_ms or 10_000) / 1000 + 5, ctx.client.timeout_s)
        r = ctx.client.call(ctx.client.slots.Propose, request, wait_s)
    try:
        decoded = decode(r.value) if r.decided else None
    except Exception:  # noqa: BLE001 - not CBOR (a join bundle): show the bytes
        decoded = r.value
    plain = _slot_plain(r, decoded)

    def human() -> None:
        if not r.decided:
            click.echo(f"{r.slot}: not decided (here)")
            return
        click.echo(f"{r.slot}: decided {json.dumps(cl.json_plain(decoded))}")
        click.echo(f"  ballot {r.ballot} (membership {r.membership_version})")
        click.echo(f"  certificate: accepted by {len(r.voters)} voters: {', '.join(r.voters)}")

    ctx.out(plain, human)

# ------------------------------------------------------------------ flows
@click.group()
def flows() -> None:
    """Desired OpenFlow rules (rows of the flows table)."""

@command(flows, "add")
@click.argument("dpid")
@click.argument("flow_id")
@click.option("--priority", default="100", show_default=True)
@click.option("--table-id", default="0", show_default=True)
@click.option("--match", "match_", default="", help="e.g. 'in_port=1,eth_dst=..'")
@click.option("--actions", default="", help="e.g. 'output:2'")
@click.option("--cookie", default="0")
@click.option("--quorum", is_flag=True)
def flows_add(ctx, dpid, flow_id, priority, table_id, match_, actions, cookie, quorum):
    """Add or replace a flow on switch DPID."""
    _put(
        ctx,
        "flows",
        [dpid, flow_id],
        [
            f"priority={priority}",
            f"table_id={table_id}",
            f"match={match_}",
            f"actions={actions}",
            f"cookie={cookie}",
        ],
        quorum,
    )

@command(flows, "list")
@click.option("--dpid", default="", help="only this switch")
def flows_list(ctx, dpid):
    """List desired flows."""
    pre = cl.values([dpid]) if dpid else []
    r = ctx.client.call(
        ctx.client.rows.List, cl.pb().ListRequest(table="flows", key_prefix=pre)
    )
    # Controllers report a switch's refusal of a flow; the node keeps it in flow_errors.
    reported = ctx.client.call(ctx.client.rows.List, cl.pb().ListRequest(
        table="flow_errors", key_prefix=pre))
    errors = {}
    for row in reported.rows:
        key = "/".join(str(cl.value(k)).lower() for k in row.key)
        value = cl.value(row.values["error"]) if "error" in row.values else ""
        errors[key] = str(value)

    # What the switch's master saw in its last audit (flow_state: installed, missing,
    # pending, failed), with the switch's counters.
    seen = {}
    for row in ctx.client.call(ctx.client.rows.List, cl.pb().ListRequest(
            table="flow_state", key_prefix=pre)).rows:
        key = "/".join(str(cl.value(k)).lower() for k in row.key)
        seen[key] = {n: cl.value(row.values[n]) for n in ("state", "packets", "bytes")
                     if n in row.values}
    # A flow can only be on a switch that a controller masters now (switch rows are
    # retracted when their switch goes): the others are pending.
    mastered = {str(cl.value(row.key[0])).lower() for row in ctx.client.call(
        ctx.client.rows.List, cl.pb().ListRequest(table="switches")).rows}

    def status(d):
        dpid = str(d.get("dpid", "")).lower()
        key = f"{dpid}/{str(d.get('flow_id')).lower()}"
        audit = seen.get(key, {})
        counters = {"packets": audit.get("packets"), "bytes": audit.get("bytes")}
        err = errors.get(key)
        if err:
            return {"status": f"failed: {err}", **counters}
        if dpid not in mastered:
            return {"status": "pending: no controller has the switch", **counters}
        state = audit.get("state") or "pending: not audited yet"
        return {"status": state, **counters}

    _rows_out(ctx, "flows", r.rows, status)

@command(flows, "del")
@click.argument("dpid")
@click.argument("flow_id")
def flows_del(ctx, dpid, flow_id):
    """Delete a flow."""
    req = cl.pb().DeleteRequest(
        table="flows", keys=[cl.pb().KeyList(key=cl.values([dpid, flow_id]))]
    )
    r = ctx.client.call(ctx.client.rows.Delete, req)
    ctx.out(cl.message_plain(r), lambda: click.echo(f"ok op {r.op_id[:16]}"))

# ------------------------------------------------------------------ services
@click.group()
def services() -> None:
    """Services run as VMs by edge agents (rows of the services table)."""

@command(services, "deploy")
@click.argument("target", metavar="FILE.yaml|NAME")
@click.option("--image", default=None,
              help="the old flag form: declare service NAME (no NICs) instead of a spec file")
@click.option("--vcpus", default="1", show_default=True, help="(flag form)")
@click.option("--memory-mb", default="128", show_default=True, help="(flag form)")
@click.option("--placement", default="", help="(flag form) site or node id")
@click.option("--restart-policy", default="always", show_default=True, help="(flag form)")
def services_deploy(ctx, target, image, vcpus, memory_mb, placement, restart_policy):
    """Declare a service from a spec file (YAML or JSON, - for stdin; docs/edge-agent.md).

    The spec is validated (unknown keys and bad values named by their path), checked
    against the other services (MAC and IPv4 clashes) and against the declared capacity
    and bridges of the node it is placed on; on any problem nothing is written. The
    service row and its placement are written together, in one op."""
    if image is not None:
        _put(ctx, "services", target,
             [f"image={image}", f"vcpus={vcpus}", f"memory_mb={memory_mb}",
              f"placement={placement}", f"restart_policy={restart_policy}",
              "desired_state=running"], False)
        return
    from edge_agent.deploy import placement_slot
    from edge_agent.spec import SpecError, parse_spec

    raw = _spec_file(ctx, target)
    try:
        spec = parse_spec(raw)
        plan = _plan(ctx, spec)
    except SpecError as e:
        raise ctx.error(f"{target}: {e}") from None
    _decide_life(ctx, spec)
    if placement_slot(spec, plan.generation) is not None:
        plan = _decide_placement(ctx, spec, plan)
    rows = [_pb_row("services", spec.name, plan.service),
            _pb_row("placements", spec.name,
                    {"node": plan.node, "generation": plan.generation,
                     **({"state": "pending"} if plan.moved else {})})]
    r = ctx.client.call(ctx.client.rows.Put,
                        cl.pb().PutRequest(rows=rows, ack=cl.pb().ACK_LOCAL))
    plain = {**cl.message_plain(r), "service": spec.name, "node": plan.node,
             "generation": plan.generation}
    ctx.out(plain, lambda: click.echo(
        f"ok {spec.name} placed on {plan.node[:16]} (generation {plan.generation}), "
        f"op {r.op_id[:16]}"))


def _life_state(ctx, name: str):
    """The latest decided service/<name>/<n> (decision 0082): slots are decided one after
    another, so the first undecided n is found by doubling and then halving."""
    from controller.agreement.lifecycle import LifeState, lifecycle_slot, state_after
    from controller.replication import decode

    def value(n: int):
        r = ctx.client.call(ctx.client.slots.GetSlot,
                            cl.pb().GetSlotRequest(slot=lifecycle_slot(name, n)))
        return decode(r.value) if r.decided else None

    lo, hi = 0, 1  # value(lo) decided (or lo = 0); find hi undecided
    while value(hi) is not None:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if value(mid) is not None else (lo, mid)
    return LifeState() if lo == 0 else state_after(lo, value(lo))


def _decide_life(ctx, spec, remove: bool = False) -> None:
    """Decide the transitions from the service's decided state to this spec (deploy,
    upgrade, stop) or to removed, one slot each; a slot decided for another client's
    transition stops here with nothing written (decision 0082)."""
    from controller.agreement.lifecycle import (
        ABSENT,
        Transition,
        lifecycle_of,
        lifecycle_slot,
        plan_transitions,
    )
    from controller.replication import decode, encode
    from edge_agent.deploy import object_hash

    name = spec if remove else spec.name
    if lifecycle_of(lifecycle_slot(name, 1)) is None:
        return  # not a service's name (no row by it was ever valid): nothing to decide
    life = _life_state(ctx, name)
    if remove:
        steps = [] if life.phase == ABSENT else [Transition("remove", "", life.desired)]
    else:
        steps = plan_transitions(life, object_hash(spec), spec.state)
    for n, step in enumerate(steps, start=life.n + 1):
        slot = lifecycle_slot(name, n)
        r = ctx.client.call(ctx.client.slots.Propose, cl.pb().ProposeRequest(
            slot=slot, value=encode(step.to_value())), max(15.0, ctx.client.timeout_s))
        decided = decode(r.value) if r.decided else None
        if decided != step.to_value():
            raise ctx.error(f"{slot} was decided for another change ({decided!r}), not this "
                            f"{step.action}: nothing written; look (synod services list) and "
                            "deploy again")


def _decide_placement(ctx, spec, plan):
    """A service that may move (`any`, `failover-after`) gets its node from the slot
    placement/<service>/<generation>: the decided node, whoever proposed it, is written."""
    import dataclasses

    from controller.replication import decode, encode
    from edge_agent.deploy import placement_slot
    from edge_agent.lease import placement_value

    slot = placement_slot(spec, plan.generation)
    r = ctx.client.call(ctx.client.slots.Propose, cl.pb().ProposeRequest(
        slot=slot, value=encode(placement_value(spec, plan.node))),
        max(15.0, ctx.client.timeout_s))
    decided = decode(r.value) if r.decided else None
    if not isinstance(decided, dict) or not isinstance(decided.get("node"), str):
        raise ctx.error(f"{slot}: not decided ({decided!r}); nothing written")
    if decided["node"] != plan.node:
        click.echo(f"{slot} was decided for node {decided['node'][:16]} (another deploy); "
                   "placing it there", err=True)
    return dataclasses.replace(plan, node=decided["node"])


def _spec_file(ctx, target: str):
    import yaml

    try:
        text = sys.stdin.read() if target == "-" else open(target, encoding="utf-8").read()
    except OSError as e:
        hint = " (or give --image for the flag form)" if not os.path.exists(target) else ""
        raise ctx.error(f"{target}: cannot read: {e.strerror}{hint}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ctx.error(f"{target}: not valid YAML{line}: "
                        f"{getattr(e, 'problem', None) or e}") from None


def _plan(ctx, spec):
    """The rows to write for spec, from the services, placements and agent rows the node
    holds (edge_agent/deploy.py); SpecError when nothing may be written."""
    from edge_agent.deploy import AGENT_KEY_PREFIX, AgentInfo, plan_deploy

    def table(name: str) -> dict:
        r = ctx.client.call(ctx.client.rows.List, cl.pb().ListRequest(table=name))
        return {str(cl.value(row.key[0])): {k: cl.value(v) for k, v in row.values.items()}
                for row in r.rows}

    q = ctx.client.call(ctx.client.rows.Query, cl.pb().QueryRequest(
        sql="SELECT key, value FROM kv WHERE key >= ? AND key < ?",
        params=cl.values([AGENT_KEY_PREFIX, AGENT_KEY_PREFIX[:-1] + "0"])))
    agents = {}
    for row in q.rows:
        key, value = (cl.value(v) for v in row.values)
        node = str(key)[len(AGENT_KEY_PREFIX):]
        try:
            agents[node] = AgentInfo.decode(node, value)
        except (ValueError, KeyError, TypeError):
            continue  # not an agent's row: its agent rewrites it when it starts
    return plan_deploy(spec, table("services"), table("placements"), agents)


def _pb_row(table: str, key: str, values: dict):
    row = cl.pb().Row(table=table, key=cl.values([key]))
    for name, v in values.items():
        row.values[name].CopyFrom(cl.value_pb(v))
    return row

@command(services, "list")
def services_list(ctx):
    """List declared services with their placement and the state their agent reports."""
    r = ctx.client.call(ctx.client.rows.List, cl.pb().ListRequest(table="services"))
    p = ctx.client.call(ctx.client.rows.List, cl.pb().ListRequest(table="placements"))
    placed = {str(cl.value(row.key[0])): {k: cl.value(v) for k, v in row.values.items()}
              for row in p.rows}

    def where(d):
        at = placed.get(str(d.get("name")), {})
        return {"node": at.get("node"), "generation": at.get("generation"),
                "state": at.get("state") or "pending: not placed"}

    if ctx.as_json:
        _rows_out(ctx, "services", r.rows, where)
        return
    shown = []
    for row in r.rows:
        d = {"name": cl.value(row.key[0]),
             **{k: cl.value(row.values[k]) for k in ("image", "vcpus", "memory_mb", "placement")
                if k in row.values}}
        d.update(where(d))
        d["node"] = str(d.get("node") or "-")[:16]
        shown.append(d)
    _table(shown, ["name", "image", "vcpus", "memory_mb", "placement", "node", "generation",
                   "state"])

@command(services, "rm")
@click.argument("name")
def services_rm(ctx, name):
    """Remove a service (its agent stops the VM) and its placement."""
    _decide_life(ctx, name, remove=True)
    r = ctx.client.call(
        ctx.client.rows.Delete,
        cl.pb().DeleteRequest(table="services", keys=[cl.pb().KeyList(key=cl.values([name]))]),
    )
    ctx.client.call(ctx.client.rows.Delete, cl.pb().DeleteRequest(
        table="placements", keys=[cl.pb().KeyList(key=cl.values([name]))]))
    ctx.out(cl.message_plain(r), lambda: click.echo(f"ok op {r.op_id[:16]}"))

# ------------------------------------------------------------------ tokens
@click.group()
def token() -> None:
    """Bearer tokens for clients (admin role)."""

@command(token, "create")
@click.option("--role", type=click.Choice(["viewer", "operator", "admin"]), required=True)
@click.option("--description", default="")
@click.option("--expires", metavar="DURATION|DATE", default=None,
              help="the token stops working after a duration (90m, 12h, 30d, 2w) or at "
                   "an ISO date or time, UTC unless given (2030-01-31, "
                   "2030-01-31T12:00:00Z); default: never")
def token_create(ctx, role, description, expires):
    """Create a token; its secret is printed once."""
    import time

    from controller.node.tokens import TokenError, expiry_ms

    expires_ms = 0
    if expires is not None:
        try:
            expires_ms = expiry_ms(expires, int(time.time() * 1000))
        except TokenError as e:
            raise ctx.error(f"--expires: {e}") from None
    r = ctx.client.call(
        ctx.client.admin.CreateToken,
        cl.pb().CreateTokenRequest(role=role, description=description,
                                   expires_ms=expires_ms),
    )
    ctx.out(cl.message_plain(r), lambda: click.echo(r.token))

@command(token, "list")
def token_list(ctx):
    """List tokens (never their secrets), with when each expires."""
    from controller.node.tokens import utc_text

    r = ctx.client.call(ctx.client.admin.ListTokens, cl.pb().ListTokensRequest())
    rows = [cl.message_plain(t) for t in r.tokens]

    def human() -> None:
        shown = [{**t, "expires": (utc_text(int(t["expires_ms"])) if t.get("expires_ms")
                                   else "never") + (" (expired)" if t.get("expired") else "")}
                 for t in rows]
        _table(shown, ["id", "role", "revoked", "expires", "description"])

    ctx.out(rows, human)

@command(token, "revoke")
@click.argument("token_id")
def token_revoke(ctx, token_id):
    """Revoke a token by id."""
    r = ctx.client.call(ctx.client.admin.RevokeToken, cl.pb().RevokeTokenRequest(id=token_id))
    ctx.out(cl.message_plain(r), lambda: click.echo(f"revoked {r.id}"))

