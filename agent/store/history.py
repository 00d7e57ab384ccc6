"""Per-resource version history: an append-only list of what each version changed.

Why keep deltas: the UI and the sync policy want "v3 added 2 chunks / 512 KiB" without
loading two manifests, and old manifests may already be garbage-collected.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from agent.store import _schema as s
from agent.store.errors import ManifestError
from agent.store.manifest import MANIFEST_HASH_HEX, MAX_CHUNKS, MAX_CREATED, Manifest

MAX_VERSIONS = 10_000
MAX_HISTORY_BYTES = 4 * 1024 * 1024

_ENTRY_KEYS = frozenset(
    {"version", "manifest_hash", "size", "created", "chunks_added", "chunks_removed",
     "bytes_added"}
)


@dataclass(frozen=True, slots=True)
class VersionEntry:
    """One version of a resource and its delta against the previous recorded version."""

    version: int
    manifest_hash: str
    size: int
    created: float
    chunks_added: int
    chunks_removed: int
    bytes_added: int

    def __post_init__(self) -> None:
        s.check_int(self.version, "version", 1)
        s.check_hex(self.manifest_hash, "manifest_hash", length=MANIFEST_HASH_HEX)
        s.check_int(self.size, "size", 0)
        if isinstance(self.created, int) and not isinstance(self.created, bool):
            object.__setattr__(self, "created", float(self.created))
        s.check_float(self.created, "created", 0.0, MAX_CREATED)
        s.check_int(self.chunks_added, "chunks_added", 0, MAX_CHUNKS)
        s.check_int(self.chunks_removed, "chunks_removed", 0, MAX_CHUNKS)
        s.check_int(self.bytes_added, "bytes_added", 0)

    @classmethod
    def between(cls, previous: Manifest | None, new: Manifest) -> VersionEntry:
        """Entry for *new*, with the chunk delta against *previous* (None = first)."""
        new_chunks = new.distinct_chunks()
        old_chunks = previous.distinct_chunks() if previous is not None else {}
        added = [cid for cid in new_chunks if cid not in old_chunks]
        removed = sum(1 for cid in old_chunks if cid not in new_chunks)
        return cls(
            version=new.version,
            manifest_hash=new.manifest_hash,
            size=new.size,
            created=new.created,
            chunks_added=len(added),
            chunks_removed=removed,
            bytes_added=sum(new_chunks[cid] for cid in added),
        )

    def to_obj(self) -> dict[str, Any]:
        return {
            "version": self.version, "manifest_hash": self.manifest_hash, "size": self.size,
            "created": self.created, "chunks_added": self.chunks_added,
            "chunks_removed": self.chunks_removed, "bytes_added": self.bytes_added,
        }

    @classmethod
    def from_obj(cls, obj: Any) -> VersionEntry:
        o = s.exact_keys(obj, _ENTRY_KEYS, "version entry")
        return cls(**o)


@dataclass(frozen=True)
class VersionHistory:
    """Immutable, validated sequence of VersionEntry with strictly increasing versions."""

    entries: tuple[VersionEntry, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.entries, tuple):
            raise ManifestError("history entries must be a tuple")
        if len(self.entries) > MAX_VERSIONS:
            raise ManifestError(f"history has {len(self.entries)} versions, limit {MAX_VERSIONS}")
        seen: set[str] = set()
        prev = 0
        for e in self.entries:
            if not isinstance(e, VersionEntry):
                raise ManifestError("history entries must be VersionEntry")
            if e.version <= prev:
                raise ManifestError(
                    f"history versions must increase (v{e.version} after v{prev})"
                )
            if e.manifest_hash in seen:
                raise ManifestError(f"history lists manifest {e.manifest_hash} twice")
            seen.add(e.manifest_hash)
            prev = e.version

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[VersionEntry]:
        return iter(self.entries)

    @property
    def latest(self) -> VersionEntry | None:
        return self.entries[-1] if self.entries else None

    def append(self, entry: VersionEntry) -> VersionHistory:
        """New history with *entry* at the end (append-only: version must be newer)."""
        return VersionHistory((*self.entries, entry))

    def to_obj(self) -> list[dict[str, Any]]:
        return [e.to_obj() for e in self.entries]

    @classmethod
    def from_obj(cls, obj: Any) -> VersionHistory:
        items = s.check_list(obj, "history", MAX_VERSIONS)
        try:
            return cls(tuple(VersionEntry.from_obj(i) for i in items))
        except ManifestError as e:
            raise ManifestError(f"history: {e}") from None

    def to_bytes(self) -> bytes:
        return s.canonical_json(self.to_obj())

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, *,
                   max_bytes: int = MAX_HISTORY_BYTES) -> VersionHistory:
        return cls.from_obj(s.loads_strict(data, max_bytes=max_bytes, what="history"))
