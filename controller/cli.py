"""The `synod` operator command line: a thin layer over the library's entry points.

Exit codes: 0 success, 1 an error (one line on stderr) or a failed scenario, 2 usage.
"""

from __future__ import annotations

import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import NoReturn

import click

import controller

__all__ = ["cli", "main"]

PROG = "synod"


class CliError(click.ClickException):
    """An operating error reported to the user in one line (exit 1)."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(controller.__version__, prog_name=PROG)
def cli() -> None:
    """Synod: a partition-tolerant, decentralised SDN control plane for cloud-edge sites."""


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
@click.option("--of-port", type=click.IntRange(0, 65535), default=0,
              help="OpenFlow port for the controller  [default: a free port]")
@click.option("--log-dir", type=click.Path(file_okay=False), default=None,
              help="where the controller log goes  [default: a new temporary directory]")
@click.option("--cleanup", is_flag=True,
              help="only remove bridges and processes a crashed emulation left behind")
@click.option("-v", "--verbose", is_flag=True, help="show Mininet's own log")
def emulate(topo: str, sites: int, hosts_per_site: int, switches_per_site: int,
            wan_delay_ms: float, wan_rate_mbit: float, wan_loss_pct: float, cut_site: str,
            of_port: int, log_dir: str | None, cleanup: bool, verbose: bool) -> None:
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
                               cut_site=cut_site, of_port=of_port, verbose=verbose)
        log_dir = log_dir or tempfile.mkdtemp(prefix="synod-emulate-")
        report = run_scenario(opts, progress, log_dir)
    except (EmulationError, TopologyError) as e:
        raise CliError(str(e)) from None
    click.echo(report.render())
    progress("done: nothing left running")
    if not report.passed:
        sys.exit(1)


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
        sys.exit(2)
    except click.ClickException as e:
        click.echo(f"{PROG}: error: {e.format_message()}", err=True)
        sys.exit(1)
    except (KeyboardInterrupt, click.Abort):
        click.echo(f"{PROG}: interrupted", err=True)
        sys.exit(130)
    sys.exit(0)
