"""The dashboard's HTTP server on the agent's own event loop: routes, static files, the
live stream and the actions, each action one of the control commands.

Refusals come before any route: a Host that is not this server (421), a missing or wrong
session cookie (401), a state-changing request without the CSRF value or from another
origin (403), an oversized head (431) or body (413), too many connections or streams (503).
Static files are a fixed table read from the package at start: a path is a key in it or a
404, so no path reaches the filesystem.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import urllib.parse
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from agent.config import Config
from agent.control.commands import CommandContext
from agent.control.errors import ControlError
from agent.control.server import Command
from agent.dashboard import http
from agent.dashboard.auth import Auth, load_or_create_token
from agent.dashboard.live import LiveFeed
from agent.dashboard.snapshot import Snapshot, call
from agent.errors import ShoalError, kind_of
from agent.log import kv
from agent.store import Manifest
from agent.transfer.catalog import lookup

log = logging.getLogger("shoal.dashboard")
READ_TIMEOUT = 10.0
MAX_CONNECTIONS = 32
KEEPALIVE = 15.0  # seconds between comment lines on an idle stream
UPLOAD_PIECE = 256 * 1024
_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
# what the page may ask for: the command, and whether it changes anything (all POST anyway)
ACTIONS = ("publish", "fetch", "follow", "unfollow", "pair_start", "pair_open", "pair_close",
           "pair_confirm", "pair_decline", "unpair", "resources")


def load_static() -> dict[str, tuple[bytes, str]]:
    """Every file shipped in ``static/``, by name (the only files the server can send)."""
    out = {}
    for entry in resources.files("agent.dashboard").joinpath("static").iterdir():
        suffix = Path(entry.name).suffix
        if entry.is_file() and suffix in _TYPES:
            out[entry.name] = (entry.read_bytes(), _TYPES[suffix])
    return out


async def doctor_findings(cfg: Config) -> dict[str, Any]:
    """`shoal doctor`'s findings for this agent's configuration (probes run concurrently)."""
    from agent.doctor.checks import diagnose
    from agent.doctor.probes import probe_machine
    from agent.doctor.report import as_json, expect_from

    expect = expect_from(cfg)
    machine = await probe_machine(expect, cfg.node.data_dir, cfg.lan.interfaces)
    return as_json(diagnose(machine, expect))


class Dashboard:
    """Serves the dashboard for one agent; ``describe()`` is what `shoal dashboard` shows."""

    def __init__(self, ctx: CommandContext, table: Mapping[str, Command]) -> None:
        self.cfg = ctx.cfg.dashboard
        self.ctx = ctx
        self.table = table
        self.auth = Auth(load_or_create_token(ctx.cfg.node.data_dir), ctx.identity.short_id)
        self.static = load_static()
        self.snapshot = Snapshot(ctx, table, lambda: doctor_findings(ctx.cfg))
        self.feed = LiveFeed(self.snapshot.sections, self.cfg.interval)
        self.port: int | None = None
        self.reason = ""
        self.hosts: frozenset[str] = frozenset()
        self._server: asyncio.Server | None = None
        self._connections = 0
        self._uploads = ctx.cfg.node.data_dir / "uploads"

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Listen; a port in use is logged and reported by `shoal dashboard`, not fatal
        (the dashboard is a window on the agent, not part of its job)."""
        try:
            self._server = await asyncio.start_server(
                self._client, self.cfg.listen, self.cfg.port, limit=http.MAX_HEAD)
        except OSError as e:
            self.reason = (f"cannot listen on {self.cfg.listen}:{self.cfg.port}: "
                           f"{e.strerror or e}; change [dashboard] port")
            log.warning("dashboard not serving", extra=kv(reason=self.reason))
            return
        self.port = int(self._server.sockets[0].getsockname()[1])
        self.hosts = http.allowed_hosts(self.cfg.listen, self.port)
        shutil.rmtree(self._uploads, ignore_errors=True)  # left by a crash mid-upload
        log.info("dashboard listening", extra=kv(address=f"{self.cfg.listen}:{self.port}"))

    async def close(self) -> None:
        await self.feed.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    def describe(self) -> dict[str, object]:
        if self.port is None:
            return {"serving": False, "url": None, "reason": self.reason or "not started"}
        host = self.cfg.listen
        if host in ("0.0.0.0", "::", "127.0.0.1"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        base = f"http://{host}:{self.port}"
        return {"serving": True, "url": base + self.auth.login_path(), "base": base,
                "port": self.port, "pages_open": self.feed.listening}

    def poke(self) -> None:
        """Holdings or pairings changed: every section is read again at the next tick."""
        self.snapshot.invalidate()
        self.feed.poke()

    # ----------------------------------------------------------------- one connection
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        self._connections += 1
        try:
            if self._connections > MAX_CONNECTIONS:
                await self._send(writer, 503, "too many connections")
                return
            try:
                raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
                req = http.parse_head(raw)
            except (asyncio.LimitOverrunError, ValueError):
                await self._send(writer, 431, "request head too large")
                return
            except http.HttpError as e:
                await self._send(writer, e.status, str(e))
                return
            await self._route(req, reader, writer)
        except http.HttpError as e:
            with contextlib.suppress(ConnectionError):
                await self._send(writer, e.status, str(e))
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception:
            log.exception("dashboard request failed")
            with contextlib.suppress(ConnectionError):
                await self._send(writer, 500, "internal error")
        finally:
            self._connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _route(self, req: http.Request, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        if not http.host_ok(req, self.hosts):
            raise http.HttpError(421, "this server answers to localhost only")
        if req.method not in ("GET", "POST"):
            raise http.HttpError(405, "method not allowed")
        if req.path == "/login" and req.method == "GET":
            if not self.auth.token_ok(req.query.get("token")):
                raise http.HttpError(403, "wrong or missing token: run `shoal dashboard`")
            await self._send(writer, 303, "signed in", extra=(
                ("Location", "/"), ("Set-Cookie", self.auth.set_cookie())))
            return
        if not self.auth.session_ok(req.cookie(self.auth.cookie_name)):
            raise http.HttpError(401, "not signed in: open the URL `shoal dashboard` prints")
        if req.method == "POST":
            if not http.origin_ok(req, self.hosts):
                raise http.HttpError(403, "cross-origin request refused")
            if not self.auth.csrf_ok(req.header("x-shoal-csrf")):
                raise http.HttpError(403, "missing or wrong CSRF token")
            await self._post(req, reader, writer)
            return
        if req.content_length():
            raise http.HttpError(400, "a GET has no body")
        if req.path == "/":
            page, ctype = self.static["index.html"]
            body = page.replace(b"{{csrf}}", self.auth.csrf.encode())
            await self._send(writer, 200, body, ctype)
        elif req.path.startswith("/static/") and req.path[8:] in self.static:
            body, ctype = self.static[req.path[8:]]
            await self._send(writer, 200, body, ctype, cache="private, max-age=300")
        elif req.path == "/api/snapshot":
            await self._json(writer, 200, await self.snapshot.sections())
        elif req.path == "/api/events":
            await self._events(writer)
        elif req.path == "/api/download":
            await self._download(req.query.get("resource", ""), writer)
        else:
            raise http.HttpError(404, "not found")

    async def _post(self, req: http.Request, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        length = req.content_length()
        if req.path == "/api/upload":
            await self._upload(req, reader, writer, length)
            return
        if req.path == "/api/doctor":
            self.snapshot.rerun_doctor()
            self.feed.poke()
            await self._json(writer, 200, {"ok": True, "result": {"rerun": True}})
            return
        name = req.path.removeprefix("/api/action/")
        if name == req.path or name not in ACTIONS:
            raise http.HttpError(404, "no such action")
        if (req.header("content-type") or "").split(";")[0].strip() != "application/json":
            raise http.HttpError(415, "send application/json")
        if length > http.MAX_JSON:
            raise http.HttpError(413, "arguments too large")
        try:
            args = json.loads(await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT))
        except ValueError:
            raise http.HttpError(400, "arguments are not JSON") from None
        if not isinstance(args, dict):
            raise http.HttpError(400, "arguments must be an object")
        args.pop("stream", None)  # content goes to the store (or --to), never to this page
        await self._json(writer, 200, await self._action(name, args))

    async def _action(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """One control command, answered as the control socket would answer it."""
        on_event = self.snapshot.track(str(args.get("resource", ""))) if name == "fetch" \
            else None
        self.poke()
        try:
            result = await call(self.table, name, args, on_event)
        except (ShoalError, ControlError, ValueError, LookupError, OSError, TimeoutError) as e:
            if on_event is not None:
                self.snapshot.transfers[str(args.get("resource", ""))]["state"] = "failed"
            return {"ok": False, "error": str(e) or type(e).__name__, "kind": str(kind_of(e))}
        finally:
            self.poke()
        if on_event is not None:
            self.snapshot.transfers[str(args.get("resource", ""))]["state"] = "done"
        return {"ok": True, "result": result}

    async def _upload(self, req: http.Request, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter, length: int) -> None:
        """A file from the browser, written aside in the data dir, then published."""
        if req.header("content-length") is None:
            raise http.HttpError(400, "an upload needs Content-Length")
        if length > self.cfg.max_upload:
            raise http.HttpError(413, f"the file is larger than [dashboard] max_upload "
                                      f"({self.cfg.max_upload} bytes)")
        name = req.query.get("name", "").strip()
        if not 0 < len(name) <= 255 or not name.isprintable() or re.search(r"[/\\]", name):
            raise http.HttpError(400, "give the file a name (no slashes, 1-255 characters)")
        self._uploads.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self._uploads / secrets.token_hex(8)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                left = length
                while left:
                    piece = await asyncio.wait_for(
                        reader.readexactly(min(left, UPLOAD_PIECE)), READ_TIMEOUT)
                    await asyncio.to_thread(f.write, piece)
                    left -= len(piece)
            answer = await self._action("publish", {
                "path": str(path), "name": name,
                "public": req.query.get("public") in ("1", "true")})
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        await self._json(writer, 200, answer)

    async def _download(self, resource: str, writer: asyncio.StreamWriter) -> None:
        """A file held here, to the browser (a read: only what the store holds; fetching
        it first is the POST action ``fetch``). Verified on read, as `fetch --stream`."""
        rec = lookup(self.ctx.store, resource[:255], self.ctx.fetcher.trusted_publisher)
        if rec is None:
            raise http.HttpError(404, "not held here: fetch it first")
        if rec.manifest.files is not None:
            raise http.HttpError(409, "a folder: fetch it into a directory instead")
        safe = re.sub(r"[^A-Za-z0-9._ -]", "_", rec.manifest.name)[:128] or "download"
        quoted = urllib.parse.quote(rec.manifest.name[:255], safe="")
        writer.write(http.head(200, "application/octet-stream", rec.manifest.size, (
            ("Content-Disposition",
             f"attachment; filename=\"{safe}\"; filename*=UTF-8''{quoted}"),)))

        class Sink:
            async def start(self, manifest: Manifest) -> None:
                return None

            async def data(self, chunk: bytes) -> None:
                writer.write(chunk)
                await writer.drain()

        await self.ctx.fetcher.export_to(rec.manifest, Sink(), fresh=frozenset())

    async def _events(self, writer: asyncio.StreamWriter) -> None:
        if self.feed.listening >= self.cfg.max_streams:
            raise http.HttpError(503, "too many live views open; close one")
        lst = self.feed.subscribe()  # counted before the page hears back
        try:
            writer.write(http.head(200, "text/event-stream", None))
            writer.write(f"retry: {int(max(self.cfg.interval, 1.0) * 3000)}\n\n".encode())
            await writer.drain()
            while True:
                try:
                    sections = await asyncio.wait_for(lst.next(), KEEPALIVE)
                except TimeoutError:
                    writer.write(b": keepalive\n\n")
                else:
                    for section, text in sections.items():
                        writer.write(f"event: {section}\ndata: {text}\n\n".encode())
                await writer.drain()
        finally:
            self.feed.unsubscribe(lst)

    # ----------------------------------------------------------------- answers
    async def _json(self, writer: asyncio.StreamWriter, status: int, value: object) -> None:
        body = json.dumps(value, allow_nan=False, default=str).encode()
        await self._send(writer, status, body, "application/json")

    async def _send(self, writer: asyncio.StreamWriter, status: int, body: bytes | str,
                    ctype: str = "text/plain; charset=utf-8",
                    extra: tuple[tuple[str, str], ...] = (), cache: str = "no-store") -> None:
        data = body.encode() if isinstance(body, str) else body
        if isinstance(body, str):
            data += b"\n"
        writer.write(http.head(status, ctype, len(data), extra, cache) + data)
        await writer.drain()
