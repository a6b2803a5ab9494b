"""os-ken app: the controller's Prometheus metrics over HTTP, off unless a listen address is set.

`synod-controller --synod-metrics-listen=HOST:PORT` (or `synod_metrics_listen = HOST:PORT`
in its config file) loads it beside the other apps (load_if_wanted), as Faucet serves its
controllers' metrics on a port; it can also be named as an app. Families: OpenFlow
switches connected (with their DPIDs), connections and disconnections, packet-ins, error
messages by type, port-status messages by reason, plus process_*, python_* and
synod_build_info (docs/operations.md). The handlers only count; `SwitchCounts` holds the
numbers and turns them into families, with no os-ken in it.
"""

from __future__ import annotations

import logging
import platform
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterator

from os_ken.base import app_manager  # before os_ken.controller (an import cycle)
from os_ken.controller import ofp_event
from os_ken.controller.handler import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    HANDSHAKE_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)

import controller

__all__ = ["DPIDS_MAX", "ControllerMetrics", "SwitchCounts", "listen_address",
           "load_if_wanted", "register"]

LOG = logging.getLogger("synod.controller.metrics")

DPIDS_MAX = 4_096  # switches listed in synod_controller_switch_up; the oldest gone drop first
OPTION = "synod-metrics-listen"


class SwitchCounts:
    """The controller's numbers; events come from several os-ken threads, hence the lock."""

    def __init__(self, dpids_max: int = DPIDS_MAX) -> None:
        assert dpids_max > 0
        self.dpids_max = dpids_max
        self._lock = threading.Lock()
        self.up: OrderedDict[int, bool] = OrderedDict()  # dpid -> connected now
        self.connections = 0
        self.disconnections = 0
        self.packet_ins = 0
        self.errors: Counter[str] = Counter()
        self.port_status: Counter[str] = Counter()

    def switch_up(self, dpid: int) -> None:
        with self._lock:
            self.connections += 1
            self.up[dpid] = True
            self.up.move_to_end(dpid)
            self._bound()

    def switch_down(self, dpid: int) -> None:
        with self._lock:
            if self.up.get(dpid):
                self.disconnections += 1
                self.up[dpid] = False
                self.up.move_to_end(dpid)
                self._bound()

    def _bound(self) -> None:
        while len(self.up) > self.dpids_max:
            gone = next((d for d, on in self.up.items() if not on), None)
            del self.up[gone if gone is not None else next(iter(self.up))]

    def packet_in(self) -> None:
        with self._lock:
            self.packet_ins += 1

    def error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    def port_changed(self, reason: str) -> None:
        with self._lock:
            self.port_status[reason] += 1

    def collect(self) -> Iterator:
        """prometheus_client families (a Collector's collect())."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with self._lock:
            up, errors, ports = list(self.up.items()), dict(self.errors), dict(self.port_status)
            totals = (self.connections, self.disconnections, self.packet_ins)
        build = GaugeMetricFamily("synod_build_info", "Synod's version and Python's, always 1",
                                  labels=["version", "python"])
        build.add_metric([controller.__version__, platform.python_version()], 1)
        yield build
        yield GaugeMetricFamily("synod_controller_switches",
                                "OpenFlow switches connected to this controller now",
                                value=sum(on for _, on in up))
        each = GaugeMetricFamily("synod_controller_switch_up", "1 while the switch is "
                                 "connected, 0 once it went (the latest switches seen)",
                                 labels=["dpid"])
        for dpid, on in sorted(up):
            each.add_metric([f"{dpid:016x}"], int(on))
        yield each
        for name, help_text, value in (
            ("synod_controller_switch_connections", "OpenFlow switches that connected "
             "(reached the main state)", totals[0]),
            ("synod_controller_switch_disconnections", "connected OpenFlow switches that "
             "went away", totals[1]),
            ("synod_controller_packet_ins", "OpenFlow packet-in messages received", totals[2]),
        ):
            yield CounterMetricFamily(name, help_text, value=value)
        err = CounterMetricFamily("synod_controller_errors", "OpenFlow error messages "
                                  "received from switches, by error type", labels=["type"])
        for kind, n in sorted(errors.items()):
            err.add_metric([kind], n)
        yield err
        port = CounterMetricFamily("synod_controller_port_status", "OpenFlow port-status "
                                   "messages received, by reason", labels=["reason"])
        for reason, n in sorted(ports.items()):
            port.add_metric([reason], n)
        yield port

    def registry(self):
        """A registry of these families plus the process's (process_*, python_*)."""
        from controller.prometheus import process_registry

        return process_registry(self)


def register() -> None:
    """Register the listen option in os-ken's CONF: a command-line option where the
    launcher reads app options after importing the apps, else a config-file one."""
    from os_ken import cfg

    opt = cfg.StrOpt(OPTION, default="", metavar="HOST:PORT",
                     help="serve the controller's Prometheus metrics at "
                          "http://HOST:PORT/metrics (app controller.openflow.metrics)")
    try:
        cfg.CONF.register_cli_opt(opt)
    except cfg.ArgsAlreadyParsedError:  # the launcher read its command line already
        try:
            cfg.CONF.register_opt(opt)
        except cfg.DuplicateOptError:  # pragma: no cover - registered twice in one process
            pass
    except cfg.DuplicateOptError:
        pass


def load_if_wanted(manager) -> None:
    """For the launcher, once the options are read: load this app when a listen address
    is set, so `--synod-metrics-listen=HOST:PORT` is all it takes (off unless set)."""
    from os_ken import cfg

    if getattr(cfg.CONF, OPTION.replace("-", "_")):
        manager.load_apps([__name__])


def listen_address(text: str) -> tuple[str, int]:
    """HOST:PORT as (host, port); ValueError naming the option when it is not."""
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{OPTION}: {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


register()


class ControllerMetrics(app_manager.OSKenApp):
    """Counts OpenFlow events and serves them; does nothing when no address is set."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from os_ken import cfg

        self.counts = SwitchCounts()
        self._server = None
        text = getattr(cfg.CONF, OPTION.replace("-", "_"))
        if text:
            self._server = self._serve(*listen_address(text))

    def _serve(self, host: str, port: int):
        from prometheus_client import start_http_server

        try:
            server, _thread = start_http_server(port, host, self.counts.registry())
        except OSError as exc:  # the launcher reports it in one line: name the option
            raise OSError(exc.errno, f"{OPTION} {host}:{port}: {exc.strerror}") from None
        LOG.info("metrics on http://%s:%d/metrics", host, server.server_port)
        return server

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        super().stop()

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _on_state(self, ev):
        dpid = ev.datapath.id
        if dpid is None:
            return
        if ev.state == MAIN_DISPATCHER:
            self.counts.switch_up(dpid)
        else:
            self.counts.switch_down(dpid)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _on_packet_in(self, ev):
        self.counts.packet_in()

    @set_ev_cls(ofp_event.EventOFPErrorMsg,
                [HANDSHAKE_DISPATCHER, CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _on_error(self, ev):
        self.counts.error(_name(ev.msg.datapath.ofproto, "OFPET_", ev.msg.type))

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _on_port_status(self, ev):
        self.counts.port_changed(_name(ev.msg.datapath.ofproto, "OFPPR_", ev.msg.reason))


def _name(ofproto, prefix: str, number: int) -> str:
    """An OpenFlow constant's name without its prefix, lower case (flow_mod_failed)."""
    for attr in dir(ofproto):
        if attr.startswith(prefix) and getattr(ofproto, attr) == number:
            return attr[len(prefix):].lower()
    return str(number)
