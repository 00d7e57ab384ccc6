"""An in-process agent with its dashboard on a free loopback port, and a raw HTTP client
(asyncio streams: the exact bytes a test sends, hostile ones included)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import config_from_dict
from agent.node import Node


def config(data_dir: Path, name: str, **dashboard: Any) -> Any:
    return config_from_dict({
        "node": {"name": name, "data_dir": str(data_dir)},
        "lan": {"listen": "127.0.0.1", "port": 0, "mdns": False, "heartbeat_interval": 0.5},
        "ble": {"enabled": False},
        "dashboard": {"port": 0, "interval": 0.2, **dashboard},
    })


@contextlib.asynccontextmanager
async def nodes(*names: str, **dashboard: Any) -> AsyncIterator[dict[str, Node]]:
    base = Path(tempfile.mkdtemp(prefix="dash-"))
    running: list[tuple[Node, asyncio.Future[None]]] = []
    try:
        for name in names:
            node = Node(config(base / name, name, **dashboard))
            task = asyncio.ensure_future(node.run())
            await asyncio.wait_for(node.ready.wait(), 10)
            running.append((node, task))
        yield {n.cfg.node.name: n for n, _ in running}
    finally:
        for node, _ in running:
            node.stop()
        for _, task in running:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 15)
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        import json
        return json.loads(self.body)


async def raw(port: int, data: bytes) -> Answer:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(data)
        await w.drain()
        text = await asyncio.wait_for(r.read(), 10)
    finally:
        w.close()
    head, _, body = text.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), v.strip())
    return Answer(status, headers, body)


async def request(port: int, method: str, path: str, *, host: str | None = None,
                  headers: dict[str, str] | None = None, body: bytes = b"") -> Answer:
    hs = {"Host": host or f"127.0.0.1:{port}", **(headers or {})}
    if body or method == "POST":
        hs.setdefault("Content-Length", str(len(body)))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hs.items())
    return await raw(port, head.encode() + b"\r\n" + body)


class Browser:
    """Signs in with the token like a browser and keeps the cookie and the CSRF value."""

    def __init__(self, node: Node) -> None:
        assert node.dashboard is not None and node.dashboard.port is not None
        self.dash = node.dashboard
        self.port = node.dashboard.port
        self.cookie = ""
        self.csrf = ""

    async def login(self) -> Browser:
        a = await request(self.port, "GET", self.dash.auth.login_path())
        assert a.status == 303, a
        self.cookie = a.headers["set-cookie"].split(";")[0]
        page = await self.get("/")
        m = re.search(rb'name="csrf" content="([0-9a-f]+)"', page.body)
        assert m is not None
        self.csrf = m.group(1).decode()
        return self

    async def get(self, path: str, **kw: Any) -> Answer:
        return await request(self.port, "GET", path, headers={"Cookie": self.cookie}, **kw)

    async def upload(self, name: str, data: bytes) -> Any:
        a = await request(self.port, "POST", f"/api/upload?name={name}", body=data,
                          headers={"Cookie": self.cookie, "X-Shoal-CSRF": self.csrf,
                                   "Content-Type": "application/octet-stream"})
        assert a.status == 200, a
        return a.json()

    async def action(self, name: str, args: dict[str, Any], **extra: str) -> Answer:
        import json
        hs = {"Cookie": self.cookie, "X-Shoal-CSRF": self.csrf,
              "Content-Type": "application/json", **extra}
        return await request(self.port, "POST", f"/api/action/{name}", headers=hs,
                             body=json.dumps(args).encode())


class Stream:
    """A page's server-sent-event stream, read event by event."""

    def __init__(self, b: Browser) -> None:
        self.b = b
        self.latest: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    async def __aenter__(self) -> Stream:
        self.r, self.w = await asyncio.open_connection("127.0.0.1", self.b.port)
        self.w.write(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{self.b.port}\r\n"
                     f"Cookie: {self.b.cookie}\r\n\r\n".encode())
        head = await asyncio.wait_for(self.r.readuntil(b"\r\n\r\n"), 10)
        assert b" 200 " in head.split(b"\r\n")[0] and b"text/event-stream" in head, head
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.w.close()

    async def until(self, pred: Any, timeout: float = 20.0) -> Any:
        """Read events until pred(latest) is truthy (a guard against hanging, not timing)."""
        import json

        async def loop() -> Any:
            event = None
            while True:
                found = pred(self.latest)
                if found:
                    return found
                line = (await self.r.readline()).decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event:
                    self.latest[event] = json.loads(line[6:])
                    self.counts[event] = self.counts.get(event, 0) + 1
        return await asyncio.wait_for(loop(), timeout)

