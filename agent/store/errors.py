"""Store exceptions: one base class so callers can catch every store failure at once.

Messages are a single line meant for logs and the CLI; the class says what went wrong.
"""

from __future__ import annotations

from agent.errors import ErrorKind, ShoalError


class StoreError(ShoalError):
    """Base class for every content-store failure."""

    kind = ErrorKind.UNAVAILABLE


class ManifestError(StoreError, ValueError):
    """A manifest, version history or resource record failed strict validation."""

    kind = ErrorKind.INVALID


class NotFound(StoreError, LookupError):
    """A resource, manifest or chunk is not held, or a lookup is ambiguous."""

    kind = ErrorKind.NOT_FOUND


class ChunkMismatch(StoreError, ValueError):
    """Bytes offered for a chunk do not hash to the claimed chunk id (nothing stored)."""

    kind = ErrorKind.INTEGRITY


class CorruptChunk(StoreError):
    """A stored chunk no longer matches its id; it was moved to quarantine/."""

    kind = ErrorKind.INTEGRITY


class QuotaExceeded(StoreError):
    """Storing would push chunk bytes over the configured quota (nothing stored)."""

    kind = ErrorKind.QUOTA


class IncompleteResource(StoreError):
    """An operation needs every chunk of a manifest and some are missing."""

    kind = ErrorKind.NOT_FOUND


class VersionConflict(StoreError):
    """A manifest contradicts what is already recorded for its resource."""

    kind = ErrorKind.CONFLICT


class NotDelegated(StoreError):
    """A version of another device's resource was asked for, and it has not delegated it
    to this device (or the delegation no longer holds)."""

    kind = ErrorKind.UNTRUSTED


class SourceChanged(StoreError):
    """A file changed (or vanished) while it was being published: trying again later,
    once it is quiet, is the fix (what a watched publish does)."""

    kind = ErrorKind.CONFLICT
