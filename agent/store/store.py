"""ContentStore: deduplicated, crash-safe storage of resources as chunks + manifests.

Layout under ``root`` (dirs 0700, files 0600)::

    chunks/pack-NNNNNN.shp      chunk bytes (named by BLAKE3) in append-only pack files
    chunks/pack-NNNNNN.idx      index sidecar of a sealed pack (see agent.store.packs)
    manifests/<64 hex>.json     canonical manifest bytes, named by their BLAKE3
    manifests/<64 hex>.sig      the publisher's signature of that manifest (JSON), kept
                                beside it byte for byte as received (see signing.py)
    resources/<32 hex>.json     ResourceRecord: current manifest + VersionHistory
    quarantine/                 chunks/manifests/records that failed verification
    tmp/                        scratch; ``.tmp-*`` files are deleted at open
    .lock                       flock held while open (one process per data dir)

Crash safety comes from ordering, not from a journal: chunks are appended to a pack
before the manifest is written, the manifest before the resource record, and the record
is the commit point (a ``syncfs`` right before it flushes pack data too). A SIGKILL at any
instant leaves at worst temp files and a torn pack tail (removed by ``recover()``) and
unreferenced chunks/manifests (deleted by ``gc()``).

Concurrency: synchronous API, safe from several threads. ``_lock`` guards the in-memory
index (records, usage, reservations, pins) and every write into the store directory;
hashing, chunking and reads run outside it (the pack index has its own short lock).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import itertools
import json
import logging
import os
import stat
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from agent.fsutil import (
    TMP_PREFIX,
    atomic_write_bytes,
    atomic_writer,
    fsync_dir,
    remove_stale_temps,
    syncfs,
)
from agent.log import kv
from agent.security.delegation import SignedDelegation
from agent.security.signing import (
    PublisherSignature,
    SignatureError,
    Signer,
)
from agent.store import _schema as s
from agent.store.chunker import (
    ABSOLUTE_MAX_CHUNK_SIZE,
    CHUNK_ID_SIZE,
    DEFAULT_AVG_CHUNK_SIZE,
    check_avg_size,
    chunk_id,
    chunk_stream,
    cut_stream,
    max_chunk_size,
)
from agent.store.errors import (
    ChunkMismatch,
    CorruptChunk,
    IncompleteResource,
    ManifestError,
    NotDelegated,
    NotFound,
    QuotaExceeded,
    SourceChanged,
    StoreError,
    VersionConflict,
)
from agent.store.history import VersionEntry, VersionHistory
from agent.store.maintenance import StoreMaintenance, read_bounded
from agent.store.manifest import (
    MANIFEST_HASH_HEX,
    MAX_CHUNKS,
    MAX_MANIFEST_BYTES,
    PUBLISHER_MAX_HEX,
    PUBLISHER_MIN_HEX,
    RESOURCE_ID_HEX,
    ChunkEntry,
    Manifest,
    new_resource_id,
    validate_name,
)
from agent.store.packs import DEFAULT_PACK_SIZE, DIR_MODE, FILE_MODE, Packs
from agent.store.record import MAX_RECORD_BYTES, ResourceRecord, StoredRecord
from agent.store.scan import Scan, scan_tree
from agent.store.tree import FileEntry

log = logging.getLogger(__name__)

MIN_ID_PREFIX = 6


@dataclass(frozen=True)
class RecoverReport:
    temps_removed: int
    records_dropped: tuple[str, ...]
    records_quarantined: tuple[str, ...]


@dataclass
class _Reservation:
    """Quota bytes set aside for one publish so concurrent puts cannot take them."""

    left: int = 0


@dataclass
class _PublishState:
    token: int
    reservation: _Reservation
    pinned: list[bytes] = field(default_factory=list)
    created: list[bytes] = field(default_factory=list)


class ContentStore(StoreMaintenance):
    """Chunk/manifest/resource store for one data directory (see module docstring)."""

    def __init__(self, root: Path | str, *, avg_chunk_size: int = DEFAULT_AVG_CHUNK_SIZE,
                 quota_bytes: int | None = None, pack_size: int = DEFAULT_PACK_SIZE) -> None:
        self.root = Path(root)
        self.avg_chunk_size = check_avg_size(avg_chunk_size)
        if quota_bytes is not None and (
            not isinstance(quota_bytes, int) or isinstance(quota_bytes, bool) or quota_bytes < 0
        ):
            raise ValueError(f"quota_bytes must be None or an int >= 0, got {quota_bytes!r}")
        self.quota_bytes = quota_bytes
        self._chunks_dir = self.root / "chunks"
        self._manifests_dir = self.root / "manifests"
        self._resources_dir = self.root / "resources"
        self._quarantine_dir = self.root / "quarantine"
        self._tmp_dir = self.root / "tmp"
        self._delegations_dir = self.root / "delegations"
        self._packs = Packs(self._chunks_dir, self._quarantine_dir, pack_size=pack_size,
                            sync=lambda: syncfs(self._chunks_dir))
        self._chunks_elsewhere = False  # chunks/ on another filesystem (a mount or symlink)
        self._lock = threading.RLock()  # re-entrant: quarantine paths run under it too
        self._records: dict[str, ResourceRecord] = {}
        self._used = 0
        self._reserved = 0
        self._pins: Counter[bytes] = Counter()
        self._fresh: dict[bytes, int] = {}  # chunk written by an uncommitted publish -> token
        self._tokens = itertools.count(1)
        self._delegations: dict[str, SignedDelegation] = {}  # loaded when first needed
        self._lock_file: BinaryIO | None = None
        self._open_lock()
        try:
            self.recover()
        except BaseException:
            self.close()
            raise

    # -- lifecycle ------------------------------------------------------------------------

    def _open_lock(self) -> None:
        if not self.root.exists():
            self.root.mkdir(parents=True, mode=DIR_MODE)
        f = open(self.root / ".lock", "ab")  # noqa: SIM115 - held open for the lifetime
        try:
            os.fchmod(f.fileno(), FILE_MODE)
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise StoreError(f"store {self.root} is already open by another process") from None
        except BaseException:
            f.close()
            raise
        self._lock_file = f

    def close(self) -> None:
        """Release the data-dir lock. The instance must not be used afterwards."""
        self._packs.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> ContentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def recover(self) -> RecoverReport:
        """Make the store consistent after a crash; runs at open.

        Deletes temp files, truncates torn pack tails, imports chunk files of the old
        one-file-per-chunk layout, quarantines unparseable records, drops records whose
        current manifest is missing, and recomputes chunk usage from disk.
        """
        with self._lock:
            for d in (self._chunks_dir, self._manifests_dir, self._resources_dir,
                      self._quarantine_dir, self._tmp_dir, self._delegations_dir):
                if not d.is_dir():
                    d.mkdir(mode=DIR_MODE)
                    fsync_dir(self.root)
            self._chunks_elsewhere = (
                self._chunks_dir.stat().st_dev != self.root.stat().st_dev)
            packs = self._packs.open()
            temps = sum(
                remove_stale_temps(d)
                for d in (self.root, self._manifests_dir, self._resources_dir,
                          self._quarantine_dir, self._tmp_dir)
            ) + packs.temps_removed
            records, dropped, quarantined = self._load_records()
            self._records = records
            self._used = self._packs.live_bytes()
        report = RecoverReport(temps, tuple(dropped), tuple(quarantined))
        if temps or dropped or quarantined:
            log.warning("store recovered", extra=kv(
                root=self.root,
                temps_removed=temps,
                records_dropped=",".join(dropped) or "-",
                records_quarantined=",".join(quarantined) or "-"))
        log.info("store open", extra=kv(
            root=self.root,
            resources=len(records),
            chunks=packs.chunks,
            chunk_bytes=self._used,
            packs=packs.packs,
            quota=self.quota_bytes))
        return report

    def _load_records(self) -> tuple[dict[str, ResourceRecord], list[str], list[str]]:
        records: dict[str, ResourceRecord] = {}
        dropped: list[str] = []
        quarantined: list[str] = []
        for p in sorted(self._resources_dir.iterdir()):
            rid = p.name.removesuffix(".json")
            if not p.name.endswith(".json") or not s.is_hex(rid, RESOURCE_ID_HEX):
                continue
            try:
                stored = StoredRecord.from_bytes(read_bounded(p, MAX_RECORD_BYTES))
                if stored.resource_id != rid:
                    raise ManifestError(f"file {p.name} holds resource {stored.resource_id}")
            except (ManifestError, OSError) as e:
                log.warning("bad resource record quarantined", extra=kv(resource_id=rid, error=e))
                self._quarantine_file(p, f"record-{p.name}")
                quarantined.append(rid)
                continue
            try:
                manifest = self._load_manifest(stored.current, stored.seal)
                records[rid] = ResourceRecord.from_stored(stored, manifest)
            except (NotFound, ManifestError) as e:
                log.warning("dropping record without valid manifest", extra=kv(
                    resource_id=rid,
                    manifest=stored.current,
                    error=e))
                p.unlink()
                fsync_dir(self._resources_dir)
                dropped.append(rid)
        return records, dropped, quarantined

    # -- chunks ---------------------------------------------------------------------------

    def has_chunk(self, chunk_id_: bytes) -> bool:
        return _is_cid(chunk_id_) and self._packs.exists(chunk_id_)

    def put_chunk(self, chunk_id_: bytes, data: bytes | bytearray | memoryview) -> bool:
        """Store a chunk received from anywhere; False if it was already present.

        The bytes are hashed first: a mismatch raises ChunkMismatch and stores nothing.
        """
        if not _is_cid(chunk_id_):
            raise ChunkMismatch(f"chunk id must be {CHUNK_ID_SIZE} bytes")
        cid = chunk_id_
        view = memoryview(data).cast("B")
        if not 1 <= view.nbytes <= ABSOLUTE_MAX_CHUNK_SIZE:
            raise ChunkMismatch(
                f"chunk {cid.hex()} has {view.nbytes} bytes, allowed 1..{ABSOLUTE_MAX_CHUNK_SIZE}"
            )
        actual = chunk_id(view)
        if actual != cid:
            raise ChunkMismatch(f"data hashes to {actual.hex()}, not chunk {cid.hex()}")
        return self._store_chunk(cid, view, None)

    def _store_chunk(self, cid: bytes, data: memoryview, pub: _PublishState | None) -> bool:
        """Write a verified chunk unless present; account quota; pin it for a publish."""
        n = data.nbytes
        with self._lock:
            if self._packs.exists(cid):
                self._fresh.pop(cid, None)  # someone else relies on it: no rollback
                if pub is not None:
                    self._pins[cid] += 1
                    pub.pinned.append(cid)
                else:
                    self._packs.touch(cid)  # restart gc grace for a download
                return False
            from_res = 0
            if self.quota_bytes is not None:
                from_res = min(n, pub.reservation.left) if pub is not None else 0
                free = self.quota_bytes - self._used - self._reserved
                if n - from_res > free:
                    raise QuotaExceeded(_quota_msg(n - from_res, free, self.quota_bytes))
            self._packs.put(cid, data)  # not durable: syncfs runs before the commit record
            self._used += n
            if pub is not None:
                pub.reservation.left -= from_res
                self._reserved -= from_res
                self._fresh[cid] = pub.token
                pub.created.append(cid)
                self._pins[cid] += 1
                pub.pinned.append(cid)
            return True

    def get_chunk(self, chunk_id_: bytes, *, verify: bool = True) -> bytes:
        """Chunk bytes, verified. Corrupt -> quarantined + CorruptChunk; absent -> NotFound.

        ``verify=False`` skips the BLAKE3 of the read-back. Only for bytes this process
        hashed in memory and wrote moments ago (the export of a fetch that just stored
        them): re-hashing them would check the page cache against itself, not the disk.
        Everything else (serving, exporting older holdings) must verify.
        """
        if not _is_cid(chunk_id_):
            raise NotFound(f"no chunk {chunk_id_!r:.80} (ids are {CHUNK_ID_SIZE} bytes)")
        cid = chunk_id_
        for _attempt in range(2):  # a second read only if a good copy replaced a bad one
            try:
                data = self._packs.read(cid)
            except FileNotFoundError:
                raise NotFound(f"chunk {cid.hex()} is not in the store") from None
            if not verify or chunk_id(data) == cid:
                return data
            if self._quarantine_if_corrupt(cid, "get_chunk"):
                break
        raise CorruptChunk(f"chunk {cid.hex()} failed verification and was quarantined")

    def _quarantine_if_corrupt(self, cid: bytes, context: str) -> bool:
        """Re-check under the lock (a good copy may have replaced it); quarantine if bad.

        False if the chunk is fine or gone now (removed meanwhile: the caller re-reads).
        """
        with self._lock:
            try:
                actual, size = self._packs.hash(cid)
            except FileNotFoundError:
                return False
            if actual == cid:
                return False
            moved = self._packs.quarantine(cid)
            if moved >= 0:
                self._used = max(0, self._used - moved)
                self._fresh.pop(cid, None)
        log.warning("corrupt chunk quarantined", extra=kv(
            chunk_id=cid.hex(),
            size=size,
            actual=actual.hex(),
            context=context))
        return True

    # -- manifests ------------------------------------------------------------------------

    def _manifest_path(self, manifest_hash: str) -> Path:
        return self._manifests_dir / f"{manifest_hash}.json"

    def _signature_path(self, manifest_hash: str) -> Path:
        return self._manifests_dir / f"{manifest_hash}.sig"

    def put_manifest(self, manifest: Manifest) -> None:
        """Store a (validated) manifest, e.g. received from a peer before its chunks."""
        if not isinstance(manifest, Manifest):
            raise TypeError("put_manifest needs a Manifest")
        with self._lock:
            self._write_manifest(manifest, touch=True)

    def _write_manifest(self, manifest: Manifest, *, touch: bool = False,
                        durable: bool = True) -> None:
        seal = manifest.seal()
        if seal is not None and self._read_seal(manifest.manifest_hash) != seal:
            # A stored seal is replaced only by one that verifies (a forged one put first
            # by a lying peer must not stick); written before the manifest file.
            try:
                manifest.verify()
            except SignatureError:
                pass
            else:
                self._write_seal(manifest.manifest_hash, s.canonical_json(seal), durable)
        path = self._manifest_path(manifest.manifest_hash)
        if path.is_file():
            if touch:
                with contextlib.suppress(OSError):
                    os.utime(path)
            return
        atomic_write_bytes(path, manifest.to_bytes(), FILE_MODE)

    def _write_seal(self, manifest_hash: str, data: bytes, durable: bool) -> None:
        if durable:
            atomic_write_bytes(self._signature_path(manifest_hash), data, FILE_MODE)
        else:  # a batch: the caller runs syncfs before anything relies on it
            with atomic_writer(self._signature_path(manifest_hash), FILE_MODE,
                               durable=False) as f:
                f.write(data)

    def manifest(self, manifest_hash: str) -> Manifest:
        """A stored manifest by hash; from disk it is hash- and schema-checked (bad ->
        quarantined, ManifestError). Unknown -> NotFound."""
        if not isinstance(manifest_hash, str) or not s.is_hex(manifest_hash, MANIFEST_HASH_HEX):
            raise NotFound(f"no manifest {str(manifest_hash)[:80]!r} (not a manifest hash)")
        with self._lock:
            for rec in self._records.values():
                if rec.current == manifest_hash:
                    return rec.manifest
        return self._load_manifest(manifest_hash)

    def _load_manifest(self, manifest_hash: str, seal: object = None) -> Manifest:
        """Read, hash-check and parse a stored manifest, with its seal: *seal* if given (the
        copy kept in the resource record, so opening the store reads no ``.sig`` files),
        else the ``.sig`` file beside it."""
        path = self._manifest_path(manifest_hash)
        try:
            data = read_bounded(path, MAX_MANIFEST_BYTES)
        except FileNotFoundError:
            raise NotFound(f"manifest {manifest_hash} is not in the store") from None
        try:
            if chunk_id(data).hex() != manifest_hash:
                raise ManifestError("content does not match its hash")
            m = Manifest.from_bytes(data)
        except ManifestError as e:
            with self._lock:
                self._quarantine_file(path, path.name)
            log.warning("corrupt manifest quarantined", extra=kv(manifest=manifest_hash, error=e))
            raise ManifestError(f"stored manifest {manifest_hash} is corrupt: {e}") from None
        if seal is not None:
            try:
                return m.with_seal(seal)
            except (SignatureError, ManifestError) as e:  # fall back to the .sig file
                log.warning("damaged seal in resource record", extra=kv(
                    manifest=manifest_hash, error=e))
        return self._with_stored_seal(m)

    def _read_seal(self, manifest_hash: str) -> object:
        """The raw seal object in ``<hash>.sig`` (None if absent or unreadable)."""
        try:
            return json.loads(read_bounded(self._signature_path(manifest_hash), 8192))
        except (OSError, ValueError):
            return None

    def _with_stored_seal(self, m: Manifest) -> Manifest:
        """*m* with the seal from its ``.sig`` file; unsigned if absent or damaged (a damaged
        file is quarantined)."""
        path = self._signature_path(m.manifest_hash)
        try:
            return m.with_seal(json.loads(read_bounded(path, 8192)))
        except FileNotFoundError:
            return m
        except (OSError, ValueError, SignatureError, ManifestError) as e:
            with self._lock:
                self._quarantine_file(path, path.name)
            log.warning("damaged manifest signature quarantined", extra=kv(
                manifest=m.manifest_hash, error=e))
            return m

    def missing_chunks(self, manifest: Manifest) -> list[ChunkEntry]:
        """Distinct chunks of *manifest* not in the store, in file order."""
        seen: set[bytes] = set()
        out: list[ChunkEntry] = []
        for c in manifest.chunks:
            if c.chunk_id not in seen:
                seen.add(c.chunk_id)
                if not self._packs.exists(c.chunk_id):
                    out.append(c)
        return out

    def complete(self, manifest: Manifest) -> bool:
        return not self.missing_chunks(manifest)

    # -- resources ------------------------------------------------------------------------

    def _record_path(self, resource_id: str) -> Path:
        return self._resources_dir / f"{resource_id}.json"

    def _write_record(self, rec: ResourceRecord) -> None:
        # Pack appends are not fsynced one by one: flush the packs written since the last
        # commit (manifests are written durably) before the record that makes them reachable.
        self._packs.flush()
        atomic_write_bytes(self._record_path(rec.resource_id), rec.to_bytes(), FILE_MODE)
        self._records[rec.resource_id] = rec

    def commit_resource(self, manifest: Manifest) -> ResourceRecord:
        """Record a complete manifest (e.g. downloaded) as a held resource / new version.

        Idempotent for an already recorded version. Raises a SignatureError (kind
        untrusted) unless the manifest's publisher signed it (checked again here, whoever
        checked before: the store boundary is the last line), IncompleteResource if chunks
        are missing and VersionConflict if it contradicts the held record. Only the holder
        of the publisher's key can make a new version of a resource; an unsigned record
        (kept from before signing) is replaced by any verified manifest of its resource.
        """
        if not isinstance(manifest, Manifest):
            raise TypeError("commit_resource needs a Manifest")
        manifest.verify()
        rid, mhash = manifest.resource_id, manifest.manifest_hash
        with self._lock:
            missing = self.missing_chunks(manifest)
            if missing:
                raise IncompleteResource(
                    f"resource {rid} v{manifest.version} is missing {len(missing)} chunks"
                )
            for cid in manifest.distinct_chunks():
                self._fresh.pop(cid, None)
            rec = self._records.get(rid)
            if rec is not None and not rec.manifest.signed:
                log.warning("unsigned record replaced by a signed version", extra=kv(
                    resource_id=rid, held_version=rec.version, version=manifest.version))
                rec = None
            if rec is None:
                new = ResourceRecord(manifest, VersionHistory(
                    (VersionEntry.between(None, manifest),)), manifest.public)
            else:
                if rec.publisher != manifest.publisher:
                    raise VersionConflict(
                        f"resource {rid} is published by {rec.publisher}, "
                        f"manifest claims {manifest.publisher}"
                    )
                if any(e.manifest_hash == mhash for e in rec.versions):
                    return rec
                if manifest.version <= rec.version:
                    raise VersionConflict(
                        f"resource {rid}: v{manifest.version} ({mhash[:12]}) is not newer "
                        f"than held v{rec.version} ({rec.current[:12]})"
                    )
                entry = VersionEntry.between(rec.manifest, manifest)
                new = rec.with_version(manifest, entry, public=manifest.public)
            self._write_manifest(manifest)
            self._write_record(new)
        log.info("resource committed", extra=kv(
            resource_id=rid,
            version=manifest.version,
            manifest=mhash))
        return new

    def resources(self) -> list[ResourceRecord]:
        """All held resources, sorted by name then id."""
        with self._lock:
            recs = list(self._records.values())
        return sorted(recs, key=lambda r: (r.name, r.resource_id))

    def find(self, name_or_id: str) -> ResourceRecord:
        """Exact resource id, unique id prefix (>= 6 hex), or exact name; else NotFound."""
        if not isinstance(name_or_id, str):
            raise NotFound(f"no resource {name_or_id!r}")
        q = name_or_id
        low = q.lower()
        with self._lock:
            exact = self._records.get(low) if s.is_hex(low, RESOURCE_ID_HEX) else None
            if exact is not None:
                return exact
            matches = {r.resource_id: r for r in self._records.values() if r.name == q}
            if MIN_ID_PREFIX <= len(low) <= RESOURCE_ID_HEX and s.is_hex(low, len(low)):
                matches.update(
                    (rid, r) for rid, r in self._records.items() if rid.startswith(low)
                )
        if len(matches) == 1:
            return next(iter(matches.values()))
        if not matches:
            raise NotFound(f"no resource with id, id prefix (>= {MIN_ID_PREFIX} hex) or name "
                           f"{q[:80]!r}")
        ids = ", ".join(f"{r.resource_id[:12]} ({r.name[:40]!r})"
                        for r in sorted(matches.values(), key=lambda r: r.resource_id)[:5])
        raise NotFound(f"{q[:80]!r} is ambiguous: matches {len(matches)} resources: {ids}")

    def history(self, resource_id: str) -> VersionHistory:
        with self._lock:
            rec = self._records.get(resource_id) if isinstance(resource_id, str) else None
        if rec is None:
            raise NotFound(f"no resource {str(resource_id)[:80]!r}")
        return rec.versions

    def remove_resource(self, resource_id: str) -> None:
        """Forget a resource and its manifests; call gc() to free its chunks."""
        with self._lock:
            rec = self._records.get(resource_id) if isinstance(resource_id, str) else None
            if rec is None:
                raise NotFound(f"no resource {str(resource_id)[:80]!r}")
            self._record_path(rec.resource_id).unlink()
            fsync_dir(self._resources_dir)  # the commit point of the removal
            del self._records[rec.resource_id]
            for e in rec.versions:
                with contextlib.suppress(FileNotFoundError):
                    self._manifest_path(e.manifest_hash).unlink()
            fsync_dir(self._manifests_dir)
        log.info("resource removed", extra=kv(resource_id=rec.resource_id, name=rec.name))

    # -- publish / export -----------------------------------------------------------------

    def publish_file(self, path: Path | str, *, name: str | None = None, public: bool = False,
                     signer: Signer, update: str | None = None) -> Manifest:
        """Chunk + store a local file as a resource (new, or next version of same name).

        *signer* (this device's identity) is the publisher: it signs the manifest. With
        *update* (a held resource's ID) the file becomes the next version of that resource,
        keeping its name (unless *name*) and publisher: ours, or another device's that
        delegated it to us (:meth:`save_delegation`; StoreError without one).
        Memory stays at a few chunks whatever the file size. Republishing identical
        content returns the current manifest; changing only the public flag makes a new
        version, because the flag peers act on is the one the publisher signed.
        """
        path = Path(path)
        target = self._update_target(update, signer) if update is not None else None
        if target is not None and name is None:
            name = target.name
        name = validate_name(path.name if name is None else name)
        publisher = signer.device_id.hex()
        s.check_hex(publisher, "publisher", min_len=PUBLISHER_MIN_HEX, max_len=PUBLISHER_MAX_HEX)
        s.check_bool(public, "public")
        avg = self.avg_chunk_size
        # O_NONBLOCK: opening a FIFO must not hang the agent; no effect on regular files.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb", buffering=0) as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise StoreError(f"{path} is not a regular file")
            if st.st_size > MAX_CHUNKS * max_chunk_size(avg):
                raise StoreError(f"{path} is too large for one manifest ({st.st_size} bytes)")
            pub = _PublishState(next(self._tokens), _Reservation())
            try:
                expected = self._reserve(f, st.st_size, pub.reservation, name)
                f.seek(0)
                chunks = self._store_stream(f, pub, expected, path)
                after = os.fstat(f.fileno())
                if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns) or sum(
                    c.length for c in chunks
                ) != st.st_size:
                    raise SourceChanged(f"{path} changed while it was being published")
                return self._commit_publish(name, public, signer, chunks, pub, update)
            except BaseException:
                self._rollback(pub)
                raise
            finally:
                self._release(pub)

    def publish_tree(self, root: Path | str, *, name: str | None = None,
                     public: bool = False, signer: Signer, update: str | None = None,
                     scan: Scan | None = None, exclude: tuple[Path, ...] = ()) -> Manifest:
        """Publish the directory *root* as one folder resource (agent/store/tree.py).

        Like :meth:`publish_file`: a new resource, or the next version of ours with the
        same name (or of *update*); identical content returns the current manifest. Each
        file is chunked on its own and the chunks are concatenated in path order, so an
        unchanged file (renamed or not) adds nothing. *scan* (from
        :func:`agent.store.scan.scan_tree`, which reports what it skipped: symlinks,
        devices, temp files) is taken if the caller already walked the tree; else the
        tree is walked here, skipping the directories in *exclude* (the data directory).
        """
        root = Path(root)
        target = self._update_target(update, signer) if update is not None else None
        if target is not None and name is None:
            name = target.name
        name = validate_name(root.name if name is None else name)
        s.check_bool(public, "public")
        scan = scan if scan is not None else scan_tree(root, exclude)
        if not scan.files:
            raise StoreError(f"{root} holds no regular files to publish")
        pub = _PublishState(next(self._tokens), _Reservation())
        try:
            self._reserve_tree([lf.path for lf in scan.files], pub.reservation, name)
            chunks: list[ChunkEntry] = []
            files: list[FileEntry] = []
            for lf in scan.files:  # one open file at a time: a tree may hold 20 000
                f, st = _open_regular(lf.path)
                with f:
                    part = self._store_stream(f, pub, None, lf.path)
                    after = os.fstat(f.fileno())
                if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns) or sum(
                        c.length for c in part) != st.st_size:
                    raise SourceChanged(f"{lf.path} changed while it was being published")
                chunks.extend(part)
                if len(chunks) > MAX_CHUNKS:
                    raise StoreError(f"{root} needs more than {MAX_CHUNKS} chunks; publish "
                                     "a smaller folder")
                files.append(FileEntry(lf.rel, len(part), st.st_size, lf.mode))
            return self._commit_publish(name, public, signer, chunks, pub, update,
                                        files=tuple(files))
        except BaseException:
            self._rollback(pub)
            raise
        finally:
            self._release(pub)

    def _reserve_tree(self, paths: list[Path], res: _Reservation, name: str) -> None:
        """Quota for a folder publish: its total size if that fits, else the bytes of the
        chunks not held yet (a pre-pass over every file), else QuotaExceeded."""
        if self.quota_bytes is None:
            return
        total = 0
        for p in paths:
            with contextlib.suppress(OSError):  # gone: the storing pass reports it
                total += os.stat(p, follow_symlinks=False).st_size
        with self._lock:
            free = self.quota_bytes - self._used - self._reserved
            if total <= free:
                self._reserved += total
                res.left = total
                return
        distinct: dict[bytes, int] = {}
        for p in paths:
            f, _st = _open_regular(p)
            with f:
                for r in chunk_stream(f, self.avg_chunk_size):
                    distinct[r.chunk_id] = r.length
                    if len(distinct) > MAX_CHUNKS:
                        raise StoreError(f"{name!r} needs more than {MAX_CHUNKS} chunks")
        self._reserve_new(distinct, res, name)

    def _reserve_new(self, distinct: dict[bytes, int], res: _Reservation, name: str) -> None:
        """Reserve quota for the chunks of *distinct* (id -> length) not already stored."""
        assert self.quota_bytes is not None
        with self._lock:
            need = sum(n for cid, n in distinct.items() if not self._packs.exists(cid))
            free = self.quota_bytes - self._used - self._reserved
            if need > free:
                raise QuotaExceeded(f"publish of {name!r}: " + _quota_msg(need, free,
                                                                          self.quota_bytes))
            self._reserved += need
            res.left = need

    def _reserve(self, f: BinaryIO, size: int, res: _Reservation,
                 name: str) -> list[tuple[int, bytes]] | None:
        """Reserve quota for a publish; pre-chunk only if the file might not fit.

        Returns the expected (length, id) list when a pre-pass ran, so the storing pass
        can detect a file that changed in between.
        """
        if self.quota_bytes is None:
            return None
        with self._lock:
            free = self.quota_bytes - self._used - self._reserved
            if size <= free:
                self._reserved += size
                res.left = size
                return None
        expected: list[tuple[int, bytes]] = []
        for r in chunk_stream(f, self.avg_chunk_size):
            if len(expected) == MAX_CHUNKS:
                raise StoreError(f"{name!r} needs more than {MAX_CHUNKS} chunks")
            expected.append((r.length, r.chunk_id))
        distinct = {cid: n for n, cid in expected}
        self._reserve_new(distinct, res, name)
        return expected

    def _store_stream(self, f: BinaryIO, pub: _PublishState,
                      expected: list[tuple[int, bytes]] | None, path: Path) -> list[ChunkEntry]:
        chunks: list[ChunkEntry] = []
        for i, (ref, data) in enumerate(cut_stream(f, self.avg_chunk_size)):
            if i >= MAX_CHUNKS:
                raise StoreError(f"{path} needs more than {MAX_CHUNKS} chunks")
            if expected is not None and (
                i >= len(expected) or expected[i] != (ref.length, ref.chunk_id)
            ):
                raise SourceChanged(f"{path} changed while it was being published")
            self._store_chunk(ref.chunk_id, data, pub)
            chunks.append(ChunkEntry(ref.chunk_id, ref.length))
        if expected is not None and len(chunks) != len(expected):
            raise SourceChanged(f"{path} changed while it was being published")
        return chunks

    def _commit_publish(self, name: str, public: bool, signer: Signer,
                        chunks: list[ChunkEntry], pub: _PublishState,
                        update: str | None = None,
                        files: tuple[FileEntry, ...] | None = None) -> Manifest:
        size = sum(c.length for c in chunks)
        publisher = signer.device_id.hex()
        delegation: SignedDelegation | None = None
        current: ResourceRecord | None
        with self._lock:
            if update is not None:
                current = self._update_target(update, signer)
                public = public or current.manifest.public  # an update keeps it shared
                if current.publisher != publisher:
                    delegation = self._delegations.get(current.resource_id) or (
                        self._load_delegation(current.resource_id))
                    if delegation is None:
                        raise StoreError(f"no delegation for {current.name!r} any more")
                    publisher = current.publisher
            else:
                current = self._own_record(publisher, name)
            if current is None:
                manifest = Manifest(new_resource_id(), name, 1, size, self.avg_chunk_size,
                                    tuple(chunks), time.time(), publisher, public,
                                    None, files).signed_by(signer)
                rec = ResourceRecord(manifest, VersionHistory(
                    (VersionEntry.between(None, manifest),)), public)
            else:
                prev = current.manifest
                if (prev.chunks == tuple(chunks) and prev.public == public and prev.signed
                        and prev.name == name and prev.files == files):
                    if current.public != public:
                        self._write_record(ResourceRecord(prev, current.versions, public))
                    self._forget_fresh(pub)
                    return prev
                manifest = Manifest(current.resource_id, name, current.version + 1, size,
                                    self.avg_chunk_size, tuple(chunks),
                                    max(time.time(), prev.created), publisher,
                                    public, current.current, files).signed_by(signer,
                                                                              delegation)
                rec = current.with_version(manifest, VersionEntry.between(prev, manifest),
                                           public=public)
            self._write_manifest(manifest)
            self._write_record(rec)
            self._forget_fresh(pub)
        e = rec.latest
        log.info("published", extra=kv(
            resource_id=manifest.resource_id,
            name=name,
            version=manifest.version,
            size=size,
            chunks=len(chunks),
            chunks_added=e.chunks_added,
            bytes_added=e.bytes_added))
        return manifest

    def adopt_signer(self, signer: Signer, legacy_publishers: tuple[str, ...] = ()) -> int:
        """Make every resource this device published carry its signature; run at start.

        An own record that is merely unsigned is signed in place (same bytes, same hash).
        A record published under one of our *legacy_publishers* (the v1 device ID, before
        the identity had a signing key) is republished as the next version under the v2
        ID: the publisher field changes, so the bytes and the hash do. Returns how many
        records changed. Others' unsigned records stay for local use; they are never
        served (a verified manifest of the same resource replaces them).
        """
        me = signer.device_id.hex()
        changed = 0
        resealed: list[ResourceRecord] = []
        with self._lock:
            for rec in list(self._records.values()):
                m = rec.manifest
                if m.publisher == me and (not m.signed or m.delegation is not None
                                          or m.record_sig is None):
                    # unsigned, made by a delegate (its delegation will end), or from before
                    # version records: the publisher's own signature, same bytes. Written in
                    # one batch below: a whole store migrates at its first start.
                    signed = m.signed_by(signer)
                    self._write_manifest(signed, durable=False)
                    resealed.append(ResourceRecord(signed, rec.versions, rec.public))
                    changed += 1
                    continue
                elif m.publisher in legacy_publishers:
                    nxt = dataclasses.replace(
                        m, version=m.version + 1, parent=m.manifest_hash, publisher=me,
                        created=max(time.time(), m.created), signature=None,
                    ).signed_by(signer)
                    self._write_manifest(nxt)
                    new = rec.with_version(nxt, VersionEntry.between(m, nxt),
                                           public=rec.public)
                else:
                    continue
                self._write_record(new)
                changed += 1
                log.info("own resource signed", extra=kv(
                    resource_id=rec.resource_id, name=rec.name, version=new.version))
            if resealed:
                self._write_records_batch(resealed)
                log.info("own resources re-signed", extra=kv(count=len(resealed)))
        return changed

    def _write_records_batch(self, recs: list[ResourceRecord]) -> None:
        """Replace many records with two filesystem syncs instead of two fsyncs each (1000
        records: ~17 s -> well under a second on a loaded machine; far worse on an SD card).

        Safe order: every new record is written to a temp file, one syncfs makes the
        bytes (and the seals written with durable=False before) durable, then each is
        renamed over its record (atomic one by one), and a second syncfs makes the renames
        durable. A crash in between leaves each record old or new, never torn; leftover
        temps are removed at open.
        """
        staged: list[tuple[Path, ResourceRecord]] = []
        try:
            for rec in recs:
                fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=self._resources_dir)
                staged.append((Path(tmp), rec))
                with os.fdopen(fd, "wb") as f:
                    os.fchmod(f.fileno(), FILE_MODE)
                    f.write(rec.to_bytes())
            syncfs(self.root)
            for tmp_path, rec in staged:
                os.replace(tmp_path, self._record_path(rec.resource_id))
                self._records[rec.resource_id] = rec
            staged = []
            syncfs(self.root)
        finally:
            for tmp_path, _ in staged:
                with contextlib.suppress(FileNotFoundError):
                    tmp_path.unlink()

    # -- delegations held by this device (as a delegate) ----------------------------------

    def _delegation_path(self, resource_id: str) -> Path:
        return self._delegations_dir / f"{resource_id}.json"

    def save_delegation(self, delegation: SignedDelegation, signer: Signer,
                        now: float | None = None) -> None:
        """Keep a delegation that lets *signer* (this device) make versions of another
        device's resource. It is checked first (publisher's signature, names us, in its
        window): DelegationError otherwise. A later one for the same resource replaces it."""
        d = delegation.delegation
        delegation.check(d.publisher, d.resource_id,
                         PublisherSignature(signer.public_key, signer.signing_public,
                                            bytes(64)), now)
        with self._lock:
            held = self._records.get(d.resource_id)
            if held is not None and held.publisher != d.publisher:
                raise StoreError(f"resource {d.resource_id[:12]} held here is published by "
                                 "another device than the delegation's")
            old = self._delegations.get(d.resource_id) or self._load_delegation(d.resource_id)
            if old is not None and old.delegation.expires > d.expires:
                return  # keep the one that lasts longer
            atomic_write_bytes(self._delegation_path(d.resource_id),
                               s.canonical_json(delegation.to_obj()), FILE_MODE)
            self._delegations[d.resource_id] = delegation
        log.info("delegation saved", extra=kv(resource_id=d.resource_id,
                                              expires=d.expires, serial=d.serial))

    def delegation(self, resource_id: str) -> SignedDelegation | None:
        """The delegation this device holds for *resource_id* (any state; None if none)."""
        if not isinstance(resource_id, str) or not s.is_hex(resource_id, RESOURCE_ID_HEX):
            return None
        with self._lock:
            return self._delegations.get(resource_id) or self._load_delegation(resource_id)

    def _load_delegation(self, resource_id: str) -> SignedDelegation | None:
        try:
            obj = json.loads(read_bounded(self._delegation_path(resource_id), 4096))
            d = SignedDelegation.from_obj(obj)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, SignatureError) as e:
            log.warning("damaged delegation ignored", extra=kv(resource_id=resource_id,
                                                               error=e))
            return None
        self._delegations[resource_id] = d
        return d

    def _update_target(self, update: str, signer: Signer) -> ResourceRecord:
        """The held resource *update* names, which *signer* may make a version of."""
        with self._lock:
            rec = self._records.get(update) if isinstance(update, str) else None
            if rec is None:
                raise NotFound(f"no resource {str(update)[:80]!r} is held here to update "
                               "(fetch it first)")
            if rec.publisher == signer.device_id.hex():
                return rec
            dlg = self._delegations.get(rec.resource_id) or self._load_delegation(
                rec.resource_id)
        if dlg is None:
            raise NotDelegated(f"{rec.name!r} is published by another device that has not "
                               "delegated it to this one (ask it to run: shoal delegate "
                               f"{rec.resource_id[:12]} THIS-DEVICE)")
        dlg.check(rec.publisher, rec.resource_id,
                  PublisherSignature(signer.public_key, signer.signing_public, bytes(64)))
        return rec

    def _own_record(self, publisher: str, name: str) -> ResourceRecord | None:
        """The resource this publisher already has under *name* (newest if several)."""
        mine = [r for r in self._records.values() if r.publisher == publisher and r.name == name]
        return max(mine, key=lambda r: (r.latest.created, r.resource_id), default=None)

    def _forget_fresh(self, pub: _PublishState) -> None:
        for cid in pub.created:
            if self._fresh.get(cid) == pub.token:
                del self._fresh[cid]

    def _rollback(self, pub: _PublishState) -> None:
        """Delete chunks this failed publish wrote that nothing else has relied on since.

        Newest first: chunks still at the end of the active pack are truncated away.
        """
        with self._lock:
            for cid in reversed(pub.created):
                if self._fresh.get(cid) == pub.token:
                    del self._fresh[cid]
                    freed = self._packs.remove(cid)
                    if freed > 0:
                        self._used = max(0, self._used - freed)

    def _release(self, pub: _PublishState) -> None:
        with self._lock:
            self._reserved -= pub.reservation.left
            pub.reservation.left = 0
            for cid in pub.pinned:
                self._pins[cid] -= 1
                if self._pins[cid] <= 0:
                    del self._pins[cid]

    def export(self, manifest: Manifest, dest: Path | str, *, mode: int = 0o644) -> None:
        """Write the resource to *dest* atomically, verifying every chunk on the way.

        On any error (missing/corrupt chunk, I/O) *dest* is left untouched.
        """
        dest = Path(dest)
        missing = self.missing_chunks(manifest)
        if missing:
            raise IncompleteResource(
                f"cannot export {manifest.name!r}: {len(missing)} chunks missing"
            )
        with atomic_writer(dest, mode) as f:
            for c in manifest.chunks:
                data = self.get_chunk(c.chunk_id)
                if len(data) != c.length:
                    raise ManifestError(f"chunk {c.chunk_id.hex()} is {len(data)} bytes, "
                                        f"manifest says {c.length}")
                f.write(data)

    # -- maintenance ----------------------------------------------------------------------

    def usage(self) -> tuple[int, int | None]:
        """(chunk bytes stored, quota or None)."""
        with self._lock:
            return self._used, self.quota_bytes

    def _quarantine_file(self, path: Path, qname: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, self._quarantine_dir / qname)
            fsync_dir(path.parent)
            fsync_dir(self._quarantine_dir)


def _open_regular(path: Path) -> tuple[BinaryIO, os.stat_result]:
    """Open a file to publish without following a symlink put in its place since the scan
    (O_NOFOLLOW) or hanging on a FIFO (O_NONBLOCK); StoreError unless it is regular."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise SourceChanged(f"{path} vanished while the folder was being published") from None
    except OSError as e:
        raise StoreError(f"{path}: {e.strerror or e}") from None
    f = os.fdopen(fd, "rb", buffering=0)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        f.close()
        raise StoreError(f"{path} is not a regular file")
    return f, st


def _is_cid(cid: object) -> bool:
    return isinstance(cid, bytes) and len(cid) == CHUNK_ID_SIZE


def _quota_msg(need: int, free: int, quota: int) -> str:
    return f"quota exceeded: needs {need} bytes, {max(free, 0)} free of {quota}"
