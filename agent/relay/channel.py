"""The end-to-end Noise session inside a relay circuit, with the SecureChannel surface.

Modelled on ``agent/links/ble/channel.py``: all protocol logic stays in the sans-I/O
:class:`SecureConnection`; this class moves its ciphertext in and out of circuit frames,
which the relay service sends over the direct session to the first (or last) relay. The
relays see only these frames: Noise inside Noise, with the same identity keys and hello as
a direct session, so the far end authenticates this device, not the relays, and applies
its own trust to it.

Two rules live here because only the ends can apply them:

* **Whole records per frame.** The inner records are at most one frame's payload, and a
  frame carries whole records only, so the receiving end decrypts each record in place from
  the received message (no reassembly buffer) and the relays pass views along.
* **Flow control.** A sender has at most :data:`~agent.peer.wire.RELAY_WINDOW` data bytes
  in flight; the receiving end returns credit as it takes them in, and defers it while its
  own undelivered messages exceed the window. That is what bounds every relay's queue: a
  relay may close a circuit whose sender ignores it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence

from agent.peer import wire
from agent.relay.circuits import credit_payload
from agent.security.session import (
    Buffer,
    ConnectionClosedError,
    HandshakeComplete,
    HandshakeError,
    Message,
    SecureConnection,
    SessionError,
)

log = logging.getLogger("shoal.relay")

#: Domain separation: a relayed session's handshake hash never equals a direct one's.
RELAY_PROLOGUE = b"shoal/1 relay"
#: Inner record size: one record (with its length prefix) fills at most one frame.
INNER_RECORD = wire.RELAY_MAX_DATA - 2
#: Undelivered messages (bytes) past which credit waits for the reader.
MAX_INBOX = wire.RELAY_WINDOW

#: Sends one frame of the given type (RELAY_DATA/CREDIT) with this payload on the hop.
Transmit = Callable[[int, Sequence[Buffer]], Awaitable[None]]
#: The channel ended: (channel, reason, tell the far end).
ClosedCallback = Callable[["RelayChannel", str, bool], None]


class RelayChannelClosed(ConnectionClosedError, ConnectionError):
    """The circuit ended cleanly (closed by either end, or a relay went away)."""


class RelayCircuitError(SessionError):
    """The circuit ended on an error (tampered ciphertext, a bad frame, a flood)."""


def new_connection(static_key: object, *, initiator: bool, hello: bytes) -> SecureConnection:
    return SecureConnection(static_key,  # type: ignore[arg-type]
                            initiator=initiator, local_payload=hello,
                            prologue=RELAY_PROLOGUE, max_record_size=INNER_RECORD)


def pieces(out: bytearray) -> Iterator[memoryview]:
    """*out* (whole records from the connection) as frame payloads of whole records, each
    at most RELAY_MAX_DATA bytes: views, not copies."""
    mv = memoryview(out)
    n = len(out)
    start = pos = 0
    while pos < n:
        end = pos + 2 + ((out[pos] << 8) | out[pos + 1])
        if end - start > wire.RELAY_MAX_DATA and pos > start:
            yield mv[start:pos]
            start = pos
        pos = end
    if start < n:
        yield mv[start:n]


def whole_records(data: memoryview) -> bool:
    """Does *data* hold whole length-prefixed records only (what :func:`pieces` sends)?"""
    n = data.nbytes
    pos = 0
    while pos + 2 <= n:
        pos += 2 + ((data[pos] << 8) | data[pos + 1])
    return pos == n


class RelayChannel:
    """One end of a circuit. The service feeds it received frames (:meth:`feed`,
    :meth:`credit`, :meth:`peer_closed`); the peer protocol uses the channel surface."""

    def __init__(self, conn: SecureConnection, transmit: Transmit, *, peer: str,
                 on_closed: ClosedCallback, window: int = wire.RELAY_WINDOW) -> None:
        self._conn = conn
        self._transmit = transmit
        self.peer = peer  # what the logs call the far end before the handshake names it
        self._on_closed = on_closed
        self._window = window
        self._inbox: deque[bytes] = deque()
        self._inbox_bytes = 0
        self._wake = asyncio.Event()
        self._outq: deque[bytearray] = deque()
        self._tx_lock = asyncio.Lock()
        self._inflight = 0
        self._credit = asyncio.Event()
        self._owed = 0
        self._done: asyncio.Future[HandshakeComplete] = (
            asyncio.get_running_loop().create_future())
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = asyncio.Event()
        self.close_reason = ""
        self._error = False
        self.remote_static: bytes = b""
        self.remote_payload: bytes = b""
        self.handshake_hash: bytes = b""
        self.bytes_in = 0
        self.bytes_out = 0

    @property
    def peername(self) -> tuple[str, str]:
        return ("relay", self.peer)

    @property
    def connection(self) -> SecureConnection:
        return self._conn

    # ------------------------------------------------------------------ channel surface
    async def send(self, payload: Buffer) -> None:
        await self.send_parts((payload,))

    async def send_parts(self, parts: Sequence[Buffer]) -> None:
        """Encrypt one message (parts never joined) and send it in frames, within the
        window."""
        self._check_open()
        try:
            self._conn.send_parts(parts)
        except SessionError as e:
            self._finish(f"session error: {e}", tell=True, error=True)
            raise
        self._queue_out()
        await self._flush()

    async def recv(self) -> bytes:
        """Next message; raises once the circuit ended and everything was read."""
        while True:
            if self._inbox:
                msg = self._inbox.popleft()
                self._inbox_bytes -= len(msg)
                self._maybe_credit()
                return msg
            self._check_open()
            self._wake.clear()
            await self._wake.wait()

    async def close(self, *, timeout: float = 5.0) -> None:
        """End the circuit and tell the far end (the service sends the close frame)."""
        self._finish("closed locally", tell=True)

    # ------------------------------------------------------------------ handshake
    async def handshake(self, timeout: float) -> HandshakeComplete:
        """Run Noise XX inside the circuit (the initiator sends message 1 here)."""
        try:
            async with asyncio.timeout(timeout):
                if self._conn.initiator:
                    self._conn.initiate()
                    self._queue_out()
                    await self._flush()
                return await asyncio.shield(self._done)
        except TimeoutError:
            self._finish(f"handshake timed out after {timeout:g} s", tell=True, error=True)
            raise HandshakeError(f"relayed handshake timed out after {timeout:g} s") from None
        except (RelayChannelClosed, RelayCircuitError) as e:
            raise HandshakeError(f"relay circuit ended during the handshake: {e}") from e

    # ------------------------------------------------------------------ input (service)
    def feed(self, data: memoryview) -> None:
        """A data frame's payload: whole inner records (synchronous, never raises)."""
        if self.closed.is_set():
            return
        if not whole_records(data):  # never a partial record waiting for more frames
            self._finish("a frame that is not whole records", tell=True, error=True)
            return
        try:
            self._conn.receive_data(data)
            while (event := self._conn.next_event()) is not None:
                if type(event) is Message:
                    self._inbox.append(event.payload)
                    self._inbox_bytes += len(event.payload)
                    self._wake.set()
                elif type(event) is HandshakeComplete:
                    self.remote_static = event.remote_static
                    self.remote_payload = event.remote_payload
                    self.handshake_hash = event.handshake_hash
                    if not self._done.done():
                        self._done.set_result(event)
        except SessionError as e:  # tampered or garbled ciphertext: this circuit ends
            self._finish(f"session error: {e}", tell=True, error=True)
            return
        self.bytes_in += data.nbytes
        self._owed += data.nbytes
        self._queue_out()  # handshake answers (message 2, message 3)
        if self._outq:
            self._spawn(self._flush())
        self._maybe_credit()

    def credit(self, n: int) -> None:
        """The far end took *n* more bytes: the window reopens."""
        self._inflight = max(0, self._inflight - n)
        self._credit.set()

    def peer_closed(self, reason: str, *, error: bool = False) -> None:
        """The far end (or a relay on the way) closed the circuit; nothing to tell."""
        self._finish(reason, tell=False, error=error)

    # ------------------------------------------------------------------ output
    def _queue_out(self) -> None:
        out = self._conn.data_to_send()
        if out:
            self._outq.append(out)

    async def _flush(self) -> None:
        """Send queued output in order, frame by frame, waiting for credit."""
        async with self._tx_lock:
            while self._outq:
                out = self._outq.popleft()
                for piece in pieces(out):
                    while self._inflight >= self._window:
                        self._check_open()
                        self._credit.clear()
                        await self._credit.wait()
                    self._check_open()
                    self._inflight += piece.nbytes
                    self.bytes_out += piece.nbytes
                    try:
                        await self._transmit(wire.RELAY_DATA, (piece,))
                    except (ConnectionError, OSError) as e:
                        self._finish(f"relay link lost: {e}", tell=False)
                        raise RelayChannelClosed(self.close_reason) from None

    def _maybe_credit(self) -> None:
        """Return credit once a quarter window was taken in, unless the reader lags."""
        if (self._owed >= self._window // 4 and self._inbox_bytes <= MAX_INBOX
                and not self.closed.is_set()):
            n, self._owed = self._owed, 0
            self._spawn(self._transmit(wire.RELAY_CREDIT, (credit_payload(n),)))

    # ------------------------------------------------------------------ teardown
    def _check_open(self) -> None:
        if self.closed.is_set():
            if self._error:
                raise RelayCircuitError(f"relay circuit failed: {self.close_reason}")
            raise RelayChannelClosed(f"relay circuit closed: {self.close_reason}")

    def _finish(self, reason: str, *, tell: bool, error: bool = False) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self._error = error
        self.closed.set()
        self._wake.set()
        self._credit.set()
        self._outq.clear()
        if not self._done.done():
            self._done.set_exception(RelayChannelClosed(reason))
            self._done.exception()  # retrieved: nobody may be waiting
        log.debug("relay circuit ended: %s", reason)
        try:
            self._on_closed(self, reason, tell)
        except Exception:
            log.exception("relay close callback failed")

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, (ConnectionError, OSError, SessionError)):
                log.debug("relay channel task failed: %r", exc)
            else:
                self._finish(f"relay link lost: {exc}", tell=False)
