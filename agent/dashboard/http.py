"""HTTP/1.1 requests as the dashboard accepts them, and its security rules (pure, no I/O).

Why hand-written rather than a library: the dashboard needs one request per connection
(``Connection: close``), a bounded head, a body by ``Content-Length`` only (a chunked body
is refused) and a handful of routes. That is a few dozen lines of strict parsing, where a
framework would add megabytes of RSS on a Raspberry Pi and an HTTP parser library would add a
dependency for less than it saves (docs/dependencies.md, "Dashboard").

Every byte here comes from a browser on this machine, which may be running a hostile page:
the Host header must name this server (DNS rebinding), a state-changing request must carry
the CSRF value and, when the browser sends one, this origin.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field

MAX_HEAD = 8 * 1024  # request line and headers
MAX_HEADERS = 48
MAX_JSON = 64 * 1024  # an action's arguments
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TARGET = re.compile(r"/[\x21-\x7e]*")


class HttpError(Exception):
    """A request refused before any route runs: *status* and a short text for the body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Request:
    method: str
    path: str  # percent-decoded
    query: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def content_length(self) -> int:
        raw = self.headers.get("content-length")
        if raw is None:
            return 0
        if not raw.isdigit() or len(raw) > 15:
            raise HttpError(400, "bad Content-Length")
        return int(raw)

    def cookie(self, name: str) -> str | None:
        for part in self.headers.get("cookie", "").split(";"):
            k, sep, v = part.strip().partition("=")
            if sep and k == name:
                return v
        return None


def parse_head(raw: bytes) -> Request:
    """Parse a request head (up to and including the blank line); HttpError if malformed."""
    if len(raw) > MAX_HEAD:
        raise HttpError(431, "request head too large")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400, "request head is not ASCII") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(400, "bad request line")
    method, target, _version = parts
    if not _TOKEN.fullmatch(method.encode()) or not _TARGET.fullmatch(target):
        raise HttpError(400, "bad request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name.encode()):
            raise HttpError(400, "bad header line")
        if any((ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7f for ch in value):
            raise HttpError(400, "control character in a header")
        key = name.lower()
        if key in headers:
            if key in ("host", "content-length", "origin", "cookie", "transfer-encoding",
                       "x-shoal-csrf"):
                raise HttpError(400, f"duplicate {name} header")
            headers[key] += ", " + value.strip()
        else:
            headers[key] = value.strip()
        if len(headers) > MAX_HEADERS:
            raise HttpError(431, "too many headers")
    if "transfer-encoding" in headers:
        raise HttpError(501, "chunked request bodies are not accepted; send Content-Length")
    raw_path, _, raw_query = target.partition("?")
    try:
        path = urllib.parse.unquote(raw_path, errors="strict")
        query = dict(urllib.parse.parse_qsl(raw_query, max_num_fields=16, errors="strict"))
    except ValueError:  # bad UTF-8 once decoded, or too many fields
        raise HttpError(400, "bad request target") from None
    return Request(method, path, query, headers)


def allowed_hosts(listen: str, port: int) -> frozenset[str]:
    """Host header values this server answers: loopback names with its port, plus the
    listen address itself when the operator chose a non-loopback one."""
    hosts = {f"{h}:{port}" for h in LOCAL_HOSTS}
    if listen not in ("127.0.0.1", "::1", "0.0.0.0", "::"):
        hosts.add(f"[{listen}]:{port}" if ":" in listen else f"{listen}:{port}")
    return frozenset(hosts)


def host_ok(req: Request, hosts: frozenset[str]) -> bool:
    """Against DNS rebinding: a page from evil.example resolved to 127.0.0.1 still sends
    ``Host: evil.example:PORT``, which is refused."""
    host = req.header("host")
    return host is not None and host.lower() in hosts


def origin_ok(req: Request, hosts: frozenset[str]) -> bool:
    """A state-changing request's Origin (browsers send it on POST) must be this server."""
    origin = req.header("origin")
    if origin is None:
        return True  # not a browser's cross-site request (those always carry Origin)
    scheme, sep, rest = origin.partition("://")
    return scheme == "http" and bool(sep) and rest.lower() in hosts


CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
REASONS = {200: "OK", 303: "See Other", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
           408: "Request Timeout", 413: "Content Too Large", 415: "Unsupported Media Type",
           421: "Misdirected Request", 429: "Too Many Requests", 431:
           "Request Header Fields Too Large", 500: "Internal Server Error",
           501: "Not Implemented", 503: "Service Unavailable"}


def head(status: int, content_type: str | None, length: int | None,
         extra: tuple[tuple[str, str], ...] = (), cache: str = "no-store") -> bytes:
    """A response head with the security headers on every response."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines.append(f"Cache-Control: {cache}")
    lines.append("Connection: close")
    lines += [f"{k}: {v}" for k, v in (*SECURITY_HEADERS, *extra)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
