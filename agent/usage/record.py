"""The access record and its on-disk frame (pure: bytes in, records out).

One record is one request seen by this device: when, by whom (a keyed hash, see
:mod:`agent.usage.requester`), for which resource, how large, hit or miss, and where it was
served from. Records are fixed-size so that a damaged record in the middle of a segment is
skipped and the reader stays aligned on the next one; every frame carries a CRC-32 of its
payload, so a torn tail (power cut mid-write) or bit rot is detected, counted and skipped,
never parsed. A segment starts with a magic header naming the format version.

Frame (67 bytes)::

    payload (63) = ver:u8 | time:f64 | epoch:u32 | requester:16s | resource:16s | size:u64
                   | flags:u8 (bit 0 = hit) | source kind:u8 | source id:8s
    crc32:u32 over the payload
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "FRAME_SIZE",
    "SEGMENT_MAGIC",
    "AccessRecord",
    "RecordError",
    "Source",
    "decode_segment",
    "encode_fields",
    "encode_record",
    "parse_source",
]

SEGMENT_MAGIC = b"SHUSAGE\x01"
RECORD_VERSION = 1
_PAYLOAD = struct.Struct(">BdI16s16sQBB8s")
_CRC = struct.Struct(">I")
FRAME_SIZE = _PAYLOAD.size + _CRC.size
REQUESTER_BYTES = 16
RESOURCE_BYTES = 16  # a resource ID is 32 hex digits (agent/store/manifest.py)
PEER_SHORT_BYTES = 8  # a peer's short ID: the first 16 hex digits of its device ID
MAX_SIZE = 2**62
_FLAG_HIT = 0x01


class RecordError(ValueError):
    """A record cannot be encoded (bad value) or decoded (bad bytes)."""


class Source(IntEnum):
    """Where a request was served from."""

    LOCAL = 0  # this device's store
    PEER = 1  # a peer (its short ID is in the record)
    MIRROR = 2  # a mirror (its short ID is in the record when known)


@dataclass(frozen=True, slots=True)
class AccessRecord:
    time: float  # wall-clock seconds (UTC); records outlive restarts
    epoch: int  # the requester key's epoch (hashes compare only within one epoch)
    requester: bytes  # keyed hash, 16 bytes
    resource: bytes  # resource ID, 16 bytes
    size: int
    hit: bool
    source: Source
    source_id: bytes = bytes(PEER_SHORT_BYTES)  # peer/mirror short ID, zeros for LOCAL

    @property
    def resource_hex(self) -> str:
        return self.resource.hex()


_NO_ID = bytes(PEER_SHORT_BYTES)
_NAMED = {"local": (Source.LOCAL, _NO_ID), "mirror": (Source.MIRROR, _NO_ID)}


def parse_source(source: str) -> tuple[Source, bytes]:
    """``"local"``, ``"mirror"``, ``"mirror:<16 hex>"`` or a peer's short ID (16 hex)."""
    named = _NAMED.get(source)
    if named is not None:
        return named
    kind = Source.PEER
    if source.startswith("mirror:"):
        kind, source = Source.MIRROR, source[len("mirror:"):]
    if len(source) != 2 * PEER_SHORT_BYTES:
        raise RecordError("source must be local, mirror or a 16-hex-digit peer short ID")
    try:
        return kind, bytes.fromhex(source)
    except ValueError:
        raise RecordError("source must be local, mirror or a 16-hex-digit peer short ID"
                          ) from None


def encode_record(rec: AccessRecord) -> bytes:
    """One frame; raises RecordError for a value that could not be read back."""
    return encode_fields(rec.time, rec.epoch, rec.requester, rec.resource, rec.size, rec.hit,
                         rec.source, rec.source_id)


def encode_fields(time: float, epoch: int, requester: bytes, resource: bytes, size: int,
                  hit: bool, source: Source, source_id: bytes) -> bytes:
    """:func:`encode_record` without building the record first (the hot path's form)."""
    if (len(requester) != REQUESTER_BYTES or len(resource) != RESOURCE_BYTES
            or len(source_id) != PEER_SHORT_BYTES):
        raise RecordError("requester, resource or source ID has the wrong length")
    if not math.isfinite(time) or not 0 <= size <= MAX_SIZE or not 0 <= epoch < 2**32:
        raise RecordError("time, size or epoch out of range")
    payload = _PAYLOAD.pack(RECORD_VERSION, time, epoch, requester, resource, size,
                            _FLAG_HIT if hit else 0, source, source_id)
    return payload + _CRC.pack(zlib.crc32(payload))


def _decode(frame: bytes | memoryview) -> AccessRecord | None:
    payload = frame[: _PAYLOAD.size]
    (crc,) = _CRC.unpack_from(frame, _PAYLOAD.size)
    if zlib.crc32(payload) != crc:
        return None
    ver, t, epoch, req, res, size, flags, kind, sid = _PAYLOAD.unpack(payload)
    if (ver != RECORD_VERSION or not math.isfinite(t) or size > MAX_SIZE
            or flags & ~_FLAG_HIT or kind not in (0, 1, 2)):
        return None
    return AccessRecord(t, epoch, req, res, size, bool(flags & _FLAG_HIT), Source(kind), sid)


@dataclass
class DecodeStats:
    """What a reader skipped: damaged frames (bad CRC or values) and torn-tail bytes."""

    records: int = 0
    corrupt: int = 0
    torn_bytes: int = 0
    bad_header: bool = False


def decode_segment(buf: bytes | memoryview, stats: DecodeStats | None = None
                   ) -> Iterator[AccessRecord]:
    """The valid records of one segment, in order; damage is counted in *stats*, never raised.

    A segment without the magic header yields nothing (it is not ours, or its header was
    never completely written). A trailing partial frame is a torn write: it is skipped.
    """
    stats = stats if stats is not None else DecodeStats()
    view = memoryview(buf)
    if bytes(view[: len(SEGMENT_MAGIC)]) != SEGMENT_MAGIC:
        stats.bad_header = True
        return
    pos = len(SEGMENT_MAGIC)
    end = len(view)
    while pos + FRAME_SIZE <= end:
        rec = _decode(view[pos: pos + FRAME_SIZE])
        pos += FRAME_SIZE
        if rec is None:
            stats.corrupt += 1
            continue
        stats.records += 1
        yield rec
    stats.torn_bytes += end - pos
