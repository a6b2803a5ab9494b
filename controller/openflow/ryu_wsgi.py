"""Ryu's `ryu.app.wsgi` for REST apps (ofctl_rest, rest_topology), served by a thread.

os-ken 4 dropped the module and its hub has no WSGI server. This is Synod's own
implementation of the same interface over Routes and WebOb (os-ken's dependencies):
`route`, `ControllerBase`, `Response`, `WSGIApplication` (a context an app asks for
with `_CONTEXTS = {'wsgi': WSGIApplication}`; its `mapper` and `registory` — Ryu's
spelling — are what apps fill in) and the `--wsapi-host`/`--wsapi-port` options.
The launcher serves the context with the standard library's threaded WSGI server.
WebSockets are not carried (docs/ryu-compat.md).
"""

from __future__ import annotations

import inspect
import logging
import socketserver
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import webob
import webob.exc
from os_ken import cfg
from routes import Mapper
from routes.util import URLGenerator

__all__ = ["DIGIT_PATTERN", "HEX_PATTERN", "ControllerBase", "Request", "Response",
           "WSGIApplication", "WsgiService", "route", "start_service"]

DEFAULT_WSGI_HOST = "0.0.0.0"
DEFAULT_WSGI_PORT = 8080
HEX_PATTERN = r"0x[0-9a-z]+"
DIGIT_PATTERN = r"[1-9][0-9]*"
# A stuck client must not pin a server thread forever.
REQUEST_TIMEOUT_S = 30.0

LOG = logging.getLogger("synod.wsgi")

cfg.CONF.register_cli_opts([
    cfg.StrOpt("wsapi-host", default=DEFAULT_WSGI_HOST,
               help=f"REST (WSGI) listen host of Ryu REST apps (default {DEFAULT_WSGI_HOST})"),
    cfg.IntOpt("wsapi-port", default=DEFAULT_WSGI_PORT, min=1, max=65535,
               help=f"REST (WSGI) listen port of Ryu REST apps (default {DEFAULT_WSGI_PORT})"),
])


def route(name, path, methods=None, requirements=None):
    """Mark a ControllerBase method as the handler of `path` (see WSGIApplication.register)."""
    def mark(method):
        method.routing_info = {"name": name, "path": path, "methods": methods,
                               "requirements": requirements}
        return method
    return mark


class Request(webob.Request):
    """A WebOb request (UTF-8); `urlvars` holds the matched route's variables."""


class Response(webob.Response):
    """A WebOb response that encodes a text body as UTF-8, as Ryu's did."""

    def __init__(self, *args, charset="UTF-8", **kwargs):
        super().__init__(*args, charset=charset, **kwargs)


class ControllerBase:
    """One request's handler object: built per request with the data its app registered."""

    special_vars = ["action", "controller"]

    def __init__(self, req, link, data, **config):
        self.req = req
        self.link = link
        self.data = data
        self.parent = None
        for name, value in config.items():
            setattr(self, name, value)

    def __call__(self, req):
        action = self.req.urlvars.get("action", "index")
        if hasattr(self, "__before__"):
            self.__before__()
        kwargs = {k: v for k, v in self.req.urlvars.items() if k not in self.special_vars}
        return getattr(self, action)(req, **kwargs)


class WSGIApplication:
    """The `wsgi` context: a Routes mapper apps connect to, and the WSGI entry point."""

    def __init__(self, **config):
        self.config = config
        self.mapper = Mapper()
        self.registory = {}  # Ryu's spelling: apps write wsgi.registory[name] = data

    def register(self, controller, data=None):
        """Connect every @route method of `controller`; `data` reaches its instances."""
        for action, method in inspect.getmembers(controller, inspect.isfunction):
            info = getattr(method, "routing_info", None)
            if info is None:
                continue
            conditions = {"method": info["methods"]} if info.get("methods") else {}
            self.mapper.connect(info["name"], info["path"], controller=controller,
                                requirements=info.get("requirements") or {},
                                action=action, conditions=conditions)
        if data:
            self.registory[controller.__name__] = data

    def __call__(self, environ, start_response):
        req = Request(environ)
        match = self.mapper.match(environ=environ)
        if not match:
            return webob.exc.HTTPNotFound()(environ, start_response)
        req.urlvars = match
        controller_cls = match["controller"]
        controller = controller_cls(req, URLGenerator(self.mapper, environ),
                                    self.registory.get(controller_cls.__name__), **self.config)
        controller.parent = self
        try:
            response = controller(req)
        except webob.exc.HTTPException as e:
            response = e
        return response(environ, start_response)


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # requests in flight never hold the process at exit


class _QuietHandler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT_S

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        LOG.debug("%s %s", self.address_string(), format % args)


class WsgiService:
    """The REST server of a WSGIApplication context, on a daemon thread."""

    def __init__(self, application: WSGIApplication, host: str, port: int) -> None:
        # Binds now, in the caller's thread, so a busy port is an error at start.
        self.server = make_server(host, port, application, server_class=_ThreadingServer,
                                  handler_class=_QuietHandler)
        self.host, self.port = host, self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, name="wsgi",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()
        LOG.info("REST (WSGI) listening on %s:%d", self.host, self.port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_service(contexts: dict) -> WsgiService | None:
    """Serve the WSGIApplication among the app contexts, if an app asked for one."""
    for context in contexts.values():
        if isinstance(context, WSGIApplication):
            service = WsgiService(context, cfg.CONF.wsapi_host, cfg.CONF.wsapi_port)
            service.start()
            return service
    return None
