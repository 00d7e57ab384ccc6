"""Route adverts between paired neighbours: the asyncio side of agent/relay/routes.py.

Why a separate service: the relay forwards, the DHT finds; neither knows the shape of the
mesh near this device. This one keeps :class:`RouteTable` fed: a neighbour is a paired device
with a live direct (LAN) session; each neighbour is told, by the event ``routes``, which
paired devices this one reaches and in how many hops, again whenever that changes (at most
once per ``debounce`` seconds). An advert from anyone but a paired neighbour is ignored,
and one that breaks the schema ends nothing but itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from agent.log import kv
from agent.peer.connection import PeerConnection
from agent.ports import Spawner, TrustView
from agent.relay.routes import RouteTable

log = logging.getLogger("shoal.relay")

EVENT = "routes"
DIRECT = "lan"
RECONCILE_S = 5.0  # neighbours are re-derived from the sessions this often (pairing changes)


class _Sessions(Protocol):
    def sessions(self) -> list[PeerConnection]: ...


def parse_advert(args: dict[str, Any], limit: int) -> list[tuple[bytes, int]] | None:
    """The entries of a ``routes`` event, or None when malformed (strict: pairs of a 64-hex
    device ID and an integer hop count 1..16, at most *limit* of them)."""
    rows = args.get("r")
    if not isinstance(rows, list) or len(rows) > limit:
        return None
    out: list[tuple[bytes, int]] = []
    for row in rows:
        if not (isinstance(row, list) and len(row) == 2 and isinstance(row[0], str)
                and len(row[0]) == 64 and isinstance(row[1], int)
                and not isinstance(row[1], bool) and 1 <= row[1] <= 16):
            return None
        try:
            out.append((bytes.fromhex(row[0]), row[1]))
        except ValueError:
            return None
    return out


class RouteService:
    """Keeps the route table current and tells the neighbours what this device reaches."""

    def __init__(self, table: RouteTable, *, sessions: _Sessions, trust: TrustView,
                 spawn: Spawner, debounce: float = 0.2) -> None:
        self.table = table
        self._sessions = sessions
        self._trust = trust
        self._spawn = spawn
        self._debounce = debounce
        self._dirty = asyncio.Event()
        self.adverts_in = 0
        self.adverts_out = 0
        self.refused = 0

    # ----------------------------------------------------------------- wiring
    def next_hop(self, target: bytes) -> bytes | None:
        return self.table.next_hop(target)

    def session_opened(self, conn: PeerConnection) -> None:
        if conn.transport == DIRECT:
            self._reconcile()

    async def connection_closed(self, conn: PeerConnection) -> None:
        if conn.transport == DIRECT:
            self._reconcile()

    def unpaired(self, peer_id: bytes) -> None:
        self._reconcile()

    def on_event(self, conn: PeerConnection, op: str, args: dict[str, Any]) -> None:
        self._reconcile()
        if conn.transport != DIRECT or conn.peer_id not in self.table.neighbours():
            self.refused += 1
            return
        rows = parse_advert(args, self.table.max_entries)
        if rows is None:
            self.refused += 1
            log.info("malformed route advert ignored", extra=kv(peer=conn.name))
            return
        self.adverts_in += 1
        if self.table.advert(conn.peer_id, rows):
            self._dirty.set()

    # ----------------------------------------------------------------- the loop
    async def run(self) -> None:
        self._reconcile()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECONCILE_S):
                    await self._dirty.wait()
            if not self._dirty.is_set():
                self._reconcile()
                continue
            await asyncio.sleep(self._debounce)  # several changes, one advert
            self._dirty.clear()
            await self._broadcast()

    def _direct(self) -> dict[bytes, PeerConnection]:
        out: dict[bytes, PeerConnection] = {}
        for s in self._sessions.sessions():
            if (s.transport == DIRECT and not s.closed.is_set()
                    and self._trust.is_trusted(s.peer_id)):
                out.setdefault(s.peer_id, s)
        return out

    def _reconcile(self) -> None:
        live = self._direct()
        changed = False
        for peer in self.table.neighbours():
            if peer not in live:
                changed |= self.table.neighbour_down(peer)
        for peer in live:
            changed |= self.table.neighbour_up(peer)
        if changed:
            self._dirty.set()

    async def _broadcast(self) -> None:
        sends: list[Any] = []
        links: Sequence[PeerConnection] = list(self._direct().values())
        for link in links:
            rows = [[t.hex(), h] for t, h in self.table.export(link.peer_id)]
            sends.append(link.send_event(EVENT, {"r": rows}))
        results = await asyncio.gather(*sends, return_exceptions=True)
        self.adverts_out += sum(1 for r in results if not isinstance(r, BaseException))

    def stats(self) -> dict[str, object]:
        return {"neighbours": len(self.table.neighbours()), "reachable": self.table.size(),
                "adverts_in": self.adverts_in, "adverts_out": self.adverts_out,
                "refused": self.refused}
