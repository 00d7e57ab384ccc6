"""Serving side of transfer (placeholder until the serving module lands from its branch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.peer import wire
from agent.peer.connection import ChunkData, Handler, PeerConnection, Refused
from agent.store import StoreError
from agent.transfer.service import lookup, resource_entry

if TYPE_CHECKING:
    from agent.bandwidth import BandwidthGate
    from agent.ports import TrustView
    from agent.store import ContentStore, ResourceRecord


class ChunkServer:
    def __init__(self, store: ContentStore, trust: TrustView, gate: BandwidthGate, *,
                 compress: bool, on_use: Callable[[str], None] | None = None) -> None:
        self._store = store
        self._trust = trust
        self._compress = compress
        self._on_use = on_use
        self._public_chunks: set[bytes] = set()
        self.catalog_changed()

    def handlers(self) -> dict[str, Handler]:
        return {"list": self._list, "manifest": self._manifest, "chunk": self._chunk}

    def catalog_changed(self) -> None:
        chunks: set[bytes] = set()
        for rec in self._store.resources():
            if rec.public:
                chunks.update(c.chunk_id for c in rec.manifest.chunks)
        self._public_chunks = chunks

    def _visible(self, rec: ResourceRecord, trusted: bool) -> bool:
        return trusted or rec.public

    async def _list(self, conn: PeerConnection, req: wire.Request) -> object:
        trusted = self._trust.is_trusted(conn.peer_id)
        return [resource_entry(r) for r in self._store.resources() if self._visible(r, trusted)]

    async def _manifest(self, conn: PeerConnection, req: wire.Request) -> object:
        trusted = self._trust.is_trusted(conn.peer_id)
        rec = lookup(self._store, req.args["resource"])
        if rec is None or not self._visible(rec, trusted):
            hint = "" if trusted else " (only public resources are shared before pairing)"
            raise Refused(f"no resource {req.args['resource']!r} here{hint}")
        if not rec.manifest.signed:  # kept from before signing: no peer would believe it
            raise Refused(f"{rec.name!r} is held unsigned here (published before signing)")
        if self._on_use is not None:
            self._on_use(rec.resource_id)
        return rec.manifest.envelope()  # the publisher's signature, unchanged

    async def _chunk(self, conn: PeerConnection, req: wire.Request) -> object:
        cid = bytes.fromhex(req.args["c"])
        if not self._trust.is_trusted(conn.peer_id) and cid not in self._public_chunks:
            raise Refused("not paired: only chunks of public resources are served")
        try:
            data = self._store.get_chunk(cid)
        except StoreError as e:
            raise Refused(str(e)) from None
        return ChunkData(cid, data, self._compress and req.args.get("z", True))
