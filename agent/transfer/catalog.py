"""How this device's holdings are named and described: shared by serving and fetching.

Why a module of its own: the chunk server answers peers' ``list``/``manifest`` requests and
the fetch service (and the control commands) describe and find the same resources. Both
sides import these helpers from here, so there is one description of a resource and one
lookup rule, and neither side imports the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.store import StoreError

if TYPE_CHECKING:
    from agent.store import ContentStore, ResourceRecord

__all__ = ["lookup", "public_chunk_ids", "resource_entry"]


def resource_entry(rec: ResourceRecord) -> dict[str, object]:
    """How a held resource is described to the CLI and to peers (`list`)."""
    m = rec.manifest
    return {
        "resource_id": m.resource_id, "name": m.name, "version": m.version,
        "size": m.size, "chunks": len(m.chunks), "public": rec.public,
        "manifest": m.manifest_hash, "publisher": m.publisher,
    }


def lookup(store: ContentStore, resource: str) -> ResourceRecord | None:
    """A held resource by name, ID, ID prefix or current manifest hash; None if absent."""
    if len(resource) == 64:
        for rec in store.resources():
            if rec.manifest.manifest_hash == resource.lower():
                return rec
    try:
        return store.find(resource)
    except StoreError:
        return None


def public_chunk_ids(store: ContentStore) -> frozenset[bytes]:
    """Every chunk of a resource currently held as public: what unpaired peers may fetch."""
    return frozenset(c.chunk_id for rec in store.resources() if rec.public
                     for c in rec.manifest.chunks)
