"""How this device's holdings are named and described: shared by serving and fetching.

Why a module of its own: the chunk server answers peers' ``list``/``manifest`` requests and
the fetch service (and the control commands) describe and find the same resources. Both
sides import these helpers from here, so there is one description of a resource and one
lookup rule, and neither side imports the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.security.identity import short_device_id
from agent.store import NotFound, StoreError

if TYPE_CHECKING:
    from agent.store import ContentStore, ResourceRecord

__all__ = ["lookup", "public_chunk_ids", "publisher_label", "resource_entry"]


def publisher_label(publisher_hex: str) -> str:
    """The publisher's short device ID (what people compare), from its hex ID."""
    try:
        return short_device_id(bytes.fromhex(publisher_hex))
    except ValueError:
        return "?"  # never echo a peer's malformed text


def resource_entry(rec: ResourceRecord) -> dict[str, object]:
    """How a held resource is described to the CLI and to peers (`list`)."""
    m = rec.manifest
    return {
        "resource_id": m.resource_id, "name": m.name, "version": m.version,
        "size": m.size, "chunks": len(m.chunks), "public": rec.public,
        "manifest": m.manifest_hash, "publisher": m.publisher,
        "publisher_short": publisher_label(m.publisher), "signed": m.signed,
        "files": None if m.files is None else len(m.files),  # a folder's file count
    }


def lookup(store: ContentStore, resource: str,
           trusted_publisher: Callable[[str], bool] | None = None) -> ResourceRecord | None:
    """A held resource by name, ID, ID prefix or current manifest hash; None if absent.

    A name held from several publishers resolves among *trusted_publisher*s (ourselves,
    paired devices) first; still several: None (the fetch path then reports the choice).
    """
    if len(resource) == 64:
        for rec in store.resources():
            if rec.manifest.manifest_hash == resource.lower():
                return rec
    try:
        return store.find(resource)
    except NotFound:
        if trusted_publisher is None:
            return None
        named = [r for r in store.resources()
                 if r.name == resource and trusted_publisher(r.publisher)]
        return named[0] if len(named) == 1 else None
    except StoreError:
        return None


def public_chunk_ids(store: ContentStore) -> frozenset[bytes]:
    """Every chunk of a resource currently held as public: what unpaired peers may fetch."""
    return frozenset(c.chunk_id for rec in store.resources() if rec.public
                     for c in rec.manifest.chunks)
