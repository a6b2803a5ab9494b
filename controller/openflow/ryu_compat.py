"""Ryu 4.34's import names for unmodified Ryu apps, served by os-ken's own modules.

An import hook, not a copy: `ryu.X` is the very module object `os_ken.X` (one module,
one set of event classes and one CONF), plus the few names os-ken renamed (`RyuApp` is
`OSKenApp`). What os-ken dropped and Synod carries (`ryu.app.wsgi`) maps to Synod's
module; `ryu.app.NAME` that os-ken lacks (Ryu's sample apps) is looked up as NAME.py
next to the app files named on the command line. Anything else has no counterpart, and
`explain()` turns the resulting exception into one line naming the missing Ryu name.
See docs/ryu-compat.md.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import os
import re
import sys
import types
from collections.abc import Iterable

__all__ = ["RYU_API_VERSION", "canonical_app", "explain", "guard_handlers", "install",
           "set_app_dirs", "uninstall"]

# The Ryu release whose import surface this maps (its last one, 2019).
RYU_API_VERSION = (4, 34)

# Names os-ken renamed when it forked Ryu: module (without the package) -> Ryu name -> os-ken name.
RENAMED: dict[str, dict[str, str]] = {
    "base.app_manager": {"RyuApp": "OSKenApp"},
    "exception": {"RyuException": "OSKenException"},
    "services.protocols.bgp.application": {"RyuBGPSpeaker": "OSKenBGPSpeaker"},
    "lib.ofctl_string": {"ofp_ofctl_field_name_to_ryu": "ofp_ofctl_field_name_to_os_ken",
                         "nxm_field_name_to_ryu": "nxm_field_name_to_os_ken"},
}

# Ryu modules os-ken dropped that Synod carries with its own code.
CARRIED: dict[str, str] = {
    "app.wsgi": "controller.openflow.ryu_wsgi",
}

# Why a Ryu name has no counterpart, when we know: the tail of the one-line error.
# The most specific name is listed first.
_NO_WEBSOCKETS = "Synod's ryu.app.wsgi serves HTTP only, no WebSockets"
WHY_MISSING: dict[str, str] = {
    **{f"ryu.app.wsgi.{name}": _NO_WEBSOCKETS for name in (
        "websocket", "rpc_public", "WebSocketRPCServer", "WebSocketRPCClient",
        "WebSocketManager", "WebSocketRegistrationWrapper", "WebSocketDisconnectedError",
        "WebSocketServerTransport", "WebSocketClientTransport",
        "WSGIApplication.websocketmanager")},
    "ryu.lib.hub.WSGIServer": "os-ken's native hub has no WSGI server; use ryu.app.wsgi",
    "ryu.lib.hub.WebSocketWSGI": "os-ken's native hub has no WebSockets",
    "ryu.cmd": "Ryu's commands are not modules here: run ryu-manager (Synod's launcher)",
    "ryu.app": "os-ken ships no Ryu sample apps: run a copy of the app by its file path, "
               "next to the samples it imports",
}

_HOOK_FILE = os.path.abspath(__file__)


class _RyuPackage(importlib.abc.Loader):
    """`ryu` (Ryu's version) and `ryu.app`: packages of our own, not os-ken's modules.

    `from ryu.app import simple_switch_13` imports `<package name>.simple_switch_13`;
    were `ryu.app` os_ken.app itself, that would ask for os_ken.app.simple_switch_13 and
    bypass the lookups below (Ryu's samples next to the apps, ryu.app.wsgi).
    """

    def create_module(self, spec):
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        if module.__name__ == "ryu":
            vars(module).update(version_info=RYU_API_VERSION,
                                version=".".join(map(str, RYU_API_VERSION)))


class _Alias(importlib.abc.Loader):
    """Loads `ryu.X` by putting the already importable module `target` in its place."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec):
        return None  # a placeholder, replaced in sys.modules by exec_module

    def exec_module(self, module: types.ModuleType) -> None:
        # importlib returns whatever sys.modules holds under the name after exec_module,
        # so the os-ken module itself (not a copy) becomes `ryu.X`.
        sys.modules[module.__name__] = _import_target(self.target)


class _AddRyuNames(importlib.abc.Loader):
    """Wraps the loader of an os-ken module that renamed Ryu names, to add them back.

    However the module is reached (`import os_ken.X`, `from ryu.base import app_manager`
    through the already imported parent), its Ryu names are there.
    """

    def __init__(self, loader: importlib.abc.Loader, renames: dict[str, str]) -> None:
        self.loader = loader
        self.renames = renames

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self.loader.exec_module(module)
        _add_ryu_names(module, self.renames)

    def __getattr__(self, name: str):  # get_resource_reader, get_source, ...
        return getattr(self.loader, name)


def _add_ryu_names(module: types.ModuleType, renames: dict[str, str]) -> None:
    for ryu_name, os_ken_name in renames.items():
        if not hasattr(module, ryu_name) and hasattr(module, os_ken_name):
            setattr(module, ryu_name, getattr(module, os_ken_name))


def _import_target(target: str) -> types.ModuleType:
    """Import `target` for a `ryu.*` alias, keeping os-ken's require_app() honest.

    os-ken's require_app(api_style=True) (e.g. in os_ken.topology.api) credits the module
    two frames up the stack with the requirement; through this hook that frame is ours,
    so the requirement is handed on to the module that imported `ryu.*`.
    """
    hook = sys.modules[__name__]
    before = len(getattr(hook, "_REQUIRED_APP", []))
    __import__(target)  # the builtin: no importlib frame of its own on the stack
    added = getattr(hook, "_REQUIRED_APP", [])[before:]
    if added:
        del vars(hook)["_REQUIRED_APP"][before:]
        if not before:
            del vars(hook)["_REQUIRED_APP"]
        client = _importing_module()
        if client is not None:
            required = getattr(client, "_REQUIRED_APP", [])
            vars(client)["_REQUIRED_APP"] = required + [a for a in added if a not in required]
    return sys.modules[target]


def _importing_module() -> types.ModuleType | None:
    """The first module on the stack that is neither this hook nor importlib."""
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename != _HOOK_FILE and not filename.startswith("<frozen importlib"):
            module = inspect.getmodule(frame)
            if module is not None and not module.__name__.startswith("importlib"):
                return module
        frame = frame.f_back
    return None


def _exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class RyuFinder(importlib.abc.MetaPathFinder):
    """Finds `ryu` and `ryu.*`; first on sys.meta_path so os-ken's files never load twice."""

    def __init__(self) -> None:
        self.app_dirs: list[str] = []

    def find_spec(self, fullname: str, path=None, target=None):
        renames = RENAMED.get(fullname[len("os_ken."):]) if fullname.startswith("os_ken.") \
            else None
        if renames is not None:
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is not None and spec.loader is not None:
                spec.loader = _AddRyuNames(spec.loader, renames)
            return spec
        if fullname in ("ryu", "ryu.app"):
            return importlib.machinery.ModuleSpec(fullname, _RyuPackage(), is_package=True)
        if not fullname.startswith("ryu."):
            return None
        rest = fullname[len("ryu."):]
        real = CARRIED.get(rest, f"os_ken.{rest}")
        if _exists(real):
            return importlib.machinery.ModuleSpec(fullname, _Alias(real))
        parent, _, leaf = rest.rpartition(".")
        if parent == "app":
            for folder in self.app_dirs:
                candidate = os.path.join(folder, f"{leaf}.py")
                if os.path.isfile(candidate):
                    return importlib.util.spec_from_file_location(fullname, candidate)
        # No counterpart: importlib raises ModuleNotFoundError naming `fullname`.
        return None


_FINDER: RyuFinder | None = None


def install(app_dirs: Iterable[str] = ()) -> RyuFinder:
    """Serve `ryu.*` imports from os-ken (idempotent); app_dirs hold Ryu sample apps."""
    global _FINDER
    if _FINDER is None:
        _FINDER = RyuFinder()
        sys.meta_path.insert(0, _FINDER)
        for tail, renames in RENAMED.items():  # those os-ken modules already imported
            if f"os_ken.{tail}" in sys.modules:
                _add_ryu_names(sys.modules[f"os_ken.{tail}"], renames)
    set_app_dirs(app_dirs)
    return _FINDER


def set_app_dirs(app_dirs: Iterable[str]) -> None:
    """Folders searched for `ryu.app.NAME` modules os-ken lacks (NAME.py)."""
    if _FINDER is None:
        raise RuntimeError("ryu_compat.install() first")
    _FINDER.app_dirs = [os.path.abspath(d) for d in app_dirs]


def uninstall() -> None:
    """Remove the hook and every `ryu` module (for tests)."""
    global _FINDER
    if _FINDER is not None:
        sys.meta_path.remove(_FINDER)
        _FINDER = None
    for name in [n for n in sys.modules if n == "ryu" or n.startswith("ryu.")]:
        del sys.modules[name]


def canonical_app(name: str) -> str:
    """The name os-ken's AppManager should load: `ryu.X` is `os_ken.X` when os-ken has it.

    Loading one module under two names would instantiate its app twice.
    """
    if name.startswith("ryu.") and not name.endswith(".py"):
        real = CARRIED.get(name[len("ryu."):], f"os_ken.{name[len('ryu.'):]}")
        if _exists(real):
            return real
    return name


def _ryu_name(module_name: str) -> str:
    """os_ken.X -> ryu.X, for reporting in the names the app used."""
    for ryu_tail, real in CARRIED.items():
        if module_name == real:
            return f"ryu.{ryu_tail}"
    if module_name == "os_ken" or module_name.startswith("os_ken."):
        return "ryu" + module_name[len("os_ken"):]
    return module_name


def _missing(name: str) -> str:
    for known, why in WHY_MISSING.items():
        if name == known or name.startswith(known + "."):
            return f"{name} has no os-ken counterpart ({why})"
    return f"{name} has no os-ken counterpart"


_CANNOT_IMPORT = re.compile(r"cannot import name '([^']+)' from '([^']+)'")


def explain(exc: BaseException, uses_ryu: bool = True) -> str | None:
    """One line for an exception raised while importing an app, or None if not ours.

    uses_ryu: the app imports `ryu` names, so os-ken module names are shown as Ryu's.
    """
    rename = _ryu_name if uses_ryu else (lambda n: n)
    if isinstance(exc, ModuleNotFoundError) and exc.name and (
            exc.name == "ryu" or exc.name.startswith("ryu.")):
        return _missing(exc.name)
    if isinstance(exc, ImportError):
        m = _CANNOT_IMPORT.search(str(exc))
        if m and (m.group(2).startswith(("os_ken", "ryu")) or m.group(2) in CARRIED.values()):
            return _missing(f"{rename(m.group(2))}.{m.group(1)}")
        return None
    if isinstance(exc, AttributeError):
        owner = getattr(exc, "obj", None)
        name = getattr(exc, "name", None)
        if name is None:
            return None
        if isinstance(owner, types.ModuleType):
            owner_name = owner.__name__
        elif isinstance(owner, type):
            owner_name = f"{owner.__module__}.{owner.__qualname__}"
        else:
            return None
        carried = tuple(CARRIED.values())
        if owner_name.startswith(("os_ken", "ryu")) or owner_name.startswith(carried):
            return _missing(f"{rename(owner_name)}.{name}")
    return None


def guard_handlers(cls: type) -> None:
    """Make an app's event handlers log an exception and carry on.

    Under os-ken's native hub an exception is TaskExit: one escaping a handler silently
    ends the app's event thread, and the app ignores every later event (Ryu's eventlet
    hub logged it, then ended the thread too). A Ryu name os-ken lacks, met only when a
    handler runs, is logged in one line naming the app, the handler and the name.
    """
    for klass in cls.__mro__:
        if klass.__module__.startswith(("os_ken.", "controller.")) or klass is object:
            continue
        for attr, handler in list(vars(klass).items()):
            if (not inspect.isfunction(handler) or not hasattr(handler, "callers")
                    or getattr(handler, "_synod_guarded", False)):
                continue
            setattr(klass, attr, _guarded(handler))


def _guarded(handler):
    @functools.wraps(handler)  # keeps `callers`, which os-ken registers the handler by
    def wrapper(self, ev, *args, **kwargs):
        try:
            return handler(self, ev, *args, **kwargs)
        except Exception as e:
            why = explain(e)
            if why is not None:
                self.logger.error("app %s: handler %s: %s", self.name, handler.__name__, why)
            else:
                self.logger.exception("app %s: handler %s failed on %s; the app carries on",
                                      self.name, handler.__name__, type(ev).__name__)
    wrapper._synod_guarded = True
    return wrapper

