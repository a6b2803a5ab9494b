"""synod-controller: load os-ken apps and serve OpenFlow, in place of ryu-manager.

os-ken 4 ships no manager command. This one accepts ryu-manager's usual flags
(see docs/decisions/0001-launcher-flags.md for the mapping), uses os-ken's
native thread hub (never eventlet), logs to stderr and exits cleanly on
SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib.util
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

import controller

__all__ = ["DEFAULT_APPS", "DEFAULT_OFP_PORT", "LaunchError", "build_parser", "main"]

DEFAULT_APPS = ("controller.openflow.fabric_app",)
DEFAULT_OFP_PORT = 6653
DEFAULT_OFP_HOST = "0.0.0.0"
PROG = "synod-controller"
# How long shutdown may take before the process exits regardless (os-ken's
# native hub has no way to stop the blocking accept() of its server thread).
SHUTDOWN_GRACE_S = 3.0

LOG = logging.getLogger("synod.controller")


class LaunchError(Exception):
    """The controller cannot start; the message is one line for the operator."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _port(text: str) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface; kept apart from main() so tests can inspect it."""
    p = _Parser(
        prog=PROG,
        description=(
            "Run os-ken OpenFlow apps (a ryu-manager replacement). With no app "
            f"given, runs {', '.join(DEFAULT_APPS)}."
        ),
        epilog="Flags follow ryu-manager's; see docs/decisions/0001-launcher-flags.md.",
    )
    p.add_argument("apps", nargs="*", metavar="app",
                   help="app module to load (dotted module name or path to a .py file)")
    p.add_argument("--ofp-tcp-listen-port", type=_port, default=None, metavar="PORT",
                   help=f"OpenFlow TCP listen port (default {DEFAULT_OFP_PORT})")
    p.add_argument("--ofp-ssl-listen-port", type=_port, default=None, metavar="PORT",
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
                   help="also write the log to FILE (it always goes to stderr)")
    p.add_argument("--version", action="version",
                   version=f"{PROG} {controller.__version__} (os-ken {_os_ken_version()})")
    return p


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.INFO
    if args.default_log_level is not None:
        level = args.default_log_level
    if args.verbose:
        level = logging.DEBUG
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(fmt)
    root.addHandler(handler)
    if args.log_file:
        try:
            file_handler = logging.FileHandler(args.log_file)
        except OSError as e:
            raise LaunchError(f"cannot open log file {args.log_file}: {e.strerror}") from None
        file_handler.setFormatter(fmt)
        root.addHandler(file_handler)
    root.setLevel(level)


def _configure_os_ken(args: argparse.Namespace) -> tuple[str, int]:
    """Load os-ken's CONF from config files, then apply the command-line flags over it."""
    # Importing the controller module registers its options (ofp_tcp_listen_port, ...).
    import oslo_config.cfg as oslo_cfg
    from os_ken import cfg
    from os_ken.base import app_manager  # noqa: F401  (must precede controller: import cycle)
    from os_ken.controller import controller as _ofp_controller  # noqa: F401

    from controller.openflow import options

    options.register()
    for path in args.config_file:
        if not os.path.isfile(path):
            raise LaunchError(f"config file not found: {path}")
    try:
        cfg.CONF(args=[], project="os_ken", version=controller.__version__,
                 default_config_files=list(args.config_file))
    except (oslo_cfg.Error, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LaunchError(f"bad config file: {first_line}") from None
    conf = cfg.CONF
    for flag in ("ofp_tcp_listen_port", "ofp_ssl_listen_port", "ofp_listen_host",
                 "ctl_privkey", "ctl_cert", "ca_certs"):
        value = getattr(args, flag)
        if value is not None:
            conf.set_override(flag, value)
    synod_flags = {"site": "synod_site", "controller_index": "synod_controller_index",
                   "node": "synod_node", "node_token_file": "synod_node_token_file",
                   "node_ca": "synod_node_ca", "node_insecure": "synod_node_insecure",
                   "audit_interval_ms": "synod_audit_interval_ms"}
    try:
        for flag, opt in synod_flags.items():
            value = getattr(args, flag)
            if value is not None:
                conf.set_override(opt, value)
        if args.controllers is not None:
            conf.set_override("synod_controllers",
                              [c for c in args.controllers.split(",") if c])
        options.load()
    except (ValueError, oslo_cfg.Error) as e:
        raise LaunchError(f"bad Synod controller option: {e}") from None
    # Always name a port: unset, os-ken would also listen on the legacy 6633.
    if conf.ofp_tcp_listen_port is None:
        conf.set_override("ofp_tcp_listen_port", DEFAULT_OFP_PORT)
    if conf.ofp_listen_host is None:
        conf.set_override("ofp_listen_host", DEFAULT_OFP_HOST)
    if conf.ofp_ssl_listen_port and not (conf.ctl_privkey and conf.ctl_cert):
        raise LaunchError("--ofp-ssl-listen-port needs --ctl-privkey and --ctl-cert")
    return conf.ofp_listen_host, conf.ofp_tcp_listen_port


def check_port_free(host: str, port: int) -> None:
    """Fail early, in one line, if the OpenFlow port cannot be bound.

    os-ken binds in a background thread and only logs a traceback when that fails.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            hint = " (is another controller running? pick --ofp-tcp-listen-port)" \
                if e.errno == 98 else ""
            raise LaunchError(f"cannot listen on {host}:{port}: {e.strerror}{hint}") from None


def _check_apps(apps: Sequence[str]) -> None:
    for app in apps:
        if app.endswith(".py"):
            if not os.path.isfile(app):
                raise LaunchError(f"cannot load app {app!r}: no such file")
            continue
        try:
            found = importlib.util.find_spec(app)
        except (ImportError, ValueError) as e:
            raise LaunchError(f"cannot load app {app!r}: {e}") from None
        if found is None:
            raise LaunchError(f"cannot load app {app!r}: no module named {app!r}")


def _run(args: argparse.Namespace) -> int:
    if os.environ.get("OSKEN_HUB_TYPE", "native") != "native":
        raise LaunchError("OSKEN_HUB_TYPE must be unset or 'native' (Synod needs native threads)")
    _setup_logging(args)
    apps = list(args.apps) or list(DEFAULT_APPS)
    _check_apps(apps)
    host, port = _configure_os_ken(args)
    check_port_free(host, port)

    from os_ken.base.app_manager import AppManager

    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        LOG.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    # `kill -USR1 <pid>` prints every thread's stack to stderr: for diagnosing a stuck app.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    manager = AppManager.get_instance()
    try:
        manager.load_apps(apps + ["os_ken.controller.ofp_handler"])
        contexts = manager.create_contexts()
        manager.instantiate_apps(**contexts)
    except Exception as e:
        raise LaunchError(f"cannot start apps: {type(e).__name__}: {e}") from None
    LOG.info("%s %s listening for OpenFlow on %s:%d, apps: %s",
             PROG, controller.__version__, host, port, ", ".join(apps))
    while not stop.wait(0.5):
        pass
    closer = threading.Thread(target=manager.close, name="close-apps", daemon=True)
    closer.start()
    closer.join(SHUTDOWN_GRACE_S)
    LOG.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the synod-controller console script."""
    args = build_parser().parse_args(argv)
    try:
        code = _run(args)
    except LaunchError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 0
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # os-ken's server and datapath threads are not daemons and block in accept()/recv():
    # leave without waiting for them.
    os._exit(code)


if __name__ == "__main__":
    main()
