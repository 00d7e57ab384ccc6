"""Thin asyncio adapter running a :class:`SecureConnection` over a stream pair.

All protocol logic lives in :mod:`agent.security.session.records`; this module only moves
bytes, applies
the handshake timeout and uses ``drain()`` for backpressure. The channel owns the stream once
:func:`open_channel` is called: on a handshake failure or a session error the transport is
aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .noise import HandshakeError, SessionError
from .records import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_PROLOGUE,
    Buffer,
    ConnectionClosed,
    HandshakeComplete,
    Message,
    SecureConnection,
)

__all__ = ["READ_SIZE", "ConnectionClosedError", "SecureChannel", "open_channel"]

#: Bytes requested from the StreamReader per read.
READ_SIZE = 256 * 1024


class ConnectionClosedError(SessionError):
    """The peer closed the stream cleanly, or the channel was closed locally."""


def _abort(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.transport.abort()


class SecureChannel:
    """An authenticated, encrypted message channel (returned by :func:`open_channel`)."""

    def __init__(
        self,
        conn: SecureConnection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handshake: HandshakeComplete,
    ) -> None:
        self._conn = conn
        self._reader = reader
        self._writer = writer
        self.remote_static: bytes = handshake.remote_static
        self.remote_payload: bytes = handshake.remote_payload
        self.handshake_hash: bytes = handshake.handshake_hash
        self._recv_lock = asyncio.Lock()
        self._peer_closed = False
        self._closed = False

    @property
    def peername(self) -> Any:
        return self._writer.get_extra_info("peername")

    @property
    def connection(self) -> SecureConnection:
        """The underlying sans-I/O connection (for introspection)."""
        return self._conn

    async def send(self, payload: Buffer) -> None:
        """Encrypt and write one message, then wait for the transport to drain."""
        await self.send_parts((payload,))

    async def send_parts(self, parts: Sequence[Buffer]) -> None:
        """Encrypt and write the concatenation of ``parts`` as one message, never joining
        them (a served chunk goes from the store's buffer to the cipher in one copy)."""
        if self._closed:
            raise ConnectionClosedError("channel is closed")
        try:
            self._conn.send_parts(parts)
        except SessionError:
            _abort(self._writer)
            raise
        # send_parts + write happen without a suspension point, so concurrent sends never
        # interleave records.
        self._writer.write(self._conn.data_to_send())
        await self._writer.drain()

    async def recv(self) -> bytes:
        """Next message; :class:`ConnectionClosedError` on clean EOF, :class:`SessionError`
        on bad data (the transport is then aborted)."""
        async with self._recv_lock:
            conn = self._conn
            while True:
                if self._closed:
                    raise ConnectionClosedError("channel is closed")
                if self._peer_closed:
                    raise ConnectionClosedError("connection closed by peer")
                try:
                    event = conn.next_event()
                    if event is None:
                        data = await self._reader.read(READ_SIZE)
                        conn.receive_data(data)
                        continue
                except SessionError:
                    _abort(self._writer)
                    raise
                if type(event) is Message:
                    return event.payload
                if type(event) is ConnectionClosed:
                    self._peer_closed = True
                    continue
                raise AssertionError(f"unexpected event {event!r}")  # pragma: no cover

    async def close(self, *, timeout: float = 5.0) -> None:
        """Flush pending data and close the stream (idempotent).

        If the peer does not take the buffered data within ``timeout`` seconds the transport is
        aborted instead, so close() never hangs on a stalled peer.
        """
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        try:
            async with asyncio.timeout(timeout):
                await self._writer.wait_closed()
        except TimeoutError:
            _abort(self._writer)
        except OSError:  # reset while flushing: nothing left to do
            pass

    async def __aenter__(self) -> SecureChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def _handshake(
    conn: SecureConnection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> HandshakeComplete:
    if conn.initiator:
        conn.initiate()
    while True:
        out = conn.data_to_send()
        if out:
            writer.write(out)
            await writer.drain()
        event = conn.next_event()
        if event is None:
            conn.receive_data(await reader.read(READ_SIZE))
            continue
        if isinstance(event, HandshakeComplete):
            out = conn.data_to_send()  # initiator: message 3
            if out:
                writer.write(out)
                await writer.drain()
            return event
        raise HandshakeError(f"unexpected event during handshake: {event!r}")  # pragma: no cover


async def open_channel(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    static_key: X25519PrivateKey,
    *,
    initiator: bool,
    local_payload: bytes = b"",
    handshake_timeout: float | None = 10.0,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    prologue: bytes = DEFAULT_PROLOGUE,
) -> SecureChannel:
    """Run the Noise_XX handshake over ``reader``/``writer`` and return a :class:`SecureChannel`.

    Raises :class:`HandshakeError` (including on timeout and on EOF during the handshake) or
    another :class:`SessionError`; the transport is aborted in that case. The caller decides
    whether ``remote_static`` is acceptable (pinning, pairing) and closes the channel if not.
    """
    conn = SecureConnection(
        static_key,
        initiator=initiator,
        local_payload=local_payload,
        prologue=prologue,
        max_message_size=max_message_size,
    )
    try:
        async with asyncio.timeout(handshake_timeout):
            event = await _handshake(conn, reader, writer)
    except TimeoutError:
        _abort(writer)
        raise HandshakeError(f"handshake timed out after {handshake_timeout} s") from None
    except OSError as exc:  # reset/refused mid-handshake
        _abort(writer)
        raise HandshakeError(f"transport failed during the handshake: {exc!r}") from exc
    except BaseException:
        _abort(writer)
        raise
    return SecureChannel(conn, reader, writer, event)
