"""Store maintenance: scrub (verify) and garbage collection.

Why separate: these walk the whole store and run rarely (timer or CLI), while the rest of
ContentStore is the hot path. Mixed into ContentStore, whose lock and index they share.
gc also compacts pack files whose live bytes fell under half (see agent.store.packs).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.fsutil import fsync_dir
from agent.log import kv
from agent.store import _schema as s
from agent.store.chunker import chunk_id
from agent.store.errors import ManifestError, NotFound
from agent.store.manifest import MANIFEST_HASH_HEX, MAX_MANIFEST_BYTES, Manifest

if TYPE_CHECKING:
    from agent.store.packs import Packs
    from agent.store.record import ResourceRecord

log = logging.getLogger(__name__)

DEFAULT_KEEP_VERSIONS = 5
#: gc never deletes chunks/unreferenced manifests younger than this: protects downloads
#: in progress (put_manifest + put_chunk before commit_resource) and racing publishes.
DEFAULT_GC_GRACE_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class VerifyReport:
    """Result of a scrub. ``ok`` is False if anything was corrupt or incomplete."""

    chunks_checked: int
    bytes_checked: int
    corrupt_chunks: tuple[str, ...]
    corrupt_manifests: tuple[str, ...]
    incomplete: tuple[str, ...]  # resource ids whose current version lacks chunks

    @property
    def ok(self) -> bool:
        return not (self.corrupt_chunks or self.corrupt_manifests or self.incomplete)


@dataclass(frozen=True)
class GcReport:
    chunks_removed: int
    bytes_freed: int
    manifests_removed: int
    packs_compacted: int = 0  # pack files rewritten/deleted because they were mostly dead


class StoreMaintenance:
    """verify() and gc() for ContentStore (uses its lock, index and chunk packs)."""

    _packs: Packs
    _lock: threading.RLock
    _records: dict[str, ResourceRecord]
    _pins: Counter[bytes]
    _fresh: dict[bytes, int]
    _used: int
    _manifests_dir: Path

    if TYPE_CHECKING:
        def resources(self) -> list[ResourceRecord]: ...
        def complete(self, manifest: Manifest) -> bool: ...
        def _manifest_path(self, manifest_hash: str) -> Path: ...
        def _load_manifest(self, manifest_hash: str) -> Manifest: ...
        def _write_manifest(self, manifest: Manifest, *, touch: bool = False) -> None: ...
        def _quarantine_if_corrupt(self, cid: bytes, context: str) -> bool: ...

    def verify(self) -> VerifyReport:
        """Scrub: re-hash every chunk and manifest, quarantine bad ones, report damage."""
        checked = nbytes = 0
        bad_chunks: list[str] = []
        for cid, _size in self._packs.entries():  # in on-disk order
            try:
                actual, size = self._packs.hash(cid)
            except FileNotFoundError:
                continue
            checked += 1
            nbytes += size
            if actual != cid and self._quarantine_if_corrupt(cid, "verify"):
                bad_chunks.append(cid.hex())
        bad_manifests: list[str] = []
        for mhash in self._manifest_hashes():
            try:
                self._load_manifest(mhash)
            except ManifestError:
                bad_manifests.append(mhash)
            except NotFound:
                continue
        incomplete: list[str] = []
        for rec in self.resources():
            if rec.current in bad_manifests or not self._manifest_path(rec.current).is_file():
                with self._lock:  # the in-memory copy was verified at load: heal the file
                    self._write_manifest(rec.manifest)
            if not self.complete(rec.manifest):
                incomplete.append(rec.resource_id)
        report = VerifyReport(checked, nbytes, tuple(bad_chunks), tuple(bad_manifests),
                              tuple(incomplete))
        level = logging.INFO if report.ok else logging.WARNING
        log.log(level, "verify done chunks=%d bytes=%d corrupt_chunks=%d corrupt_manifests=%d "
                "incomplete=%s", checked, nbytes, len(bad_chunks), len(bad_manifests),
                ",".join(incomplete) or "-")
        return report

    def _manifest_hashes(self) -> list[str]:
        return [p.name[:-5] for p in self._manifests_dir.iterdir()
                if p.name.endswith(".json") and s.is_hex(p.name[:-5], MANIFEST_HASH_HEX)]

    def gc(self, *, keep_versions: int = DEFAULT_KEEP_VERSIONS,
           grace_seconds: float = DEFAULT_GC_GRACE_SECONDS) -> GcReport:
        """Drop manifests of versions older than the last *keep_versions* per resource,
        stale unreferenced manifests, and every chunk no retained manifest references.

        Holds the store lock throughout the sweep (simple and race-free; writers wait;
        chunk reads go on). Then, without it, rewrites pack files that are less than half
        live (writers wait for one record copy at most).
        """
        if not isinstance(keep_versions, int) or keep_versions < 1:
            raise ValueError("keep_versions must be >= 1")
        with self._lock:
            now = time.time()
            retained: set[str] = set()
            known: set[str] = set()
            for rec in self._records.values():
                hashes = [e.manifest_hash for e in rec.versions]
                known.update(hashes)
                retained.update(hashes[-keep_versions:])
            removed_manifests = 0
            live_manifests: list[str] = []
            for mhash in self._manifest_hashes():
                p = self._manifest_path(mhash)
                if mhash in retained:
                    live_manifests.append(mhash)
                    continue
                if mhash not in known and _age(p, now) < grace_seconds:
                    live_manifests.append(mhash)  # pending download or racing publish
                    continue
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed_manifests += 1
                with contextlib.suppress(FileNotFoundError):
                    p.with_suffix(".sig").unlink()
            fsync_dir(self._manifests_dir)
            current = {r.current: r.manifest for r in self._records.values()}
            live = self._live_chunks(set(live_manifests) | set(current), current)
            removed = freed = 0
            if live is not None:
                for cid, _size in self._packs.entries():
                    if cid in live or self._pins[cid] > 0:
                        continue
                    written = self._packs.record_time(cid)
                    if written is None or now - written < grace_seconds:
                        continue
                    size = self._packs.remove(cid)
                    if size >= 0:
                        removed += 1
                        freed += size
                        self._fresh.pop(cid, None)
                self._used = max(0, self._used - freed)
        compacted, _copied = self._packs.compact()
        report = GcReport(removed, freed, removed_manifests, compacted)
        log.info("gc done", extra=kv(
            chunks_removed=removed,
            bytes_freed=freed,
            manifests_removed=removed_manifests,
            packs_compacted=compacted))
        return report

    def _live_chunks(self, manifest_hashes: Iterable[str],
                     in_memory: dict[str, Manifest]) -> set[bytes] | None:
        """Chunk ids referenced by the manifests, or None if one is unreadable (be safe)."""
        live: set[bytes] = set()
        for mhash in manifest_hashes:
            if mhash in in_memory:
                live.update(c.chunk_id for c in in_memory[mhash].chunks)
                continue
            try:
                data = read_bounded(self._manifest_path(mhash), MAX_MANIFEST_BYTES)
                if chunk_id(data).hex() != mhash:
                    raise ManifestError("hash mismatch")
                m = Manifest.from_bytes(data)
            except (OSError, ManifestError) as e:
                log.warning("gc skips chunk sweep: unreadable manifest", extra=kv(
                    manifest=mhash,
                    error=e))
                return None
            live.update(c.chunk_id for c in m.chunks)
        return live


def _age(path: Path, now: float) -> float:
    try:
        return now - path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def read_bounded(path: Path, limit: int) -> bytes:
    """Read at most limit + 1 bytes (so oversize is detectable) without following links."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        return f.read(limit + 1)
