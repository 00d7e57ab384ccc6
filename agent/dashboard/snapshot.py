"""What the dashboard shows, read through the control commands (never around them).

Why through the command table: the CLI and the page then describe the agent the same way,
and a fix in a handler fixes both. A few facts no command exposes (bytes per session for
link rates, fetch progress of the page's own fetches) are read from the command context.

Sections have their own pace: the mesh, pairing and transfers every tick (they scale with
the sessions); what scales with the holdings (resources, the authority map, the prefetch
statistics that read the access log) every ``SLOW`` seconds or at once after an action or a
publish; doctor's probes (subprocesses, D-Bus) when the first page opens and on request.
Measured with 1,000 resources (bench/footprint.py --dashboard): reading the authority map
every second was most of an open page's CPU.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from agent.control.commands import CommandContext
from agent.control.server import Command, Reply

SLOW = 30.0  # seconds between reads of the sections that scale with the holdings
HISTORY = 120  # points kept for the plots (an hour at SLOW)
DOCTOR_EVERY = 300.0


class Collect(Reply):
    """A Reply for commands the dashboard calls itself: progress goes to *on_event*."""

    def __init__(self, on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self._on_event = on_event

    async def event(self, **fields: Any) -> None:
        if self._on_event is not None:
            self._on_event(fields)

    async def data(self, chunk: bytes) -> None:
        raise ValueError("the dashboard does not stream content")


async def call(table: Mapping[str, Command], name: str, args: dict[str, Any] | None = None,
               on_event: Callable[[dict[str, Any]], None] | None = None) -> Any:
    return await table[name](args or {}, Collect(on_event))


async def _quiet(coro: Awaitable[Any]) -> Any:
    """A section whose service is off (or failing) shows its reason, not an exception."""
    try:
        return await coro
    except Exception as e:
        return {"unavailable": str(e) or type(e).__name__}


class Snapshot:
    """Builds the sections; remembers the plots' history and the page's own transfers."""

    def __init__(self, ctx: CommandContext, table: Mapping[str, Command],
                 doctor: Callable[[], Awaitable[Any]] | None = None) -> None:
        self.ctx = ctx
        self.table = table
        self._doctor = doctor
        self.transfers: dict[str, dict[str, Any]] = {}  # the page's fetches, by resource
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._slow_at = -SLOW
        self._slow: dict[str, Any] = {}
        self._doctor_at: float | None = None
        self._doctor_result: Any = None
        self._doctor_task: asyncio.Task[None] | None = None
        self._bytes_in: dict[str, tuple[float, int]] = {}

    def invalidate(self) -> None:
        """Read the slow sections too at the next tick (an action or a publish happened)."""
        self._slow_at = -SLOW

    def rerun_doctor(self) -> None:
        self._doctor_at = None

    async def sections(self) -> dict[str, Any]:
        now = time.monotonic()
        table = self.table
        status = await call(table, "status")
        peers = await call(table, "peers")
        out: dict[str, Any] = {
            "status": status,
            "mesh": {"peers": peers, "links": self._links(now)},
            "pairing": {"window_open": status.get("pairing_window_open"),
                        "pending": await call(table, "pair_pending")},
            "transfers": {"running": self.ctx.fetcher.in_flight,
                          "page": list(self.transfers.values())[-20:]},
        }
        if now - self._slow_at >= SLOW:
            self._slow_at = now
            self._slow = {
                "raft": await _quiet(call(table, "authority")),
                "resources": await _quiet(call(table, "resources", {"local_only": True})),
                "prefetch": await _quiet(call(table, "prefetch")),
                "mirrors": await _quiet(call(table, "mirrors")),
                "follows": await _quiet(call(table, "follow_list")),
            }
            self._sample(now)
            self._slow["history"] = list(self.history)
        out |= self._slow  # the same objects until the next slow read: not re-encoded
        self._maybe_doctor(now)
        out["doctor"] = self._doctor_result or {"running": True}
        return out

    def _links(self, now: float) -> list[dict[str, Any]]:
        """Each live session: its kind (lan, ble, relay), and bytes received per second."""
        rows = []
        seen = set()
        for conn in self.ctx.connections.live_connections():
            key = conn.peer_id.hex()
            seen.add(key)
            t0, b0 = self._bytes_in.get(key, (now, conn.bytes_in))
            rate = (conn.bytes_in - b0) / (now - t0) if now > t0 else 0.0
            self._bytes_in[key] = (now, conn.bytes_in)
            rows.append({"peer_id": key, "name": conn.name, "kind": conn.transport,
                         "rate_in": round(max(rate, 0.0)), "bytes_in": conn.bytes_in,
                         "trusted": self.ctx.trust.is_trusted(conn.peer_id)})
        for gone in set(self._bytes_in) - seen:
            del self._bytes_in[gone]
        return rows

    def _sample(self, now: float) -> None:
        stats = self._slow.get("prefetch", {}).get("stats") or {}
        self.history.append({
            "t": round(time.time(), 1),
            "bytes_by_class": dict(self.ctx.fetcher.bytes_by_class),
            "hit_ratio": stats.get("used_ratio"), "wasted": stats.get("wasted_bytes"),
        })

    def _maybe_doctor(self, now: float) -> None:
        if self._doctor is None:
            self._doctor_result = {"unavailable": "doctor is not wired into this agent"}
            return
        due = self._doctor_at is None or now - self._doctor_at >= DOCTOR_EVERY
        if due and (self._doctor_task is None or self._doctor_task.done()):
            self._doctor_at = now
            self._doctor_task = asyncio.get_running_loop().create_task(
                self._run_doctor(), name="shoal:dashboard-doctor")

    async def _run_doctor(self) -> None:
        assert self._doctor is not None
        self._doctor_result = await _quiet(self._doctor())

    def track(self, resource: str) -> Callable[[dict[str, Any]], None]:
        """Progress events of a fetch the page started, kept for the transfers section."""
        started = time.monotonic()
        row: dict[str, Any] = {"resource": resource[:255], "state": "starting",
                               "done": 0, "total": None, "rate": 0, "eta_s": None}
        self.transfers[resource] = row
        while len(self.transfers) > 50:
            self.transfers.pop(next(iter(self.transfers)))

        def on_event(ev: dict[str, Any]) -> None:
            done, total = ev.get("done"), ev.get("total")
            already = ev.get("already") or 0
            if isinstance(done, int) and isinstance(total, int):
                elapsed = max(time.monotonic() - started, 1e-3)
                rate = max(done - already, 0) / elapsed
                row.update(state="moving", done=done, total=total, rate=round(rate),
                           eta_s=round((total - done) / rate, 1) if rate > 0 else None)
            if isinstance(ev.get("name"), str):
                row["name"] = ev["name"][:255]
        return on_event
