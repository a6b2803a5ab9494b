"""The launcher's command line: its own flags, plus every option os-ken and the apps register.

Apps register oslo.config options when they are imported (`--observe-links` by
os_ken.topology.switches, `--wsapi-port` by ryu.app.wsgi, anything an app defines), so
the command line is read twice: once to find the apps, and once, strictly, after they
are imported. Options the launcher does not define itself are handed to oslo.config as
written, so it parses them as ryu-manager did (types, `--noFLAG`, groups).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

import controller

__all__ = ["OSKEN_MANAGER", "RYU_MANAGER", "SYNOD", "Flavour", "build_parser", "port"]

DEFAULT_OFP_PORT = 6653
DEFAULT_OFP_HOST = "0.0.0.0"
# oslo.config's own options, or ones the launcher reads otherwise: never passed through.
_NOT_PASSED = {"config_file", "config_dir", "shell_completion"}


@dataclass(frozen=True)
class Flavour:
    """One command name over the same launcher."""

    prog: str
    default_apps: tuple[str, ...]
    description: str


SYNOD = Flavour(
    "synod-controller", ("controller.openflow.fabric_app",),
    "Run os-ken or Ryu OpenFlow apps (a ryu-manager replacement). With no app given, "
    "runs controller.openflow.fabric_app.")
RYU_MANAGER = Flavour(
    "ryu-manager", (),
    "Run Ryu apps unmodified on os-ken, through Synod's launcher (ryu.* imports map to "
    "os-ken; see docs/ryu-compat.md). With no app given, runs only os-ken's OpenFlow "
    "handler, as ryu-manager did.")
OSKEN_MANAGER = Flavour(
    "osken-manager", (),
    "Run os-ken apps through Synod's launcher (os-ken 4 ships no manager). With no app "
    "given, runs only os-ken's OpenFlow handler.")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def port(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 1-65535: {value}")
    return value


def _os_ken_version() -> str:
    try:
        from importlib.metadata import version

        return version("os-ken")
    except Exception:  # pragma: no cover - metadata missing only in broken installs
        return "unknown"


def version_text(flavour: Flavour) -> str:
    return (f"{flavour.prog} (Synod {controller.__version__}, os-ken {_os_ken_version()}, "
            "Ryu 4.34 app interface)")


def build_parser(flavour: Flavour = SYNOD, registered: bool = False) -> argparse.ArgumentParser:
    """The command line; with `registered`, also every oslo CLI option registered so far."""
    p = _Parser(
        prog=flavour.prog, description=flavour.description, add_help=False,
        allow_abbrev=False,
        epilog="Flags follow ryu-manager's; see docs/ryu-compat.md and "
               "docs/decisions/0001-launcher-flags.md.",
    )
    p.add_argument("-h", "--help", action="store_true",
                   help="show this help (with the options of the apps given) and exit")
    p.add_argument("apps", nargs="*", metavar="app",
                   help="app module to load (dotted module name or path to a .py file)")
    p.add_argument("--app-lists", action="append", default=[], metavar="APP,...",
                   help="more apps, comma-separated (ryu-manager's --app-lists)")
    p.add_argument("--ofp-tcp-listen-port", type=port, default=None, metavar="PORT",
                   help=f"OpenFlow TCP listen port (default {DEFAULT_OFP_PORT})")
    p.add_argument("--ofp-ssl-listen-port", type=port, default=None, metavar="PORT",
                   help="OpenFlow TLS listen port; needs --ctl-privkey and --ctl-cert")
    p.add_argument("--ofp-listen-host", default=None, metavar="HOST",
                   help=f"address to listen on (default {DEFAULT_OFP_HOST})")
    p.add_argument("--ctl-privkey", default=None, metavar="FILE",
                   help="controller private key for OpenFlow over TLS")
    p.add_argument("--ctl-cert", default=None, metavar="FILE",
                   help="controller certificate for OpenFlow over TLS")
    p.add_argument("--ca-certs", default=None, metavar="FILE",
                   help="CA certificates that switch certificates must chain to")
    p.add_argument("--config-file", action="append", default=[], metavar="FILE",
                   help="os-ken/oslo.config INI file ([DEFAULT] section); may repeat; "
                        "command-line flags win over the file")
    p.add_argument("--user-flags", default=None, metavar="FILE",
                   help="Python file imported before the apps, to register more options")
    p.add_argument("--pid-file", default=None, metavar="FILE",
                   help="write the process id to FILE (removed on a clean stop)")
    p.add_argument("--enable-debugger", action="store_true",
                   help="accepted for ryu-manager's sake; has no effect (os-ken's native "
                        "threads are never monkey-patched)")
    synod = p.add_argument_group("Synod controller (app controller.openflow.synod_app)")
    synod.add_argument("--site", default=None, help="the site this controller serves")
    synod.add_argument("--controller-index", type=int, default=None, metavar="N",
                       help="this controller's number 0-255, unique in the cluster")
    synod.add_argument("--controllers", default=None, metavar="SITE=HOST:PORT,...",
                       help="every controller of the cluster, in the same order everywhere "
                            "(ranks backups after a switch's home site)")
    synod.add_argument("--node", default=None, metavar="HOST:PORT",
                       help="the local Synod node's API (desired flows, topology reports)")
    synod.add_argument("--node-token-file", default=None, metavar="FILE",
                       help="file with the bearer token for the node's API")
    synod.add_argument("--node-ca", default=None, metavar="FILE",
                       help="CA certificate that the node's API certificate chains to")
    synod.add_argument("--node-insecure", action="store_true", default=None,
                       help="talk to the node without TLS (loopback tests only)")
    synod.add_argument("--audit-interval-ms", type=int, default=None, metavar="MS",
                       help="how often masters read back and repair flows (default 2000)")
    p.add_argument("--verbose", action="store_true", help="log debug output")
    p.add_argument("--default-log-level", type=int, default=None, metavar="LEVEL",
                   help="numeric log level (10 debug, 20 info, 30 warning)")
    p.add_argument("--log-file", default=None, metavar="FILE",
                   help="also write the log to FILE (it goes to stderr too unless "
                        "--nouse-stderr)")
    p.add_argument("--version", action="version", version=version_text(flavour))
    p.set_defaults(oslo_args=[])
    if registered:
        _add_registered_options(p)
    return p


class _PassThrough(argparse.Action):
    """Collects an oslo.config option as written, for oslo.config to parse."""

    def __init__(self, option_strings, dest, oslo_type=None, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.oslo_type = oslo_type

    def __call__(self, parser, namespace, values, option_string=None):
        tokens = list(getattr(namespace, "oslo_args", None) or [])
        if self.nargs == 0:
            tokens.append(option_string)
        else:
            if self.oslo_type is not None:
                try:
                    self.oslo_type(values)
                except (TypeError, ValueError) as e:
                    raise argparse.ArgumentError(self, f"invalid value {values!r}: {e}") \
                        from None
            tokens.append(f"{option_string}={values}")  # one token: values may start with -
        namespace.oslo_args = tokens


def _registered_cli_options():
    """(opt, group) for every CLI option registered in os-ken's CONF so far.

    oslo.config has no public listing; _all_cli_opts() is what its own parser walks
    (stable since oslo.config 1.x; tests/unit/test_launcher.py would notice a change).
    """
    from os_ken import cfg

    return list(cfg.CONF._all_cli_opts())


def _add_registered_options(p: argparse.ArgumentParser) -> None:
    from os_ken import cfg

    group = p.add_argument_group(
        "options registered by os-ken modules and the apps (parsed by oslo.config)")
    for opt, opt_group in _registered_cli_options():
        if opt.positional or opt.dest in _NOT_PASSED:
            continue
        prefix = f"{opt_group.name}-" if opt_group is not None else ""
        flags = [f"--{prefix}{opt.name}"] + ([f"-{opt.short}"] if opt.short else [])
        is_bool = isinstance(opt, cfg.BoolOpt)
        try:
            group.add_argument(*flags, action=_PassThrough, dest="oslo_args",
                               nargs=0 if is_bool else None, oslo_type=opt.type,
                               metavar=None if is_bool else (opt.metavar or opt.dest.upper()),
                               help=(opt.help or "").replace("%", "%%") or None)
            if is_bool:
                group.add_argument(f"--no{prefix}{opt.name}", action=_PassThrough,
                                   dest="oslo_args", nargs=0, help=argparse.SUPPRESS)
        except argparse.ArgumentError:
            continue  # the launcher defines this flag itself


def apps_of(args: argparse.Namespace, flavour: Flavour) -> list[str]:
    """The apps to load, in order: positional ones, then --app-lists; else the defaults."""
    listed = [a for chunk in args.app_lists for a in chunk.split(",") if a]
    return list(args.apps) + listed or list(flavour.default_apps)


def first_unknown_option(extras: Sequence[str]) -> str | None:
    """The first option-looking token argparse did not know (before the apps loaded)."""
    for token in extras:
        if token.startswith("-") and token != "-":
            return token.split("=", 1)[0]
    return None
