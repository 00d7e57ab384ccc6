"""Manifests: the signed-over-the-air description of one version of a resource.

A manifest lists the chunks (BLAKE3 id + length) that make up a file. It is what peers
exchange first, so it is parsed as hostile input: bounded size, exact schema, and a single
canonical encoding, so that ``blake3(bytes received) == manifest_hash`` can be checked
before parsing and two honest peers always agree on a manifest's hash.

Wire format (canonical JSON, sorted keys, no spaces, ASCII)::

    {"avg_chunk_size":262144,"chunks":[["<64 hex>",262144],...],"created":1.7e9,
     "name":"notes.txt","parent":null,"public":false,"publisher":"<hex>",
     "resource_id":"<32 hex>","size":262144,"version":1}

A **folder** carries one more key, ``files`` (agent/store/tree.py): its files' paths, chunk
counts, sizes and modes over the same ``chunks`` list. A manifest without it is a single
file and encodes exactly as before, so old manifests keep their bytes and hash.

Every manifest travels with its publisher's signature (agent/security/signing.py), kept
*beside* these bytes so the manifest hash still names the version. On the wire and on disk
the pair is the **envelope**::

    {"manifest": "<canonical manifest JSON text>",
     "sig": {"x25519": "<64 hex>", "ed25519": "<64 hex>", "sig": "<128 hex>"}}

``Manifest.signature`` holds the parsed signature (None for an unsigned, legacy manifest);
it takes no part in equality or in the hash. Nothing in a manifest from elsewhere is
believed before :meth:`Manifest.verify` passed.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from blake3 import blake3

from agent.security.delegation import SignedDelegation
from agent.security.signing import (
    RECORD_DOMAIN,
    MalformedSignature,
    PublisherSignature,
    Signer,
    sign_digest,
    verify_digest,
)
from agent.store import _schema as s
from agent.store.chunker import (
    CHUNK_ID_SIZE,
    MAX_AVG_CHUNK_SIZE,
    MIN_AVG_CHUNK_SIZE,
    max_chunk_size,
)
from agent.store.errors import ManifestError
from agent.store.names import validate_name
from agent.store.tree import MAX_FILES, FileEntry, check_files, file_from_obj

__all__ = [
    "MAX_CHUNKS",
    "MAX_MANIFEST_BYTES",
    "ChunkEntry",
    "Manifest",
    "ManifestError",
    "new_resource_id",
    "validate_name",
]

MAX_MANIFEST_BYTES = 8 * 1024 * 1024
#: Fits in MAX_MANIFEST_BYTES even with the longest lengths (~78 bytes per entry).
MAX_CHUNKS = 100_000
MAX_CREATED = 1e11  # year ~5100; rejects absurd timestamps without guessing clocks
RESOURCE_ID_HEX = 32
MANIFEST_HASH_HEX = 64
PUBLISHER_MIN_HEX, PUBLISHER_MAX_HEX = 8, 128

_KEYS = frozenset(
    {
        "avg_chunk_size", "chunks", "created", "name", "parent", "public", "publisher",
        "resource_id", "size", "version",
    }
)
_KEYS_FOLDER = _KEYS | {"files"}


def new_resource_id() -> str:
    """16 random bytes as 32 hex chars: stable id of a resource across its versions."""
    return os.urandom(RESOURCE_ID_HEX // 2).hex()


@dataclass(frozen=True, slots=True)
class ChunkEntry:
    """One chunk of a manifest: its BLAKE3-256 id and length in bytes."""

    chunk_id: bytes
    length: int

    def __post_init__(self) -> None:
        if not isinstance(self.chunk_id, bytes) or len(self.chunk_id) != CHUNK_ID_SIZE:
            raise ManifestError(f"chunk id must be {CHUNK_ID_SIZE} bytes")
        s.check_int(self.length, "chunk length", 1, 4 * MAX_AVG_CHUNK_SIZE)

    @property
    def hex(self) -> str:
        return self.chunk_id.hex()


@dataclass(frozen=True)
class Manifest:
    """One immutable version of a resource; constructing it validates every field."""

    resource_id: str
    name: str
    version: int
    size: int
    avg_chunk_size: int
    chunks: tuple[ChunkEntry, ...]
    created: float
    publisher: str
    public: bool
    parent: str | None
    #: A folder's files (sorted by path, over :attr:`chunks` in order); None = one file.
    files: tuple[FileEntry, ...] | None = None
    #: The publisher's signature over :attr:`digest`; None = unsigned (never believed).
    #: With a :attr:`delegation`, the delegate's signature.
    signature: PublisherSignature | None = field(default=None, compare=False, repr=False)
    #: The publisher's delegation, when a delegate signed this version.
    delegation: SignedDelegation | None = field(default=None, compare=False, repr=False)
    #: The same signer's Ed25519 signature over :meth:`record_digest` (what a `list` entry
    #: carries); None for versions signed before version records existed.
    record_sig: bytes | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.signature is not None and not isinstance(self.signature, PublisherSignature):
            raise ManifestError("signature must be a PublisherSignature")
        s.check_hex(self.resource_id, "resource_id", length=RESOURCE_ID_HEX)
        validate_name(self.name)
        s.check_int(self.version, "version", 1)
        avg = s.check_int(self.avg_chunk_size, "avg_chunk_size",
                          MIN_AVG_CHUNK_SIZE, MAX_AVG_CHUNK_SIZE)
        if isinstance(self.created, int) and not isinstance(self.created, bool):
            object.__setattr__(self, "created", float(self.created))
        s.check_float(self.created, "created", 0.0, MAX_CREATED)
        s.check_hex(self.publisher, "publisher", min_len=PUBLISHER_MIN_HEX,
                    max_len=PUBLISHER_MAX_HEX)
        s.check_bool(self.public, "public")
        if self.parent is not None:
            s.check_hex(self.parent, "parent", length=MANIFEST_HASH_HEX)
        if (self.version == 1) != (self.parent is None):
            raise ManifestError("parent must be null exactly when version is 1")
        if not isinstance(self.chunks, tuple):
            raise ManifestError("chunks must be a tuple of ChunkEntry")
        if len(self.chunks) > MAX_CHUNKS:
            raise ManifestError(f"manifest has {len(self.chunks)} chunks, limit is {MAX_CHUNKS}")
        limit = max_chunk_size(avg)
        total = 0
        for i, c in enumerate(self.chunks):
            if not isinstance(c, ChunkEntry):
                raise ManifestError(f"chunks[{i}] is not a ChunkEntry")
            if c.length > limit:
                raise ManifestError(
                    f"chunks[{i}] length {c.length} exceeds max chunk size {limit}"
                )
            total += c.length
        size = s.check_int(self.size, "size", 0)
        if total != size:
            raise ManifestError(f"chunk lengths sum to {total} but size is {size}")
        if self.files is not None:
            if not isinstance(self.files, tuple):
                raise ManifestError("files must be a tuple of FileEntry")
            check_files(self.files, [c.length for c in self.chunks])
            if len(self._encoded) > MAX_MANIFEST_BYTES:
                raise ManifestError(f"the folder's manifest would be {len(self._encoded)} "
                                    f"bytes, limit is {MAX_MANIFEST_BYTES}")

    # -- encoding ---------------------------------------------------------------------

    def to_obj(self) -> dict[str, Any]:
        obj = {
            "avg_chunk_size": self.avg_chunk_size,
            "chunks": [[c.chunk_id.hex(), c.length] for c in self.chunks],
            "created": self.created,
            "name": self.name,
            "parent": self.parent,
            "public": self.public,
            "publisher": self.publisher,
            "resource_id": self.resource_id,
            "size": self.size,
            "version": self.version,
        }
        if self.files is not None:
            obj["files"] = [f.to_obj() for f in self.files]
        return obj

    @property
    def is_folder(self) -> bool:
        """A directory tree (see agent/store/tree.py), not a single file."""
        return self.files is not None

    def to_bytes(self) -> bytes:
        """Canonical JSON; the manifest hash is BLAKE3 of exactly these bytes."""
        return self._encoded

    @functools.cached_property
    def _encoded(self) -> bytes:
        return s.canonical_json(self.to_obj())

    @functools.cached_property
    def digest(self) -> bytes:
        """BLAKE3-256 of :meth:`to_bytes` (32 bytes)."""
        return blake3(self._encoded).digest()

    @property
    def manifest_hash(self) -> str:
        """Hex of :attr:`digest`; names the manifest file and the version."""
        return self.digest.hex()

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, *,
                   max_bytes: int = MAX_MANIFEST_BYTES) -> Manifest:
        """Parse untrusted bytes; anything but a valid canonical manifest -> ManifestError."""
        obj = s.loads_strict(data, max_bytes=max_bytes, what="manifest")
        m = cls.from_obj(obj)
        s.require_canonical(data, m.to_obj(), "manifest")
        m.__dict__["_encoded"] = bytes(data)  # proven canonical: no second encoding later
        return m

    @classmethod
    def from_obj(cls, obj: Any) -> Manifest:
        """Build from decoded JSON, checking the exact key set and each type."""
        o = s.exact_keys(obj, _KEYS_FOLDER if isinstance(obj, dict) and "files" in obj
                         else _KEYS, "manifest")
        raw_chunks = s.check_list(o["chunks"], "chunks", MAX_CHUNKS)
        chunks = tuple(_chunk_from_obj(i, c) for i, c in enumerate(raw_chunks))
        files = None
        if "files" in o:
            raw_files = s.check_list(o["files"], "files", MAX_FILES)
            files = tuple(file_from_obj(i, f) for i, f in enumerate(raw_files))
        try:
            return cls(
                resource_id=o["resource_id"], name=o["name"], version=o["version"],
                size=o["size"], avg_chunk_size=o["avg_chunk_size"], chunks=chunks,
                created=o["created"], publisher=o["publisher"], public=o["public"],
                parent=o["parent"], files=files,
            )
        except ManifestError as e:
            raise ManifestError(f"manifest: {e}") from None

    # -- signatures -------------------------------------------------------------------

    def with_signature(self, signature: PublisherSignature | None, *,
                       delegation: SignedDelegation | None = None,
                       record_sig: bytes | None = None) -> Manifest:
        """The same manifest (same bytes, same hash) carrying *signature* (and the
        delegation and record signature that go with it). Cheap: nothing is re-validated
        or re-encoded (the fields are unchanged), which matters at store open."""
        if signature is not None and not isinstance(signature, PublisherSignature):
            raise ManifestError("signature must be a PublisherSignature")
        if record_sig is not None and (signature is None or not isinstance(record_sig, bytes)
                                       or len(record_sig) != 64):
            raise ManifestError("a record signature is 64 bytes and needs a signature")
        if delegation is not None and (signature is None
                                       or not isinstance(delegation, SignedDelegation)):
            raise ManifestError("a delegation needs a signature")
        clone = object.__new__(Manifest)
        clone.__dict__.update(self.__dict__)  # fields and cached encodings
        object.__setattr__(clone, "signature", signature)
        object.__setattr__(clone, "delegation", delegation)
        object.__setattr__(clone, "record_sig", record_sig)
        return clone

    def signed_by(self, signer: Signer, delegation: SignedDelegation | None = None) -> Manifest:
        """Sign as *signer*: the publisher, or a delegate holding the publisher's
        *delegation* for this resource (checked now: ManifestError / DelegationError)."""
        me = signer.device_id.hex()
        if delegation is None and me != self.publisher:
            raise ManifestError(
                f"only the publisher can sign a manifest (publisher {self.publisher[:16]}, "
                f"signer {me[:16]}) unless it delegated this resource to the signer")
        if delegation is not None:
            if me == self.publisher:
                raise ManifestError("the publisher signs without a delegation")
            delegation.check(self.publisher, self.resource_id,
                             PublisherSignature(signer.public_key, signer.signing_public,
                                                bytes(64)))
        sig = sign_digest(signer, self.digest)
        rsig = sign_digest(signer, self.record_digest, RECORD_DOMAIN).sig
        return self.with_signature(sig, delegation=delegation, record_sig=rsig)

    def verify(self, now: float | None = None) -> None:
        """Raise a SignatureError (kind untrusted) unless the publisher, or a delegate the
        publisher named for this resource within the delegation's window (*now*, default
        the clock), signed these bytes, and the record signature (if any) is the same
        signer's."""
        what = f"manifest {self.manifest_hash[:12]} of {self.name!r}"
        signer_hex = self.publisher
        if self.delegation is not None:
            self.delegation.check(self.publisher, self.resource_id, self.signature, now)
            signer_hex = self.delegation.delegation.delegate
        verify_digest(signer_hex, self.digest, self.signature, what)
        if self.record_sig is not None:
            assert self.signature is not None  # verify_digest refused an unsigned one
            verify_digest(signer_hex, self.record_digest,
                          PublisherSignature(self.signature.x25519, self.signature.ed25519,
                                             self.record_sig),
                          f"version record of {what}", RECORD_DOMAIN)

    @property
    def signed(self) -> bool:
        """Carries a signature (not necessarily a valid one: see :meth:`verify`)."""
        return self.signature is not None

    # -- version records (what a `list` entry proves) ----------------------------------

    def version_record(self) -> dict[str, object]:
        """The compact, separately signed description of this version: enough to list it
        (and to check the listing) without the chunk list."""
        return version_record(self.resource_id, self.version, self.name, self.publisher,
                              self.manifest_hash, self.size, self.public,
                              None if self.files is None else len(self.files))

    @functools.cached_property
    def record_digest(self) -> bytes:
        return blake3(s.canonical_json(self.version_record())).digest()

    # -- envelope (wire) and seal (disk) ------------------------------------------------

    def seal(self) -> dict[str, object] | None:
        """Everything signed *about* these bytes, as stored beside them (``.sig`` file,
        resource record): ``{"sig", "vsig"?, "dlg"?}``; None if unsigned."""
        if self.signature is None:
            return None
        out: dict[str, object] = {"sig": self.signature.to_obj()}
        if self.record_sig is not None:
            out["vsig"] = self.record_sig.hex()
        if self.delegation is not None:
            out["dlg"] = self.delegation.to_obj()
        return out

    def with_seal(self, obj: object) -> Manifest:
        """This manifest carrying a parsed seal (also the pre-seal ``.sig`` form: a bare
        signature block). Parsed, not verified; MalformedSignature/DelegationError if bad."""
        if isinstance(obj, Mapping) and "sig" in obj and isinstance(obj["sig"], Mapping):
            if not set(obj) <= {"sig", "vsig", "dlg"}:
                raise MalformedSignature("seal must be {sig, vsig?, dlg?}")
            return self.with_signature(
                PublisherSignature.from_obj(obj["sig"]),
                delegation=(SignedDelegation.from_obj(obj["dlg"]) if "dlg" in obj else None),
                record_sig=_record_sig(obj.get("vsig")))
        return self.with_signature(PublisherSignature.from_obj(obj))

    def envelope(self) -> dict[str, object]:
        """The wire form: the manifest text and, if any, the seal unchanged (flattened:
        ``{"manifest", "sig"?, "vsig"?, "dlg"?}``)."""
        env: dict[str, object] = {"manifest": self.to_bytes().decode("ascii")}
        env.update(self.seal() or {})
        return env

    @classmethod
    def from_envelope(cls, obj: object, *, max_bytes: int = MAX_MANIFEST_BYTES) -> Manifest:
        """Parse an envelope from a peer: strict manifest, well-formed (unverified) seal.

        The signature is *parsed* here, not verified: the caller decides what an unsigned or
        badly signed offer means for it (drop it, report the source). A malformed signature
        block or delegation raises a SignatureError (kind untrusted).
        """
        if not isinstance(obj, Mapping) or not isinstance(obj.get("manifest"), str) or not (
                set(obj) <= {"manifest", "sig", "vsig", "dlg"}):
            raise ManifestError("manifest envelope must be {manifest, sig, vsig?, dlg?}")
        m = cls.from_bytes(obj["manifest"].encode("utf-8"), max_bytes=max_bytes)
        if "sig" not in obj:
            if set(obj) != {"manifest"}:
                raise MalformedSignature("vsig and dlg need a signature")
            return m
        return m.with_seal({k: v for k, v in obj.items() if k != "manifest"})

    # -- helpers ----------------------------------------------------------------------

    def distinct_chunks(self) -> dict[bytes, int]:
        """Chunk id -> length for each distinct chunk, in first-use order."""
        out: dict[bytes, int] = {}
        for c in self.chunks:
            out.setdefault(c.chunk_id, c.length)
        return out


def version_record(resource_id: str, version: int, name: str, publisher: str,
                   manifest_hash: str, size: int, public: bool,
                   files: int | None = None) -> dict[str, object]:
    """The fields a version record signs (see :meth:`Manifest.version_record`); a folder's
    also signs its file count (``files``), so a listing can show it; a file's record is
    unchanged."""
    rec: dict[str, object] = {"manifest": manifest_hash, "name": name, "public": public,
                              "publisher": publisher, "resource_id": resource_id,
                              "size": size, "version": version}
    if files is not None:
        rec["files"] = files
    return rec


def _record_sig(value: object) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 128 or not s.is_hex(value, 128):
        raise MalformedSignature("vsig must be 128 lower-case hex characters")
    return bytes.fromhex(value)


def _chunk_from_obj(i: int, item: Any) -> ChunkEntry:
    if not isinstance(item, list) or len(item) != 2:
        raise ManifestError(f"manifest: chunks[{i}] must be [hex id, length]")
    cid = s.check_hex(item[0], f"chunks[{i}] id", length=2 * CHUNK_ID_SIZE)
    length = s.check_int(item[1], f"chunks[{i}] length", 1, 4 * MAX_AVG_CHUNK_SIZE)
    return ChunkEntry(bytes.fromhex(cid), length)
