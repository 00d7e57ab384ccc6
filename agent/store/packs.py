"""Append-only pack files: the chunk backend of the content store.

Why packs: one file per chunk spent most of a transfer in the filesystem (file creation is
0.2-0.7 ms under writeback on the receiver, open+read of a separate file per chunk on the
sender). Appending to a few large files costs one ``pwritev`` per chunk, and serving a
chunk costs one ``pread`` on a cached descriptor.

Layout in ``chunks/`` (files 0600)::

    pack-000001.shp     records, appended; sealed once it holds pack_size bytes
    pack-000001.idx     sidecar of a sealed pack: (kind, id, offset, length) of each record

Record = 52-byte header + payload. Header, little-endian: magic ``SHPK``, version u8,
kind u8 (1 chunk, 2 tombstone), flags u16 (0), payload length u32, write time u32 (unix s,
for the gc grace), chunk id 32 B, CRC32 of the 48 bytes before it. The CRC covers the
header only: payloads are verified by BLAKE3 on every read (in store.py), which a CRC
would duplicate. Tombstones have no payload and hide every earlier record of their id.

Index: chunk id -> one int packing (pack seq, record offset, payload length); a tuple
would cost ~100 bytes more per chunk (~150 B/chunk in total, 15 MB per 100k chunks).
At open each sealed pack loads its ``.idx`` (CRC-checked, must match the pack size; if
missing or bad the pack is rescanned and the sidecar rewritten); the newest pack without
a sidecar is the active one and is scanned. Packs are applied in sequence order, records
in offset order, so later records win.

Crash rules (no per-chunk fsync; the store runs ``syncfs`` before every commit record,
and that flushes pack data, sidecars and pack creations/deletions of the filesystem):

* Writes are single ``pwritev`` calls at the end of the active pack. A failed write is
  truncated away at once; a write torn by a crash leaves a bad tail. At open a record is
  valid if its header parses (magic, CRC, sane kind/length) and its payload fits in the
  file. A bad header is searched past for the next valid one: if there is none, the bad
  part is a torn tail and is truncated away; if there is one (a damaged header mid-file)
  the records after it are kept, so one bad sector never discards the rest of a pack.
* Removal (gc, quarantine) appends a tombstone, so a restart does not resurrect the
  chunk. Exception: removing the last record of the active pack (rollback of a failed
  publish) truncates it, unless an older dead copy exists that only a tombstone could hide.
* Compaction (from gc) picks sealed packs whose live payload is under half their size,
  copies their live records (headers verbatim: same id, same write time) to the active
  pack, plus those of their tombstones that still hide a dead record in an older pack,
  runs ``syncfs``, then deletes them. A crash before the delete leaves duplicates (the
  later copy wins at open; the old pack is then all dead and goes next time); a crash
  after it finds the copies durable. A torn copy is truncated away while the original is
  still there.
* A sealed pack never changes, so its sidecar stays valid; sidecars are written
  temp+rename (without fsync: a bad one after power loss only costs a rescan).
* Power loss may leave garbage in records written after the last syncfs: such chunks were
  not referenced by any commit record, and a garbage payload fails BLAKE3 on read (then it
  is quarantined), exactly like a chunk file whose data never reached the disk.

Migration: a store in the old file-per-chunk layout (``chunks/ab/<hex>``) is imported at
open: each file is verified (bad ones go to quarantine/), appended to the active pack, and
unlinked after a syncfs every 64 MiB. An interrupted import just continues at next open
(ids already in a pack are not copied again). Chosen over keeping a second read path
forever: a one-time copy, then one code path for reads, gc, quarantine and scrub.

Thread safety: ``_lock`` guards the index, the pack table and the descriptor cache and is
held only briefly; ``_wlock`` serializes everything that writes (append, truncate, rotate,
and each record copy of a compaction, which runs outside the store lock). Reads take
``_lock`` twice around a ``pread`` and never wait for a write to finish. Descriptors are
reference-counted so eviction or deletion of a pack never closes a descriptor a reader is
using (so it can never be reused for another file under it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import struct
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from blake3 import blake3

from agent.fsutil import TMP_PREFIX, atomic_writer, fsync_dir, remove_stale_temps
from agent.log import kv
from agent.store.chunker import ABSOLUTE_MAX_CHUNK_SIZE, CHUNK_ID_SIZE

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
KIB = 1024
MIB = 1024 * KIB
DEFAULT_PACK_SIZE = 64 * MIB
MIN_PACK_SIZE = 4 * KIB
MAX_PACK_SIZE = 1024 * MIB  # record offsets are u32 in sidecars and in the index
DEFAULT_OPEN_PACKS = 32

MAGIC = b"SHPK"
VERSION = 1
KIND_CHUNK = 1
KIND_TOMBSTONE = 2
_HDR = struct.Struct("<4sBBHII32s")  # magic, version, kind, flags, length, time, id
_CRC = struct.Struct("<I")
HEADER_SIZE = _HDR.size + _CRC.size  # 52

IDX_MAGIC = b"SHIX"
_IDX_HEAD = struct.Struct("<4sBxxxQQI")  # magic, version, pack seq, pack size, count
_IDX_ENTRY = struct.Struct("<B32sII")  # kind, id, record offset, payload length
_MAX_IDX_BYTES = 256 * MIB

_PACK_RE = re.compile(r"pack-(\d{6,})\.shp")
_IDX_RE = re.compile(r"pack-(\d{6,})\.idx")
_FANOUT_RE = re.compile(r"[0-9a-f]{2}")
_CHUNK_NAME_RE = re.compile(r"[0-9a-f]{64}")

_SCAN_WINDOW = 16 * KIB
_FIND_BLOCK = 1 * MIB
_HASH_BLOCK = 1 * MIB
_IMPORT_BATCH = 64 * MIB

# index value: seq << 57 | record offset << 25 | payload length (<= 16 MiB needs 25 bits)
_OFF_SHIFT = 25
_SEQ_SHIFT = 57
_LEN_MASK = (1 << _OFF_SHIFT) - 1
_OFF_MASK = (1 << 32) - 1

Entry = tuple[int, bytes, int, int]  # kind, chunk id, record offset, payload length


def _loc(seq: int, off: int, length: int) -> int:
    return (seq << _SEQ_SHIFT) | (off << _OFF_SHIFT) | length


def make_header(kind: int, cid: bytes, length: int, t: int) -> bytes:
    head = _HDR.pack(MAGIC, VERSION, kind, 0, length, min(max(t, 0), 0xFFFF_FFFF), cid)
    return head + _CRC.pack(zlib.crc32(head))


def parse_header(buf: bytes, pos: int = 0) -> tuple[int, bytes, int, int] | None:
    """(kind, id, payload length, time) of a valid header at *pos*, else None."""
    if len(buf) - pos < HEADER_SIZE or buf[pos:pos + 4] != MAGIC:
        return None
    _magic, ver, kind, flags, length, t, cid = _HDR.unpack_from(buf, pos)
    (crc,) = _CRC.unpack_from(buf, pos + _HDR.size)
    if ver != VERSION or flags or zlib.crc32(buf[pos:pos + _HDR.size]) != crc:
        return None
    if kind == KIND_CHUNK:
        ok = 1 <= length <= ABSOLUTE_MAX_CHUNK_SIZE
    else:
        ok = kind == KIND_TOMBSTONE and length == 0
    return (kind, cid, length, t) if ok else None


@dataclass
class _Pack:
    seq: int
    size: int = 0  # bytes of the file that hold records
    live_bytes: int = 0  # payload bytes of the chunk records the index points at
    live_count: int = 0
    dead: set[bytes] = field(default_factory=set)  # ids with a dead chunk record here


class _Handle:
    """A pack descriptor shared by readers; closed when retired and unused."""

    __slots__ = ("fd", "refs", "retired")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.refs = 0
        self.retired = False


@dataclass(frozen=True)
class OpenReport:
    packs: int
    chunks: int
    sidecars_rebuilt: int
    torn_bytes: int  # truncated from pack tails
    damaged_bytes: int  # skipped mid-pack (bad headers followed by good records)
    legacy_imported: int
    legacy_quarantined: int
    temps_removed: int


class Packs:
    """Chunk id -> bytes in append-only pack files under *base* (see module docstring)."""

    def __init__(self, base: Path, quarantine: Path, *, sync: Callable[[], None],
                 pack_size: int = DEFAULT_PACK_SIZE,
                 max_open: int = DEFAULT_OPEN_PACKS) -> None:
        if (not isinstance(pack_size, int) or isinstance(pack_size, bool)
                or not MIN_PACK_SIZE <= pack_size <= MAX_PACK_SIZE):
            raise ValueError(f"pack_size must be an int in {MIN_PACK_SIZE}..{MAX_PACK_SIZE}, "
                             f"got {pack_size!r}")
        self.base = base
        self.quarantine_dir = quarantine
        self.pack_size = pack_size
        self._sync = sync
        self._dirty: set[int] = set()  # packs appended to since the last flush()
        self._new_entries = False  # pack files created since the last flush()
        self._max_open = max(1, max_open)
        self._lock = threading.Lock()
        self._wlock = threading.Lock()
        self._compact_lock = threading.Lock()  # one compaction (or open) at a time
        self._index: dict[bytes, int] = {}
        self._packs: dict[int, _Pack] = {}
        self._handles: OrderedDict[int, _Handle] = OrderedDict()  # sealed packs, LRU
        self._active: _Pack | None = None
        self._active_handle: _Handle | None = None
        self._active_entries = bytearray()  # sidecar entries of the active pack
        self._next_seq = 1
        self._live = 0
        self._touched: dict[bytes, float] = {}  # dedupe hits: restart the gc grace

    # -- paths ----------------------------------------------------------------------------

    def pack_path(self, seq: int) -> Path:
        return self.base / f"pack-{seq:06d}.shp"

    def idx_path(self, seq: int) -> Path:
        return self.base / f"pack-{seq:06d}.idx"

    # -- open / close ---------------------------------------------------------------------

    def open(self) -> OpenReport:
        """(Re)load the index from disk: sidecars, active-pack scan, torn tails, migration."""
        with self._compact_lock, self._wlock:
            with self._lock:
                self._close_handles()
                self._index, self._packs, self._touched = {}, {}, {}
                self._active, self._active_entries, self._live = None, bytearray(), 0
            temps = remove_stale_temps(self.base)
            packs: list[int] = []
            idxs: set[int] = set()
            fans: list[Path] = []
            with os.scandir(self.base) as it:
                for e in it:
                    if m := _PACK_RE.fullmatch(e.name):
                        packs.append(int(m.group(1)))
                    elif m := _IDX_RE.fullmatch(e.name):
                        idxs.add(int(m.group(1)))
                    elif _FANOUT_RE.fullmatch(e.name) and e.is_dir(follow_symlinks=False):
                        fans.append(Path(e.path))
            packs.sort()
            for seq in idxs - set(packs):  # pack deleted by compaction, sidecar not yet
                with contextlib.suppress(FileNotFoundError):
                    self.idx_path(seq).unlink()
            rebuilt = torn = damaged = 0
            with self._lock:  # readers of a store re-opened by recover() wait for the index
                for seq in packs:
                    r, t, d = self._load_pack(seq, last=seq == packs[-1])
                    rebuilt, torn, damaged = rebuilt + r, torn + t, damaged + d
            self._next_seq = (packs[-1] + 1) if packs else 1
            imported, bad, legacy_temps = self._import_legacy(sorted(fans)) if fans else (0, 0, 0)
            report = OpenReport(len(self._packs), len(self._index), rebuilt, torn, damaged,
                                imported, bad, temps + legacy_temps)
        if torn or damaged or rebuilt:
            log.warning("packs repaired", extra=kv(
                root=self.base,
                sidecars_rebuilt=rebuilt,
                torn_bytes=torn,
                damaged_bytes=damaged))
        return report

    def close(self) -> None:
        with self._wlock, self._lock:
            self._close_handles()
            self._active = None

    def _close_handles(self) -> None:
        for h in self._handles.values():
            self._retire(h)
        self._handles.clear()
        if self._active_handle is not None:
            self._retire(self._active_handle)
            self._active_handle = None

    def _load_pack(self, seq: int, *, last: bool) -> tuple[int, int, int]:
        """Index one pack; returns (sidecar rebuilt, torn bytes, damaged bytes)."""
        path = self.pack_path(seq)
        st = os.stat(path, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            log.error("ignoring pack that is not a regular file", extra=kv(path=path))
            return 0, 0, 0
        sidecar = self._read_sidecar(seq, st.st_size)
        rebuilt = torn = damaged = 0
        fd = -1
        entries: Iterable[Entry]
        if sidecar is not None:
            entries = _IDX_ENTRY.iter_unpack(sidecar)  # no list: 100k entries would be ~15 MB
            size = st.st_size
        else:
            had_sidecar = self.idx_path(seq).exists()
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                entries, end, damaged = _scan(fd, st.st_size)
                if end < st.st_size:
                    log.warning("truncating torn pack tail", extra=kv(
                        pack=path.name,
                        offset=end,
                        bytes=st.st_size - end))
                    os.ftruncate(fd, end)
                    torn = st.st_size - end
            except BaseException:
                os.close(fd)
                raise
            size = end
            if had_sidecar:
                log.warning("pack sidecar missing or invalid, rescanned", extra=kv(pack=path.name))
            if not last or had_sidecar:
                try:
                    self._write_sidecar(seq, size, _pack_entries(entries))
                finally:
                    os.close(fd)
                rebuilt, fd = 1, -1
            else:  # newest pack, not sealed: keep appending to it
                self._active_entries = bytearray(_pack_entries(entries))
        pack = _Pack(seq, size)
        self._packs[seq] = pack
        self._apply_entries(pack, entries)
        if fd >= 0:
            self._active = pack
            self._active_handle = _Handle(fd)
        return rebuilt, torn, damaged

    def _apply_entries(self, pack: _Pack, entries: Iterable[Entry]) -> None:
        index, packs = self._index, self._packs
        seq = pack.seq << _SEQ_SHIFT
        for kind, cid, off, length in entries:
            old = index.pop(cid, None)
            if old is not None:
                p = packs[old >> _SEQ_SHIFT]
                n = old & _LEN_MASK
                p.live_bytes -= n
                p.live_count -= 1
                p.dead.add(cid)
                self._live -= n
            if kind == KIND_CHUNK:
                index[cid] = seq | (off << _OFF_SHIFT) | length
                pack.live_bytes += length
                pack.live_count += 1
                self._live += length

    def _read_sidecar(self, seq: int, pack_size: int) -> memoryview | None:
        """The validated entry array of a pack's sidecar, or None if missing or bad."""
        try:
            fd = os.open(self.idx_path(seq), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as f:
            data = f.read(_MAX_IDX_BYTES + 1)
        head, tail = _IDX_HEAD.size, _CRC.size
        if len(data) < head + tail or len(data) > _MAX_IDX_BYTES:
            return None
        body = memoryview(data)[:-tail]
        if zlib.crc32(body) != _CRC.unpack_from(data, len(data) - tail)[0]:
            return None
        magic, ver, s, size, count = _IDX_HEAD.unpack_from(data)
        if (magic, ver, s, size) != (IDX_MAGIC, 1, seq, pack_size) or (
                len(body) != head + count * _IDX_ENTRY.size):
            return None
        entries = body[head:]
        pos = 0
        for kind, _cid, off, length in _IDX_ENTRY.iter_unpack(entries):
            if kind == KIND_CHUNK:
                ok = 1 <= length <= ABSOLUTE_MAX_CHUNK_SIZE
            else:
                ok = kind == KIND_TOMBSTONE and length == 0
            if not ok or off < pos:
                return None
            pos = off + HEADER_SIZE + length
        if pos > pack_size:
            return None
        return entries

    def _write_sidecar(self, seq: int, size: int, entries: bytes | bytearray) -> None:
        body = _IDX_HEAD.pack(IDX_MAGIC, 1, seq, size, len(entries) // _IDX_ENTRY.size)
        with atomic_writer(self.idx_path(seq), FILE_MODE, durable=False,
                           make_parents=False) as f:
            f.write(body)
            f.write(entries)
            f.write(_CRC.pack(zlib.crc32(entries, zlib.crc32(body))))

    # -- queries --------------------------------------------------------------------------

    def exists(self, cid: bytes) -> bool:
        return cid in self._index

    def live_bytes(self) -> int:
        with self._lock:
            return self._live

    def __len__(self) -> int:
        return len(self._index)

    def entries(self) -> list[tuple[bytes, int]]:
        """(id, payload length) of every live chunk, in on-disk order (a snapshot)."""
        with self._lock:
            items = list(self._index.items())
        items.sort(key=lambda kv: kv[1])
        return [(cid, loc & _LEN_MASK) for cid, loc in items]

    def locate(self, cid: bytes) -> tuple[Path, int, int] | None:
        """(pack path, payload offset, payload length) of a live chunk, for tests/tools."""
        loc = self._index.get(cid)
        if loc is None:
            return None
        off = (loc >> _OFF_SHIFT) & _OFF_MASK
        return self.pack_path(loc >> _SEQ_SHIFT), off + HEADER_SIZE, loc & _LEN_MASK

    def pack_stats(self) -> dict[int, tuple[int, int, int]]:
        """seq -> (file bytes, live payload bytes, live chunks)."""
        with self._lock:
            return {s: (p.size, p.live_bytes, p.live_count) for s, p in self._packs.items()}

    # -- reads ----------------------------------------------------------------------------

    def _acquire(self, seq: int) -> _Handle:
        """Descriptor of pack *seq* with a reference taken; call with _lock held."""
        a = self._active
        if a is not None and seq == a.seq and self._active_handle is not None:
            h = self._active_handle
        else:
            h_ = self._handles.get(seq)
            if h_ is None:
                try:
                    fd = os.open(self.pack_path(seq), os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    self._forget_pack(seq)
                    raise
                h_ = self._handles[seq] = _Handle(fd)
                while len(self._handles) > self._max_open:
                    self._retire(self._handles.popitem(last=False)[1])
            else:
                self._handles.move_to_end(seq)
            h = h_
        h.refs += 1
        return h

    def _release(self, h: _Handle) -> None:
        with self._lock:
            h.refs -= 1
            if h.retired and h.refs == 0:
                os.close(h.fd)

    @staticmethod
    def _retire(h: _Handle) -> None:
        if not h.retired:
            h.retired = True
            if h.refs == 0:
                os.close(h.fd)

    def _forget_pack(self, seq: int) -> None:
        """A pack vanished behind our back: its chunks are gone (logged, not fatal)."""
        lost = [cid for cid, loc in self._index.items() if loc >> _SEQ_SHIFT == seq]
        for cid in lost:
            self._live -= self._index.pop(cid) & _LEN_MASK
        self._packs.pop(seq, None)
        log.error("pack file vanished", extra=kv(
            pack=self.pack_path(seq).name,
            chunks_lost=len(lost)))

    def read(self, cid: bytes) -> bytes:
        """Raw payload of a chunk, unverified; FileNotFoundError if absent. Thread-safe."""
        with self._lock:
            loc = self._index.get(cid)
            if loc is None:
                raise FileNotFoundError(cid.hex())
            h = self._acquire(loc >> _SEQ_SHIFT)
        length = loc & _LEN_MASK
        try:
            data = os.pread(h.fd, length, ((loc >> _OFF_SHIFT) & _OFF_MASK) + HEADER_SIZE)
        finally:
            self._release(h)
        if len(data) != length and self._index.get(cid) != loc:
            raise FileNotFoundError(cid.hex())  # rolled back (tail truncated) meanwhile
        return data

    def hash(self, cid: bytes) -> tuple[bytes, int]:
        """(BLAKE3, size) of a stored payload read in 1 MiB blocks (scrub without spikes)."""
        with self._lock:
            loc = self._index.get(cid)
            if loc is None:
                raise FileNotFoundError(cid.hex())
            h = self._acquire(loc >> _SEQ_SHIFT)
        hasher = blake3()
        size = 0
        pos = ((loc >> _OFF_SHIFT) & _OFF_MASK) + HEADER_SIZE
        left = loc & _LEN_MASK
        try:
            while left > 0:
                block = os.pread(h.fd, min(left, _HASH_BLOCK), pos)
                if not block:
                    break
                hasher.update(block)
                size += len(block)
                pos += len(block)
                left -= len(block)
        finally:
            self._release(h)
        return hasher.digest(), size

    def record_time(self, cid: bytes) -> float | None:
        """When the chunk was written or last deduped against (None if absent)."""
        with self._lock:
            loc = self._index.get(cid)
            if loc is None:
                return None
            h = self._acquire(loc >> _SEQ_SHIFT)
        try:
            hd = parse_header(os.pread(h.fd, HEADER_SIZE, (loc >> _OFF_SHIFT) & _OFF_MASK))
        finally:
            self._release(h)
        t = float(hd[3]) if hd is not None and hd[1] == cid else 0.0
        return max(t, self._touched.get(cid, 0.0))

    def touch(self, cid: bytes) -> None:
        if cid in self._index:
            self._touched[cid] = time.time()

    # -- writes ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Make every record appended so far durable: fdatasync the packs written since the
        last flush (and the directory if packs were created). The store calls this right
        before a commit record; unlike syncfs it never waits for other writers' data."""
        with self._wlock:
            dirty, self._dirty = self._dirty, set()
            new_entries, self._new_entries = self._new_entries, False
        for seq in sorted(dirty):
            try:
                fd = os.open(self.pack_path(seq), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:  # compacted away meanwhile: its records moved on
                continue
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
        if new_entries:
            fsync_dir(self.base)

    def put(self, cid: bytes, data: bytes | bytearray | memoryview) -> bool:
        """Append a (verified) chunk; False if already present. Not durable until syncfs."""
        if len(cid) != CHUNK_ID_SIZE:
            raise ValueError(f"chunk id must be {CHUNK_ID_SIZE} bytes, got {len(cid)}")
        n = memoryview(data).nbytes
        if not 1 <= n <= ABSOLUTE_MAX_CHUNK_SIZE:
            raise ValueError(f"chunk of {n} bytes")
        with self._wlock:
            if cid in self._index:
                return False
            self._append(KIND_CHUNK, cid, data, int(time.time()))
            return True

    def _append(self, kind: int, cid: bytes, payload: bytes | bytearray | memoryview,
                t: int) -> None:
        """Write one record at the end of the active pack and index it; _wlock held."""
        length = memoryview(payload).nbytes
        n = HEADER_SIZE + length
        a = self._active
        if a is not None and a.size > 0 and a.size + n > self.pack_size:
            self._seal()
            a = None
        if a is None:
            a = self._new_pack()
        h = self._active_handle
        assert h is not None
        off = a.size
        _pwrite_all(h.fd, make_header(kind, cid, length, t), payload, off)
        self._dirty.add(a.seq)
        self._active_entries += _IDX_ENTRY.pack(kind, cid, off, length)
        with self._lock:
            a.size = off + n
            old = self._index.pop(cid, None)
            if old is not None:
                self._kill(old, cid)
            if kind == KIND_CHUNK:  # new, or moved by compaction (keeps its touch time)
                self._index[cid] = _loc(a.seq, off, length)
                a.live_bytes += length
                a.live_count += 1
                self._live += length
            else:
                self._touched.pop(cid, None)

    def _kill(self, loc: int, cid: bytes) -> None:
        """A record stopped being live (superseded or tombstoned); _lock held."""
        p = self._packs[loc >> _SEQ_SHIFT]
        n = loc & _LEN_MASK
        p.live_bytes -= n
        p.live_count -= 1
        p.dead.add(cid)
        self._live -= n

    def _new_pack(self) -> _Pack:
        seq = self._next_seq
        while True:
            try:
                fd = os.open(self.pack_path(seq),
                             os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
                break
            except FileExistsError:  # a stray file took the name: never append to it
                if seq > self._next_seq + 100:
                    raise
                seq += 1
        try:
            os.fchmod(fd, FILE_MODE)
        except BaseException:
            os.close(fd)
            raise
        self._next_seq = seq + 1
        self._new_entries = True
        pack = _Pack(seq)
        with self._lock:
            self._packs[seq] = pack
            self._active = pack
            self._active_handle = _Handle(fd)
        self._active_entries = bytearray()
        return pack

    def _seal(self) -> None:
        """Write the active pack's sidecar; it becomes read-only from now on."""
        a, h = self._active, self._active_handle
        assert a is not None and h is not None
        self._write_sidecar(a.seq, a.size, self._active_entries)
        with self._lock:
            self._active = self._active_handle = None
            self._handles[a.seq] = h
            while len(self._handles) > self._max_open:
                self._retire(self._handles.popitem(last=False)[1])
        self._active_entries = bytearray()

    def remove(self, cid: bytes) -> int:
        """Drop a chunk (gc, rollback); returns its size or -1 if absent."""
        with self._wlock:
            loc = self._index.get(cid)
            if loc is None:
                return -1
            seq, off, length = loc >> _SEQ_SHIFT, (loc >> _OFF_SHIFT) & _OFF_MASK, loc & _LEN_MASK
            a, h = self._active, self._active_handle
            if (a is not None and h is not None and seq == a.seq
                    and off + HEADER_SIZE + length == a.size and not self._dead_before(cid, None)):
                os.ftruncate(h.fd, off)  # last record: leave no trace (failed publish)
                del self._active_entries[-_IDX_ENTRY.size:]
                with self._lock:
                    a.size = off
                    del self._index[cid]
                    a.live_bytes -= length
                    a.live_count -= 1
                    self._live -= length
                    self._touched.pop(cid, None)
            else:
                self._append(KIND_TOMBSTONE, cid, b"", int(time.time()))
            return length

    def quarantine(self, cid: bytes) -> int:
        """Copy the payload to quarantine/<hex>, tombstone it; its size or -1 if absent."""
        with self._wlock:
            loc = self._index.get(cid)
            if loc is None:
                return -1
            with self._lock:
                h = self._acquire(loc >> _SEQ_SHIFT)
            try:
                data = os.pread(h.fd, loc & _LEN_MASK,
                                ((loc >> _OFF_SHIFT) & _OFF_MASK) + HEADER_SIZE)
            finally:
                self._release(h)
            with atomic_writer(self.quarantine_dir / cid.hex(), FILE_MODE,
                               make_parents=False) as f:
                f.write(data)
            self._append(KIND_TOMBSTONE, cid, b"", int(time.time()))
            return loc & _LEN_MASK

    def _dead_before(self, cid: bytes, seq: int | None,
                     going: set[int] | frozenset[int] = frozenset()) -> bool:
        """Does a pack older than *seq* (any pack if None), other than those *going* to be
        deleted, hold a dead record of *cid* (that a tombstone must keep hiding)?"""
        return any(cid in p.dead for s, p in self._packs.items()
                   if (seq is None or s < seq) and s not in going)

    # -- compaction -----------------------------------------------------------------------

    def compact(self) -> tuple[int, int]:
        """Rewrite sealed packs under half live; returns (packs deleted, bytes copied).

        Takes the write lock per record copied, not for the whole run, so puts (which the
        agent makes on its event loop) wait for one record copy at most.
        """
        with self._compact_lock:
            with self._wlock:
                a = self._active
                if a is not None and a.size >= self.pack_size // 2 and 2 * a.live_bytes < a.size:
                    self._seal()  # e.g. holds what this gc just removed: compact it now too
                active = self._active.seq if self._active is not None else None
                with self._lock:
                    victims = sorted(s for s, p in self._packs.items() if s != active and (
                        p.live_count == 0 or 2 * p.live_bytes < p.size))
                    if not victims:
                        return 0, 0
                    vset = set(victims)
                    live: dict[int, list[tuple[int, bytes]]] = {s: [] for s in victims}
                    for cid, loc in self._index.items():
                        if loc >> _SEQ_SHIFT in vset:
                            live[loc >> _SEQ_SHIFT].append((loc, cid))
            copied = 0
            for seq in victims:
                tombs = [cid for kind, cid, _o, _n in self._pack_entries(seq)
                         if kind == KIND_TOMBSTONE]
                for loc, cid in sorted(live[seq]):
                    with self._wlock:
                        if self._index.get(cid) == loc:  # not removed meanwhile
                            copied += self._copy_record(seq, loc, cid)
                with self._wlock:
                    now = int(time.time())
                    for cid in tombs:
                        if cid not in self._index and self._dead_before(cid, seq, vset):
                            self._append(KIND_TOMBSTONE, cid, b"", now)
                            copied += HEADER_SIZE
            self._sync()  # copies durable before the originals go
            deleted = 0
            for seq in victims:  # oldest first: a tombstone never outlives what it hides
                deleted += self._delete_pack(seq)
        log.info("packs compacted", extra=kv(deleted=deleted, bytes_copied=copied))
        return deleted, copied

    def _copy_record(self, seq: int, loc: int, cid: bytes) -> int:
        """Append a copy of a live record (same header fields) to the active pack; _wlock."""
        off, length = (loc >> _OFF_SHIFT) & _OFF_MASK, loc & _LEN_MASK
        with self._lock:
            h = self._acquire(seq)
        try:
            raw = os.pread(h.fd, HEADER_SIZE + length, off)
        finally:
            self._release(h)
        if len(raw) != HEADER_SIZE + length:
            log.error("pack shorter than its index, chunk lost", extra=kv(
                pack=self.pack_path(seq).name,
                chunk_id=cid.hex()))
            with self._lock:
                del self._index[cid]
                self._kill(loc, cid)
                self._touched.pop(cid, None)
            return 0
        hd = parse_header(raw)
        t = hd[3] if hd is not None and hd[1] == cid else int(time.time())
        self._append(KIND_CHUNK, cid, memoryview(raw)[HEADER_SIZE:], t)
        return len(raw)

    def _pack_entries(self, seq: int) -> list[Entry]:
        """Records of a sealed pack, from its sidecar or (if bad) a read-only scan."""
        size = self._packs[seq].size
        sidecar = self._read_sidecar(seq, size)
        if sidecar is not None:
            return list(_IDX_ENTRY.iter_unpack(sidecar))
        fd = os.open(self.pack_path(seq), os.O_RDONLY | os.O_CLOEXEC)
        try:
            return _scan(fd, size)[0]
        finally:
            os.close(fd)

    def _delete_pack(self, seq: int) -> int:
        with self._lock:
            p = self._packs.get(seq)
            if p is None or p.live_count:
                return 0
            del self._packs[seq]
            h = self._handles.pop(seq, None)
            if h is not None:
                self._retire(h)
        for path in (self.pack_path(seq), self.idx_path(seq)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return 1

    # -- migration from chunks/ab/<hex> ---------------------------------------------------

    def _import_legacy(self, fans: list[Path]) -> tuple[int, int, int]:
        """Move old one-file-per-chunk chunks into packs; (imported, quarantined, temps)."""
        imported = bad = temps = 0
        pending: list[Path] = []
        pending_bytes = 0

        def flush() -> None:
            if pending:
                self._sync()  # the pack copies are durable before the files go
                for p in pending:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(p)
                pending.clear()

        log.info("importing chunk files of the old layout into packs", extra=kv(root=self.base))
        for d in fans:
            with os.scandir(d) as it:
                names = sorted(e.name for e in it)
            for name in names:
                path = d / name
                if name.startswith(TMP_PREFIX):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                        temps += 1
                    continue
                if not _CHUNK_NAME_RE.fullmatch(name) or name[:2] != d.name:
                    continue
                cid = bytes.fromhex(name)
                if cid not in self._index:
                    try:
                        data, mtime = _read_legacy(path)
                    except FileNotFoundError:
                        continue
                    if data is None:
                        continue  # not a regular file: leave it alone
                    if not 1 <= len(data) <= ABSOLUTE_MAX_CHUNK_SIZE or blake3(
                            data).digest() != cid:
                        os.replace(path, self.quarantine_dir / name)
                        log.warning("corrupt chunk quarantined", extra=kv(
                            chunk_id=name,
                            size=len(data),
                            context="import"))
                        bad += 1
                        continue
                    self._append(KIND_CHUNK, cid, data, int(mtime))
                    imported += 1
                    pending_bytes += len(data)
                pending.append(path)
                if pending_bytes >= _IMPORT_BATCH:
                    flush()
                    pending_bytes = 0
        flush()
        left = 0
        for d in fans:
            try:
                d.rmdir()
            except OSError:
                left += 1
        log.info("old chunk files", extra=kv(imported=imported, quarantined=bad, dirs_left=left))
        return imported, bad, temps


def _read_legacy(path: Path) -> tuple[bytes | None, float]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None, 0.0
        return f.read(min(st.st_size, ABSOLUTE_MAX_CHUNK_SIZE) + 1), st.st_mtime


def _pack_entries(entries: Iterable[Entry]) -> bytes:
    return b"".join(_IDX_ENTRY.pack(*e) for e in entries)


def _pwrite_all(fd: int, header: bytes, payload: bytes | bytearray | memoryview,
                off: int) -> None:
    """Write header+payload at *off*; on any failure truncate back so no partial record stays."""
    total = len(header) + memoryview(payload).nbytes
    try:
        done = os.pwritev(fd, [header, payload], off)
        while done < total:  # short write: rare (signal, nearly full disk)
            rest = (header + bytes(payload))[done:]
            n = os.pwrite(fd, rest, off + done)
            if n <= 0:
                raise OSError(5, "short write to pack")
            done += n
    except BaseException:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, off)
        raise


def _scan(fd: int, size: int) -> tuple[list[Entry], int, int]:
    """Parse records from offset 0: (entries, end of the last good record, damaged bytes).

    Reads 16 KiB windows, so small records cost one syscall per window and big ones one per
    record (the payloads themselves are not read).
    """
    entries: list[Entry] = []
    off = end = damaged = 0
    buf = b""
    buf_off = 0
    while off < size:
        rel = off - buf_off
        if rel < 0 or rel + HEADER_SIZE > len(buf):
            buf = os.pread(fd, _SCAN_WINDOW, off)
            buf_off, rel = off, 0
        hd = parse_header(buf, rel)
        if hd is not None and off + HEADER_SIZE + hd[2] <= size:
            entries.append((hd[0], hd[1], off, hd[2]))
            off += HEADER_SIZE + hd[2]
            end = off
            continue
        nxt = _find_record(fd, off + 1, size)
        if nxt is None:
            break  # torn tail
        log.error("damaged pack region skipped", extra=kv(offset=off, bytes=nxt - off))
        damaged += nxt - off
        off = nxt
    return entries, end, damaged


def _find_record(fd: int, start: int, size: int) -> int | None:
    """Offset of the next valid record at or after *start*, or None."""
    pos = start
    while pos + HEADER_SIZE <= size:
        block = os.pread(fd, _FIND_BLOCK + HEADER_SIZE, pos)
        i = 0
        while (j := block.find(MAGIC, i, _FIND_BLOCK + len(MAGIC) - 1)) >= 0:
            hd = parse_header(block, j)
            if hd is not None and pos + j + HEADER_SIZE + hd[2] <= size:
                return pos + j
            i = j + 1
        pos += _FIND_BLOCK
    return None
