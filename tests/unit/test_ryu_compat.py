"""The Ryu import surface over os-ken (ryu_compat) and the carried ryu.app.wsgi (ryu_wsgi)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import urllib.request

import pytest
import webob

from controller.openflow import ryu_compat


@pytest.fixture
def hook(tmp_path):
    finder = ryu_compat.install([str(tmp_path)])
    try:
        yield finder
    finally:
        ryu_compat.uninstall()


def test_ryu_names_are_os_ken_modules_themselves(hook):
    import os_ken.base.app_manager
    import os_ken.cfg
    import os_ken.controller.ofp_event
    import os_ken.lib.packet.ethernet
    from ryu import cfg  # type: ignore[import-not-found]
    from ryu.base import app_manager  # type: ignore[import-not-found]
    from ryu.controller import ofp_event  # type: ignore[import-not-found]
    from ryu.lib.packet import ethernet  # type: ignore[import-not-found]

    assert app_manager is os_ken.base.app_manager
    assert ofp_event.EventOFPPacketIn is os_ken.controller.ofp_event.EventOFPPacketIn
    assert ethernet is os_ken.lib.packet.ethernet and cfg.CONF is os_ken.cfg.CONF
    # os-ken's own module keeps its own identity: nothing was re-imported under ryu.*.
    assert os_ken.base.app_manager.__spec__.name == "os_ken.base.app_manager"


@pytest.mark.parametrize("statement, ryu_name, os_ken_name", [
    ("from ryu.base.app_manager import RyuApp", "RyuApp", "os_ken.base.app_manager.OSKenApp"),
    ("from ryu.exception import RyuException", "RyuException",
     "os_ken.exception.OSKenException"),
    ("from ryu.lib.ofctl_string import ofp_ofctl_field_name_to_ryu",
     "ofp_ofctl_field_name_to_ryu", "os_ken.lib.ofctl_string.ofp_ofctl_field_name_to_os_ken"),
])
def test_renamed_names_are_there(hook, statement, ryu_name, os_ken_name):
    import importlib

    namespace: dict = {}
    exec(statement, namespace)
    module, _, attr = os_ken_name.rpartition(".")
    assert namespace[ryu_name] is getattr(importlib.import_module(module), attr)


def test_ryu_version_is_the_api_level_mapped(hook):
    import ryu  # type: ignore[import-not-found]

    assert ryu.version_info == ryu_compat.RYU_API_VERSION and ryu.version == "4.34"


def test_sample_apps_next_to_the_app_are_ryu_app_modules(hook, tmp_path):
    (tmp_path / "sibling_sample.py").write_text("ANSWER = 42\n")
    from ryu.app import sibling_sample  # type: ignore[import-not-found]

    assert sibling_sample.__name__ == "ryu.app.sibling_sample" and sibling_sample.ANSWER == 42


def test_carried_wsgi_is_synods(hook):
    from ryu.app import wsgi  # type: ignore[import-not-found]

    from controller.openflow import ryu_wsgi
    assert wsgi is ryu_wsgi


def test_canonical_app_names():
    assert ryu_compat.canonical_app("ryu.topology.switches") == "os_ken.topology.switches"
    assert ryu_compat.canonical_app("ryu.app.ofctl.service") == "os_ken.app.ofctl.service"
    assert ryu_compat.canonical_app("ryu.app.simple_switch_13") == "ryu.app.simple_switch_13"
    assert ryu_compat.canonical_app("/x/ryu.app.py") == "/x/ryu.app.py"
    assert ryu_compat.canonical_app("my.app") == "my.app"


def _raised(statement: str) -> BaseException:
    try:
        exec(statement, {})
    except Exception as e:  # noqa: BLE001 - the test inspects whatever was raised
        return e
    raise AssertionError(f"{statement!r} raised nothing")


@pytest.mark.parametrize("statement, expected", [
    ("import ryu.cmd.manager", "ryu.cmd has no os-ken counterpart (Ryu's commands"),
    ("from ryu.app.wsgi import websocket",
     "ryu.app.wsgi.websocket has no os-ken counterpart (Synod's ryu.app.wsgi serves HTTP "
     "only, no WebSockets)"),
    ("from ryu.lib.packet import no_such_protocol",
     "ryu.lib.packet.no_such_protocol has no os-ken counterpart"),
    ("import ryu.lib.hub as hub; hub.WSGIServer",
     "ryu.lib.hub.WSGIServer has no os-ken counterpart (os-ken's native hub has no WSGI"),
    ("from ryu.base import app_manager; app_manager.RyuAppNever",
     "ryu.base.app_manager.RyuAppNever has no os-ken counterpart"),
    ("import ryu.app.rest_nothing", "ryu.app.rest_nothing has no os-ken counterpart (os-ken "
                                    "ships no Ryu sample apps"),
])
def test_missing_names_are_explained_in_one_line(hook, statement, expected):
    why = ryu_compat.explain(_raised(statement))
    assert why is not None and why.startswith(expected) and "\n" not in why


@pytest.mark.parametrize("statement", [
    "import surely_not_installed_xyz",
    "{}['k']",
    "1 / 0",
])
def test_other_errors_are_not_claimed(hook, statement):
    assert ryu_compat.explain(_raised(statement)) is None


def test_api_style_require_app_is_credited_to_the_importing_app(tmp_path):
    """os_ken.topology.api asks for the switches app on behalf of the module importing it."""
    app = tmp_path / "uses_topology_api.py"
    app.write_text("from ryu.topology.api import get_link\n")
    code = textwrap.dedent(f"""
        import sys
        from controller.openflow import ryu_compat
        ryu_compat.install()
        sys.path.insert(0, {str(tmp_path)!r})
        import uses_topology_api
        print(getattr(uses_topology_api, "_REQUIRED_APP", None),
              getattr(ryu_compat, "_REQUIRED_APP", None))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.split() == ["['os_ken.topology.switches']", "None"], done.stdout


def test_guarded_handler_logs_one_line_and_carries_on(hook, caplog):
    from os_ken.base import app_manager
    from os_ken.controller import ofp_event
    from os_ken.controller.handler import MAIN_DISPATCHER, set_ev_cls

    class Handlers(app_manager.OSKenApp):
        calls = 0

        @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
        def packet_in(self, ev):
            Handlers.calls += 1
            from ryu.lib import hub  # type: ignore[import-not-found]
            hub.WSGIServer  # noqa: B018 - the missing name, met at run time

    Handlers.__module__ = "some_user_app"
    ryu_compat.guard_handlers(Handlers)
    ryu_compat.guard_handlers(Handlers)  # twice: wrapped once
    assert hasattr(Handlers.packet_in, "callers")  # os-ken still sees a handler
    app = Handlers()
    with caplog.at_level(logging.ERROR):
        app.packet_in(object())
        app.packet_in(object())
    assert Handlers.calls == 2
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["app Handlers: handler packet_in: ryu.lib.hub.WSGIServer has no os-ken "
                     "counterpart (os-ken's native hub has no WSGI server; use "
                     "ryu.app.wsgi)"] * 2


# --- ryu.app.wsgi, carried -----------------------------------------------------------

def _rest_app():
    from controller.openflow.ryu_wsgi import ControllerBase, Response, WSGIApplication, route

    class Things(ControllerBase):
        def __init__(self, req, link, data, **config):
            super().__init__(req, link, data, **config)
            self.store = data["store"]

        @route("things", "/things/{name}", methods=["GET"], requirements={"name": r"[a-z]+"})
        def get_thing(self, req, name, **_kwargs):
            if name not in self.store:
                return Response(status=404)
            return Response(content_type="application/json", body=json.dumps(self.store[name]))

        @route("things", "/things/{name}", methods=["PUT"])
        def put_thing(self, req, name, **_kwargs):
            self.store[name] = req.json
            return Response(status=200)

    wsgi = WSGIApplication()
    wsgi.register(Things, {"store": {"a": [1, 2]}})
    return wsgi


def test_wsgi_routes_to_registered_controllers():
    wsgi = _rest_app()
    got = webob.Request.blank("/things/a").get_response(wsgi)
    assert got.status_code == 200 and got.json == [1, 2]
    assert got.content_type == "application/json"
    put = webob.Request.blank("/things/b", method="PUT", body=b'{"x": 1}')
    assert put.get_response(wsgi).status_code == 200
    assert webob.Request.blank("/things/b").get_response(wsgi).json == {"x": 1}
    assert webob.Request.blank("/things/zz").get_response(wsgi).status_code == 404
    assert webob.Request.blank("/things/A1").get_response(wsgi).status_code == 404  # requirement
    assert webob.Request.blank("/other").get_response(wsgi).status_code == 404
    assert webob.Request.blank("/things/a", method="DELETE").get_response(wsgi).status_code \
        == 404


def test_wsgi_mapper_connect_as_ofctl_rest_does():
    """ofctl_rest fills wsgi.mapper and wsgi.registory by hand, not with @route."""
    from controller.openflow.ryu_wsgi import ControllerBase, Response, WSGIApplication

    class Stats(ControllerBase):
        def get_dpids(self, req, **_kwargs):
            return Response(content_type="application/json", body=json.dumps(self.data["dps"]))

    wsgi = WSGIApplication()
    wsgi.registory["Stats"] = {"dps": [1, 2]}
    wsgi.mapper.connect("stats", "/stats/switches", controller=Stats, action="get_dpids",
                        conditions={"method": ["GET"]})
    assert webob.Request.blank("/stats/switches").get_response(wsgi).json == [1, 2]


def test_wsgi_service_serves_http_on_a_thread():
    from controller.openflow.ryu_wsgi import WsgiService

    service = WsgiService(_rest_app(), "127.0.0.1", 0)
    service.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{service.port}/things/a",
                                    timeout=10) as reply:
            assert json.loads(reply.read()) == [1, 2]
    finally:
        service.stop()
