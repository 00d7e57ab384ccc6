"""Which folder version was last written into which directory (``<data dir>/exports.json``).

Why: updating an exported folder in place (``shoal fetch NAME --to DIR`` again, or a
follow) must know what it wrote there before, to tell files the user changed (kept) from
files that are merely old (replaced, moved or removed): agent/store/treeapply.py compares
each file with that version. Bounded (the oldest destinations are forgotten first) and
strictly parsed; a forgotten or damaged entry only makes the next update cautious (every
file that differs from the new version is kept and reported), never destructive.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Protocol

from agent.folders.watchstate import check_path
from agent.fsutil import atomic_write_bytes
from agent.log import kv
from agent.store import ContentStore, Manifest, StoreError
from agent.store.treeapply import TreeReport, apply_tree

__all__ = ["MAX_EXPORTS", "ExportBook", "ExportLog", "update_tree"]

log = logging.getLogger("shoal.folders")
MAX_EXPORTS = 256
_MAX_BYTES = 512 * 1024


def _hex(value: object, n: int) -> bool:
    return (isinstance(value, str) and len(value) == n and value.isascii()
            and all(c in "0123456789abcdef" for c in value))


class ExportBook:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[str, str]] = self._load()

    def _load(self) -> dict[str, tuple[str, str]]:
        try:
            with open(self._path, "rb") as f:
                data = f.read(_MAX_BYTES + 1)
            if len(data) > _MAX_BYTES:
                raise ValueError("too large")
            obj = json.loads(data)
            if not isinstance(obj, list):
                raise ValueError("expected a list")
            out: dict[str, tuple[str, str]] = {}
            for e in obj[-MAX_EXPORTS:]:
                if not (isinstance(e, list) and len(e) == 3 and _hex(e[1], 32)
                        and _hex(e[2], 64)):
                    raise ValueError("an entry is [dest, resource_id, manifest]")
                out[str(check_path(e[0]))] = (e[1], e[2])
            return out
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.warning("damaged export list ignored", extra=kv(path=self._path, error=e))
            return {}

    def last(self, dest: Path) -> tuple[str, str] | None:
        """(resource_id, manifest hash) last written to *dest*, if known."""
        with self._lock:
            return self._entries.get(str(dest))

    def record(self, dest: Path, resource_id: str, manifest_hash: str) -> None:
        with self._lock:
            self._entries.pop(str(dest), None)
            self._entries[str(dest)] = (resource_id, manifest_hash)
            while len(self._entries) > MAX_EXPORTS:
                del self._entries[next(iter(self._entries))]
            body = [[d, r, m] for d, (r, m) in self._entries.items()]
            try:
                atomic_write_bytes(self._path, json.dumps(body).encode(), 0o600)
            except OSError as e:
                log.warning("export list not saved", extra=kv(path=self._path, error=e))


class ExportLog(Protocol):
    """What :func:`update_tree` needs of an :class:`ExportBook`."""

    def last(self, dest: Path) -> tuple[str, str] | None: ...

    def record(self, dest: Path, resource_id: str, manifest_hash: str) -> None: ...


def update_tree(store: ContentStore, book: ExportLog | None, new: Manifest, dest: Path,
                *, force: bool = False) -> TreeReport:
    """Write folder version *new* into *dest*, or update the tree a previous version left
    there: compared with the version *book* says was last written to *dest* (if the store
    still has its manifest), so user edits are kept (agent/store/treeapply.py). Blocking:
    call it in a worker thread. ``fetch --to DIR`` and a followed folder both use it."""
    old = None
    last = book.last(dest) if book is not None else None
    if last is not None and last[0] == new.resource_id and last[1] != new.manifest_hash:
        try:
            old = store.manifest(last[1])
        except StoreError:
            old = None  # forgotten: every file that differs is kept, nothing lost
    report = apply_tree(store, old, new, dest, force=force)
    if book is not None:
        book.record(dest, new.resource_id, new.manifest_hash)
    return report
