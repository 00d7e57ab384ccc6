"""Writing a folder resource into a directory, and updating it to a newer version in place.

:func:`apply_tree` is the one entry point: ``shoal fetch NAME --to DIR`` calls it with no old
version, and following a folder calls it with the version last written there. The decision
is agent/store/treeplan.py's (pure); this module looks at the disk and carries it out.

Why it is built this way:

* **Never outside DEST, never through a link.** Every path is walked component by component
  from a directory descriptor of DEST with ``O_NOFOLLOW``; a symbolic link where a
  directory is needed refuses the whole update before anything is written, and a link or
  directory where a file goes is left alone (reported). Paths come from a manifest whose
  ``files`` passed agent/store/tree.py (no ``..``, no absolute path, no empty component).
* **Old or new per file, never half-written.** Everything is staged first: each new file's
  bytes go to a temp file in DEST (``.shoal-tmp-*``, read from the store and verified chunk
  by chunk), and a file that only moved is hard-linked to its temp (no bytes copied; a
  filesystem without hard links gets a copy from the store). One ``syncfs`` makes the
  staged bytes durable; then each temp is renamed over its path (atomic per file), and only
  then are removed files unlinked. A crash leaves each file old or new; leftover temps are
  deleted by the next apply.
* **The user's edits are never destroyed.** A file is replaced or removed only if it still
  holds what the old version wrote (checked by content: its chunk ids under the manifest's
  chunking), or already holds the new content.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from agent.fsutil import syncfs
from agent.log import kv
from agent.store.chunker import chunk_stream
from agent.store.errors import IncompleteResource, ManifestError, StoreError
from agent.store.manifest import ChunkEntry, Manifest
from agent.store.treeplan import Content, Local, Plan, file_contents, plan

__all__ = ["STAGE_PREFIX", "ChunkSource", "TreeError", "TreeReport", "apply_tree"]

log = logging.getLogger(__name__)

STAGE_PREFIX = ".shoal-tmp-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NOT_HERE = (errno.ENOENT, errno.ENOTDIR)


class TreeError(StoreError):
    """The destination cannot be written safely (a symlink in the way, not a directory)."""


class ChunkSource(Protocol):
    """What writing a tree needs of the store: verified chunks and what is missing."""

    def get_chunk(self, chunk_id_: bytes, *, verify: bool = True) -> bytes: ...

    def missing_chunks(self, manifest: Manifest) -> list[ChunkEntry]: ...


@dataclass
class TreeReport:
    """What an apply did, for the CLI and for the follow service's log."""

    written: list[str] = field(default_factory=list)
    moved: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    unchanged: int = 0
    bytes_written: int = 0

    def to_obj(self) -> dict[str, object]:
        return {"written": len(self.written), "moved": len(self.moved),
                "deleted": len(self.deleted), "unchanged": self.unchanged,
                "bytes_written": self.bytes_written,
                "kept": [{"path": p, "why": w} for p, w in self.kept[:50]],
                "kept_count": len(self.kept)}


class _Root:
    """DEST as a directory descriptor, and walking inside it without following links."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        try:
            self.fd = os.open(dest, _DIR_FLAGS)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise TreeError(f"{dest} is a symbolic link; give the real directory") from None
            raise TreeError(f"{dest}: {e.strerror or e}") from None
        self._dirs: dict[str, int] = {"": self.fd}

    def close(self) -> None:
        for fd in self._dirs.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._dirs.clear()

    def parent(self, path: str, *, create: bool) -> tuple[int, str]:
        """(descriptor of *path*'s directory, leaf name). TreeError for a symlink on the way;
        FileNotFoundError if a directory is missing (and not *create*); NotADirectoryError
        if a component is a file."""
        parts = path.split("/")
        at = ""
        fd = self.fd
        for part in parts[:-1]:
            nxt = f"{at}/{part}" if at else part
            cached = self._dirs.get(nxt)
            if cached is None:
                try:
                    cached = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=fd)
                    cached = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    # O_DIRECTORY|O_NOFOLLOW on a link: ELOOP, or ENOTDIR on Linux
                    if e.errno == errno.ELOOP or (e.errno == errno.ENOTDIR and stat.S_ISLNK(
                            os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode)):
                        raise TreeError(f"{self.dest / nxt} is a symbolic link: refusing to "
                                        "write through it") from None
                    raise
                self._dirs[nxt] = cached
            fd, at = cached, nxt
        return fd, parts[-1]

    def forget(self, directory: str) -> None:
        fd = self._dirs.pop(directory, None)
        if fd is not None:
            os.close(fd)


_Seen = tuple[int, int, int]  # inode, size, mtime_ns of a file when it was compared


def _identity(st: os.stat_result) -> _Seen:
    return st.st_ino, st.st_size, st.st_mtime_ns


def _local_state(root: _Root, path: str, old: Content | None, new: Content,
                 avg: int) -> tuple[Local, int, _Seen | None]:
    """What *path* holds (compared by content with the old and new version), its mode,
    and the file's identity when compared (re-checked before it is removed)."""
    try:
        dfd, leaf = root.parent(path, create=False)
        st = os.stat(leaf, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return Local.ABSENT, 0, None
    except NotADirectoryError:
        return Local.BLOCKED, 0, None
    if not stat.S_ISREG(st.st_mode):
        return Local.OTHER, 0, None
    mode, seen = stat.S_IMODE(st.st_mode), _identity(st)
    wanted = [c for c in (old, new) if c is not None and c.size == st.st_size]
    if not wanted:
        return Local.DIFFERS, mode, seen
    key = _file_key(dfd, leaf, avg)
    if key == new.key:
        return Local.NEW, mode, seen
    if old is not None and key == old.key:
        return Local.OLD, mode, seen
    return Local.DIFFERS, mode, seen


def _file_key(dfd: int, leaf: str, avg: int) -> tuple[bytes, ...] | None:
    try:
        fd = os.open(leaf, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dfd)
    except OSError:
        return None
    with os.fdopen(fd, "rb", buffering=0) as f:
        return tuple(r.chunk_id for r in chunk_stream(f, avg))


def apply_tree(store: ChunkSource, old: Manifest | None, new: Manifest, dest: Path | str,
               *, force: bool = False) -> TreeReport:
    """Make the directory *dest* hold folder version *new* (see the module docstring).

    *old* is the version last written to *dest* (None: a first export; files already there
    are kept unless they hold the new content, or *force*). Needs every chunk of *new* in
    the store (IncompleteResource otherwise); TreeError if *dest* cannot be written safely.
    Returns what was written, moved, deleted and kept.
    """
    if new.files is None:
        raise ManifestError(f"{new.name!r} is a file, not a folder")
    if old is not None and (old.files is None or old.resource_id != new.resource_id):
        old = None  # not a version of the same folder: compare with nothing
    missing = store.missing_chunks(new)
    if missing:
        raise IncompleteResource(f"cannot write {new.name!r}: {len(missing)} chunks missing")
    dest = Path(dest)
    with contextlib.suppress(FileExistsError):
        dest.mkdir(parents=True, mode=0o755)
    root = _Root(dest)
    try:
        return _apply(store, root, file_contents(old), file_contents(new), new, force)
    finally:
        root.close()


def _apply(store: ChunkSource, root: _Root, old: dict[str, Content],
           new: dict[str, Content], m: Manifest, force: bool) -> TreeReport:
    _remove_stale_stages(root.fd)
    local: dict[str, Local] = {}
    modes: dict[str, int] = {}
    seen: dict[str, _Seen] = {}
    for path in sorted(set(old) | set(new)):
        target = new.get(path) or old[path]
        st, mode, ident = _local_state(root, path, old.get(path), target, m.avg_chunk_size)
        if path not in new and st is Local.NEW:
            st = Local.OLD  # (compared with its own old content above)
        local[path], modes[path] = st, mode
        if ident is not None:
            seen[path] = ident
    decided = plan(old, new, local, force=force, modes=modes)
    report = TreeReport(unchanged=decided.unchanged, kept=list(decided.kept))
    staged = _stage(store, root, decided, new, m, report)
    try:
        syncfs(root.dest)
        _commit(root, decided, staged, new, report, seen)
    finally:
        for tmp in staged.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=root.fd)
    for path in decided.chmod:
        with contextlib.suppress(OSError):
            dfd, leaf = root.parent(path, create=False)
            os.chmod(leaf, new[path].mode, dir_fd=dfd)
    with contextlib.suppress(OSError):
        syncfs(root.dest)
    log.info("folder written", extra=kv(
        name=m.name, version=m.version, dest=root.dest, written=len(report.written),
        moved=len(report.moved), deleted=len(report.deleted), kept=len(report.kept),
        bytes=report.bytes_written))
    return report


def _remove_stale_stages(fd: int) -> None:
    for name in os.listdir(fd):
        if name.startswith(STAGE_PREFIX):
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=fd)


def _new_stage(fd: int, mode: int) -> tuple[str, BinaryIO]:
    for _ in range(10):
        name = STAGE_PREFIX + os.urandom(8).hex()
        try:
            tfd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                          | os.O_CLOEXEC, 0o600, dir_fd=fd)
        except FileExistsError:
            continue
        os.fchmod(tfd, mode)
        return name, os.fdopen(tfd, "wb")
    raise StoreError("cannot create a temp file in the destination")


def _stage(store: ChunkSource, root: _Root, decided: Plan, new: dict[str, Content],
           m: Manifest, report: TreeReport) -> dict[str, str]:
    """Temp files for every write and move, before anything in the tree changes: target
    path -> temp name in DEST. A failure removes what was staged and re-raises."""
    staged: dict[str, str] = {}
    try:
        for src, dst in decided.move:
            name = STAGE_PREFIX + os.urandom(8).hex()
            try:
                sfd, leaf = root.parent(src, create=False)
                os.link(leaf, name, src_dir_fd=sfd, dst_dir_fd=root.fd, follow_symlinks=False)
            except OSError as e:  # no hard links here (FAT), or the source went away
                log.debug("move staged as a copy", extra=kv(path=dst, reason=e))
                decided.write.append(dst)
                continue
            staged[dst] = name
            report.moved.append((src, dst))
        for path in decided.write:
            name, f = _new_stage(root.fd, new[path].mode)
            staged[path] = name
            with f:
                for cid in new[path].key:
                    data = store.get_chunk(cid)
                    f.write(data)
                    report.bytes_written += len(data)
            report.written.append(path)
    except BaseException:
        for name in staged.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=root.fd)
        raise
    return staged


def _commit(root: _Root, decided: Plan, staged: dict[str, str], new: dict[str, Content],
            report: TreeReport, seen: dict[str, _Seen]) -> None:
    """Rename the staged files into place, then remove what the new version dropped. A
    path blocked by a file or directory (that the removals may clear) is retried after
    them; still blocked, its temp is dropped and the path reported as kept."""
    deferred: dict[str, str] = {}
    for path in sorted(staged):
        name = staged.pop(path)
        if _place(root, name, path, new[path].mode) is not None:
            deferred[path] = name
    staged.update(deferred)  # (the caller removes whatever is left)
    for path in decided.delete:
        try:
            dfd, leaf = root.parent(path, create=False)
            if _identity(os.stat(leaf, dir_fd=dfd, follow_symlinks=False)) != seen.get(path):
                report.kept.append((path, "changed during the update: kept"))
                continue
            os.unlink(leaf, dir_fd=dfd)
        except OSError as e:
            if e.errno not in _NOT_HERE:
                report.kept.append((path, f"could not remove: {e.strerror}"))
            continue
        report.deleted.append(path)
        _prune_dirs(root, path)
    for path, name in deferred.items():
        why = _place(root, name, path, new[path].mode)
        if why is None:
            del staged[path]
        else:
            report.kept.append((path, why))
            if path in report.written:
                report.written.remove(path)
            report.moved = [(a, b) for a, b in report.moved if b != path]


def _place(root: _Root, name: str, path: str, mode: int) -> str | None:
    """Rename temp *name* to *path*; None if done, else why not (the temp is left, for a
    retry or for the caller to remove): a file or directory in the way, another mount
    inside DEST (EXDEV), no permission."""
    try:
        dfd, leaf = root.parent(path, create=True)
        st = _lstat(dfd, leaf)
        if st is not None and stat.S_ISDIR(st.st_mode):
            return "a directory is in its place"
        os.rename(name, leaf, src_dir_fd=root.fd, dst_dir_fd=dfd)
    except (NotADirectoryError, FileExistsError):
        return "a file is in the way of its directory"
    except OSError as e:
        return f"could not be written: {e.strerror or e}"
    with contextlib.suppress(OSError):
        if stat.S_IMODE(os.stat(leaf, dir_fd=dfd, follow_symlinks=False).st_mode) != mode:
            os.chmod(leaf, mode, dir_fd=dfd)
    return None


def _lstat(dfd: int, leaf: str) -> os.stat_result | None:
    try:
        return os.stat(leaf, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _prune_dirs(root: _Root, path: str) -> None:
    """Remove the directories a deleted file leaves empty (never DEST itself)."""
    parts = path.split("/")[:-1]
    while parts:
        d = "/".join(parts)
        root.forget(d)
        try:
            pfd, _ = root.parent(d, create=False)
            os.rmdir(parts[-1], dir_fd=pfd)
        except OSError:
            return
        parts.pop()
