"""Resource records: what the store holds for each resource (``resources/<id>.json``).

The record is the commit point of a publish or download: it is written last, atomically,
and only points at a manifest that is already on disk with all its chunks. In memory a
record carries its current Manifest (the rest of the agent reads ``rec.manifest``); on
disk it stores only the manifest hash::

    {"current":"<64 hex>","public":false,"resource_id":"<32 hex>","seal":{...},
     "versions":[...]}

``seal`` is a copy of the current manifest's signatures (``manifests/<hash>.sig``, see
Manifest.seal): the record is read at open anyway, so keeping it here spares one file read
per resource at start (0.12 s per 1000 resources on the reference machine). Nothing about it
is believed locally either: peers verify what we serve, and every commit verifies. Records
written before it have no ``seal`` (the ``.sig`` file is read instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.store import _schema as s
from agent.store.errors import ManifestError
from agent.store.history import MAX_HISTORY_BYTES, VersionEntry, VersionHistory
from agent.store.manifest import MANIFEST_HASH_HEX, RESOURCE_ID_HEX, Manifest

MAX_RECORD_BYTES = MAX_HISTORY_BYTES + 64 * 1024
_KEYS = frozenset({"resource_id", "public", "current", "versions"})
_SEAL_BYTES = 4096  # a seal is ~700 bytes with a delegation


@dataclass(frozen=True)
class StoredRecord:
    """The on-disk part of a record, parsed strictly (the manifest is loaded separately)."""

    resource_id: str
    current: str
    public: bool
    versions: VersionHistory
    seal: object = None  # parsed JSON, checked when it is attached to the manifest

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, *,
                   max_bytes: int = MAX_RECORD_BYTES) -> StoredRecord:
        raw = s.loads_strict(data, max_bytes=max_bytes, what="record")
        seal = raw.pop("seal", None) if isinstance(raw, dict) else None
        o = s.exact_keys(raw, _KEYS, "record")
        if seal is not None and len(s.canonical_json(seal)) > _SEAL_BYTES:
            raise ManifestError("record: seal too large")
        try:
            rec = cls(
                resource_id=s.check_hex(o["resource_id"], "resource_id", length=RESOURCE_ID_HEX),
                current=s.check_hex(o["current"], "current", length=MANIFEST_HASH_HEX),
                public=s.check_bool(o["public"], "public"),
                versions=VersionHistory.from_obj(o["versions"]),
                seal=seal,
            )
        except ManifestError as e:
            raise ManifestError(f"record: {e}") from None
        latest = rec.versions.latest
        if latest is None or latest.manifest_hash != rec.current:
            raise ManifestError("record: current is not the latest version's manifest")
        return rec


@dataclass(frozen=True)
class ResourceRecord:
    """A held resource: current manifest, full version history, and the sharing flag.

    ``public`` is authoritative for sharing (republishing identical content can flip it
    without a new version); ``manifest.public`` is the flag at publish time.
    """

    manifest: Manifest
    versions: VersionHistory
    public: bool

    def __post_init__(self) -> None:
        if not isinstance(self.manifest, Manifest):
            raise ManifestError("record manifest must be a Manifest")
        if not isinstance(self.versions, VersionHistory):
            raise ManifestError("record versions must be a VersionHistory")
        s.check_bool(self.public, "public")
        latest = self.versions.latest
        if latest is None or latest.manifest_hash != self.manifest.manifest_hash:
            raise ManifestError("record: the latest version must be the current manifest")

    @property
    def resource_id(self) -> str:
        return self.manifest.resource_id

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def publisher(self) -> str:
        return self.manifest.publisher

    @property
    def current(self) -> str:
        """Manifest hash of the current version."""
        return self.manifest.manifest_hash

    @property
    def latest(self) -> VersionEntry:
        """History entry of the current version."""
        assert self.versions.latest is not None  # guaranteed by __post_init__
        return self.versions.latest

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def size(self) -> int:
        return self.manifest.size

    def with_version(self, manifest: Manifest, entry: VersionEntry, *,
                     public: bool) -> ResourceRecord:
        """Record after appending *entry* (for *manifest*) as the new current version."""
        return ResourceRecord(manifest, self.versions.append(entry), public)

    @classmethod
    def from_stored(cls, stored: StoredRecord, manifest: Manifest) -> ResourceRecord:
        """Join a parsed record file with its (already verified) current manifest."""
        if manifest.resource_id != stored.resource_id:
            raise ManifestError(
                f"record {stored.resource_id} points at a manifest of {manifest.resource_id}"
            )
        return cls(manifest, stored.versions, stored.public)

    def to_obj(self) -> dict[str, Any]:
        obj = {"resource_id": self.resource_id, "public": self.public,
               "current": self.current, "versions": self.versions.to_obj()}
        seal = self.manifest.seal()
        if seal is not None:
            obj["seal"] = seal
        return obj

    def to_bytes(self) -> bytes:
        return s.canonical_json(self.to_obj())
