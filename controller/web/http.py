"""The web view's HTTP rules, without I/O: parse a request head, pick a route, build responses.

Read-only by construction: GET and HEAD only, no request body, a fixed set of static files
held in memory (no path ever reaches the file system), one header set with a strict CSP.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

__all__ = [
    "HEAD_LINE_BYTES_MAX",
    "HEADERS_MAX",
    "HttpError",
    "Request",
    "STATIC",
    "StaticFile",
    "VENDOR_SHA256",
    "parse_head",
    "response_head",
    "static_files",
]

HEAD_LINE_BYTES_MAX = 8_192  # a request line or header line
HEADERS_MAX = 64  # header lines of one request
PATH_CHARS_MAX = 2_048

# The vendored graph library (controller/web/static/vendor/README.md says where it came from).
VENDOR_FILE = "vendor/cytoscape.min.js"
VENDOR_SHA256 = "83e8c54a6bec655bfd81df07df605649c268af69aeca67a5ea2da54ea42dac81"

# cytoscape.js 3.30.2 inserts one fixed stylesheet for its container: allowed by its hash
# alone (a changed library fails VENDOR_SHA256 before this matters).
CYTOSCAPE_STYLE = "'sha256-pgvDUBa4IjFA2yuSJ2cqcyxmNYJMborsd0ORcRv9vw8='"
CSP = (f"default-src 'none'; script-src 'self'; style-src 'self' {CYTOSCAPE_STYLE}; "
       "img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           413: "Content Too Large", 429: "Too Many Requests",
           431: "Request Header Fields Too Large", 503: "Service Unavailable",
           505: "HTTP Version Not Supported"}


class HttpError(Exception):
    """A request refused before routing: status and a one-line reason (the client's fault)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query string
    headers: dict[str, str]  # lower-case names; a repeated header keeps its first value

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


def parse_head(lines: list[bytes]) -> Request:
    """The request line and header lines (each without its CRLF). HttpError says what is
    wrong: a method other than GET or HEAD, a body, a malformed or oversized head."""
    if not lines or not lines[0]:
        raise HttpError(400, "empty request")
    if len(lines) - 1 > HEADERS_MAX:
        raise HttpError(431, f"more than {HEADERS_MAX} header lines")
    try:
        method, target, version = lines[0].decode("ascii").split(" ")
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, "malformed request line") from None
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(505, f"unsupported version {version[:20]!r}")
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, "malformed header line")
        headers.setdefault(name.lower(), value.strip())
    if method not in ("GET", "HEAD"):
        raise HttpError(405, f"method {method[:20]} not allowed: this view is read-only")
    if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
        raise HttpError(413, "a request body is not accepted")
    if len(target) > PATH_CHARS_MAX or not target.startswith("/"):
        raise HttpError(400, "bad request target")
    return Request(method, target.split("?", 1)[0].split("#", 1)[0], headers)


def response_head(status: int, content_type: str, length: int | None, cache: str,
                  extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A response's status line and headers (every response closes its connection)."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}",
             f"Content-Type: {content_type}", f"Cache-Control: {cache}", "Connection: close",
             *(f"{k}: {v}" for k, v in SECURITY_HEADERS), *(f"{k}: {v}" for k, v in extra)]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    cache: str


_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".png": "image/png",
          ".txt": "text/plain; charset=utf-8", ".md": "text/plain; charset=utf-8"}
# URL path -> file under controller/web/static: the whole set the server can send.
STATIC = {"/": "index.html", "/app.js": "app.js", "/style.css": "style.css",
          "/vendor/cytoscape.min.js": VENDOR_FILE,
          "/vendor/cytoscape.LICENSE.txt": "vendor/cytoscape.LICENSE.txt"}


def static_files() -> dict[str, StaticFile]:
    """The static files, read once into memory; the vendored library checked against its
    pinned sha256 (a ValueError names the file if it was changed)."""
    root = resources.files("controller.web") / "static"
    out = {}
    for url, name in STATIC.items():
        body = (root / name).read_bytes()
        if name == VENDOR_FILE and hashlib.sha256(body).hexdigest() != VENDOR_SHA256:
            raise ValueError(f"controller/web/static/{name}: sha256 does not match the pinned "
                             "one (controller/web/static/vendor/README.md)")
        suffix = name[name.rfind("."):]
        # The pinned library never changes under its name; the page's own files may change
        # with an upgrade, so the browser asks again (a 304-free small download).
        cache = "public, max-age=86400, immutable" if name.startswith("vendor/") else "no-cache"
        out[url] = StaticFile(body, _TYPES[suffix], cache)
    return out
