"""`synod init --site`: a site file for `synod up` with sensible defaults, written once."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

__all__ = ["SiteError", "init_site", "render_site_config", "site_options"]


class SiteError(Exception):
    """A site file that cannot be written; the message names it and the fix."""


def site_options(f: Callable) -> Callable:
    """The options `synod init` takes for `--site` (the site file's settings)."""
    options = [
        click.option("--site", default=None, metavar="NAME",
                     help="also write a site file for `synod up` (one --data directory)"),
        click.option("--config", "site_config", type=click.Path(dir_okay=False), default=None,
                     help="where the site file goes  [default: DATA/site.toml]"),
        click.option("--api", "site_api", default="127.0.0.1:7000", show_default=True,
                     metavar="HOST:PORT", help="(--site) the node's API listen address"),
        click.option("--peer-listen", "site_peer_listen", default="0.0.0.0:7100",
                     show_default=True, metavar="HOST:PORT",
                     help="(--site) the node's peer listen address"),
        click.option("--advertise", "site_advertise", default="", metavar="HOST:PORT",
                     help="(--site) the peer address other members dial"),
        click.option("--peer", "site_peers", multiple=True, metavar="HOST:PORT",
                     help="(--site) another member's peer address (repeat)"),
        click.option("--of-listen", "site_of_listen", default="0.0.0.0:6653",
                     show_default=True, metavar="HOST:PORT",
                     help="(--site) the site controller's OpenFlow listen address"),
        click.option("--controllers", "site_controllers", default="",
                     metavar="SITE=HOST:PORT,...",
                     help="(--site) every site's controller, same order everywhere"),
        click.option("--controller-index", "site_controller_index", type=int, default=1,
                     show_default=True, help="(--site) this controller's number, 1-255"),
        click.option("--controller-token", "site_controller_token", default=None,
                     metavar="FILE", help="(--site) the controller's node API token file "
                     "[default: admin.token with --new-cluster, else controller.token]"),
        click.option("--no-controller", "site_no_controller", is_flag=True,
                     help="(--site) run no controller at this site"),
        click.option("--agent", "site_agent", is_flag=True,
                     help="(--site) also run the edge agent"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string for what we write


def render_site_config(site: str, data: str, *, api: str, peer_listen: str, advertise: str,
                       peers: tuple[str, ...], of_listen: str, controllers: tuple[str, ...],
                       controller_index: int, controller_token: str, controller: bool,
                       agent: bool) -> str:
    """The site file's text; checked by the node's own config schema before it is returned."""
    text = f"""\
# Site {site}: `synod up --config THIS_FILE` starts its daemons (docs/deploy.md).
# Written by `synod init --site`; every key is in docs/node.md and docs/deploy.md.
# Check after editing: synod config check THIS_FILE
site = {_toml(site)}
data = {_toml(data)}  # relative paths are read from this file's directory

[api]
listen = {_toml(api)}

[peer]
listen = {_toml(peer_listen)}
advertise = {_toml(advertise)}
peers = {_toml(list(peers))}

[controller]
enabled = {_toml(controller)}
listen = {_toml(of_listen)}  # OpenFlow: point the site's switches here
index = {_toml(controller_index)}
controllers = {_toml(list(controllers))}
token_file = {_toml(controller_token)}

[agent]
enabled = {_toml(agent)}
token_file = {_toml(controller_token)}

[up]
log_dir = "logs"  # one log per daemon, in the data directory
restarts_max = 10  # crashes in a row before synod up gives up
"""
    if not advertise and peer_listen.rpartition(":")[0].strip("[]") in ("0.0.0.0", "::", ""):
        raise SiteError(f"site {site}: step init: --peer-listen {peer_listen} is every address: "
                        "give --advertise HOST:PORT, the address other members dial")
    from controller.node.config import ConfigError, parse_config

    try:
        parse_config(_loads(text))
    except ConfigError as exc:
        raise SiteError(f"site {site}: step init: {exc}") from None
    return text


def _loads(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)


def init_site(data: tuple[str, ...], new_cluster: str | None, make_dirs: Callable[[], Any],
              **o: Any) -> list[str]:
    """For `synod init --site`: create the data directory unless it holds a node already
    (re-running is harmless), then write the site file unless the same one is there."""
    if len(data) != 1:
        raise SiteError("--site takes one --data directory")
    d = Path(data[0])
    site = o["site"]
    lines = []
    if (d / "node.key").exists():
        lines.append(f"{d} holds a node already: kept")
    else:
        summary = make_dirs()
        for path, node_id in summary["nodes"].items():
            lines.append(f"node {node_id}  {path}")
        if new_cluster:
            lines.append(f"cluster {new_cluster} {summary['cluster_id']}")
            lines.append(f"admin token in {summary['admin_token_file']}")
    token = o["site_controller_token"] or ("admin.token" if new_cluster else "controller.token")
    path = Path(o["site_config"]) if o["site_config"] else d / "site.toml"
    data_ref = d.resolve() if o["site_config"] else Path(".")
    controllers = tuple(c for c in o["site_controllers"].split(",") if c)
    text = render_site_config(
        site, str(data_ref), api=o["site_api"], peer_listen=o["site_peer_listen"],
        advertise=o["site_advertise"], peers=o["site_peers"], of_listen=o["site_of_listen"],
        controllers=controllers, controller_index=o["site_controller_index"],
        controller_token=token, controller=not o["site_no_controller"],
        agent=o["site_agent"])
    if path.exists():
        if path.read_text() == text:
            lines.append(f"site file {path}: up to date")
            return lines
        raise SiteError(f"site {site}: step init: {path} exists with other settings: "
                        "edit it, or remove it and run this again")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    lines.append(f"site file {path}: start the site with `synod up --config {path}`")
    return lines
