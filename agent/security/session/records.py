"""Record framing and message layer: a sans-I/O secure connection (h11 style).

Wire format (both directions, handshake and transport alike)::

    frame   = uint16-be length (1..65535) || body
    body    = Noise handshake message            (first three frames)
            | ChaCha20-Poly1305(flags || chunk)  (transport records)
    flags   = bit0 FIN (last record of a message); bits 1-7 reserved, must be 0

A message is split into as many records as needed (at least one, so a zero-length message is a
single FIN record); the receiver reassembles at most ``max_message_size`` bytes. The AEAD nonce is
the implicit Noise counter, so a replayed, reordered, duplicated or dropped record fails
authentication. The connection performs no I/O: feed it bytes with :meth:`receive_data`, pull
:meth:`next_event`, and write whatever :meth:`data_to_send` returns.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .noise import (
    DHLEN,
    MAX_NONCE,
    TAGLEN,
    DecryptError,
    FrameTooLarge,
    HandshakeError,
    HandshakeState,
    ProtocolError,
    SessionError,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_PROLOGUE",
    "MAX_HANDSHAKE_PAYLOAD",
    "MAX_RECORD_SIZE",
    "RECORD_OVERHEAD",
    "Buffer",
    "ConnectionClosed",
    "Event",
    "HandshakeComplete",
    "Message",
    "SecureConnection",
]

DEFAULT_PROLOGUE = b"shoal/1"
DEFAULT_MAX_MESSAGE_SIZE = 4 * 1024 * 1024
MAX_HANDSHAKE_PAYLOAD = 1024
#: Hard maximum of a frame body (the length prefix is 16 bits).
MAX_RECORD_SIZE = 65535
_HEADER = 2
_FLAGS = 1
FIN = 0x01
#: Bytes a record adds to its chunk on the wire: length prefix, flag byte, AEAD tag.
RECORD_OVERHEAD = _HEADER + _FLAGS + TAGLEN
_MIN_RECORD = _FLAGS + TAGLEN

# Bounds of the three XX handshake frames (message 1 carries no payload).
_HS_MIN = (DHLEN, DHLEN + DHLEN + 2 * TAGLEN, DHLEN + 2 * TAGLEN)
_HS_MAX = (
    DHLEN,
    DHLEN + DHLEN + 2 * TAGLEN + MAX_HANDSHAKE_PAYLOAD,
    DHLEN + 2 * TAGLEN + MAX_HANDSHAKE_PAYLOAD,
)

_nonce_bytes = struct.Struct("<4xQ").pack
_pack_header = struct.Struct(">H").pack_into
_EMPTY = memoryview(b"")

#: What may be sent: any bytes-like object (typed views count by bytes, not items).
Buffer = bytes | bytearray | memoryview


def _byte_view(data: Buffer) -> memoryview:
    """A flat unsigned-byte view of ``data``."""
    view = memoryview(data)
    if view.format == "B" and view.ndim == 1:
        return view
    flat = view.cast("B")
    view.release()
    return flat


# --------------------------------------------------------------------------- events


class Event:
    """Base class of the events returned by :meth:`SecureConnection.next_event`."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class HandshakeComplete(Event):
    remote_static: bytes  # raw 32-byte X25519 public key of the peer
    remote_payload: bytes
    handshake_hash: bytes


@dataclass(frozen=True, slots=True)
class Message(Event):
    payload: bytes

    def __repr__(self) -> str:  # payloads can be megabytes
        return f"Message(<{len(self.payload)} bytes>)"


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The peer closed the stream cleanly (EOF at a message boundary)."""


# --------------------------------------------------------------------------- connection

_HANDSHAKE, _OPEN, _DEAD = "handshake", "open", "dead"


class SecureConnection:
    """Noise_XX session over a byte stream, without I/O.

    Initiator: call :meth:`initiate`, then loop ``data_to_send`` / ``receive_data`` /
    ``next_event``. The responder needs no call to start. :class:`HandshakeComplete` is the first
    event on both sides; after it :meth:`send_message` may be used and :class:`Message` events
    follow. Remote faults are raised by :meth:`next_event` once the events decoded before the
    fault have been returned. Any :class:`SessionError` kills the connection: every later call
    raises it again (``data_to_send`` just returns nothing) and the keys are dropped.

    Both peers must use the same ``max_record_size`` (the sender splits by it) and should use the
    same ``max_message_size`` (a receiver rejects larger messages; :meth:`send_message` refuses
    payloads above the local limit).
    """

    def __init__(
        self,
        static_key: X25519PrivateKey,
        *,
        initiator: bool,
        local_payload: bytes = b"",
        prologue: bytes = DEFAULT_PROLOGUE,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_record_size: int = MAX_RECORD_SIZE,
    ) -> None:
        local_payload = bytes(local_payload)
        if len(local_payload) > MAX_HANDSHAKE_PAYLOAD:
            raise ValueError(
                f"local_payload is {len(local_payload)} bytes; the maximum is "
                f"{MAX_HANDSHAKE_PAYLOAD}"
            )
        if not _MIN_RECORD < max_record_size <= MAX_RECORD_SIZE:
            raise ValueError(f"max_record_size must be in {_MIN_RECORD + 1}..{MAX_RECORD_SIZE}")
        if max_message_size < 0:
            raise ValueError("max_message_size must be >= 0")
        self._hs: HandshakeState | None = HandshakeState(
            static_key, initiator=initiator, prologue=bytes(prologue)
        )
        self._initiator = bool(initiator)
        self._local_payload = local_payload
        self._max_message = int(max_message_size)
        self._max_record = int(max_record_size)
        self._max_chunk = self._max_record - _MIN_RECORD
        self._state = _HANDSHAKE
        self._initiated = False
        self._error: SessionError | None = None
        self._eof = False
        self._events: deque[Event] = deque()
        self._out: list[bytes | bytearray] = []
        # receive side
        self._inbuf = bytearray()  # holds at most one partial frame
        self._chunks: list[memoryview] = []  # decrypted chunks of the message being reassembled
        self._assembled = 0
        # transport ciphers (set by the split)
        self._send_aead: ChaCha20Poly1305 | None = None
        self._recv_aead: ChaCha20Poly1305 | None = None
        self._send_nonce = 0
        self._recv_nonce = 0
        self._scratch = bytearray()
        # results
        self._remote_static: bytes | None = None
        self._remote_payload: bytes | None = None
        self._handshake_hash: bytes | None = None

    # ------------------------------------------------------------------ properties

    @property
    def initiator(self) -> bool:
        return self._initiator

    @property
    def handshake_complete(self) -> bool:
        return self._handshake_hash is not None

    @property
    def handshake_hash(self) -> bytes | None:
        """Final Noise handshake hash (channel binding, pairing codes); None before completion."""
        return self._handshake_hash

    @property
    def remote_static(self) -> bytes | None:
        """Peer's raw 32-byte static public key; None before the handshake completes."""
        return self._remote_static

    @property
    def remote_payload(self) -> bytes | None:
        return self._remote_payload

    @property
    def max_message_size(self) -> int:
        return self._max_message

    @property
    def buffered_bytes(self) -> int:
        """Received bytes held internally: a partial frame plus a partial message."""
        return len(self._inbuf) + self._assembled

    @property
    def closed(self) -> bool:
        """True once EOF was fed or the connection died."""
        return self._eof or self._state == _DEAD

    # ------------------------------------------------------------------ failure handling

    def _fail(self, exc: SessionError) -> SessionError:
        if self._error is None:
            self._error = exc
        self._state = _DEAD
        self._hs = None
        self._send_aead = self._recv_aead = None
        self._inbuf = bytearray()
        self._chunks = []
        self._assembled = 0
        self._out = []
        return exc

    def _raise_dead(self) -> None:
        err = self._error
        assert err is not None
        raise err.with_traceback(None)

    # ------------------------------------------------------------------ public API

    def initiate(self) -> None:
        """Initiator only: queue handshake message 1."""
        if self._error is not None:
            self._raise_dead()
        if not self._initiator or self._initiated:
            raise self._fail(ProtocolError("initiate() is for an initiator, and only once"))
        self._initiated = True
        assert self._hs is not None
        self._queue_frame(self._hs.write_message(b""))

    def data_to_send(self) -> bytearray:
        """Drain and return everything the transport must write (possibly empty).

        Returns a ``bytearray`` the connection no longer references (zero-copy when a single
        message is pending); pass it straight to ``transport.write``.
        """
        out = self._out
        if not out:
            return bytearray()
        self._out = []
        if len(out) == 1:
            first = out[0]
            return first if isinstance(first, bytearray) else bytearray(first)
        return bytearray().join(out)

    def send_message(self, payload: Buffer) -> None:
        """Encrypt ``payload`` as one message (split into records as needed)."""
        self.send_parts((payload,))

    def send_parts(self, parts: Sequence[Buffer]) -> None:
        """Encrypt the concatenation of ``parts`` as one message, without joining them.

        Why: a chunk reply is a small header plus a payload read from disk (or compressed);
        joining them first would copy every served byte once more before encryption. Each
        record's plaintext (flag byte + up to one record of data) is gathered from the parts
        straight into a reusable scratch buffer, which is the one copy the AEAD needs (the
        flag byte must precede the data in a contiguous plaintext), and encrypted with
        ``encrypt_into`` into the output buffer (no per-record ciphertext object).
        Record boundaries do not depend on how the message is split into parts.
        """
        if self._error is not None:
            self._raise_dead()
        aead = self._send_aead
        if aead is None:
            raise self._fail(ProtocolError("send_message() before the handshake completed"))
        views = [_byte_view(p) for p in parts]
        try:
            self._encrypt_parts(aead, views)
        finally:
            for v in views:
                v.release()

    def _encrypt_parts(self, aead: ChaCha20Poly1305, views: list[memoryview]) -> None:
        size = sum(v.nbytes for v in views)
        if size > self._max_message:
            raise self._fail(
                FrameTooLarge(
                    f"message of {size} bytes exceeds max_message_size {self._max_message}"
                )
            )
        max_chunk = self._max_chunk
        count = (size + max_chunk - 1) // max_chunk or 1
        nonce = self._send_nonce
        if nonce + count >= MAX_NONCE:  # nonces used: nonce .. nonce+count-1 < 2^64-1
            raise self._fail(
                ProtocolError("send nonce space exhausted (2^64-1); open a new session")
            )
        out = bytearray(size + count * RECORD_OVERHEAD)
        scratch = self._scratch
        need = min(size, max_chunk) + _FLAGS
        if len(scratch) < need:  # grows with the largest record sent: heartbeats stay tiny
            scratch = self._scratch = bytearray(need)
        encrypt_into = aead.encrypt_into
        parts = iter(views)
        cur = _EMPTY
        cpos = 0  # read position in cur
        left = size
        opos = 0  # write position in out
        with memoryview(out) as omv, memoryview(scratch) as smv:
            for _ in range(count):
                n = min(left, max_chunk)
                left -= n
                _pack_header(out, opos, n + _MIN_RECORD)
                scratch[0] = 0 if left else FIN
                filled = 0
                while filled < n:  # gather this record's bytes from one or more parts
                    avail = cur.nbytes - cpos
                    if avail == 0:
                        cur, cpos = next(parts), 0
                        continue
                    take = min(avail, n - filled)
                    smv[1 + filled : 1 + filled + take] = cur[cpos : cpos + take]
                    filled += take
                    cpos += take
                end = opos + _HEADER + n + _MIN_RECORD
                encrypt_into(_nonce_bytes(nonce), smv[: 1 + n], None, omv[opos + _HEADER : end])
                nonce += 1
                opos = end
        self._send_nonce = nonce
        self._out.append(out)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes read from the transport; ``b""`` signals EOF.

        Only a frame split across calls is copied; complete frames are decrypted in place.
        Faults are recorded and raised by :meth:`next_event` (nothing after a fault is buffered).
        """
        if self._error is not None:
            self._raise_dead()
        if self._eof:
            raise self._fail(ProtocolError("receive_data() called after EOF"))
        if self._initiator and not self._initiated:
            raise self._fail(ProtocolError("initiator must call initiate() before receive_data()"))
        with memoryview(data) as view:
            mv = view if view.format == "B" and view.ndim == 1 else view.cast("B")
            try:
                if len(mv) == 0:
                    self._eof = True
                    self._on_eof()
                else:
                    self._feed(mv)
            except SessionError as exc:
                self._fail(exc)

    def next_event(self) -> Event | None:
        """Next decoded event, or None if more data is needed."""
        if self._events:
            return self._events.popleft()
        if self._error is not None:
            self._raise_dead()
        return None

    # ------------------------------------------------------------------ internals

    def _queue_frame(self, body: bytes) -> None:
        frame = bytearray(_HEADER + len(body))
        _pack_header(frame, 0, len(body))
        frame[_HEADER:] = body
        self._out.append(frame)

    def _check_length(self, length: int) -> None:
        """Validate a frame length before any of its body is buffered."""
        if self._state == _OPEN:
            if length < _MIN_RECORD:
                raise ProtocolError(f"record length {length} is below the minimum {_MIN_RECORD}")
            if length > self._max_record:
                raise FrameTooLarge(
                    f"record length {length} exceeds max_record_size {self._max_record}"
                )
            if self._assembled + length - _MIN_RECORD > self._max_message:
                raise FrameTooLarge(f"message exceeds max_message_size {self._max_message} bytes")
            return
        assert self._hs is not None
        step = self._hs.message_index
        if length > _HS_MAX[step]:
            raise FrameTooLarge(
                f"handshake message {step + 1} length {length} exceeds {_HS_MAX[step]}"
            )
        if length < _HS_MIN[step]:
            raise HandshakeError(
                f"handshake message {step + 1} length {length} is below {_HS_MIN[step]}"
            )

    def _feed(self, mv: memoryview) -> None:
        end = len(mv)
        pos = 0
        buf = self._inbuf
        if buf:  # finish the frame left over from the previous call
            if len(buf) < _HEADER:
                take = min(_HEADER - len(buf), end)
                buf += mv[:take]
                pos = take
                if len(buf) < _HEADER:
                    return
                self._check_length((buf[0] << 8) | buf[1])
            need = _HEADER + ((buf[0] << 8) | buf[1]) - len(buf)
            take = min(need, end - pos)
            buf += mv[pos : pos + take]
            pos += take
            if take < need:
                return
            with memoryview(buf) as bmv:
                self._handle_frame(bmv[_HEADER:])
            buf.clear()
        while end - pos >= _HEADER:
            length = (mv[pos] << 8) | mv[pos + 1]
            self._check_length(length)
            start = pos + _HEADER
            if end - start < length:
                break
            pos = start + length
            self._handle_frame(mv[start:pos])
        if pos < end:
            buf += mv[pos:]

    def _handle_frame(self, body: memoryview) -> None:
        if self._state == _OPEN:
            self._handle_record(body)
        else:
            self._handle_handshake(body)

    def _handle_record(self, body: memoryview) -> None:
        nonce = self._recv_nonce
        if nonce >= MAX_NONCE:
            raise ProtocolError("receive nonce space exhausted (2^64-1)")
        assert self._recv_aead is not None
        try:
            plaintext = self._recv_aead.decrypt(_nonce_bytes(nonce), body, None)
        except InvalidTag:
            raise DecryptError(
                f"record {nonce} failed authentication (tampered, replayed, reordered or wrong key)"
            ) from None
        self._recv_nonce = nonce + 1
        flags = plaintext[0]
        if flags & ~FIN:
            raise ProtocolError(f"record {nonce} has reserved flag bits set (0x{flags:02x})")
        if flags & FIN:
            chunks = self._chunks
            if chunks:
                chunks.append(memoryview(plaintext)[_FLAGS:])
                payload = b"".join(chunks)
                self._chunks = []
                self._assembled = 0
            else:
                payload = plaintext[_FLAGS:]
            self._events.append(Message(payload))
        else:
            if len(plaintext) == _FLAGS:
                raise ProtocolError(f"record {nonce} is empty but not FIN")
            self._chunks.append(memoryview(plaintext)[_FLAGS:])
            self._assembled += len(plaintext) - _FLAGS

    def _handle_handshake(self, body: memoryview) -> None:
        hs = self._hs
        assert hs is not None
        step = hs.message_index
        try:
            payload = hs.read_message(body)
        except ProtocolError as exc:  # read out of turn: the peer sent an unexpected frame
            raise HandshakeError(f"unexpected handshake frame: {exc}") from None
        if step == 0:
            # responder: message 1 carries only e; answer with message 2 right away
            self._queue_frame(hs.write_message(self._local_payload))
            return
        if len(payload) > MAX_HANDSHAKE_PAYLOAD:  # pragma: no cover - excluded by _HS_MAX
            raise HandshakeError("handshake payload too large")
        if step == 1:
            # initiator: message 2 received, send message 3 and finish
            self._queue_frame(hs.write_message(self._local_payload))
        self._finish_handshake(hs, payload)

    def _finish_handshake(self, hs: HandshakeState, remote_payload: bytes) -> None:
        send, recv = hs.split()
        assert send.key is not None and recv.key is not None
        self._send_aead = ChaCha20Poly1305(send.key)
        self._recv_aead = ChaCha20Poly1305(recv.key)
        self._send_nonce = self._recv_nonce = 0
        self._remote_static = hs.remote_static
        self._remote_payload = remote_payload
        self._handshake_hash = hs.handshake_hash
        self._hs = None
        self._state = _OPEN
        assert self._remote_static is not None
        self._events.append(
            HandshakeComplete(self._remote_static, remote_payload, self._handshake_hash)
        )

    def _on_eof(self) -> None:
        if self._state != _OPEN:
            raise HandshakeError("connection closed by peer during the handshake")
        if self._inbuf:
            raise ProtocolError(
                f"connection closed in the middle of a record ({len(self._inbuf)} bytes pending)"
            )
        if self._chunks:
            raise ProtocolError(
                f"connection closed in the middle of a message ({self._assembled} bytes pending)"
            )
        self._events.append(ConnectionClosed())
