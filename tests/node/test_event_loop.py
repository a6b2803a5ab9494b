"""The node runs on the event loop its config names (decision 0104): uvloop by default,
asyncio's own on request, and asyncio's own with a warning where uvloop is missing."""

from __future__ import annotations

import asyncio
import logging
import sys

from controller.node.server import _run_loop


def _loop_module():
    seen: list[str] = []

    async def main() -> None:
        seen.append(type(asyncio.get_running_loop()).__module__)

    return seen, main


def test_uvloop_by_name(caplog):
    seen, main = _loop_module()
    with caplog.at_level(logging.INFO, logger="synod.node"):
        _run_loop("uvloop", main)
    assert seen and seen[0].startswith("uvloop")
    assert "event loop: uvloop" in caplog.text


def test_asyncio_by_name():
    seen, main = _loop_module()
    _run_loop("asyncio", main)
    assert seen and seen[0].startswith("asyncio")


def test_asyncio_with_a_warning_where_uvloop_is_missing(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    seen, main = _loop_module()
    with caplog.at_level(logging.WARNING, logger="synod.node"):
        _run_loop("uvloop", main)
    assert seen and seen[0].startswith("asyncio")
    assert "uvloop cannot be imported" in caplog.text
