"""The vendored graph library is the pinned one, with its licence, and the node checks it."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from controller.web import http

STATIC = Path(http.__file__).parent / "static"


def test_cytoscape_is_the_pinned_file_with_its_licence():
    body = (STATIC / http.VENDOR_FILE).read_bytes()
    assert hashlib.sha256(body).hexdigest() == http.VENDOR_SHA256
    assert body.startswith(b"/**\n * Copyright (c) 2016-2024, The Cytoscape Consortium.")
    licence = (STATIC / "vendor/cytoscape.LICENSE.txt").read_text()
    assert "Permission is hereby granted, free of charge" in licence
    readme = (STATIC / "vendor/README.md").read_text()
    assert http.VENDOR_SHA256 in readme and "cytoscape@3.30.2" in readme


def test_a_changed_library_is_refused(monkeypatch):
    monkeypatch.setattr(http, "VENDOR_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="sha256 does not match"):
        http.static_files()


def test_the_page_loads_only_its_own_files():
    """No script or style from elsewhere, nothing inline (the CSP would block it anyway)."""
    html = (STATIC / "index.html").read_text()
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and all(s.startswith("/") or s == "data:," for s in sources)
    assert all(s in http.STATIC or s == "data:," for s in sources)
    assert "<script>" not in html and "style=" not in html and "on" + "click" not in html


def test_the_page_only_reads():
    """Every request the page makes is a GET of the view: no other method, no other path."""
    js = (STATIC / "app.js").read_text()
    assert re.findall(r"fetch\(\"([^\"]+)\"", js) == ["/api/events"]
    assert "method" not in js and "XMLHttpRequest" not in js and "WebSocket" not in js
    assert "innerHTML" not in js  # values from the node go in as text only
