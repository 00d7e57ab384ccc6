"""Local control API: newline-delimited JSON over a Unix socket that only the owner may use.

Why a Unix socket: file permissions plus SO_PEERCRED give real access control with no
passwords, and nothing is exposed on the network. A command answers with zero or more
progress/data events and then exactly one final line ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "..."}``. File content streams as ``{"event": "data", "length": N}``
followed by N raw bytes, so large exports need no base64.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agent.control.errors import ControlError
from agent.errors import ErrorKind, ShoalError, kind_of
from agent.log import kv

log = logging.getLogger("shoal.control")
MAX_LINE = 64 * 1024  # a request from the CLI


class Reply:
    """Handed to a command so it can stream progress and data before its final result."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def event(self, **fields: Any) -> None:
        self._writer.write(json.dumps({"event": "progress", **fields}).encode() + b"\n")
        await self._writer.drain()

    async def data(self, chunk: bytes) -> None:
        self._writer.write(json.dumps({"event": "data", "length": len(chunk)}).encode() + b"\n")
        self._writer.write(chunk)
        await self._writer.drain()


Command = Callable[[dict[str, Any], Reply], Awaitable[Any]]


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    uid: int = struct.unpack("3i", creds)[1]  # pid, uid, gid
    return uid


class ControlServer:
    """Serves commands from a dict name -> coroutine; owned by the node."""

    def __init__(self, path: Path, commands: dict[str, Command]) -> None:
        self.path = path
        self.commands = commands
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.path.exists() or self.path.is_symlink():
            if await _socket_alive(self.path):
                raise ControlError(f"another agent is already running (socket {self.path})")
            self.path.unlink()
        old_umask = os.umask(0o177)  # the socket is created 0600: owner only
        try:
            self._server = await asyncio.start_unix_server(
                self._client, path=str(self.path), limit=MAX_LINE
            )
        finally:
            os.umask(old_umask)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        uid = _peer_uid(writer)
        if uid is not None and uid not in (0, os.getuid()):
            log.warning("refused control client", extra=kv(uid=uid))
            writer.close()
            return
        try:
            line = await reader.readline()
            if not line:
                return
            try:
                req = json.loads(line)
                if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                    raise ValueError("expected {\"cmd\": ..., \"args\": {...}}")
                args = req.get("args", {})
                if not isinstance(args, dict):
                    raise ValueError("args must be an object")
            except ValueError as e:
                await _final(writer, False, f"bad control request: {e}", ErrorKind.INVALID)
                return
            cmd = self.commands.get(req["cmd"])
            if cmd is None:
                await _final(writer, False, f"unknown command {req['cmd']!r}", ErrorKind.INVALID)
                return
            try:
                result = await cmd(args, Reply(writer))
            except ControlError as e:
                await _final(writer, False, str(e), e.error_kind)
            except (ShoalError, ValueError, LookupError, OSError, TimeoutError) as e:
                # every layer's typed failure is one line for the user, with its kind
                await _final(writer, False, str(e) or type(e).__name__, kind_of(e))
            except Exception as e:
                log.exception("control command failed", extra=kv(cmd=req["cmd"]))
                await _final(writer, False, f"internal error: {type(e).__name__}: {e}",
                             ErrorKind.INTERNAL)
            else:
                await _final(writer, True, result)
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _final(writer: asyncio.StreamWriter, ok: bool, value: Any,
                 kind: ErrorKind | None = None) -> None:
    msg = {"ok": True, "result": value} if ok else {
        "ok": False, "error": value, "kind": str(kind or ErrorKind.INVALID)}
    try:  # a reply is strict JSON: Infinity/NaN (ValueError), bytes or sets (TypeError) are
        line = json.dumps(msg, allow_nan=False)  # not, so they are a bug here, not output
    except (TypeError, ValueError) as e:
        log.error("control reply is not JSON", extra=kv(reason=e))
        line = json.dumps({"ok": False, "error": f"internal error: {e}",
                           "kind": str(ErrorKind.INTERNAL)})
    writer.write(line.encode() + b"\n")
    await writer.drain()


async def _socket_alive(path: Path) -> bool:
    try:
        _r, w = await asyncio.open_unix_connection(str(path))
    except OSError:
        return False
    w.close()
    return True
