"""`synod agent run`: the edge agent daemon. It learns its node id, starts the node link
(edge_agent/link.py) and the metrics, then runs the driver's rounds (edge_agent/driver.py)
until SIGTERM.

Conventions of the node's daemons: one JSON line {"event": "ready", ...} on stdout once it
serves, JSON (or text) log lines on stderr, one-line errors, a clean stop on SIGTERM (the
VMs keep running: they are the services, and a restarted agent adopts them), Prometheus
metrics on --metrics HOST:PORT. See docs/edge-agent.md.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from edge_agent.driver import AgentOptions

__all__ = ["AgentError", "agent", "run_agent"]

LOG = logging.getLogger("synod.agent")
OWNER_FILE = "owner"  # the node id this state folder belongs to


class AgentError(Exception):
    """The agent cannot start; one line naming the flag, file or program."""


def _owner(o: AgentOptions, link) -> str:
    """The node id this state folder belongs to: from the node, kept in the folder so a
    restart adopts its VMs even while the node is away."""
    path = o.state_dir / OWNER_FILE
    kept = path.read_text().strip() if path.is_file() else ""
    from synod.v1 import northbound_pb2 as nb

    from controller.node.client import ClientError

    deadline = time.monotonic() + (2 if kept else 30)
    last = ""
    while time.monotonic() < deadline:
        try:
            with link.client() as c:
                node_id = c.call(c.cluster.GetStatus, nb.GetStatusRequest()).node_id
            break
        except (ClientError, OSError) as e:
            last = str(e)
            time.sleep(0.5)
    else:
        if kept:
            return kept
        raise AgentError(f"node {o.node}: {last or 'no answer'} (the agent learns its node id "
                         "from its node once)")
    if kept and kept != node_id:
        raise AgentError(f"{path}: this state folder belongs to node {kept[:16]}, but "
                         f"{o.node} is node {node_id[:16]}: give another --state-dir")
    path.write_text(node_id + "\n")
    return node_id


def _setup_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        class _Json(logging.Formatter):
            def format(self, r: logging.LogRecord) -> str:
                return json.dumps({"ts": round(r.created, 3), "level": r.levelname.lower(),
                                   "logger": r.name, "msg": r.getMessage()})
        handler.setFormatter(_Json())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("synod")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def run_agent(o: AgentOptions) -> None:
    """Run until SIGTERM/SIGINT (KeyboardInterrupt); VMs keep running after it returns."""
    from edge_agent.driver import Agent, Collector
    from edge_agent.link import NodeLink

    if not o.token_file or not Path(o.token_file).is_file():
        raise AgentError(f"--node-token-file {o.token_file or '(none)'}: no such file (an "
                         "operator token for the node API)")
    if shutil.which("qemu-system-x86_64") is None:
        raise AgentError("qemu-system-x86_64 is not installed (apt-get install -y "
                         "qemu-system-x86)")
    try:
        o.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AgentError(f"--state-dir {o.state_dir}: {e.strerror}") from None
    link = NodeLink(o.node, o.token_file, o.ca_file, o.insecure)
    owner = _owner(o, link)
    agent = Agent(o, link, owner)
    metrics_port = 0
    if o.metrics:
        from prometheus_client import start_http_server

        from controller.prometheus import process_registry

        host, _, port = o.metrics.rpartition(":")
        try:
            server, _thread = start_http_server(int(port), host or "127.0.0.1",
                                                process_registry(Collector(agent)))
        except (OSError, ValueError) as e:
            raise AgentError(f"--metrics {o.metrics}: {e}") from None
        metrics_port = server.server_port
    link.start()
    found = agent.runtime.scan()
    print(json.dumps({"event": "ready", "site": o.site, "node_id": owner,
                      "state_dir": str(o.state_dir), "vms_adopted": sorted(found),
                      "metrics_port": metrics_port, "pid": os.getpid(),
                      "host": socket.gethostname()}), flush=True)
    LOG.info("agent for node %s (site %s) running; %d VM(s) adopted", owner[:16], o.site,
             len(found))
    try:
        while True:
            link.changed.wait(o.interval_ms / 1000)
            link.changed.clear()
            try:
                agent.round(int(time.time() * 1000))
            except Exception:  # noqa: BLE001 - one bad round must not stop the others
                LOG.exception("round failed; next one in %d ms", o.interval_ms)
    finally:
        agent.stopping.set()
        link.stop()
        LOG.info("agent stopped; its VMs keep running")


@click.group()
def agent() -> None:
    """The edge agent: runs the services placed on this node as VMs on the site's switch."""


@agent.command("run")
@click.option("--site", required=True, help="this site's name (declared with the capacity)")
@click.option("--node", "node", default="127.0.0.1:7000", show_default=True,
              metavar="HOST:PORT", help="the local node's API")
@click.option("--node-token-file", required=True, type=click.Path(dir_okay=False),
              help="file holding an operator token for the node API")
@click.option("--node-ca", default="", help="CA certificate of the node's API")
@click.option("--node-insecure", is_flag=True, help="plaintext to a --insecure-loopback node")
@click.option("--state-dir", type=click.Path(file_okay=False), default=None,
              help="pidfiles, QMP sockets, console logs  [default: /run/synod-agent/SITE]")
@click.option("--image-cache", type=click.Path(file_okay=False), default=None,
              help="where the microvm image is built  [default: the checkout's .cache/microvm "
                   "if writable, else STATE_DIR/images]")
@click.option("--vcpus", type=click.IntRange(0, 4096), default=0,
              help="vCPUs offered to services  [default: the host's]")
@click.option("--memory-mb", type=click.IntRange(0), default=0,
              help="memory offered to services  [default: the host's less 512 MB]")
@click.option("--bridge", "bridges", multiple=True, metavar="NAME[=BRIDGE]",
              help="a switch name specs may use, and the local OVS bridge it means (repeat)"
                   "  [default: every bridge by its own name]")
@click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto",
              show_default=True, help="auto: KVM only if a probe VM boots under it")
@click.option("--interval-ms", type=click.IntRange(50, 60_000), default=1_000,
              show_default=True, help="reconcile at least this often")
@click.option("--boot-timeout-ms", type=click.IntRange(1_000), default=30_000,
              show_default=True, help="launch to the guest's ready line")
@click.option("--metrics", default="", metavar="HOST:PORT", help="serve Prometheus metrics")
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json",
              show_default=True)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
def agent_run(site: str, node: str, node_token_file: str, node_ca: str, node_insecure: bool,
              state_dir: str | None, image_cache: str | None, vcpus: int, memory_mb: int,
              bridges: tuple[str, ...], accel: str, interval_ms: int, boot_timeout_ms: int,
              metrics: str, log_format: str, log_level: str) -> None:
    """Run the edge agent until SIGTERM (its VMs keep running; a restart adopts them)."""
    # Imported here: `synod` loads this module for its command list on every call.
    from edge_agent.driver import AgentOptions
    from edge_agent.microvm import DEFAULT_CACHE
    from edge_agent.reconcile import Limits

    _setup_logging(log_format, log_level)
    state = Path(state_dir or f"/run/synod-agent/{site}")
    if image_cache is None:  # e.g. under systemd's ProtectSystem=strict the checkout is not
        existing = next(p for p in (DEFAULT_CACHE, *DEFAULT_CACHE.parents) if p.exists())
        image_cache = str(DEFAULT_CACHE if os.access(existing, os.W_OK) else state / "images")
    o = AgentOptions(site=site, node=node, token_file=node_token_file, ca_file=node_ca,
                     insecure=node_insecure, state_dir=state,
                     image_cache=Path(image_cache), vcpus=vcpus, memory_mb=memory_mb,
                     bridges=bridges, accel=accel, interval_ms=interval_ms, metrics=metrics,
                     limits=Limits(boot_ms_max=boot_timeout_ms))
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        run_agent(o)
    except AgentError as e:
        raise click.ClickException(str(e)) from None


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt
