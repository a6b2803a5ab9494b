"""Synod's controller options, registered in os-ken's CONF so config files can set them too."""

from __future__ import annotations

from dataclasses import dataclass

from os_ken import cfg

__all__ = ["ControllerOptions", "load", "register"]

_OPTS = [
    cfg.StrOpt("synod-site", default="", help="the site this controller serves, e.g. edge1"),
    cfg.IntOpt("synod-controller-index", default=1, min=0, max=255,
               help="this controller's number, unique in the cluster (low 8 bits of the "
                    "generation ids it claims with)"),
    cfg.ListOpt("synod-controllers", default=[],
                help="every controller as SITE=HOST:PORT, in the same order everywhere: "
                     "after a switch's home site, this order ranks the backups"),
    cfg.StrOpt("synod-node", default="", help="the local node's API, HOST:PORT"),
    cfg.StrOpt("synod-node-token-file", default="", help="file holding the node API token"),
    cfg.StrOpt("synod-node-ca", default="", help="CA certificate of the node's API"),
    cfg.BoolOpt("synod-node-insecure", default=False,
                help="talk to the node without TLS (loopback tests only)"),
    cfg.IntOpt("synod-audit-interval-ms", default=2000, min=100,
               help="how often the master reads flow stats and repairs differences"),
]


def register() -> None:
    try:
        cfg.CONF.register_opts(_OPTS)
    except cfg.DuplicateOptError:  # pragma: no cover - registered twice in one process
        pass


@dataclass(frozen=True)
class ControllerOptions:
    site: str
    index: int
    controllers: tuple[tuple[str, str, int], ...]  # (site, host, port)
    node: str
    node_token_file: str
    node_ca: str
    node_insecure: bool
    audit_interval_ms: int


def parse_controllers(items: list[str]) -> tuple[tuple[str, str, int], ...]:
    out = []
    for item in items:
        site, sep, address = item.partition("=")
        host, colon, port = address.rpartition(":")
        if not sep or not colon or not site or not host or not port.isdigit():
            raise ValueError(f"controller {item!r} is not SITE=HOST:PORT")
        out.append((site, host, int(port)))
    sites = [s for s, _, _ in out]
    if len(set(sites)) != len(sites):
        raise ValueError("each site may appear once in --synod-controllers")
    return tuple(out)


def load() -> ControllerOptions:
    register()
    conf = cfg.CONF
    return ControllerOptions(
        site=conf.synod_site,
        index=conf.synod_controller_index,
        controllers=parse_controllers(list(conf.synod_controllers)),
        node=conf.synod_node,
        node_token_file=conf.synod_node_token_file,
        node_ca=conf.synod_node_ca,
        node_insecure=conf.synod_node_insecure,
        audit_interval_ms=conf.synod_audit_interval_ms,
    )
