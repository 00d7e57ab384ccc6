"""Watched publishes: a file or folder published with ``--watch`` becomes a new version of
its resource whenever its content changes, from inside the agent (it outlives the CLI and
comes back after a restart: agent/folders/watchstate.py).

Why inotify through ``inotify_simple``: one file descriptor for every watch, read by the
event loop when the kernel has something (``add_reader``), so an idle watch costs no CPU
and no thread; the library is one pure-Python file over ``ctypes`` (docs/dependencies.md).
A folder needs one kernel watch per directory: they are counted against ``[watch]
max_dirs``, and paths against ``max_watched``. A file is watched through its directory,
because editors save by writing a temp file and renaming it over the original.

What becomes a version is decided by agent/folders/debounce.py (quiet period, at most one
version per interval); temp and partial files (agent/store/scan.py ``ignored``) never
count. Republishing identical content makes no version (the store returns the current
one), so a touch or an event storm without a change costs one scan and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from inotify_simple import INotify, flags

from agent.config import WatchConfig
from agent.errors import ErrorKind, ShoalError
from agent.folders import watchstate
from agent.folders.debounce import Debounce
from agent.folders.watchstate import WatchEntry
from agent.log import kv
from agent.store.errors import SourceChanged
from agent.store.manifest import Manifest
from agent.store.scan import ignored

__all__ = ["Republish", "WatchError", "WatchService"]

log = logging.getLogger("shoal.watch")

_MASK = (flags.CLOSE_WRITE | flags.MODIFY | flags.ATTRIB | flags.CREATE | flags.DELETE
         | flags.MOVED_FROM | flags.MOVED_TO | flags.DELETE_SELF | flags.MOVE_SELF
         | flags.ONLYDIR | flags.DONT_FOLLOW | flags.EXCL_UNLINK)

#: Publish one watched path (blocking: run in a thread); the manifest now current.
Republish = Callable[[WatchEntry], Manifest]


class WatchError(ShoalError):
    """A watch cannot be added (limit reached, not a file or directory)."""

    kind = ErrorKind.INVALID


class WatchLimit(WatchError):
    kind = ErrorKind.QUOTA


class NotWatched(WatchError):
    kind = ErrorKind.NOT_FOUND


@dataclass
class _Watch:
    entry: WatchEntry
    debounce: Debounce
    folder: bool
    dirs: dict[Path, int] = field(default_factory=dict)  # watched directory -> wd
    timer: asyncio.TimerHandle | None = None
    version: int | None = None
    name: str | None = None
    error: str | None = None
    limit_hit: bool = False  # the error is watch.max_dirs
    publishes: int = 0


class WatchService:
    """Every watched path of this agent; owned by the node (one task: :meth:`run`)."""

    def __init__(self, cfg: WatchConfig, state_path: Path, republish: Republish,
                 on_published: Callable[[Manifest], None]) -> None:
        self._cfg = cfg
        self._state_path = state_path
        self._republish = republish
        self._on_published = on_published
        self._watches: dict[Path, _Watch] = {}
        # one kernel watch per directory inode, shared by every watched path that needs
        # it (a folder and a file in it; two files of one directory)
        self._by_wd: dict[int, list[tuple[_Watch, Path]]] = {}
        self._inotify: INotify | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ----------------------------------------------------------------------
    async def run(self) -> None:
        """Watch until cancelled (the saved watches come back at the first use)."""
        self._open()
        try:
            await asyncio.Event().wait()
        finally:
            self.close()

    def _open(self) -> None:
        """The inotify descriptor, read by the event loop (a command may come first: the
        control socket answers before the node starts this service's task)."""
        if self._inotify is None:
            self._loop = asyncio.get_running_loop()
            self._inotify = INotify(nonblocking=True)
            self._loop.add_reader(self._inotify.fileno(), self._readable)
            # the saved watches, each checked once: the path may have changed while the
            # agent was not running (identical content makes no version)
            for e in watchstate.load(self._state_path)[: self._cfg.max_watched]:
                self._changed(self._track(e, self._is_folder(e.path)))

    def close(self) -> None:
        for w in self._watches.values():
            if w.timer is not None:
                w.timer.cancel()
        for t in list(self._tasks):
            t.cancel()
        if self._inotify is not None:
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(self._inotify.fileno())
            self._inotify.close()
            self._inotify = None

    # -- commands -----------------------------------------------------------------------
    def add(self, path: Path, resource_id: str, public: bool, version: int,
            name: str) -> dict[str, object]:
        """Watch *path* (just published as *resource_id* v*version*) from now on."""
        self._open()
        path = watchstate.check_path(str(path))
        old = self._watches.get(path)
        if old is None and len(self._watches) >= self._cfg.max_watched:
            raise WatchLimit(f"already watching {len(self._watches)} paths (watch."
                             "max_watched); stop one with: shoal unwatch NAME")
        if old is not None:
            self._untrack(old)
        w = self._track(WatchEntry(path, resource_id, public), self._is_folder(path))
        w.version, w.name = version, name
        if w.error is not None:
            self._untrack(w)
            raise WatchLimit(w.error) if w.limit_hit else WatchError(w.error)
        self._save()
        log.info("watching", extra=kv(path=path, resource_id=resource_id,
                                      dirs=len(w.dirs)))
        return self._describe(w)

    def remove(self, query: str) -> list[dict[str, object]]:
        """Stop watching the paths whose path, resource ID (or ID prefix) or name is
        *query*; the removed ones (NotWatched if none)."""
        self._open()
        gone = [w for w in self._watches.values()
                if query in (str(w.entry.path), w.name)
                or (len(query) >= 6 and w.entry.resource_id.startswith(query.lower()))]
        if not gone:
            raise NotWatched(f"nothing watched matches {query[:80]!r}")
        for w in gone:
            self._untrack(w)
        self._save()
        return [self._describe(w) for w in gone]

    def describe(self) -> list[dict[str, object]]:
        self._open()
        return [self._describe(w) for w in sorted(self._watches.values(),
                                                  key=lambda w: str(w.entry.path))]

    def _describe(self, w: _Watch) -> dict[str, object]:
        return {"path": str(w.entry.path), "resource_id": w.entry.resource_id,
                "name": w.name, "version": w.version, "folder": w.folder,
                "public": w.entry.public, "dirs": len(w.dirs), "publishes": w.publishes,
                "pending": w.debounce.dirty or w.debounce.busy, "error": w.error}

    # -- kernel watches -----------------------------------------------------------------
    @staticmethod
    def _is_folder(path: Path) -> bool:
        with contextlib.suppress(OSError):
            return stat.S_ISDIR(os.stat(path, follow_symlinks=False).st_mode)
        return False

    def _track(self, entry: WatchEntry, folder: bool) -> _Watch:
        w = _Watch(entry, Debounce(self._cfg.quiet, self._cfg.min_interval), folder)
        self._watches[entry.path] = w
        self._add_dirs(w)
        return w

    def _untrack(self, w: _Watch) -> None:
        if w.timer is not None:
            w.timer.cancel()
        for wd in w.dirs.values():
            users = [u for u in self._by_wd.get(wd, []) if u[0] is not w]
            if users:
                self._by_wd[wd] = users
                continue
            self._by_wd.pop(wd, None)
            if self._inotify is not None:
                with contextlib.suppress(OSError):
                    self._inotify.rm_watch(wd)
        w.dirs.clear()
        self._watches.pop(w.entry.path, None)

    def _add_dirs(self, w: _Watch) -> None:
        """Kernel watches on the folder's directories (or the file's directory); symlinks
        are not followed. Sets ``w.error`` when the path is gone or a limit is hit."""
        top = w.entry.path if w.folder else w.entry.path.parent
        dirs = [top]
        if w.folder:
            for d, subdirs, _files in os.walk(top, followlinks=False):
                subdirs[:] = sorted(s for s in subdirs if not ignored(s))
                dirs.extend(Path(d) / s for s in subdirs)
        w.error, w.limit_hit = None, False
        for directory in dirs:
            if not self._watch_dir(w, directory):
                break

    def _watch_dir(self, w: _Watch, d: Path) -> bool:
        assert self._inotify is not None
        if d in w.dirs:
            return True
        if len(self._by_wd) >= self._cfg.max_dirs:
            w.limit_hit = True
            w.error = (f"more than {self._cfg.max_dirs} directories watched (watch.max_dirs); "
                       "watch a smaller folder or raise the limit")
            return False
        try:
            wd = self._inotify.add_watch(d, _MASK)
        except OSError as e:
            if d == w.entry.path or d == w.entry.path.parent:
                w.error = f"{d}: {e.strerror or e}"
                return False
            return True  # a subdirectory that vanished meanwhile
        self._by_wd.setdefault(wd, []).append((w, d))
        w.dirs[d] = wd
        return True

    def _readable(self) -> None:
        if self._inotify is None:
            return
        try:
            events = self._inotify.read(timeout=0)
        except OSError as e:
            log.warning("watch read failed", extra=kv(error=e))
            return
        touched: set[Path] = set()
        for ev in events:
            if ev.mask & flags.Q_OVERFLOW:  # the kernel dropped events: check everything
                touched.update(self._watches)
                continue
            if ev.mask & flags.IGNORED:  # the directory is gone (or unwatched)
                for w, d in self._by_wd.pop(ev.wd, []):
                    w.dirs.pop(d, None)
                continue
            if ev.name and ignored(ev.name):
                continue
            for w, d in list(self._by_wd.get(ev.wd, [])):
                if not w.folder and ev.name != w.entry.path.name:
                    continue
                if w.folder and ev.mask & flags.ISDIR and ev.mask & (flags.CREATE
                                                                     | flags.MOVED_TO):
                    self._watch_new_dir(w, d / ev.name)
                touched.add(w.entry.path)
        for p in touched:
            if p in self._watches:
                self._changed(self._watches[p])

    def _watch_new_dir(self, w: _Watch, new: Path) -> None:
        """A directory appeared inside a watched folder: watch it (and what is below it)
        at once, so files written into it right away are seen."""
        if ignored(new.name) or not self._watch_dir(w, new):
            return
        with contextlib.suppress(OSError):
            for d, subdirs, _f in os.walk(new, followlinks=False):
                subdirs[:] = [s for s in subdirs if not ignored(s)]
                for s in subdirs:
                    if not self._watch_dir(w, Path(d) / s):
                        return

    # -- publishing ---------------------------------------------------------------------
    def _changed(self, w: _Watch) -> None:
        assert self._loop is not None
        w.debounce.changed(self._loop.time())
        self._schedule(w)

    def _schedule(self, w: _Watch) -> None:
        assert self._loop is not None
        if w.timer is not None:
            w.timer.cancel()
            w.timer = None
        due = w.debounce.due()
        if due is not None:
            w.timer = self._loop.call_at(due, self._fire, w)

    def _fire(self, w: _Watch) -> None:
        w.timer = None
        if self._watches.get(w.entry.path) is not w:
            return
        w.debounce.start()
        task = asyncio.get_running_loop().create_task(self._publish(w),
                                                      name="shoal:watch-publish")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, w: _Watch) -> None:
        assert self._loop is not None
        before = w.version
        retry = False
        try:
            m = await asyncio.to_thread(self._republish, w.entry)
        except Exception as e:  # the path vanished, became unreadable, quota...: keep going
            w.error = str(e) or type(e).__name__
            # a file written while it was read: again once quiet (no event may follow)
            retry = isinstance(e, SourceChanged)
            log.warning("watched path not republished", extra=kv(
                path=w.entry.path, resource_id=w.entry.resource_id, error=w.error,
                retry=retry))
        else:
            w.error, w.version, w.name = None, m.version, m.name
            if before is None or m.version != before:
                w.publishes += 1
                log.info("watched path republished", extra=kv(
                    path=w.entry.path, name=m.name, version=m.version, size=m.size))
                self._on_published(m)  # catalog, and the followers told
            if w.folder and self._watches.get(w.entry.path) is w:
                self._refresh_dirs(w)
        finally:
            w.debounce.finished(self._loop.time())
            if retry:
                w.debounce.changed(self._loop.time())
            self._schedule(w)

    def _refresh_dirs(self, w: _Watch) -> None:
        """Re-walk a folder after a publish: watch directories created since."""
        self._add_dirs(w)

    def _save(self) -> None:
        try:
            watchstate.save(self._state_path, [w.entry for w in self._watches.values()])
        except OSError as e:
            log.warning("watch list not saved", extra=kv(path=self._state_path, error=e))
