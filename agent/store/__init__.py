"""Content store: content-defined chunks named by BLAKE3, manifests, versioned resources.

Import the public API from here; submodules are implementation detail except where noted.
"""

from agent.store.chunker import (
    DEFAULT_AVG_CHUNK_SIZE,
    MAX_AVG_CHUNK_SIZE,
    MIN_AVG_CHUNK_SIZE,
    ChunkRef,
    chunk_bytes,
    chunk_file,
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
from agent.store.maintenance import GcReport, VerifyReport
from agent.store.manifest import MAX_MANIFEST_BYTES, ChunkEntry, Manifest, validate_name
from agent.store.record import ResourceRecord
from agent.store.store import ContentStore, RecoverReport

__all__ = [
    "DEFAULT_AVG_CHUNK_SIZE",
    "MAX_AVG_CHUNK_SIZE",
    "MAX_MANIFEST_BYTES",
    "MIN_AVG_CHUNK_SIZE",
    "ChunkEntry",
    "ChunkMismatch",
    "ChunkRef",
    "ContentStore",
    "CorruptChunk",
    "GcReport",
    "IncompleteResource",
    "Manifest",
    "ManifestError",
    "NotDelegated",
    "NotFound",
    "QuotaExceeded",
    "RecoverReport",
    "ResourceRecord",
    "SourceChanged",
    "StoreError",
    "VerifyReport",
    "VersionConflict",
    "VersionEntry",
    "VersionHistory",
    "chunk_bytes",
    "chunk_file",
    "chunk_id",
    "chunk_stream",
    "cut_stream",
    "max_chunk_size",
    "validate_name",
]
