"""Peripheral role: advertise, serve NodeInfo / public entries / catalog paging, accept sessions.

Everything that arrives on Control is untrusted radio input. The write callback only feeds
the framing reassembler (bounded per central, never raises); one dispatch task decodes whole
messages and never awaits the radio itself, so a slow or hostile central cannot stall the
others. Replies and handshake answers go out from small tasks, bounded in number.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.links.ble.catalog import CatalogSnapshot
from agent.links.ble.channel import BleSecureChannel, new_connection
from agent.links.ble.host import BleHost
from agent.links.ble.messages import (
    CLOSE_BUSY,
    CLOSE_SHUTDOWN,
    SessionClose,
    SessionData,
    SessionMessageError,
    decode_session,
    encode_session,
    is_session_message,
)
from agent.links.ble.tag import TAG_EPOCH_SECONDS, node_tag, tag_epoch
from agent.links.ble.tasks import TaskSet
from agent.security.session import SessionError
from radio.base import Advertiser, GattServer, RadioError
from radio.ble import PeripheralChannel
from radio.ble.bless_peripheral import UNKNOWN_CENTRAL
from radio.ble.profile import (
    BLE_PROFILE_VERSION,
    ERR_BAD_REQUEST,
    ERR_BUSY,
    ERR_UNSUPPORTED,
    MAX_PAGE_ENTRIES,
    NODEINFO_UUID,
    SERVICE_UUID,
    Advert,
    CatalogPageRequest,
    ControlError,
    ProfileError,
    decode_control,
    encode_control,
    resource_slot_uuid,
    serve_page,
    shoal_service_spec,
)

__all__ = ["FRAMED_MAX_MESSAGE", "PeripheralLimits", "PeripheralRole"]

_log = logging.getLogger("shoal.ble")

#: Reassembly cap for one framed message, either direction: a SessionData (2048 + 5 bytes) or a
#: full catalog page (14 + 64 * 20) fits; a hostile central cannot make us buffer more.
FRAMED_MAX_MESSAGE = 4096


@dataclass(frozen=True)
class PeripheralLimits:
    max_centrals: int = 8  # reassemblers kept (least recently active evicted)
    max_sessions: int = 4  # Noise sessions at once, handshaking or open
    sessions_per_central: int = 2
    max_replies: int = 4  # plaintext replies being notified at once; more are dropped
    handshake_timeout: float = 10.0
    housekeeping_interval: float = 1.0
    tag_period: float = TAG_EPOCH_SECONDS


@dataclass
class _Session:
    central: str
    channel: BleSecureChannel
    task: asyncio.Task[None] | None = None


@dataclass
class PeripheralCounters:
    malformed: int = 0
    busy: int = 0
    spoofed: int = 0
    dropped_replies: int = 0
    pages_served: int = 0
    sessions_opened: int = 0
    sessions_attached: int = 0
    handshake_failures: int = 0
    dispatch_errors: int = 0


class PeripheralRole:
    """The GATT server side of a node. ``wall_clock`` drives tag epochs (peers must agree)."""

    def __init__(
        self,
        server: GattServer,
        advertiser: Advertiser | None,
        host: BleHost,
        *,
        slots: int,
        limits: PeripheralLimits | None = None,
        wall_clock: Callable[[], float] = time.time,
        on_attached: Callable[[Any], None] | None = None,
    ) -> None:
        self._server = server
        self._advertiser = advertiser
        self._host = host
        self._slots = slots
        self._limits = limits or PeripheralLimits()
        self._wall = wall_clock
        self._on_attached = on_attached
        self._pch: PeripheralChannel | None = None
        self._sessions: dict[int, _Session] = {}
        self._tasks = TaskSet()
        self._reply_slots = 0
        self._snapshot: CatalogSnapshot | None = None
        self._advert: bytes | None = None
        self.counters = PeripheralCounters()
        self.running = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        lim = self._limits
        self._pch = PeripheralChannel(
            self._server, max_message_size=FRAMED_MAX_MESSAGE, max_centrals=lim.max_centrals,
            queue_size=64,
        )
        await self._server.start(
            shoal_service_spec(self._slots), self._on_write, self._on_disconnect
        )
        self.running = True
        self.refresh(force=True)
        await self._advertise()
        self._spawn(self._dispatch(), "ble-dispatch")
        self._spawn(self._housekeeping(), "ble-peripheral-housekeeping")

    async def stop(self) -> None:
        self.running = False
        await self._tasks.cancel_all()
        sessions = list(self._sessions.values())
        with contextlib.suppress(Exception):  # best effort, bounded: tell centrals we go
            async with asyncio.timeout(1.0):
                await asyncio.gather(*(
                    self._send(s.central, encode_session(
                        SessionClose(s.channel.link_id, CLOSE_SHUTDOWN)))
                    for s in sessions), return_exceptions=True)
        for session in sessions:
            session.channel.peer_closed("agent stopping")
        self._sessions.clear()
        if self._advertiser is not None:
            with contextlib.suppress(Exception):
                await self._advertiser.stop()
        await self._server.stop()

    # ------------------------------------------------------------------ plaintext state
    @property
    def snapshot(self) -> CatalogSnapshot | None:
        return self._snapshot

    def current_tag(self) -> bytes:
        return node_tag(self._host.device_id, tag_epoch(self._wall(), self._limits.tag_period))

    def refresh(self, force: bool = False) -> bool:
        """Re-read the catalog; update NodeInfo and slots if it changed. True if it did."""
        snap = self._host.catalog(self._slots)
        if not force and self._snapshot is not None and snap.key == self._snapshot.key:
            return False
        self._snapshot = snap
        if not self.running:
            return True
        self._server.set_value(NODEINFO_UUID, snap.nodeinfo.encode())
        for slot in range(self._slots):
            value = snap.entries[slot].encode() if slot < len(snap.entries) else b""
            self._server.set_value(resource_slot_uuid(slot), value)
        _log.debug("BLE catalog: %d public entries, generation %08x",
                   len(snap.entries), snap.generation)
        return True

    async def _advertise(self) -> None:
        if self._advertiser is None or self._snapshot is None:
            return
        data = Advert(BLE_PROFILE_VERSION, self.current_tag(), self._snapshot.flags).encode()
        if data != self._advert:
            await self._advertiser.start(SERVICE_UUID, data)
            self._advert = data

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(self._limits.housekeeping_interval)
            try:
                self.refresh()
                await self._advertise()  # new epoch (tag) or new flags
            except (RadioError, ProfileError) as exc:
                _log.warning("BLE advertising/catalog update failed: %s", exc)

    # ------------------------------------------------------------------ radio callbacks
    def _on_write(self, central: str, data: bytes) -> None:
        """Runs inside the ATT write: feed the reassembler and return; never raises."""
        try:
            assert self._pch is not None
            self._pch.on_write(central, data)
        except Exception:
            self.counters.malformed += 1
            _log.debug("Control write from %s rejected", central, exc_info=True)

    def _on_disconnect(self, central: str) -> None:
        try:
            if self._pch is not None:
                self._pch.on_disconnect(central)
            for session in list(self._sessions.values()):
                if session.central == central:
                    session.channel.peer_closed("BLE link lost")
        except Exception:
            _log.exception("BLE disconnect handling failed")

    # ------------------------------------------------------------------ dispatch
    async def _dispatch(self) -> None:
        assert self._pch is not None
        while True:
            central, message = await self._pch.receive()
            try:
                self._handle(central, message)
            except Exception:  # a bug here must not stop the peripheral for everyone
                self.counters.dispatch_errors += 1
                _log.exception("BLE dispatch failed for a message from %s", central)

    def _handle(self, central: str, message: bytes) -> None:
        if not message:
            self.counters.malformed += 1
            return
        if is_session_message(message):
            try:
                msg = decode_session(message)
            except SessionMessageError:
                self.counters.malformed += 1
                return
            if isinstance(msg, SessionData):
                self._session_data(central, msg)
            else:
                self._session_close(central, msg)
            return
        try:
            request = decode_control(message)
        except ProfileError:
            self.counters.malformed += 1
            self._reply(central, encode_control(ControlError(ERR_BAD_REQUEST)))
            return
        if not isinstance(request, CatalogPageRequest):
            self._reply(central, encode_control(ControlError(ERR_UNSUPPORTED)))
            return
        snap = self._snapshot
        if snap is None:
            self._reply(central, encode_control(ControlError(ERR_BUSY)))
            return
        request = CatalogPageRequest(request.start, min(request.max_entries, MAX_PAGE_ENTRIES))
        page = serve_page(request, snap.entries, snap.generation)
        self.counters.pages_served += 1
        self._reply(central, encode_control(page))

    def _reply(self, central: str, message: bytes) -> None:
        if self._reply_slots >= self._limits.max_replies:
            self.counters.dropped_replies += 1
            return
        self._reply_slots += 1
        self._spawn(self._send_reply(central, message), "ble-reply")

    async def _send_reply(self, central: str, message: bytes) -> None:
        try:
            await self._send(central, message)
        except RadioError as exc:
            _log.debug("BLE reply to %s failed: %s", central, exc)
        finally:
            self._reply_slots -= 1

    async def _send(self, central: str, message: bytes) -> None:
        assert self._pch is not None
        await self._pch.send(central, message)

    # ------------------------------------------------------------------ sessions
    def _session_data(self, central: str, msg: SessionData) -> None:
        session = self._sessions.get(msg.link_id)
        if session is None:
            if not self._admit(central):
                self.counters.busy += 1
                self._reply(central, encode_session(SessionClose(msg.link_id, CLOSE_BUSY)))
                return
            session = self._open_session(central, msg.link_id)
        elif session.central != central:
            self.counters.spoofed += 1  # another central cannot inject into this link
            return
        session.channel.feed(msg.data)

    def _session_close(self, central: str, msg: SessionClose) -> None:
        session = self._sessions.get(msg.link_id)
        if session is None:
            return
        if session.central != central:
            self.counters.spoofed += 1
            return
        session.channel.peer_closed(msg.text)

    def _admit(self, central: str) -> bool:
        lim = self._limits
        if len(self._sessions) >= lim.max_sessions:
            return False
        if central == UNKNOWN_CENTRAL:  # anonymous centrals share one id: link ids tell them apart
            return True
        mine = sum(1 for s in self._sessions.values() if s.central == central)
        return mine < lim.sessions_per_central

    def _open_session(self, central: str, link_id: int) -> _Session:
        host = self._host

        async def transmit(message: bytes) -> None:
            await self._send(central, message)

        channel = BleSecureChannel(
            new_connection(host.static_key, initiator=False, hello=host.hello()),
            transmit, link_id=link_id, peer=central, on_closed=self._session_closed,
        )
        session = _Session(central, channel)
        self._sessions[link_id] = session
        self.counters.sessions_opened += 1
        session.task = self._spawn(self._accept(session), "ble-accept")
        return session

    async def _accept(self, session: _Session) -> None:
        channel = session.channel
        try:
            await channel.handshake(self._limits.handshake_timeout)
        except SessionError as exc:
            self.counters.handshake_failures += 1
            _log.info("BLE handshake from %s failed: %s", session.central, exc)
            return
        try:
            conn = self._host.attach(channel, outgoing=False, rssi=None)
        except Exception as exc:  # ValueError: bad hello; RuntimeError: node stopping
            _log.info("BLE session from %s not attached: %s", session.central, exc)
            await channel.close()
            return
        self.counters.sessions_attached += 1
        if self._on_attached is not None:
            self._on_attached(conn)

    def _session_closed(self, channel: BleSecureChannel, reason: str) -> None:
        session = self._sessions.get(channel.link_id)
        if session is not None and session.channel is channel:
            del self._sessions[channel.link_id]

    def sessions(self) -> list[dict[str, Any]]:
        return [
            {"link_id": f"{lid:08x}", "central": s.central,
             "established": bool(s.channel.handshake_hash), "in": s.channel.messages_in,
             "out": s.channel.messages_out}
            for lid, s in self._sessions.items()
        ]

    # ------------------------------------------------------------------ tasks
    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        return self._tasks.spawn(coro, name)
