"""The `synod` operator command line: a thin layer over the library's entry points.

Exit codes: 0 success, 1 an error (one line on stderr) or a failed scenario, 2 usage.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import NoReturn

import click

import controller
from controller.node.commands import client_done, client_options
from controller.sitefile import SiteError, site_options

__all__ = ["cli", "main"]

PROG = "synod"


class CliError(click.ClickException):
    """An operating error reported to the user in one line (exit 1)."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(controller.__version__, prog_name=PROG)
@client_options
@click.pass_context
def cli(ctx: click.Context, **connection: object) -> None:
    """Synod: a partition-tolerant, decentralised SDN control plane for cloud-edge sites.

    The connection options work before or after a command (`synod --server A status`);
    unset, each comes from SYNOD_SERVER, SYNOD_TOKEN, SYNOD_CA, SYNOD_INSECURE,
    SYNOD_TIMEOUT, then the client config file ($SYNOD_CONFIG or
    ~/.config/synod/client.toml). See docs/operations.md.
    """
    ctx.obj = connection


@cli.command()
@click.option("--topo", default="cloudedge", show_default=True,
              help="topology: cloudedge, single, linear or tree")
@click.option("--sites", type=int, default=3, show_default=True,
              help="edge sites (cloudedge); switches (single/linear); depth (tree)")
@click.option("--hosts-per-site", type=int, default=2, show_default=True,
              help="hosts in every site (cloudedge)")
@click.option("--switches-per-site", type=int, default=1, show_default=True,
              help="switches chained in every site (cloudedge)")
@click.option("--wan-delay-ms", type=float, default=20.0, show_default=True,
              help="one-way delay of each WAN link")
@click.option("--wan-rate-mbit", type=float, default=100.0, show_default=True,
              help="rate of each WAN link, 0 for unlimited")
@click.option("--wan-loss-pct", type=float, default=0.0, show_default=True,
              help="random frame loss on each WAN link")
@click.option("--cut-site", default="edge1", show_default=True,
              help="the edge site whose WAN link is cut and healed")
@click.option("--controllers", type=click.Choice(["sdn", "single"]), default="sdn",
              show_default=True,
              help="sdn: a Synod node and controller per site (replicated flows, mastership); "
                   "single: one controller for all switches")
@click.option("--of-port", type=click.IntRange(0, 65535), default=0,
              help="OpenFlow port of the single controller  [default: a free port]")
@click.option("--log-dir", type=click.Path(file_okay=False), default=None,
              help="where node and controller logs go  [default: a new temporary directory]")
@click.option("--cleanup", is_flag=True,
              help="only remove bridges and processes a crashed emulation left behind")
@click.option("-v", "--verbose", is_flag=True, help="show Mininet's own log")
@click.option("--web", is_flag=True,
              help="pause before the cut and the heal, then keep running with the web view "
                   "live until Ctrl-C (docs/web.md)")
@click.option("--web-pause-s", type=click.FloatRange(0, 3600), default=15.0,
              show_default=True, help="with --web: the pause before the cut and the heal")
@click.option("--service", is_flag=True,
              help="after the heal: an edge agent per edge site, a service (QEMU microVM) "
                   "deployed on edge1 and fetched from a host of edge2 (docs/edge-agent.md)")
def emulate(topo: str, sites: int, hosts_per_site: int, switches_per_site: int,
            wan_delay_ms: float, wan_rate_mbit: float, wan_loss_pct: float, cut_site: str,
            controllers: str, of_port: int, log_dir: str | None, cleanup: bool,
            verbose: bool, web: bool, web_pause_s: float, service: bool) -> None:
    """Emulate a cloud-edge network (Mininet, userspace OVS) with a real synod-controller.

    Brings the topology up, pings every host pair, cuts and heals one edge site's
    WAN link, prints per-site reachability before, during and after, and tears
    everything down (also on Ctrl-C or error). Needs root.
    """
    from topologies.classic import TopologyError
    from topologies.emulate import (
        EmulationError,
        ScenarioOptions,
        cleanup_leftovers,
        ensure_root,
        run_scenario,
    )

    started = time.monotonic()

    def progress(message: str) -> None:
        click.echo(f"[{time.monotonic() - started:6.1f}s] {message}", err=True)

    try:
        if cleanup:
            ensure_root()
            removed = cleanup_leftovers(progress)
            click.echo(f"removed {len(removed)} leftover item(s)")
            return
        opts = ScenarioOptions(topo=topo, sites=sites, hosts_per_site=hosts_per_site,
                               switches_per_site=switches_per_site, wan_delay_ms=wan_delay_ms,
                               wan_rate_mbit=wan_rate_mbit, wan_loss_pct=wan_loss_pct,
                               cut_site=cut_site, of_port=of_port, verbose=verbose,
                               controllers=controllers, web=web,
                               web_pause_s=web_pause_s if web else 0.0)
        log_dir = log_dir or tempfile.mkdtemp(prefix="synod-emulate-")
        shown: list = []  # with --web the report is printed before the hold
        on_healed = None
        if service:  # edge agents and a service: topologies/agents.py
            if controllers != "sdn" or topo != "cloudedge":
                raise CliError("--service needs --topo cloudedge --controllers sdn")
            from topologies.agents import check_service

            def on_healed(cluster, r):
                check_service(cluster, r, progress, cluster.sites)
        report = run_scenario(opts, progress, log_dir,
                              lambda r: (click.echo(r.render()), shown.append(r)), on_healed)
    except (EmulationError, TopologyError) as e:
        raise CliError(str(e)) from None
    if not shown:
        click.echo(report.render())
    progress("done: nothing left running")
    if not report.passed:
        sys.exit(1)


def _as_json(flag: bool | None) -> bool:
    """--json after the command, else before it (`synod --json init ...`)."""
    root = click.get_current_context().find_root().obj or {}
    return bool(flag if flag is not None else root.get("as_json"))


# ---------------------------------------------------------------------------- node daemon
def _node_errors():
    from controller.node.config import ConfigError
    from controller.node.datadir import DataDirError
    from controller.node.server import NodeError

    return (ConfigError, DataDirError, NodeError)


@cli.command()
@click.option("--data", "data", multiple=True, required=True, type=click.Path(file_okay=False),
              help="node data directory to create (repeat to create several nodes at once)")
@click.option("--new-cluster", metavar="NAME", default=None,
              help="found a cluster: write a genesis naming every --data node as a member")
@click.option("--ca-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="sign certificates with the CA in this directory (ca.crt, ca.key)")
@click.option("--ca-cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="the operator's CA certificate (PEM), with --ca-key")
@click.option("--ca-key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="the operator's CA private key (PEM), with --ca-cert")
@click.option("--host", "hosts", multiple=True,
              help="extra DNS name or IP address for the node certificates")
@click.option("--json", "as_json", is_flag=True, default=None, help="print the summary as JSON")
@site_options
def init(data: tuple[str, ...], new_cluster: str | None, ca_dir: str | None,
         ca_cert: str | None, ca_key: str | None, hosts: tuple[str, ...],
         as_json: bool | None, **site: object) -> None:
    """Create node data directories: Ed25519 key, CA and TLS certificate, and a genesis.

    Without --new-cluster the nodes are prepared (key and certificate) but in no cluster.
    With it, every --data node is a founding member, the first signs the genesis, an
    admin token is written to the first directory's admin.token, and settings for the
    synod CLI (server, CA, that token) to its client.toml: `export SYNOD_CONFIG=...`.
    With --site, also a site file for `synod up` (docs/deploy.md); again, it keeps the node.
    """
    import json
    from pathlib import Path

    from controller.node import pki
    from controller.node.datadir import init_data_dirs

    ca = None
    if ca_dir:
        ca_cert, ca_key = str(Path(ca_dir) / "ca.crt"), str(Path(ca_dir) / "ca.key")
    if bool(ca_cert) != bool(ca_key):
        raise click.UsageError("--ca-cert and --ca-key go together")
    if ca_cert and ca_key:
        try:
            ca = pki.KeyPair(Path(ca_key).read_bytes(), Path(ca_cert).read_bytes())
        except OSError as e:
            raise CliError(f"{e.filename}: {e.strerror}") from None
    try:
        if site["site"]:
            from controller.sitefile import init_site

            for line in init_site(data, new_cluster, lambda: init_data_dirs(
                    [Path(d) for d in data], new_cluster, ca, hosts), **site):
                click.echo(line)
            return
        summary = init_data_dirs([Path(d) for d in data], new_cluster, ca, hosts)
    except SiteError as e:
        raise CliError(str(e)) from None
    except _node_errors() as e:
        raise CliError(str(e)) from None
    except ValueError as e:  # an unreadable CA key or certificate
        raise CliError(f"CA: {e}") from None
    if _as_json(as_json):
        click.echo(json.dumps(summary, indent=2))
        return
    for path, node_id in summary["nodes"].items():  # type: ignore[union-attr]
        click.echo(f"node {node_id}  {path}")
    if new_cluster:
        click.echo(f"cluster {new_cluster} {summary['cluster_id']}")
        click.echo(f"admin token in {summary['admin_token_file']}")
        click.echo(f"CLI settings in {summary['client_config']} "
                   f"(export SYNOD_CONFIG={Path(str(summary['client_config'])).resolve()})")


@cli.command()
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False),
              help="the joining node's data directory (from synod init with the cluster's CA)")
@click.option("--via", default=None, metavar="HOST:PORT",
              help="API address of any member of the cluster [default: the client's server: "
                   "--server, SYNOD_SERVER or the config file]")
@click.option("--advertise", required=True, metavar="HOST:PORT",
              help="this node's peer address, as the members will dial it")
@click.option("--token", default=None,
              help="an admin bearer token, or @FILE [env SYNOD_TOKEN]")
@click.option("--insecure", is_flag=True, default=None,
              help="plaintext (a member run with --insecure-loopback) [env SYNOD_INSECURE]")
@click.option("--timeout", "timeout_s", type=float, default=None,
              help="seconds to wait for the member [env SYNOD_TIMEOUT; default 10]")
@click.option("--json", "as_json", is_flag=True, default=None, help="print the summary as JSON")
def join(data: str, via: str | None, advertise: str, token: str | None, insecure: bool | None,
         timeout_s: float | None, as_json: bool | None) -> None:
    """Join a running cluster: a member signs an invitation for this node's key.

    Prepare the directory first with `synod init --data DIR --ca-dir MEMBER_DIR` (or
    --ca-cert/--ca-key), then run the node with `synod node run --data DIR`; it dials the
    peers named in the invitation and catches up before it may write. Refused, writing
    nothing, when this node's code reads an older schema than the cluster decided.
    """
    import json
    from pathlib import Path

    from controller.node.commands import given, quiet_grpc

    quiet_grpc()
    from controller.node.clientconf import ClientConfigError, resolve
    from controller.node.join import JoinError, join_cluster

    flags = given({"server": via, "token": token, "ca": None, "insecure": insecure,
                   "timeout_s": timeout_s, "as_json": as_json})
    try:
        s = resolve(flags)
        summary = join_cluster(Path(data), s.server, s.token, advertise, insecure=s.insecure,
                               timeout_s=s.timeout_s)
    except (JoinError, ClientConfigError, *_node_errors()) as e:
        raise CliError(str(e)) from None
    if flags["as_json"]:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"node {summary['node_id']} invited into {summary['cluster']} "
               f"by {summary['inviter']}")
    click.echo(f"peers {' '.join(summary['peers'])}")
    click.echo(f"next: synod node run --data {data} --peer-listen {advertise}")


@cli.group()
def node() -> None:
    """Run a node daemon."""


@node.command("run")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False),
              help="the node's data directory (from synod init)")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="TOML configuration (see docs/node.md); flags below override it")
@click.option("--api", "api_listen", default=None, help="API listen address HOST:PORT")
@click.option("--peer-listen", default=None, help="peer (mTLS) listen address HOST:PORT")
@click.option("--peer", "peers", multiple=True, help="another member's peer address (repeat)")
@click.option("--metrics", "metrics_listen", default=None,
              help="serve Prometheus metrics on HOST:PORT")
@click.option("--web", "web_listen", default=None,
              help="serve the read-only web view on HOST:PORT (docs/web.md)")
@click.option("--insecure-loopback", is_flag=True,
              help="plaintext API on 127.0.0.1 (tests only; tokens still required)")
@click.option("--start-empty", is_flag=True,
              help="start with an empty store even though history.cbor says this node had "
                   "one (it catches up from its peers); this start only")
def node_run(data: str, config_file: str | None, api_listen: str | None,
             peer_listen: str | None, peers: tuple[str, ...], metrics_listen: str | None,
             web_listen: str | None, insecure_loopback: bool, start_empty: bool) -> None:
    """Run the node: replication, storage, peer sync and the gRPC APIs, until SIGTERM."""
    import os

    from controller.node.memory import reexec_with_system_malloc

    # First: the interpreter reads PYTHONMALLOC only at start (decision 0102).
    reexec_with_system_malloc()
    from controller.node.config import load_config
    from controller.node.server import run_node

    os.umask(0o077)  # whatever the node creates is its own (decision 0060)

    overrides: dict = {"data": data}
    api: dict = {}
    peer: dict = {}
    if api_listen:
        api["listen"] = api_listen
    if insecure_loopback:
        api["insecure_loopback"] = True
    if peer_listen:
        peer["listen"] = peer_listen
    if peers:
        peer["peers"] = list(peers)
    if api:
        overrides["api"] = api
    if peer:
        overrides["peer"] = peer
    if metrics_listen:
        overrides["metrics"] = {"listen": metrics_listen}
    if web_listen:
        overrides["web"] = {"listen": web_listen}
    try:
        run_node(load_config(config_file, overrides), start_empty=start_empty)
    except _node_errors() as e:
        raise CliError(str(e)) from None


@node.command("repair")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False),
              help="the stopped node's data directory")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="the node's TOML configuration (for agreement on/off)")
@click.option("--drop-votes", is_flag=True,
              help="also drop agreement messages signed after the refused op (no peer saw them)")
def node_repair(data: str, config_file: str | None, drop_votes: bool) -> None:
    """Take an op of this node's own that its peers refuse (e.g. one over mutations_max,
    signed before authors checked the limits) out of its log, and write its row changes
    again within the limits: nothing acknowledged is lost. Stop the node first; a copy
    of store.db is kept beside it."""
    from controller.node.config import load_config
    from controller.node.repair import repair_node
    from controller.store import StoreError

    try:
        backup, result = repair_node(load_config(config_file, {"data": data}),
                                     drop_votes=drop_votes)
    except (*_node_errors(), StoreError, ValueError) as e:
        raise CliError(str(e)) from None
    if not result.repaired:
        click.echo("the log verifies: nothing to repair")
        return
    click.echo(f"refused: {result.refused}")
    click.echo(f"dropped {len(result.dropped)} own op(s) from seq {result.dropped[0].seq}; "
               f"wrote {result.rewritten_rows} row change(s) again in {result.new_ops} op(s)")
    for line in result.lost:
        click.echo(f"not written again: {line}", err=True)
    click.echo(f"backup of the store before the repair: {backup}")


@cli.group()
def config() -> None:
    """Check node configuration files."""


@config.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def config_check(file: str) -> None:
    """Validate a node configuration file; unknown keys are named with their path."""
    from controller.node.config import ConfigError, load_config

    try:
        load_config(file)
    except ConfigError as e:
        raise CliError(str(e)) from None
    click.echo(f"{file}: ok")


from controller.node.commands import register as _register_client_commands  # noqa: E402

_register_client_commands(cli, CliError)

from edge_agent.daemon import agent as _agent_group  # noqa: E402

cli.add_command(_agent_group)

from controller.up import down_command, up_command  # noqa: E402

cli.add_command(up_command)
cli.add_command(down_command)


def _raise_interrupt(_signum: int, _frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C, so every `finally` tears down what it started.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the `synod` console script."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        cli.main(args=list(sys.argv[1:] if argv is None else argv), prog_name=PROG,
                 standalone_mode=False)
    except click.UsageError as e:
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx else " (see --help)"
        click.echo(f"{PROG}: error: {e.format_message()}{hint}", err=True)
        _exit(2, argv)
    except click.ClickException as e:
        click.echo(f"{PROG}: error: {e.format_message()}", err=True)
        _exit(1, argv)
    except (KeyboardInterrupt, click.Abort):
        click.echo(f"{PROG}: interrupted", err=True)
        _exit(130, argv)
    _exit(0, argv)


def _exit(code: int, argv: Sequence[str] | None) -> NoReturn:
    """Leave with code. After a client command, as a process of its own (argv None), skip
    the interpreter's teardown: it only unloads gRPC and the modules, and took 20-30 ms of a
    `synod get` (docs/operations.md, per-call time). Output is flushed first."""
    if argv is None and client_done():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
