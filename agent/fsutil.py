"""Crash-safe file helpers: every durable write in Shoal goes through here.

Why: a device may lose power or be SIGKILLed at any instant. Writing to a temp file in the
same directory, fsyncing it, renaming over the target and fsyncing the directory means a
reader sees either the old or the new content, never a torn mix.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

TMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    """Persist a directory entry change (create/rename/unlink) in *path*."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(path: Path) -> None:
    """Flush every dirty page of the filesystem holding *path* with one syscall.

    Why: fsyncing each of thousands of 256 KiB chunk files costs two disk flushes apiece
    (fatal on an SD card). Chunks are written with ``durable=False`` and one syncfs runs
    before the record that makes them reachable is committed: a process crash never needs a
    flush (the page cache survives it), and after a power cut everything reachable was on disk
    first. Falls back to os.sync() where syncfs(2) is unavailable.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc_syncfs is None or _libc_syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def _load_syncfs() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


_libc_syncfs = _load_syncfs()


@contextlib.contextmanager
def atomic_writer(
    path: Path, mode: int = 0o644, *, durable: bool = True, make_parents: bool = True
) -> Iterator[BinaryIO]:
    """Yield a binary file; on clean exit it atomically replaces *path* (temp+fsync+rename).

    ``durable=False`` skips the fsyncs (still temp+rename, so never torn after a process
    crash); the caller must :func:`syncfs` before anything points at the file.
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def current_umask() -> int:
    """The process umask, read without changing it where the kernel says (Linux >= 4.7:
    /proc/self/status); else by the set-and-restore dance, briefly 0o077 (never looser)."""
    with (contextlib.suppress(OSError, ValueError),
          open("/proc/self/status", encoding="ascii", errors="replace") as f):
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    old = os.umask(0o077)
    os.umask(old)
    return old


def user_file_mode() -> int:
    """The mode a user's new file gets from open(2): 0o666 less the umask. For files written
    on the user's behalf (``shoal fetch -o``), which must not be wider or narrower than
    what their other tools would create."""
    return 0o666 & ~current_umask()


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Atomically replace *path* with *data*."""
    with atomic_writer(path, mode) as f:
        f.write(data)


def remove_stale_temps(directory: Path) -> int:
    """Delete temp files left by a crash in *directory* (not recursive); return how many."""
    n = 0
    if not directory.is_dir():
        return 0
    for p in directory.iterdir():
        if p.name.startswith(TMP_PREFIX):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
    return n
