"""What the peripheral shows in plaintext: NodeInfo and the *public* catalog entries.

ATT reads are unencrypted and unauthenticated, so only public resources ever appear here;
private ones are listed through the encrypted session's ``list``. The snapshot is cheap to
build (the store keeps its records in memory), so the peripheral can poll it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from radio.ble.profile import (
    DEVICE_ID_SIZE,
    FLAG_CATALOG_PAGING,
    FLAG_LAN,
    RESOURCE_PREFIX_SIZE,
    NodeInfo,
    ResourceEntry,
)

__all__ = ["CatalogSnapshot", "build_snapshot"]


@dataclass(frozen=True)
class CatalogSnapshot:
    """Public catalog + NodeInfo at one moment; ``key`` changes whenever either would."""

    key: tuple[Any, ...]
    generation: int
    entries: tuple[ResourceEntry, ...]
    nodeinfo: NodeInfo

    @property
    def flags(self) -> int:
        return self.nodeinfo.flags


def build_snapshot(
    records: Iterable[Any], *, device_id: bytes, lan_port: int | None, slots: int
) -> CatalogSnapshot:
    """Snapshot of the public records (objects with ``.public`` and ``.manifest``).

    The generation is a hash of the public (resource id, manifest hash) list, so it changes
    with every publish, new version, or public/private flip, and is the same after a restart
    (a central may cache a catalog by generation).
    """
    public = [r for r in records if r.public]
    ident = tuple((r.manifest.resource_id, r.manifest.manifest_hash) for r in public)
    digest = hashlib.blake2s(repr(ident).encode(), digest_size=4).digest()
    generation = int.from_bytes(digest, "little")
    entries = tuple(
        ResourceEntry(
            bytes.fromhex(r.manifest.resource_id)[:RESOURCE_PREFIX_SIZE],
            r.manifest.size,
            r.manifest.version,
            generation=generation & 0xFFFF,  # what a reader decodes
        )
        for r in public
    )
    port = lan_port or 0
    flags = FLAG_CATALOG_PAGING | (FLAG_LAN if port else 0)
    info = NodeInfo(
        device_id[:DEVICE_ID_SIZE],
        flags,
        len(entries),
        generation,
        port,
        min(len(entries), slots),
    )
    return CatalogSnapshot((ident, port, slots), generation, entries, info)
