"""Manifests: the signed-over-the-air description of one version of a resource.

A manifest lists the chunks (BLAKE3 id + length) that make up a file. It is what peers
exchange first, so it is parsed as hostile input: bounded size, exact schema, and a single
canonical encoding, so that ``blake3(bytes received) == manifest_hash`` can be checked
before parsing and two honest peers always agree on a manifest's hash.

Wire format (canonical JSON, sorted keys, no spaces, ASCII)::

    {"avg_chunk_size":262144,"chunks":[["<64 hex>",262144],...],"created":1.7e9,
     "name":"notes.txt","parent":null,"public":false,"publisher":"<hex>",
     "resource_id":"<32 hex>","size":262144,"version":1}

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

import dataclasses
import functools
import os
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from blake3 import blake3

from agent.security.signing import (
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
MAX_NAME_CHARS = 255
MAX_NAME_BYTES = 255  # UTF-8; what ext4/FAT accept as one path component
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


#: Unicode categories a name may not contain: controls, surrogates, format characters
#: (bidi overrides such as U+202E make "exe.txt" display as "txt.exe"; zero-width and BOM
#: characters make two names look the same) and line/paragraph separators.
FORBIDDEN_NAME_CATEGORIES = frozenset({"Cc", "Cs", "Cf", "Zl", "Zp"})
#: Format characters that scripts (Persian, Indic) and emoji sequences need; they cannot
#: reorder text.
ALLOWED_FORMAT_CHARS = frozenset({"\u200c", "\u200d"})  # ZWNJ, ZWJ


def name_char_allowed(ch: str) -> bool:
    """Whether *ch* may appear in a resource name (see FORBIDDEN_NAME_CATEGORIES)."""
    if ch in "/\\":
        return False
    return (ch in ALLOWED_FORMAT_CHARS
            or unicodedata.category(ch) not in FORBIDDEN_NAME_CATEGORIES)


def validate_name(name: object) -> str:
    """Return *name* if it is safe as a single file name on any peer, else ManifestError.

    Rules: 1..255 chars and <= 255 UTF-8 bytes, no "/", "\\", NUL, control, surrogate,
    format (bidi controls, zero-width: see FORBIDDEN_NAME_CATEGORIES) or line separator
    chars, and not "." or "..". This is what stops path traversal through names, and names
    that display as something they are not.
    """
    if not isinstance(name, str):
        raise ManifestError(f"name must be a string, got {type(name).__name__}")
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise ManifestError(f"name must be 1..{MAX_NAME_CHARS} characters, got {len(name)}")
    if name in (".", ".."):
        raise ManifestError(f"name {name!r} is not allowed")
    for ch in name:
        if not name_char_allowed(ch):
            raise ManifestError(f"name contains forbidden character U+{ord(ch):04X}")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise ManifestError(f"name must be at most {MAX_NAME_BYTES} bytes as UTF-8")
    return name


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
    #: The publisher's signature over :attr:`digest`; None = unsigned (never believed).
    signature: PublisherSignature | None = field(default=None, compare=False, repr=False)

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

    # -- encoding ---------------------------------------------------------------------

    def to_obj(self) -> dict[str, Any]:
        return {
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
        return m

    @classmethod
    def from_obj(cls, obj: Any) -> Manifest:
        """Build from decoded JSON, checking the exact key set and each type."""
        o = s.exact_keys(obj, _KEYS, "manifest")
        raw_chunks = s.check_list(o["chunks"], "chunks", MAX_CHUNKS)
        chunks = tuple(_chunk_from_obj(i, c) for i, c in enumerate(raw_chunks))
        try:
            return cls(
                resource_id=o["resource_id"], name=o["name"], version=o["version"],
                size=o["size"], avg_chunk_size=o["avg_chunk_size"], chunks=chunks,
                created=o["created"], publisher=o["publisher"], public=o["public"],
                parent=o["parent"],
            )
        except ManifestError as e:
            raise ManifestError(f"manifest: {e}") from None

    # -- signatures -------------------------------------------------------------------

    def with_signature(self, signature: PublisherSignature | None) -> Manifest:
        """The same manifest (same bytes, same hash) carrying *signature*."""
        return dataclasses.replace(self, signature=signature)

    def signed_by(self, signer: Signer) -> Manifest:
        """Sign as *signer*, who must be the publisher (ManifestError otherwise)."""
        if signer.device_id.hex() != self.publisher:
            raise ManifestError(
                f"only the publisher can sign a manifest (publisher {self.publisher[:16]}, "
                f"signer {signer.device_id.hex()[:16]})")
        return self.with_signature(sign_digest(signer, self.digest))

    def verify(self) -> None:
        """Raise a SignatureError (kind untrusted) unless the publisher signed these bytes."""
        verify_digest(self.publisher, self.digest, self.signature,
                      f"manifest {self.manifest_hash[:12]} of {self.name!r}")

    @property
    def signed(self) -> bool:
        """Carries a signature (not necessarily a valid one: see :meth:`verify`)."""
        return self.signature is not None

    def envelope(self) -> dict[str, object]:
        """The wire/disk form: the manifest text and, if any, the signature unchanged."""
        env: dict[str, object] = {"manifest": self.to_bytes().decode("ascii")}
        if self.signature is not None:
            env["sig"] = self.signature.to_obj()
        return env

    @classmethod
    def from_envelope(cls, obj: object, *, max_bytes: int = MAX_MANIFEST_BYTES) -> Manifest:
        """Parse an envelope from a peer: strict manifest, well-formed (unverified) signature.

        The signature is *parsed* here, not verified: the caller decides what an unsigned or
        badly signed offer means for it (drop it, report the source). A malformed signature
        block raises MalformedSignature (kind untrusted).
        """
        if not isinstance(obj, Mapping) or not isinstance(obj.get("manifest"), str) or not (
                set(obj) <= {"manifest", "sig"}):
            raise ManifestError("manifest envelope must be {manifest, sig}")
        m = cls.from_bytes(obj["manifest"].encode("utf-8"), max_bytes=max_bytes)
        if "sig" not in obj:
            return m
        return m.with_signature(PublisherSignature.from_obj(obj["sig"]))

    # -- helpers ----------------------------------------------------------------------

    def distinct_chunks(self) -> dict[bytes, int]:
        """Chunk id -> length for each distinct chunk, in first-use order."""
        out: dict[bytes, int] = {}
        for c in self.chunks:
            out.setdefault(c.chunk_id, c.length)
        return out


def _chunk_from_obj(i: int, item: Any) -> ChunkEntry:
    if not isinstance(item, list) or len(item) != 2:
        raise ManifestError(f"manifest: chunks[{i}] must be [hex id, length]")
    cid = s.check_hex(item[0], f"chunks[{i}] id", length=2 * CHUNK_ID_SIZE)
    length = s.check_int(item[1], f"chunks[{i}] length", 1, 4 * MAX_AVG_CHUNK_SIZE)
    return ChunkEntry(bytes.fromhex(cid), length)
