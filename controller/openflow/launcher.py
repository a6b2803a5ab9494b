"""synod-controller, ryu-manager, osken-manager: load os-ken or Ryu apps and serve OpenFlow.

os-ken 4 ships no manager command. This one behaves as ryu-manager did (flags in
docs/decisions/0001-launcher-flags.md, Ryu apps in docs/ryu-compat.md): it imports the
apps first and reads the options they register after, uses os-ken's native thread hub
(never eventlet), logs to stderr, serves a REST app's WSGI context, and exits cleanly on
SIGTERM/SIGINT. Every error before the apps run is one line.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib.util
import logging
import logging.config
import logging.handlers
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

import controller
from controller.openflow import cmdline, native_hub, ryu_compat
from controller.openflow.cmdline import (
    DEFAULT_OFP_HOST,
    DEFAULT_OFP_PORT,
    OSKEN_MANAGER,
    RYU_MANAGER,
    SYNOD,
    Flavour,
    build_parser,
)

__all__ = ["DEFAULT_APPS", "DEFAULT_OFP_PORT", "LaunchError", "build_parser", "main",
           "osken_manager", "ryu_manager"]

DEFAULT_APPS = SYNOD.default_apps
PROG = SYNOD.prog
# How long shutdown may take before the process exits regardless (os-ken's
# native hub has no way to stop the blocking accept() of its server thread).
SHUTDOWN_GRACE_S = 3.0
# Imported before the command line is read, as ryu-manager did, so that their options
# (--observe-links, --wsapi-port, ...) are known when looking for the apps.
OPTION_MODULES = ("os_ken.base.app_manager",  # before os_ken.controller: import cycle
                  "os_ken.controller.controller", "os_ken.log", "os_ken.topology.switches",
                  "controller.openflow.ryu_wsgi", "controller.openflow.metrics")
OFP_HANDLER = "os_ken.controller.ofp_handler"

LOG = logging.getLogger("synod.controller")


class LaunchError(Exception):
    """The controller cannot start; the message is one line for the operator."""


def _setup_logging(args: argparse.Namespace, prog: str) -> None:
    """Log as ryu-manager did (os_ken.log's options), with timestamps on every line."""
    from os_ken import cfg

    conf = cfg.CONF
    root = logging.getLogger()
    root.handlers.clear()
    if conf.log_config_file:
        try:
            logging.config.fileConfig(conf.log_config_file, disable_existing_loggers=False)
        except Exception as e:  # configparser, KeyError, ValueError: all one line
            raise LaunchError(f"bad --log-config-file {conf.log_config_file}: {e}") from None
        return
    level = logging.INFO
    if args.default_log_level is not None:
        level = args.default_log_level
    elif args.verbose:
        level = logging.DEBUG
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = []
    if conf.use_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    log_file = args.log_file or (os.path.join(conf.log_dir, f"{prog}.log")
                                 if conf.log_dir else None)
    try:
        if log_file:
            handlers.append(logging.handlers.WatchedFileHandler(log_file))
            os.chmod(log_file, int(conf.log_file_mode, 8))
        if conf.use_syslog:
            handlers.append(logging.handlers.SysLogHandler(address="/dev/log"))
    except (OSError, ValueError) as e:
        detail = getattr(e, "strerror", None) or e
        raise LaunchError(f"cannot set up logging ({log_file or '/dev/log'}): {detail}") \
            from None
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)
    root.setLevel(level)


def _configure_os_ken(args: argparse.Namespace, flavour: Flavour) -> tuple[str, int]:
    """Parse os-ken's CONF (config files, then the passed-through options) and apply ours."""
    import oslo_config.cfg as oslo_cfg
    from os_ken import cfg

    from controller.openflow import options

    options.register()
    for path in args.config_file:
        if not os.path.isfile(path):
            raise LaunchError(f"config file not found: {path}")
    try:
        cfg.CONF(args=list(args.oslo_args), project="os_ken", prog=flavour.prog,
                 version=cmdline.version_text(flavour),
                 default_config_files=list(args.config_file))
    except (oslo_cfg.Error, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LaunchError(f"bad config file or option: {first_line}") from None
    except SystemExit:  # oslo's parser already printed why; the flags were checked before
        raise LaunchError("oslo.config refused the options above") from None
    conf = cfg.CONF
    for flag in ("ofp_tcp_listen_port", "ofp_ssl_listen_port", "ofp_listen_host",
                 "ctl_privkey", "ctl_cert", "ca_certs", "log_file", "default_log_level"):
        value = getattr(args, flag)
        if value is not None:
            conf.set_override(flag, value)
    if args.verbose:
        conf.set_override("verbose", True)
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


def _check_apps(apps: Sequence[str], unknown_option: str | None) -> None:
    # An option registered by an app is unknown until the app is imported: its value may
    # have been taken for an app name.
    hint = (f" (if it is the value of {unknown_option}, write {unknown_option}=VALUE)"
            if unknown_option else "")
    for app in apps:
        if app.endswith(".py"):
            if not os.path.isfile(app):
                raise LaunchError(f"cannot load app {app!r}: no such file{hint}")
            continue
        try:
            found = importlib.util.find_spec(app)
        except (ImportError, ValueError) as e:
            why = ryu_compat.explain(e) or str(e)
            raise LaunchError(f"cannot load app {app!r}: {why}{hint}") from None
        if found is None:
            why = ryu_compat.explain(ModuleNotFoundError(name=app)) or f"no module named {app!r}"
            raise LaunchError(f"cannot load app {app!r}: {why}{hint}")


def _import_user_flags(path: str) -> None:
    """ryu-manager's --user-flags: a Python file that registers options, imported first."""
    if not os.path.isfile(path):
        raise LaunchError(f"--user-flags file not found: {path}")
    spec = importlib.util.spec_from_file_location("synod_user_flags", path)
    if spec is None or spec.loader is None:
        raise LaunchError(f"--user-flags {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise LaunchError(f"cannot import --user-flags {path}: {type(e).__name__}: {e}") \
            from None


def _why_app_failed(e: BaseException) -> str:
    why = ryu_compat.explain(e, uses_ryu="ryu" in sys.modules)
    if why is not None:
        return why
    if isinstance(e, SyntaxError):
        return f"SyntaxError: {e.msg} ({e.filename}:{e.lineno})"
    if isinstance(e, ModuleNotFoundError) and e.name:
        return f"it imports {e.name}, which is not installed"
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _load_apps(manager, apps: Sequence[str]) -> None:
    """Import the apps (and the apps they require) one by one, naming the one that fails."""
    for app in apps:
        try:
            manager.load_apps([app])
        except Exception as e:
            raise LaunchError(f"cannot load app {app}: {_why_app_failed(e)}") from None
    manager.load_apps([OFP_HANDLER])
    # One module reached under two names (ryu.X and os_ken.X) is one app, not two.
    by_class: dict[type, list[str]] = {}
    for name, cls in manager.applications_cls.items():
        by_class.setdefault(cls, []).append(name)
    for names in by_class.values():
        keep = next((n for n in names if n == ryu_compat.canonical_app(n)), names[0])
        for name in names:
            if name != keep:
                del manager.applications_cls[name]
    for cls in [*manager.applications_cls.values(), *manager.contexts_cls.values()]:
        ryu_compat.guard_handlers(cls)


def _parse(argv: Sequence[str], flavour: Flavour, manager) -> tuple[argparse.Namespace,
                                                                     list[str]]:
    """Read the command line, import the apps, read it again with their options known."""
    first, extras = build_parser(flavour, registered=True).parse_known_intermixed_args(
        argv)
    if first.user_flags:
        _import_user_flags(first.user_flags)
    apps = [ryu_compat.canonical_app(a) for a in cmdline.apps_of(first, flavour)]
    ryu_compat.set_app_dirs(sorted({os.path.dirname(os.path.abspath(a))
                                    for a in apps if a.endswith(".py")}))
    _check_apps(apps, cmdline.first_unknown_option(extras))
    _load_apps(manager, apps)
    parser = build_parser(flavour, registered=True)
    args = parser.parse_intermixed_args(argv)
    if args.help:
        parser.print_help()
        raise SystemExit(0)
    if [ryu_compat.canonical_app(a) for a in cmdline.apps_of(args, flavour)] != apps:
        raise LaunchError("an app's option took a value that was read as an app name: "
                          "write the app's options as --name=VALUE")
    return args, apps


def _run(argv: Sequence[str], flavour: Flavour) -> int:
    if os.environ.get("OSKEN_HUB_TYPE", "native") != "native":
        raise LaunchError("OSKEN_HUB_TYPE must be unset or 'native' (Synod needs native threads)")
    native_hub.install()  # before the apps: os-ken's native hub ignores its timeouts
    ryu_compat.install()
    for name in OPTION_MODULES:
        importlib.import_module(name)
    from os_ken.base.app_manager import AppManager

    from controller.openflow import ryu_wsgi

    manager = AppManager.get_instance()
    args, apps = _parse(argv, flavour, manager)
    host, port = _configure_os_ken(args, flavour)
    from controller.openflow.metrics import load_if_wanted  # --synod-metrics-listen (issue 15)

    load_if_wanted(manager)
    _setup_logging(args, flavour.prog)
    if args.enable_debugger:
        LOG.info("--enable-debugger has no effect: os-ken's native threads are not patched")
    check_port_free(host, port)

    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        LOG.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    # `kill -USR1 <pid>` prints every thread's stack to stderr: for diagnosing a stuck app.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    try:
        contexts = manager.create_contexts()
        manager.instantiate_apps(**contexts)
    except Exception as e:
        raise LaunchError(f"cannot start apps: {type(e).__name__}: {e}") from None
    try:
        rest = ryu_wsgi.start_service(contexts)
    except OSError as e:
        from os_ken import cfg

        raise LaunchError(f"cannot listen for REST on {cfg.CONF.wsapi_host}:"
                          f"{cfg.CONF.wsapi_port}: {e.strerror} (pick --wsapi-port)") from None
    if args.pid_file:
        _write_pid_file(args.pid_file)
    LOG.info("%s %s listening for OpenFlow on %s:%d, apps: %s", flavour.prog,
             controller.__version__, host, port, ", ".join(apps) or OFP_HANDLER)
    while not stop.wait(0.5):
        pass
    if rest is not None:
        rest.stop()
    closer = threading.Thread(target=manager.close, name="close-apps", daemon=True)
    closer.start()
    closer.join(SHUTDOWN_GRACE_S)
    if args.pid_file:
        try:
            os.unlink(args.pid_file)
        except OSError:
            pass
    LOG.info("stopped")
    return 0


def _write_pid_file(path: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(f"{os.getpid()}\n")
    except OSError as e:
        raise LaunchError(f"cannot write --pid-file {path}: {e.strerror}") from None


def main(argv: Sequence[str] | None = None, flavour: Flavour = SYNOD) -> NoReturn:
    """Entry point of the synod-controller console script."""
    try:
        code = _run(list(sys.argv[1:] if argv is None else argv), flavour)
    except LaunchError as e:
        print(f"{flavour.prog}: error: {e}", file=sys.stderr)
        code = 1
    except SystemExit as e:  # --help, --version, usage errors (argparse printed them)
        code = e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        code = 0
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # os-ken's server and datapath threads are not daemons and block in accept()/recv():
    # leave without waiting for them.
    os._exit(code)


def ryu_manager(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the ryu-manager console script: Ryu apps, unmodified."""
    main(argv, RYU_MANAGER)


def osken_manager(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the osken-manager console script."""
    main(argv, OSKEN_MANAGER)


if __name__ == "__main__":
    main()
