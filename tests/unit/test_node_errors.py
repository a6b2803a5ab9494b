"""Every exception controller.node defines derives from its one base (issue 11)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import controller.node
from controller.node.errors import NodeBaseError


def test_every_node_exception_has_the_one_base():
    roots = []
    for info in pkgutil.iter_modules(controller.node.__path__):
        module = importlib.import_module(f"controller.node.{info.name}")
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__ == module.__name__
                    and not issubclass(obj, NodeBaseError)):
                roots.append(f"{module.__name__}.{name}")
    assert roots == [], f"exceptions outside NodeBaseError: {roots}"
