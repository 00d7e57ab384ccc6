"""On-disk chunk files: ``chunks/ab/<64 hex>`` with atomic writes and a quarantine.

Why a 2-char fan-out: keeps directories at ~1/256 of the chunk count so lookups stay fast
on SD cards and FAT-like filesystems. This module knows paths and bytes only; quotas,
locking and policy live in :mod:`agent.store.store`.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from blake3 import blake3

from agent.fsutil import atomic_writer, fsync_dir, remove_stale_temps
from agent.store.chunker import ABSOLUTE_MAX_CHUNK_SIZE, CHUNK_ID_SIZE

DIR_MODE = 0o700
FILE_MODE = 0o600
_HASH_BLOCK = 1024 * 1024
_FANOUT_RE = re.compile(r"[0-9a-f]{2}")
_CHUNK_NAME_RE = re.compile(r"[0-9a-f]{64}")


class ChunkFiles:
    """Maps chunk ids to files under *base* and moves bad ones to *quarantine*."""

    def __init__(self, base: Path, quarantine: Path) -> None:
        self.base = base
        self.quarantine_dir = quarantine

    def path(self, cid: bytes) -> Path:
        """File of chunk *cid* (which must be 32 bytes: hex of it cannot escape base)."""
        if len(cid) != CHUNK_ID_SIZE:
            raise ValueError(f"chunk id must be {CHUNK_ID_SIZE} bytes, got {len(cid)}")
        h = cid.hex()
        return self.base / h[:2] / h

    def ensure_fanout(self) -> None:
        """Create all 256 fan-out dirs up front: one directory fsync instead of one per dir
        on the hot path of a first download."""
        created = False
        for i in range(256):
            d = self.base / f"{i:02x}"
            if not d.is_dir():
                d.mkdir(mode=DIR_MODE, exist_ok=True)
                created = True
        if created:
            fsync_dir(self.base)

    def exists(self, cid: bytes) -> bool:
        return self.path(cid).is_file()

    def size(self, cid: bytes) -> int:
        """Size on disk, or -1 if absent."""
        try:
            return self.path(cid).stat().st_size
        except FileNotFoundError:
            return -1

    def write(self, cid: bytes, data: bytes | bytearray | memoryview) -> None:
        """Atomically create the chunk file (caller has verified the hash)."""
        path = self.path(cid)
        fan = path.parent
        if not fan.is_dir():
            fan.mkdir(mode=DIR_MODE, exist_ok=True)
            fsync_dir(self.base)
        with atomic_writer(path, FILE_MODE, durable=False, make_parents=False) as f:
            # not durable here: the store runs one syncfs before the commit record
            f.write(data)

    def read(self, cid: bytes) -> bytes:
        """Raw bytes of a chunk, unverified, at most ABSOLUTE_MAX_CHUNK_SIZE + 1 of them.

        Raises FileNotFoundError if absent. Reading one byte past the limit means an
        oversized (tampered) file can never hash to its id and never exhausts memory.
        """
        fd = os.open(self.path(cid), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb", buffering=0) as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return b""
            # Size the read from fstat: asking for the 16 MiB limit on every read makes
            # Python allocate (and fault in) 16 MiB per chunk served.
            return f.read(min(st.st_size, ABSOLUTE_MAX_CHUNK_SIZE) + 1)

    def hash_file(self, cid: bytes) -> tuple[bytes, int]:
        """(BLAKE3 digest, size) of a chunk file read in 1 MiB blocks (scrub without spikes)."""
        h = blake3()
        size = 0
        buf = bytearray(_HASH_BLOCK)
        view = memoryview(buf)
        fd = os.open(self.path(cid), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb", buffering=0) as f:
            while n := f.readinto(buf):  # type: ignore[attr-defined]
                h.update(view[:n])
                size += n
        return h.digest(), size

    def quarantine(self, cid: bytes) -> int:
        """Move the chunk file to quarantine/ (kept for forensics); return its size or -1."""
        src = self.path(cid)
        try:
            size = src.stat().st_size
            os.replace(src, self.quarantine_dir / src.name)
        except FileNotFoundError:
            return -1
        fsync_dir(src.parent)
        fsync_dir(self.quarantine_dir)
        return size

    def remove(self, cid: bytes) -> int:
        """Delete a chunk file; return its size or -1 if it was already gone."""
        path = self.path(cid)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return -1
        return size

    def fanout_dirs(self) -> Iterator[Path]:
        with os.scandir(self.base) as it:
            for e in it:
                if _FANOUT_RE.fullmatch(e.name) and e.is_dir(follow_symlinks=False):
                    yield Path(e.path)

    def scan(self) -> Iterator[tuple[bytes, int, float]]:
        """(chunk id, size, mtime) of every well-named chunk file; ignores anything else."""
        for d in self.fanout_dirs():
            with os.scandir(d) as it:
                for e in it:
                    if not _CHUNK_NAME_RE.fullmatch(e.name) or e.name[:2] != d.name:
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        st = e.stat(follow_symlinks=False)
                        if stat.S_ISREG(st.st_mode):
                            yield bytes.fromhex(e.name), st.st_size, st.st_mtime

    def remove_stale_temps(self) -> int:
        """Delete crash leftovers of atomic writes in every fan-out dir."""
        return sum(remove_stale_temps(d) for d in self.fanout_dirs())
