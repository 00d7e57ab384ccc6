"""Session-layer messages carried in framed Control/Events messages (types 0x40-0x41).

Why a link id: bless delivers every Events notification to *every* subscribed central, so a
central sees the session traffic of its neighbours. Each session message therefore names its
link; a central drops anything not for its own link *before* it reaches its Noise state (a
foreign record would otherwise kill the session with a decryption error). The central picks
the id at random (u32, non-zero), so no extra round trip is spent on allocating one; the
peripheral refuses an id that is already in use.

Layout (little-endian, like the rest of the profile)::

    0x40 SessionData   link_id u32 | stream bytes (Noise handshake frames / transport records)
    0x41 SessionClose  link_id u32 | reason u8

``stream bytes`` are a slice of the byte stream that
:class:`agent.security.session.SecureConnection`
produces (length-prefixed frames); a message may hold several frames or part of one, so the
stream can be cut into messages of at most :data:`MAX_STREAM_CHUNK` bytes regardless of how
large a peer-protocol message is.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass

from radio.ble.profile import SESSION_TYPES_START

__all__ = [
    "CLOSE_BUSY",
    "CLOSE_NORMAL",
    "CLOSE_PROTOCOL",
    "CLOSE_SHUTDOWN",
    "CLOSE_TIMEOUT",
    "LINK_ID_SIZE",
    "MAX_STREAM_CHUNK",
    "MSG_SESSION_CLOSE",
    "MSG_SESSION_DATA",
    "SessionClose",
    "SessionData",
    "SessionMessageError",
    "decode_session",
    "encode_session",
    "is_session_message",
    "new_link_id",
    "stream_chunks",
]

MSG_SESSION_DATA = 0x40
MSG_SESSION_CLOSE = 0x41
assert MSG_SESSION_DATA >= SESSION_TYPES_START

LINK_ID_SIZE = 4
_HEAD = struct.Struct("<BI")
_CLOSE = struct.Struct("<BIB")
SESSION_HEADER_SIZE = _HEAD.size  # 5

# Stream bytes per SessionData message. Small enough that a framed message stays far below the
# reassembly limit on both sides (4 KiB), large enough that the 5 + 12 header bytes are noise.
MAX_STREAM_CHUNK = 2048

CLOSE_NORMAL = 0
CLOSE_BUSY = 1  # too many sessions, or the link id is taken
CLOSE_TIMEOUT = 2  # handshake did not finish in time
CLOSE_PROTOCOL = 3  # the peer broke the session protocol (bad record, flood...)
CLOSE_SHUTDOWN = 4  # the agent is stopping
CLOSE_REASONS = {
    CLOSE_NORMAL: "closed by peer",
    CLOSE_BUSY: "peer is busy (too many BLE sessions)",
    CLOSE_TIMEOUT: "handshake timed out",
    CLOSE_PROTOCOL: "protocol error",
    CLOSE_SHUTDOWN: "peer is shutting down",
}


class SessionMessageError(ValueError):
    """A session message is malformed (never raised for well-formed input)."""


@dataclass(frozen=True, slots=True)
class SessionData:
    link_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class SessionClose:
    link_id: int
    reason: int = CLOSE_NORMAL

    @property
    def text(self) -> str:
        return CLOSE_REASONS.get(self.reason, f"closed by peer (reason {self.reason})")


SessionMessage = SessionData | SessionClose


def new_link_id() -> int:
    """A random non-zero u32 (0 is never used, so a zeroed buffer is never a valid link)."""
    return secrets.randbelow(0xFFFFFFFF) + 1


def is_session_message(data: bytes) -> bool:
    return len(data) > 0 and data[0] >= SESSION_TYPES_START


def encode_session(msg: SessionMessage) -> bytes:
    if not 0 < msg.link_id <= 0xFFFFFFFF:
        raise SessionMessageError(f"link id {msg.link_id} outside 1..2^32-1")
    if isinstance(msg, SessionData):
        if len(msg.data) > MAX_STREAM_CHUNK:
            raise SessionMessageError(f"{len(msg.data)} stream bytes > {MAX_STREAM_CHUNK}")
        return _HEAD.pack(MSG_SESSION_DATA, msg.link_id) + msg.data
    if isinstance(msg, SessionClose):
        if not 0 <= msg.reason <= 0xFF:
            raise SessionMessageError("close reason must fit u8")
        return _CLOSE.pack(MSG_SESSION_CLOSE, msg.link_id, msg.reason)
    raise SessionMessageError(f"not a session message: {type(msg).__name__}")


def decode_session(data: bytes) -> SessionMessage:
    """Parse a session message; raise :class:`SessionMessageError` for anything malformed."""
    if len(data) < _HEAD.size:
        raise SessionMessageError(f"session message of {len(data)} bytes")
    kind, link_id = _HEAD.unpack_from(data)
    if link_id == 0:
        raise SessionMessageError("link id 0 is invalid")
    if kind == MSG_SESSION_DATA:
        body = bytes(data[_HEAD.size :])
        if not 0 < len(body) <= MAX_STREAM_CHUNK:
            raise SessionMessageError(f"SessionData with {len(body)} stream bytes")
        return SessionData(link_id, body)
    if kind == MSG_SESSION_CLOSE:
        if len(data) != _CLOSE.size:
            raise SessionMessageError("bad SessionClose length")
        return SessionClose(link_id, data[_HEAD.size])
    raise SessionMessageError(f"unknown session message type {kind:#04x}")


def stream_chunks(data: bytes | bytearray, size: int = MAX_STREAM_CHUNK) -> list[bytes]:
    """Cut outgoing stream bytes into SessionData-sized pieces (never an empty piece)."""
    return [bytes(data[i : i + size]) for i in range(0, len(data), size)]
