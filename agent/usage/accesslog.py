"""The access log on disk: append-only segments, bounded by size and age, crash-safe.

Layout: ``<dir>/seg-<seq:012d>.log``, each a magic header followed by fixed-size framed
records (:mod:`agent.usage.record`).

* **Cheap on the hot path.** :meth:`AccessLog.append` encodes into an in-memory buffer and
  returns; :meth:`flush` (called by the service's tick, off the request path) writes the
  whole buffer with one ``write``. If the tick stalls the buffer is capped: further records
  are dropped and counted, never blocking a request.
* **Crash-safe.** A segment comes into existence atomically (header written to a temp file,
  renamed into place: see :func:`agent.fsutil.atomic_writer`), so a segment either has its
  header or does not exist. Segments from an earlier run are never appended to: a new run
  starts a new segment, so a torn tail (power cut mid-write) stays where it is and readers
  skip it. Records are flushed to the OS on every tick (a process crash loses at most the
  records of one tick); the log is advisory data, so it is not fsynced per record — a power
  cut may lose what the page cache held, never corrupt what was already on disk.
* **Hostile-file safe.** Any file may be damaged or replaced: a segment without our header,
  a bad checksum, an impossible value or a partial frame is skipped and counted
  (:attr:`AccessLog.damage`), and the service logs one warning with the counts. Nothing in
  a log file can make the reader raise or allocate beyond the segment size cap.
* **Bounded.** Oldest segments go first when the total exceeds ``max_bytes``; a segment
  whose newest record is older than ``max_age`` is deleted whole.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from agent.fsutil import atomic_writer, remove_stale_temps
from agent.usage.record import (
    FRAME_SIZE,
    SEGMENT_MAGIC,
    AccessRecord,
    DecodeStats,
    decode_segment,
    encode_record,
)

__all__ = ["AccessLog", "LogDamage"]

_SEGMENT_RE = re.compile(r"seg-(\d{12})\.log")


@dataclass
class LogDamage:
    """Everything the reader skipped since start (reported in one warning per scan)."""

    corrupt_records: int = 0
    torn_bytes: int = 0
    bad_segments: int = 0

    def total(self) -> int:
        return self.corrupt_records + self.bad_segments + (1 if self.torn_bytes else 0)


@dataclass
class _Segment:
    seq: int
    path: Path
    size: int
    newest: float  # wall-clock time of its newest record (0.0 = unknown: goes first)


class AccessLog:
    """An append-only, size- and age-bounded log of :class:`AccessRecord`."""

    def __init__(self, directory: Path, *, max_bytes: int, max_age: float, segment_bytes: int,
                 max_buffered: int = 4096, clock: Callable[[], float]) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.segment_bytes = max(segment_bytes, len(SEGMENT_MAGIC) + FRAME_SIZE)
        self.max_buffered = max_buffered
        self._clock = clock
        self._buffer: list[bytes] = []
        self._buffer_newest = 0.0
        self.dropped = 0  # records refused because the buffer was full
        self.damage = LogDamage()
        self._segments: list[_Segment] = []
        self._active: BinaryIO | None = None
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        remove_stale_temps(self.dir)
        self._scan()

    # ----------------------------------------------------------------- hot path
    def append(self, rec: AccessRecord) -> bool:
        """Buffer one record (no I/O). False when the buffer is full and it was dropped."""
        return self.append_frame(encode_record(rec), rec.time)

    def append_frame(self, frame: bytes, time: float) -> bool:
        """Buffer one already encoded frame (see :func:`agent.usage.record.encode_fields`)."""
        if len(self._buffer) >= self.max_buffered:
            self.dropped += 1
            return False
        self._buffer.append(frame)
        if time > self._buffer_newest:
            self._buffer_newest = time
        return True

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    # ----------------------------------------------------------------- off the hot path
    def flush(self) -> int:
        """Write the buffered records (rotating segments as they fill), then enforce the
        bounds. Returns how many records were written."""
        frames, self._buffer = self._buffer, []
        newest, self._buffer_newest = self._buffer_newest, 0.0
        i = 0
        while i < len(frames):
            seg = self._writable()
            room = max(1, (self.segment_bytes - seg.size) // FRAME_SIZE)
            part = frames[i: i + room]
            data = b"".join(part)
            assert self._active is not None
            self._active.write(data)
            self._active.flush()
            seg.size += len(data)
            seg.newest = max(seg.newest, newest)
            i += len(part)
        self.prune()
        return len(frames)

    def _writable(self) -> _Segment:
        seg = self._segments[-1] if self._segments and self._active is not None else None
        if seg is not None and seg.size + FRAME_SIZE <= self.segment_bytes:
            return seg
        return self._rotate()

    def _rotate(self) -> _Segment:
        """Close the active segment and create the next one atomically (header first)."""
        self._close_active()
        seq = self._segments[-1].seq + 1 if self._segments else 1
        path = self.dir / f"seg-{seq:012d}.log"
        with atomic_writer(path, 0o600, durable=True) as f:
            f.write(SEGMENT_MAGIC)
        self._active = open(path, "ab")  # noqa: SIM115 - kept open for appends
        seg = _Segment(seq, path, len(SEGMENT_MAGIC), 0.0)
        self._segments.append(seg)
        return seg

    def prune(self) -> int:
        """Delete whole segments that are too old or over the size budget (oldest first);
        the active segment is kept. Returns how many were deleted."""
        cutoff = self._clock() - self.max_age
        total = sum(s.size for s in self._segments)
        deleted = 0
        for seg in list(self._segments):
            if self._active is not None and seg is self._segments[-1]:
                break
            if total <= self.max_bytes and seg.newest >= cutoff:
                continue
            with contextlib.suppress(FileNotFoundError):
                seg.path.unlink()
            self._segments.remove(seg)
            total -= seg.size
            deleted += 1
        return deleted

    # ----------------------------------------------------------------- reading
    def records(self, since: float = 0.0) -> Iterator[AccessRecord]:
        """Every readable record (on disk, then still buffered) with time >= *since*, in
        append order. One segment is in memory at a time; damage is counted, not raised."""
        for seg in list(self._segments):
            if seg.newest and seg.newest < since:
                continue
            try:
                buf = _read_bounded(seg.path, self.segment_bytes)
            except OSError:
                continue
            stats = DecodeStats()
            for rec in decode_segment(buf, stats):
                if rec.time >= since:
                    yield rec
        for frame in list(self._buffer):
            for rec in decode_segment(SEGMENT_MAGIC + frame):
                if rec.time >= since:
                    yield rec

    def _scan(self) -> None:
        """Index the segments found on disk (sizes, newest record) and count damage."""
        found: list[tuple[int, Path]] = []
        for p in self.dir.iterdir():
            m = _SEGMENT_RE.fullmatch(p.name)
            if m and p.is_file():
                found.append((int(m.group(1)), p))
        for seq, path in sorted(found):
            stats = DecodeStats()
            newest = 0.0
            try:
                buf = _read_bounded(path, self.segment_bytes)
                size = os.stat(path).st_size
            except OSError:
                self.damage.bad_segments += 1
                continue
            for rec in decode_segment(buf, stats):
                newest = max(newest, rec.time)
            if stats.bad_header:
                self.damage.bad_segments += 1
                newest = 0.0  # unknown age: the first to go
            self.damage.corrupt_records += stats.corrupt
            self.damage.torn_bytes += stats.torn_bytes
            self._segments.append(_Segment(seq, path, size, newest))

    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    def segment_count(self) -> int:
        return len(self._segments)

    def _close_active(self) -> None:
        if self._active is not None:
            with contextlib.suppress(OSError):
                self._active.close()
            self._active = None

    def close(self) -> None:
        """Flush what is buffered and close the active segment."""
        try:
            self.flush()
        finally:
            self._close_active()


def _read_bounded(path: Path, limit: int) -> bytes:
    """At most *limit* bytes of *path*: an oversized or swapped-in file cannot make the
    reader allocate more than one segment's worth."""
    with open(path, "rb") as f:
        return f.read(limit)
