"""Sans-I/O fragmentation of Shoal messages over ATT writes and notifications.

Why this exists: an ATT write or notification carries at most ``MTU - 3`` bytes (and never more
than 512), and bless cannot serve long reads correctly, so anything larger than one ATT payload
travels as a sequence of fragments on the Control (write) and Events (notify) characteristics.

Wire format (all integers little-endian, like every other multi-byte BLE field)::

    every fragment:  header u8   bit7 BEGIN, bit6 END, bits5-4 reserved (0), bits3-0 seq mod 16
    BEGIN fragment:  version u8 (=1) | message_id u16 | total_length u32 | crc32 u32
    then:            payload bytes

A message always starts with a BEGIN fragment whose sequence number is 0; each later fragment
increments the sequence number modulo 16; the last fragment has END set (a one-fragment message
has BEGIN|END). The CRC is zlib's CRC-32 of the whole reassembled payload.

This module never touches a socket, a clock or a radio: callers hand it bytes and timestamps.
The :class:`Reassembler` treats every input as untrusted radio data: it never raises on bad
input, it counts why it discarded something, and its memory is bounded by ``max_message_size``.
"""

from __future__ import annotations

import logging
import struct
import zlib
from dataclasses import dataclass, fields

__all__ = [
    "ATT_MAX_VALUE",
    "BEGIN",
    "BEGIN_HEADER_SIZE",
    "END",
    "FRAGMENT_HEADER_SIZE",
    "FRAMING_VERSION",
    "MIN_FRAGMENT_SIZE",
    "SEQ_MASK",
    "Fragmenter",
    "FramingError",
    "Reassembler",
    "ReassemblerStats",
    "fragment_size_for_mtu",
]

_log = logging.getLogger(__name__)

FRAMING_VERSION = 1
BEGIN = 0x80
END = 0x40
RESERVED_MASK = 0x30
SEQ_MASK = 0x0F
FRAGMENT_HEADER_SIZE = 1
_BEGIN_STRUCT = struct.Struct("<BHII")  # version, message id, total length, crc32
BEGIN_HEADER_SIZE = FRAGMENT_HEADER_SIZE + _BEGIN_STRUCT.size  # 12 bytes
ATT_MAX_VALUE = 512  # ATT attribute value cap (Core spec Vol 3 Part F 3.2.9)
# A BEGIN fragment must carry its 12 header bytes and still make progress on a payload.
MIN_FRAGMENT_SIZE = BEGIN_HEADER_SIZE + 1
MAX_TOTAL_LENGTH = 0xFFFFFFFF


class FramingError(ValueError):
    """Raised for caller mistakes on the sending side (never for received radio bytes)."""


def fragment_size_for_mtu(mtu: int) -> int:
    """Largest fragment for a negotiated ATT MTU: ``min(MTU - 3, 512)``.

    ``MTU - 3`` is the ATT opcode + handle overhead of a write/notification PDU; 512 is the
    attribute value cap that bless/BlueZ also enforce.
    """
    if mtu < 23:
        raise FramingError(f"ATT MTU {mtu} is below the LE minimum of 23")
    return min(mtu - 3, ATT_MAX_VALUE)


class Fragmenter:
    """Splits one message into fragments no larger than ``max_fragment_size`` bytes.

    ``max_fragment_size`` is the usable ATT payload for one write or notification (see
    :func:`fragment_size_for_mtu`); it is clamped to 512 so a caller passing a large
    ``max_write_without_response_size`` cannot produce an attribute value BlueZ rejects.
    """

    def __init__(self, max_fragment_size: int) -> None:
        if max_fragment_size < MIN_FRAGMENT_SIZE:
            raise FramingError(
                f"fragment size {max_fragment_size} < {MIN_FRAGMENT_SIZE} (12 header bytes + 1)"
            )
        self.max_fragment_size = min(max_fragment_size, ATT_MAX_VALUE)

    def fragments(self, message_id: int, payload: bytes) -> list[bytes]:
        """Return the fragments of ``payload``; the caller sends them in order."""
        if not 0 <= message_id <= 0xFFFF:
            raise FramingError(f"message id {message_id} does not fit u16")
        data = bytes(payload)
        if len(data) > MAX_TOTAL_LENGTH:
            raise FramingError("message longer than u32 total length")
        head = _BEGIN_STRUCT.pack(FRAMING_VERSION, message_id, len(data), zlib.crc32(data))
        first_room = self.max_fragment_size - BEGIN_HEADER_SIZE
        rest_room = self.max_fragment_size - FRAGMENT_HEADER_SIZE
        chunks = [data[:first_room]]
        chunks.extend(data[i : i + rest_room] for i in range(first_room, len(data), rest_room))
        out: list[bytes] = []
        last = len(chunks) - 1
        for index, chunk in enumerate(chunks):
            header = index & SEQ_MASK
            if index == 0:
                header |= BEGIN
            if index == last:
                header |= END
            prefix = bytes((header,)) + (head if index == 0 else b"")
            out.append(prefix + chunk)
        return out

    def count(self, payload_length: int) -> int:
        """Number of fragments a payload of ``payload_length`` bytes needs (for budgeting)."""
        first_room = self.max_fragment_size - BEGIN_HEADER_SIZE
        if payload_length <= first_room:
            return 1
        rest_room = self.max_fragment_size - FRAGMENT_HEADER_SIZE
        return 1 + -(-(payload_length - first_room) // rest_room)


@dataclass
class ReassemblerStats:
    """Why fragments or partial messages were discarded; all counters only grow."""

    messages: int = 0
    sequence_gap: int = 0
    unexpected_begin: int = 0
    unexpected_continuation: int = 0
    crc_error: int = 0
    length_mismatch: int = 0
    oversize: int = 0
    bad_version: int = 0
    malformed: int = 0
    timeout: int = 0
    disconnect: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def discarded(self) -> int:
        """Every discard reason summed (messages excluded)."""
        return sum(v for k, v in self.as_dict().items() if k != "messages")


class Reassembler:
    """Rebuilds messages from fragments of one link direction (one per central and direction).

    ``feed`` returns the complete payload when a message finishes and ``None`` otherwise. Any
    violation (gap, unexpected BEGIN or continuation, CRC or length mismatch, oversize total,
    malformed header, inactivity longer than ``timeout_s``, disconnect) discards the partial
    message and increments one counter in :attr:`stats`; a BEGIN fragment always starts over, so
    the stream recovers by itself. Memory: at most ``max_message_size`` buffered bytes.
    """

    def __init__(self, max_message_size: int = 8192, timeout_s: float = 5.0) -> None:
        if max_message_size < 0 or max_message_size > MAX_TOTAL_LENGTH:
            raise FramingError("max_message_size must fit u32")
        if timeout_s <= 0:
            raise FramingError("timeout_s must be positive")
        self.max_message_size = max_message_size
        self.timeout_s = timeout_s
        self.stats = ReassemblerStats()
        self.last_message_id: int | None = None
        self._buf = bytearray()
        self._active = False
        self._message_id = 0
        self._total = 0
        self._crc = 0
        self._next_seq = 0
        self._last_at = 0.0

    @property
    def in_progress(self) -> bool:
        """True while a message has begun and not yet completed or been discarded."""
        return self._active

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for the partial message (bounded by ``max_message_size``)."""
        return len(self._buf)

    def feed(self, fragment: bytes | bytearray | memoryview, now: float) -> bytes | None:
        """Consume one fragment received at monotonic time ``now``; return a message or None."""
        self.tick(now)
        if not isinstance(fragment, bytes | bytearray | memoryview):
            # bytes(12) would be twelve zero bytes: accept only real buffers
            return self._reject("malformed", f"not a bytes-like fragment: {type(fragment)}")
        frag = bytes(fragment)
        if not frag or len(frag) > ATT_MAX_VALUE:
            return self._reject("malformed", f"fragment length {len(frag)}")
        header = frag[0]
        if header & RESERVED_MASK:
            return self._reject("malformed", f"reserved bits set in header {header:#04x}")
        seq = header & SEQ_MASK
        if header & BEGIN:
            return self._begin(frag, header, seq, now)
        if not self._active:
            return self._reject("unexpected_continuation", f"seq {seq} with no message open")
        if seq != self._next_seq:
            return self._reject("sequence_gap", f"expected seq {self._next_seq}, got {seq}")
        return self._append(frag[FRAGMENT_HEADER_SIZE:], header, now)

    def tick(self, now: float) -> None:
        """Discard a partial message idle for longer than ``timeout_s`` (call periodically)."""
        if self._active and now - self._last_at > self.timeout_s:
            self._reject("timeout", f"idle {now - self._last_at:.3f}s")

    def on_disconnect(self) -> None:
        """The link dropped: a partial message can never complete."""
        if self._active:
            self._reject("disconnect", "link lost mid-message")

    def reset(self) -> None:
        """Forget any partial message without counting it (e.g. a deliberate new session)."""
        self._clear()

    # -- internals -----------------------------------------------------------------------------

    def _begin(self, frag: bytes, header: int, seq: int, now: float) -> bytes | None:
        if self._active:
            # The sender gave up on the previous message (or we lost its END); count it, then
            # treat this BEGIN as the start of a fresh message: that is how we recover.
            self._reject("unexpected_begin", "BEGIN while a message was open")
        if seq != 0:
            return self._reject("malformed", f"BEGIN with seq {seq}")
        if len(frag) < BEGIN_HEADER_SIZE:
            return self._reject("malformed", f"BEGIN fragment of {len(frag)} bytes")
        version, message_id, total, crc = _BEGIN_STRUCT.unpack_from(frag, FRAGMENT_HEADER_SIZE)
        if version != FRAMING_VERSION:
            return self._reject("bad_version", f"framing version {version}")
        if total > self.max_message_size:
            return self._reject("oversize", f"total {total} > {self.max_message_size}")
        self._active = True
        self._message_id = message_id
        self._total = total
        self._crc = crc
        self._next_seq = 0
        self._buf.clear()
        return self._append(frag[BEGIN_HEADER_SIZE:], header, now)

    def _append(self, chunk: bytes, header: int, now: float) -> bytes | None:
        if len(self._buf) + len(chunk) > self._total:
            return self._reject("length_mismatch", "fragments exceed the announced total")
        self._buf += chunk
        self._next_seq = (self._next_seq + 1) & SEQ_MASK
        self._last_at = now
        if not header & END:
            return None
        if len(self._buf) != self._total:
            return self._reject("length_mismatch", f"END at {len(self._buf)} of {self._total}")
        message = bytes(self._buf)
        if zlib.crc32(message) != self._crc:
            return self._reject("crc_error", "CRC-32 mismatch")
        self.stats.messages += 1
        self.last_message_id = self._message_id
        self._clear()
        return message

    def _reject(self, reason: str, detail: str) -> bytes | None:
        """Count and log a discard; returns what ``feed`` answers for it (always None)."""
        setattr(self.stats, reason, getattr(self.stats, reason) + 1)
        _log.debug("reassembler discard (%s): %s", reason, detail)
        self._clear()
        return None

    def _clear(self) -> None:
        self._active = False
        self._buf = bytearray()
        self._next_seq = 0
