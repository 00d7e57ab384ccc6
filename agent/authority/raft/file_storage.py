"""Crash-safe on-disk Raft storage for a single device.

Layout of the directory:

* ``wal.log``   append-only log segment: one record per entry. A record is
  ``len:u32 | crc32:u32 | payload`` and the payload is ``index:u64 | term:u64 | type:u8 |
  data``. Every append is fsynced before returning. A conflicting suffix is cut with
  ``truncate`` (it was never committed, so losing it in a crash is harmless).
* ``hardstate`` and ``snapshot``: single framed records replaced atomically with
  :func:`agent.fsutil.atomic_write_bytes` (temp file + fsync + rename + dir fsync).

Recovery: a torn or corrupt tail of ``wal.log`` (power cut mid-append, bad CRC, broken
contiguity) is cut off and the rest kept, since an entry is only acknowledged after its
fsync. Entries already covered by the snapshot are skipped. A corrupt ``hardstate`` or
``snapshot`` is fatal: they are only ever replaced atomically, so damage there means the
disk lies and continuing could violate safety.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

from agent.fsutil import atomic_write_bytes, remove_stale_temps

from .messages import Entry, EntryType, HardState, RaftMessageError, Snapshot
from .storage import (
    CompactedError,
    RaftStorage,
    RaftStorageError,
    UnavailableError,
    check_append,
)

WAL_NAME = "wal.log"
HARDSTATE_NAME = "hardstate"
SNAPSHOT_NAME = "snapshot"
_FRAME = struct.Struct(">II")
_ENTRY_HEAD = struct.Struct(">QQB")
_META_LEN = struct.Struct(">I")
MAX_RECORD = 256 << 20


def frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def read_frames(buf: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """Parse records from *buf*: ([(offset, payload)], length of the valid prefix)."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos + _FRAME.size <= len(buf):
        length, crc = _FRAME.unpack_from(buf, pos)
        end = pos + _FRAME.size + length
        if length > MAX_RECORD or end > len(buf):
            break
        payload = buf[pos + _FRAME.size : end]
        if zlib.crc32(payload) != crc:
            break
        out.append((pos, payload))
        pos = end
    return out, pos


def _encode_entry(e: Entry) -> bytes:
    return frame(_ENTRY_HEAD.pack(e.index, e.term, int(e.type)) + e.data)


def _decode_entry(payload: bytes) -> Entry | None:
    if len(payload) < _ENTRY_HEAD.size:
        return None
    index, term, etype = _ENTRY_HEAD.unpack_from(payload)
    if etype not in (0, 1):
        return None
    return Entry(index, term, EntryType(etype), payload[_ENTRY_HEAD.size :])


def _read_single(path: Path, what: str) -> bytes | None:
    try:
        buf = path.read_bytes()
    except FileNotFoundError:
        return None
    records, valid = read_frames(buf)
    if len(records) != 1 or valid != len(buf):
        raise RaftStorageError(f"{what} file {path} is corrupt")
    return records[0][1]


class FileStorage(RaftStorage):
    """Durable storage in one directory; every mutating call is durable on return."""

    def __init__(self, directory: Path | str) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.dir)
        self._snap = self._load_snapshot()
        self._hs = self._load_hard_state()
        self._ents: list[Entry] = []
        self._offsets: list[int] = []  # byte offset of each entry's record in wal.log
        self.recovered_truncation = 0  # bytes cut off the log tail at open (diagnostics)
        self._load_log()
        self._wal = open(self.dir / WAL_NAME, "ab")  # noqa: SIM115 - kept open for appends

    # --- loading -----------------------------------------------------------------------
    def _load_snapshot(self) -> Snapshot:
        payload = _read_single(self.dir / SNAPSHOT_NAME, "snapshot")
        if payload is None:
            return Snapshot()
        try:
            (meta_len,) = _META_LEN.unpack_from(payload)
            meta = json.loads(payload[_META_LEN.size : _META_LEN.size + meta_len])
            snap = Snapshot.from_dict({**meta, "data": ""}, max_size=MAX_RECORD)
        except (struct.error, ValueError, RaftMessageError) as exc:
            raise RaftStorageError(f"snapshot metadata is corrupt: {exc}") from exc
        return Snapshot(
            snap.index, snap.term, snap.conf_state, payload[_META_LEN.size + meta_len :]
        )

    def _load_hard_state(self) -> HardState:
        payload = _read_single(self.dir / HARDSTATE_NAME, "hardstate")
        if payload is None:
            return HardState()
        try:
            return HardState.from_dict(json.loads(payload))
        except (ValueError, RaftMessageError) as exc:
            raise RaftStorageError(f"hard state is corrupt: {exc}") from exc

    def _load_log(self) -> None:
        path = self.dir / WAL_NAME
        try:
            buf = path.read_bytes()
        except FileNotFoundError:
            atomic_write_bytes(path, b"")
            return
        records, valid = read_frames(buf)
        snap = self._snap
        keep_until = valid
        for offset, payload in records:
            e = _decode_entry(payload)
            if e is None:
                keep_until = offset
                break
            if e.index <= snap.index:
                if e.index == snap.index and e.term != snap.term:
                    # Crash between writing a received snapshot and resetting the log:
                    # the old log diverges from the snapshot, drop all of it.
                    self._ents, self._offsets = [], []
                    keep_until = 0
                    break
                continue
            expected = snap.index + 1 + len(self._ents)
            if e.index != expected:
                # A gap right after the snapshot makes the whole old log unusable;
                # anything else is a broken tail from this record on.
                keep_until = 0 if not self._ents and e.index > expected else offset
                break
            self._ents.append(e)
            self._offsets.append(offset)
        if keep_until < len(buf):
            self.recovered_truncation = len(buf) - keep_until
            if keep_until == 0:
                self._ents, self._offsets = [], []
                atomic_write_bytes(path, b"")
            else:
                with open(path, "r+b") as f:
                    f.truncate(keep_until)
                    f.flush()
                    os.fsync(f.fileno())

    def close(self) -> None:
        self._wal.close()

    def __enter__(self) -> FileStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reads -------------------------------------------------------------------------
    def hard_state(self) -> HardState:
        return self._hs

    def snapshot(self) -> Snapshot:
        return self._snap

    def first_index(self) -> int:
        return self._snap.index + 1

    def last_index(self) -> int:
        return self._snap.index + len(self._ents)

    def term(self, index: int) -> int:
        off = self._snap.index
        if index < off:
            raise CompactedError(f"index {index} compacted (snapshot {off})")
        if index == off:
            return self._snap.term
        if index > off + len(self._ents):
            raise UnavailableError(f"index {index} beyond last {self.last_index()}")
        return self._ents[index - off - 1].term

    def entries(self, lo: int, hi: int) -> list[Entry]:
        off = self._snap.index
        if lo <= off:
            raise CompactedError(f"index {lo} compacted (snapshot {off})")
        if hi > off + len(self._ents) + 1 or lo > hi:
            raise UnavailableError(f"entries [{lo}, {hi}) beyond last {self.last_index()}")
        return self._ents[lo - off - 1 : hi - off - 1]

    # --- writes ------------------------------------------------------------------------
    def set_hard_state(self, hs: HardState) -> None:
        if hs == self._hs:
            return
        atomic_write_bytes(
            self.dir / HARDSTATE_NAME, frame(json.dumps(hs.to_dict(), sort_keys=True).encode())
        )
        self._hs = hs

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        check_append(self.first_index(), self.last_index(), entries)
        k = entries[0].index - self._snap.index - 1
        if k < len(self._ents):  # overwrite a conflicting (uncommitted) suffix
            self._wal.flush()
            self._wal.truncate(self._offsets[k])
            del self._ents[k:]
            del self._offsets[k:]
        pos = self._wal.seek(0, os.SEEK_END)
        chunks = []
        for e in entries:
            rec = _encode_entry(e)
            self._offsets.append(pos)
            pos += len(rec)
            chunks.append(rec)
        self._wal.write(b"".join(chunks))
        self._wal.flush()
        os.fsync(self._wal.fileno())
        self._ents.extend(entries)

    def _write_snapshot(self, snap: Snapshot) -> None:
        meta = json.dumps(
            {"index": snap.index, "term": snap.term, "conf_state": snap.conf_state.to_dict()},
            sort_keys=True,
        ).encode()
        atomic_write_bytes(
            self.dir / SNAPSHOT_NAME, frame(_META_LEN.pack(len(meta)) + meta + snap.data)
        )

    def _rewrite_log(self, entries: list[Entry]) -> None:
        self._wal.close()
        blob = b"".join(_encode_entry(e) for e in entries)
        atomic_write_bytes(self.dir / WAL_NAME, blob)
        self._ents = list(entries)
        self._offsets = []
        pos = 0
        for e in entries:
            self._offsets.append(pos)
            pos += _FRAME.size + _ENTRY_HEAD.size + len(e.data)
        self._wal = open(self.dir / WAL_NAME, "ab")  # noqa: SIM115

    def apply_snapshot(self, snap: Snapshot) -> None:
        if snap.index < self._snap.index:
            raise RaftStorageError(f"snapshot {snap.index} older than {self._snap.index}")
        self._write_snapshot(snap)
        self._snap = snap
        self._rewrite_log([])

    def compact(self, snap: Snapshot) -> None:
        if snap.index <= self._snap.index:
            return
        if snap.index > self.last_index():
            raise UnavailableError(f"compact at {snap.index} beyond last {self.last_index()}")
        if self.term(snap.index) != snap.term:
            raise RaftStorageError(f"compact at {snap.index}: term mismatch")
        keep = self._ents[snap.index - self._snap.index :]
        self._write_snapshot(snap)
        self._snap = snap
        self._rewrite_log(keep)

    def sync(self) -> None:
        """Nothing to do: every write above is fsynced before it returns."""


__all__ = ["FileStorage", "frame", "read_frames"]
