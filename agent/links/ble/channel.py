"""A Noise session over GATT messages, with the
:class:`agent.security.session.SecureChannel` surface.

Modelled on ``agent/security/session/channel.py``: all protocol logic stays in the sans-I/O
:class:`SecureConnection`; this class only moves stream bytes between it and one BLE link.
The difference from TCP is that input arrives *pushed* (from a notification pump or the
peripheral's dispatch loop) instead of pulled from a reader, so :meth:`feed` is synchronous
and never blocks the radio callback.

Three BLE-specific rules live here because this is the only place that sees plaintext:

* **Corking.** The initiator holds handshake message 3 until its first requests are queued,
  so msg3 and those requests leave in one Control write (see docs/ble-profile.md: handover
  in three GATT round trips after connect).
* **No bulk over BLE.** A ``manifest`` or ``chunk`` request is answered locally with an error
  (nothing goes on the air), and a chunk reply (or any response larger than the BLE message
  cap) is replaced by an error response: a fetch that picked the BLE session learns at once
  that it needs the LAN link, instead of waiting minutes for megabytes at radio speed.
* **Bounded input.** At most ``max_pending`` undelivered messages / ``max_pending_bytes``;
  a peer that floods us loses its session, the agent keeps its memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from agent.links.ble.messages import (
    CLOSE_NORMAL,
    CLOSE_PROTOCOL,
    CLOSE_TIMEOUT,
    SessionClose,
    SessionData,
    encode_session,
    stream_chunks,
)
from agent.peer import wire
from agent.security.session import (
    ConnectionClosedError,
    FrameTooLarge,
    HandshakeComplete,
    HandshakeError,
    Message,
    SecureConnection,
    SessionError,
)
from radio.base import RadioError

__all__ = [
    "BLE_MAX_MESSAGE",
    "BLE_MAX_RECORD",
    "BleChannelClosed",
    "BleSecureChannel",
    "new_connection",
]

_log = logging.getLogger("shoal.ble")

#: Largest peer-protocol message on a BLE session: the largest JSON message the wire format
#: allows (a `list` of a big catalog). Bulk (chunk replies) is refused outright.
BLE_MAX_MESSAGE = wire.MAX_JSON + 1
#: Noise record size on BLE; both ends use this module, so they agree. Small records bound the
#: partial frame a receiver buffers to 4 KiB instead of 64 KiB.
BLE_MAX_RECORD = 4096
BULK_REFUSAL = "bulk data is not sent over BLE; fetch over the LAN link"
#: Requests only a fetch makes; their answers are bulk (manifests reach hundreds of KiB).
BULK_OPS = frozenset({"manifest", "chunk"})

Transmit = Callable[[bytes], Awaitable[Any]]


def _no_constant(name: str) -> object:
    raise ValueError(f"JSON constant {name} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("a number is too large")
    return value


def _strict_json(body: bytes) -> Any:
    """JSON as the wire decoder reads it: NaN, Infinity and 1e999 are refused, so an ``id``
    can never be a float that int() chokes on (OverflowError) or that compares oddly."""
    return json.loads(body, parse_constant=_no_constant, parse_float=_finite_float)


class BleChannelClosed(ConnectionClosedError, ConnectionError):
    """The BLE session ended. A ConnectionError too, so PeerConnection treats it as EOF."""


def new_connection(static_key: Any, *, initiator: bool, hello: bytes) -> SecureConnection:
    return SecureConnection(
        static_key,
        initiator=initiator,
        local_payload=hello,
        max_message_size=BLE_MAX_MESSAGE,
        max_record_size=BLE_MAX_RECORD,
    )


class BleSecureChannel:
    """One Noise session on one BLE link, identified by ``link_id``.

    ``transmit`` sends one encoded session message (SessionData/SessionClose) to the other
    side and raises :class:`RadioError` if the link is gone. ``on_closed`` is called once, with
    the reason, when the session ends for any reason.
    """

    def __init__(
        self,
        conn: SecureConnection,
        transmit: Transmit,
        *,
        link_id: int,
        peer: str,
        on_closed: Callable[[BleSecureChannel, str], None] | None = None,
        max_pending: int = 64,
        max_pending_bytes: int = 1 << 20,
    ) -> None:
        self._conn = conn
        self._transmit = transmit
        self.link_id = link_id
        self.peer = peer
        self._on_closed = on_closed
        self._max_pending = max_pending
        self._max_pending_bytes = max_pending_bytes
        self._inbox: deque[bytes] = deque()
        self._inbox_bytes = 0
        self._wake = asyncio.Event()
        self._tx_lock = asyncio.Lock()
        self._done: asyncio.Future[HandshakeComplete] = (
            asyncio.get_running_loop().create_future()
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._corked = conn.initiator  # the initiator holds msg3 until uncork()
        self._queued = 0
        self._queued_changed = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.remote_static: bytes = b""
        self.remote_payload: bytes = b""
        self.handshake_hash: bytes = b""
        self.messages_in = 0
        self.messages_out = 0
        self.refused_bulk = 0

    # ------------------------------------------------------------------ SecureChannel surface
    @property
    def peername(self) -> tuple[str, str]:
        return ("ble", self.peer)

    @property
    def connection(self) -> SecureConnection:
        return self._conn

    @property
    def is_closed(self) -> bool:
        return self.closed.is_set()

    async def send_parts(self, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        """The SecureChannel multi-part send. Joined here: over BLE nothing is bulk (chunk
        replies are refused by the outgoing policy), so a copy of a small message is free."""
        await self.send(b"".join(parts))

    async def send(self, payload: bytes | bytearray | memoryview) -> None:
        """Encrypt and transmit one message (queued only, while corked)."""
        if self.closed.is_set():
            raise BleChannelClosed(f"BLE session closed: {self.close_reason}")
        data = self._outgoing_policy(bytes(payload))
        if data is None:
            return
        async with self._tx_lock:
            if self.closed.is_set():
                raise BleChannelClosed(f"BLE session closed: {self.close_reason}")
            try:
                self._conn.send_message(data)
            except SessionError as exc:
                self._finish(f"session error: {exc}", CLOSE_PROTOCOL)
                raise BleChannelClosed(str(exc)) from exc
            self.messages_out += 1
            self._queued += 1
            self._queued_changed.set()
            if not self._corked:
                await self._transmit_pending()

    async def recv(self) -> bytes:
        """Next message; :class:`BleChannelClosed` once the session has ended."""
        while True:
            if self._inbox:
                msg = self._inbox.popleft()
                self._inbox_bytes -= len(msg)
                return msg
            if self.closed.is_set():
                raise BleChannelClosed(f"BLE session closed: {self.close_reason}")
            self._wake.clear()
            await self._wake.wait()

    async def close(self, *, timeout: float = 5.0) -> None:
        """Tell the peer (best effort, bounded by ``timeout``) and end the session."""
        if self.closed.is_set():
            return
        self._finish("closed locally", None)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(min(timeout, 2.0)):
                await self._transmit(encode_session(SessionClose(self.link_id, CLOSE_NORMAL)))

    # ------------------------------------------------------------------ handshake
    async def handshake(self, timeout: float) -> HandshakeComplete:
        """Run the XX handshake: the initiator sends msg1 here; both wait for completion.

        On the initiator, message 3 stays queued (corked) when this returns.
        """
        try:
            if self._conn.initiator:
                self._conn.initiate()
                async with self._tx_lock:
                    await self._transmit_pending()
            async with asyncio.timeout(timeout):
                return await asyncio.shield(self._done)
        except TimeoutError:
            self._finish(f"handshake timed out after {timeout:g} s", CLOSE_TIMEOUT)
            raise HandshakeError(f"BLE handshake timed out after {timeout:g} s") from None
        except BleChannelClosed as exc:
            raise HandshakeError(f"BLE link lost during the handshake: {exc}") from exc
        except SessionError:
            raise
        except RadioError as exc:
            self._finish(f"radio error during the handshake: {exc}", None)
            raise HandshakeError(f"radio error during the handshake: {exc}") from exc

    async def wait_queued(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` messages were queued by send() (for corking); False on timeout."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._queued < count and not self.closed.is_set():
                    self._queued_changed.clear()
                    await self._queued_changed.wait()
        return self._queued >= count

    async def uncork(self) -> None:
        """Send msg3 and everything queued behind it as one stream write."""
        async with self._tx_lock:
            self._corked = False
            if not self.closed.is_set():
                await self._transmit_pending()

    # ------------------------------------------------------------------ input
    def feed(self, data: bytes) -> None:
        """Stream bytes from one SessionData message (synchronous, never raises)."""
        if self.closed.is_set():
            return
        try:
            self._conn.receive_data(data)
            while (event := self._conn.next_event()) is not None:
                if type(event) is Message:
                    self._deliver(event.payload)
                elif type(event) is HandshakeComplete:
                    self.remote_static = event.remote_static
                    self.remote_payload = event.remote_payload
                    self.handshake_hash = event.handshake_hash
                    if not self._done.done():
                        self._done.set_result(event)
        except SessionError as exc:
            self._finish(f"session error: {exc}", CLOSE_PROTOCOL)
            return
        handshaking = not self._conn.initiator and not self._conn.handshake_complete
        if handshaking and not self.closed.is_set():
            self._spawn(self._flush())  # the responder answers msg1 with msg2

    def peer_closed(self, reason: str) -> None:
        """The peer sent SessionClose, or the BLE link dropped."""
        self._finish(reason, None)

    def _deliver(self, payload: bytes) -> None:
        if self.closed.is_set():
            return
        if (
            len(self._inbox) >= self._max_pending
            or self._inbox_bytes + len(payload) > self._max_pending_bytes
        ):
            self._finish("peer floods the session", CLOSE_PROTOCOL)
            return
        self._inbox.append(payload)
        self._inbox_bytes += len(payload)
        self.messages_in += 1
        self._wake.set()

    # ------------------------------------------------------------------ output
    async def _flush(self) -> None:
        async with self._tx_lock:
            if not self.closed.is_set():
                await self._transmit_pending()

    async def _transmit_pending(self) -> None:
        """Send whatever the connection queued (caller holds the tx lock)."""
        data = self._conn.data_to_send()
        try:
            for piece in stream_chunks(data):
                await self._transmit(encode_session(SessionData(self.link_id, piece)))
        except (RadioError, ConnectionError, OSError) as exc:
            self._finish(f"BLE link lost: {exc}", None)
            raise BleChannelClosed(str(exc)) from exc

    def _outgoing_policy(self, payload: bytes) -> bytes | None:
        """Refuse bulk here instead of choking the radio; None = answered locally."""
        if payload[:1] == bytes([wire.KIND_REQUEST]):
            with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError,
                                     OverflowError):
                obj = _strict_json(payload[1:])
                if obj.get("op") in BULK_OPS:
                    self.refused_bulk += 1
                    self._deliver(wire.encode_response(int(obj["id"]), False, BULK_REFUSAL))
                    return None
        if payload[:1] == bytes([wire.KIND_CHUNK]) and len(payload) >= 5:
            (req_id,) = struct.unpack_from(">I", payload, 1)
            self.refused_bulk += 1
            return wire.encode_response(req_id, False, BULK_REFUSAL)
        if len(payload) > BLE_MAX_MESSAGE:
            if payload[:1] == bytes([wire.KIND_RESPONSE]):
                with contextlib.suppress(ValueError, KeyError, TypeError, OverflowError):
                    req_id = int(_strict_json(payload[1:])["id"])
                    self.refused_bulk += 1
                    return wire.encode_response(req_id, False, "answer too large for BLE")
            raise FrameTooLarge(f"message of {len(payload)} bytes is too large for BLE")
        return payload

    # ------------------------------------------------------------------ teardown
    def _finish(self, reason: str, tell_peer: int | None) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        self._wake.set()
        self._queued_changed.set()
        if not self._done.done():
            self._done.set_exception(BleChannelClosed(reason))
            self._done.exception()  # retrieved: nobody may be waiting
        if tell_peer is not None:
            self._spawn(self._send_close(tell_peer))
        _log.debug("BLE session %08x with %s ended: %s", self.link_id, self.peer, reason)
        if self._on_closed is not None:
            try:
                self._on_closed(self, reason)
            except Exception:
                _log.exception("BLE session close callback failed")

    async def _send_close(self, reason: int) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await self._transmit(encode_session(SessionClose(self.link_id, reason)))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, BleChannelClosed):
                _log.debug("BLE session task failed: %r", exc)
