"""Pairing service: the numeric-comparison ceremony over any authenticated session.

One service owns every pending pairing, whichever link carries it (a TCP session dialled
for the purpose, or a BLE session): the code derives from that session's handshake hash,
so both screens agree only when no one sits in the middle. The book-keeping rules (window,
limits, expiry) are the pure :class:`agent.security.pairing.PairingBook`; this module adds
the peer messages (``pair_request``, ``pair_confirm``, ``pair_cancel``) and the waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from agent.errors import ErrorKind, ShoalError
from agent.log import kv
from agent.peer import wire
from agent.peer.connection import Handler, PeerConnection, Refused, RemoteError
from agent.peer.hello import signing_key_of
from agent.security.identity import format_device_id
from agent.security.pairing import (
    DECLINED,
    PairingBook,
    PairingError,
    PendingPairing,
    normalize_code,
)
from agent.security.trust import TrustStore

log = logging.getLogger("shoal.pairing")

Summary = dict[str, object]


class PairingFailed(ShoalError):
    """The ceremony cannot go on (refused, code mismatch, session lost, unknown code)."""

    kind = ErrorKind.REFUSED


class AlreadyPaired(PairingFailed):
    kind = ErrorKind.CONFLICT


class PairingService:
    """Pending pairings for every link, and the peer requests that move them along."""

    def __init__(self, book: PairingBook, trust: TrustStore, name: str, *,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.book = book
        self._trust = trust
        self._name = name[:64]
        self._now = wall_clock
        self._conns: dict[str, PeerConnection] = {}  # pairing id -> the session it runs on
        self._changed = asyncio.Condition()

    def handlers(self) -> dict[str, Handler]:
        """Peer request handlers this service answers (for the router's table)."""
        return {"pair_request": self._on_request, "pair_confirm": self._on_confirm,
                "pair_cancel": self._on_cancel}

    # ----------------------------------------------------------------- our side
    def open_window(self, seconds: float | None) -> float:
        return self.book.open_window(self._now(), seconds)

    def last_seq(self) -> int:
        """The newest pairing's sequence number: wait(after=...) shows only newer ones."""
        return self.book.last_seq

    def window_open(self) -> bool:
        return self.book.window_open(self._now())

    async def close_window(self, *, notify_timeout: float = 2.0) -> Summary:
        """Close the pairing window (a stranger flooding requests, or simply done): no new
        incoming pairing is accepted, and unconfirmed incoming ones are cancelled here and,
        best effort, on the other device so its user is not left waiting."""
        was_open, cancelled = self.book.close_window(self._now())
        for p in cancelled:
            conn = self._conns.pop(p.pairing_id, None)
            if conn is not None and not conn.closed.is_set():
                try:
                    await conn.request("pair_cancel", {}, timeout=notify_timeout)
                except (RemoteError, ConnectionError, TimeoutError) as e:
                    log.info("pairing cancel not delivered", extra=kv(peer=p.peer_name,
                                                                      reason=e))
        if cancelled:
            log.info("pairing window closed", extra=kv(cancelled=len(cancelled)))
        await self._notify()
        return {"was_open": was_open, "cancelled": len(cancelled)}

    async def decline(self, pairing_id: str, *, notify_timeout: float = 2.0) -> Summary:
        """The user declined (the codes differ, or they did not start this): the pairing
        ends on this device now and, best effort, on the other one, whose user would
        otherwise wait for an answer that never comes."""
        try:
            p = self.book.decline(pairing_id, DECLINED)
        except PairingError as e:
            raise PairingFailed(str(e)) from None
        if p.cancelled != DECLINED:  # it had finished already: nothing to tell anyone
            return p.summary()
        conn = self._conns.pop(pairing_id, None)
        if conn is not None and not conn.closed.is_set():
            try:
                await conn.request("pair_cancel", {}, timeout=notify_timeout)
            except (RemoteError, ConnectionError, TimeoutError) as e:
                log.info("pairing cancel not delivered", extra=kv(peer=p.peer_name, reason=e))
        log.info("pairing declined", extra=kv(peer=p.peer_name))
        await self._notify()
        return p.summary()

    async def expire(self) -> None:
        """Cancel pairings nobody confirmed in time, and wake whoever waits for them."""
        before = len(self.book.active())
        self.book.expire(self._now())
        if len(self.book.active()) != before:
            await self._notify()

    async def start(self, conn: PeerConnection, *, timeout: float = 10.0) -> Summary:
        """Ask the peer on *conn* to pair; returns the pending pairing (with its code)."""
        if self._trust.is_trusted(conn.peer_id):
            raise AlreadyPaired(
                f"already paired with {conn.name} ({format_device_id(conn.peer_id)})")
        try:
            answer = await conn.request("pair_request", {"name": self._name}, timeout=timeout)
        except (RemoteError, ConnectionError, TimeoutError) as e:
            raise PairingFailed(f"{conn.name} refused pairing: {e}") from None
        peer_name = answer.get("name") if isinstance(answer, dict) else None
        p = self._add(conn, peer_name if isinstance(peer_name, str) else conn.name,
                      incoming=False)
        await self._notify()
        return p.summary()

    async def confirm(self, code_text: str) -> Summary:
        """The user confirmed that *code* is on both screens."""
        code = normalize_code(code_text)
        try:
            p = self.book.find_by_code(code)
        except PairingError as e:
            raise PairingFailed(str(e)) from None
        conn = self._conns.get(p.pairing_id)
        if conn is None or conn.closed.is_set():
            p.cancelled = "connection lost"
            raise PairingFailed("the connection to the other device was lost; start again")
        p.local_confirmed = True
        try:
            await conn.request("pair_confirm", {"code": code})
        except (RemoteError, ConnectionError, TimeoutError) as e:
            p.cancelled = str(e)
            raise PairingFailed(f"{p.peer_name} did not accept: {e}") from None
        self._maybe_finish(p)
        await self._notify()
        return p.summary()

    async def wait(self, pairing_id: str | None, timeout: float, *, after: int = 0,
                   code: str | None = None) -> Summary:
        """Wait until a pairing completes/cancels, or (no id) until an incoming one appears
        that is newer than sequence number *after* (see :meth:`last_seq`) and, with *code*,
        shows that code: a waiting user sees the request they are expecting, not an older
        one still pending from someone else."""
        def ready() -> Summary | None:
            if pairing_id is None:
                p = self.book.newer_incoming(after, code)
                return p.summary() if p is not None else None
            p = self.book.pending.get(pairing_id)
            if p is None:
                raise PairingFailed("unknown pairing")
            return p.summary() if (p.complete or p.cancelled) else None

        async with asyncio.timeout(timeout), self._changed:
            while (res := ready()) is None:
                await self._changed.wait()
            return res

    def pending(self) -> list[PendingPairing]:
        """Pairings still in progress: expired ones are gone at once, not at the next
        housekeeping round."""
        self.book.expire(self._now())
        return self.book.active()

    def session_of(self, pairing_id: str) -> PeerConnection | None:
        """The session a pending pairing runs on (its code derives from that handshake)."""
        return self._conns.get(pairing_id)

    async def connection_closed(self, conn: PeerConnection) -> None:
        """A session ended: pairings it carried can no longer finish."""
        for pid, p in self.book.pending.items():
            if self._conns.get(pid) is conn and not p.complete and p.cancelled is None:
                p.cancelled = "connection lost before both sides confirmed"
        for pid in [pid for pid, c in self._conns.items() if c is conn]:
            del self._conns[pid]  # finished pairings too: never keep a closed session alive
        await self._notify()

    # ----------------------------------------------------------------- the peer's side
    async def _on_request(self, conn: PeerConnection, req: wire.Request) -> Summary:
        name = req.args["name"]
        try:
            p = self._add(conn, str(name), incoming=True)
        except PairingError as e:
            raise Refused(str(e)) from None
        log.info("pairing requested", extra=kv(peer=p.peer_name, code=p.code))
        await self._notify()
        return {"name": self._name}

    async def _on_confirm(self, conn: PeerConnection, req: wire.Request) -> Summary:
        code = req.args["code"]
        for pid, p in self.book.pending.items():
            if self._conns.get(pid) is conn and p.cancelled is None and not p.complete:
                if code != p.code:
                    p.cancelled = "the other device confirmed a different code"
                    await self._notify()
                    raise Refused("code mismatch: pairing cancelled")
                p.remote_confirmed = True
                self._maybe_finish(p)
                await self._notify()
                return {"complete": p.complete}
        raise Refused("no pairing in progress on this session")

    async def _on_cancel(self, conn: PeerConnection, req: wire.Request) -> Summary:
        for p in self.book.pending.values():
            if p.peer_id == conn.peer_id and p.cancelled is None and not p.complete:
                p.cancelled = "cancelled by the other device"
        await self._notify()
        return {}

    # ----------------------------------------------------------------- shared
    def _add(self, conn: PeerConnection, peer_name: str, *, incoming: bool) -> PendingPairing:
        p = self.book.add(
            peer_id=conn.peer_id, peer_public_key=conn.peer_key, peer_name=peer_name[:64],
            handshake_hash=conn.handshake_hash, incoming=incoming, now=self._now(),
            peer_signing_key=signing_key_of(conn.hello))
        self._conns[p.pairing_id] = conn
        for pid in [pid for pid in self._conns if pid not in self.book.pending]:
            del self._conns[pid]  # the book forgot it (bounded): so does the session map
        return p

    def _maybe_finish(self, p: PendingPairing) -> None:
        if p.complete and not self._trust.is_trusted(p.peer_id):
            self._trust.add(p.peer_id, p.peer_public_key, p.peer_name,
                            signing_key=p.peer_signing_key)
            log.info("paired", extra=kv(peer=p.peer_name, id=format_device_id(p.peer_id)))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()
