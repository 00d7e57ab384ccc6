"""Client side of the control API (the CLI, the demo, benchmarks): one command per connection.

Why one connection per command: the agent answers each with zero or more progress/data events
and exactly one final line, so the client needs no request ids and a killed CLI leaves
nothing behind in the agent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agent.control.errors import ControlError
from agent.errors import ErrorKind

MAX_REPLY = 64 * 1024 * 1024  # one JSON reply line from the agent (a catalog, the map)


async def call(
    path: Path, cmd: str, args: dict[str, Any] | None = None
) -> AsyncIterator[dict[str, Any] | bytes]:
    """Client side: yield progress events (dicts) and data (bytes); the last item is the final
    reply dict. Raises ControlError when no agent is listening."""
    try:
        # replies (a catalog, the authority map) may be far larger than a request line
        reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_REPLY)
    except FileNotFoundError:
        raise ControlError(
            f"no agent is running (no control socket at {path}); start one with: shoal run",
            ErrorKind.UNAVAILABLE) from None
    except PermissionError:
        raise ControlError(f"permission denied on {path}: run as the agent's user",
                           ErrorKind.REFUSED) from None
    except ConnectionRefusedError:
        raise ControlError(f"no agent is listening on {path}; start one with: shoal run",
                           ErrorKind.UNAVAILABLE) from None
    try:
        writer.write(json.dumps({"cmd": cmd, "args": args or {}}).encode() + b"\n")
        await writer.drain()
        while True:
            line = await reader.readline()
            if not line:
                raise ControlError("the agent closed the connection without answering",
                                   ErrorKind.GONE)
            msg = json.loads(line)
            if msg.get("event") == "data":
                yield await reader.readexactly(int(msg["length"]))
            elif "event" in msg:
                yield msg
            else:
                yield msg
                return
    finally:
        writer.close()


async def call_simple(path: Path, cmd: str, args: dict[str, Any] | None = None) -> Any:
    """Run a command that streams nothing; return its result or raise ControlError."""
    async for item in call(path, cmd, args):
        if isinstance(item, dict) and "ok" in item:
            if not item["ok"]:
                raise ControlError(str(item["error"]), item.get("kind"))
            return item.get("result")
    raise ControlError("no answer from the agent")
