"""Serving side of transfer: answers peers' ``list``, ``manifest`` and ``chunk`` requests.

The fetcher (:mod:`agent.transfer.fetcher`) is one side of a transfer; this is the other,
and it owns every serving decision so the peer layer only moves bytes:

* **Trust.** Paired devices see every resource held here. Unpaired devices see only public
  resources, and may fetch only chunks that belong to one (the set is rebuilt by
  :meth:`ChunkServer.catalog_changed`). A refusal never says whether a private resource or
  chunk exists.
* **Links.** Chunk replies go over the LAN link only; over BLE a request is refused before
  anything is read (the BLE channel would replace the reply with an error anyway).
* **Integrity.** Every chunk read from disk is BLAKE3-verified before it is sent
  (``store.get_chunk``); a corrupt one is quarantined and refused, never served. A resource
  missing a chunk (quarantined) is no longer listed until a fetch repairs it: peers would
  otherwise keep choosing this device for a copy it cannot give. Its manifest is still
  answered, so a fetcher can take the other chunks from here. Refusals carry their kind
  (NOT_FOUND, INTEGRITY) so a fetcher asks other sources instead of counting failures. See
  docs/protocol.md, "Where each hash check happens and why".
* **Compression.** lz4 only if this agent allows it (``[transfer] compress``), the request
  asks for it (``z``, default true) and a sample shows it pays (:func:`wire.encode_chunk`).
* **Bandwidth.** The reply waits for its traffic class's turn (``cls``) at the
  :class:`BandwidthGate`, sized by the bytes that actually go on the link, and holds the
  permit until the send has drained.
* **Memory.** Each connection may have at most :data:`MAX_REPLIES_IN_FLIGHT` chunk replies
  read from the store and not yet sent; a further request waits for a slot *before*
  anything is read. A peer that asks for many chunks and never reads its socket otherwise
  makes this agent hold every chunk it asked for (128 x 512 KiB per session). Unpaired
  connections also share one pool (:data:`MAX_UNPAIRED_REPLIES_IN_FLIGHT`), so many
  strangers cannot add up to more than a few MiB.
* **Zero copy.** The reply is handed to the session as parts (header, payload), never
  joined: see :class:`agent.peer.connection.RawReply`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from agent.errors import ErrorKind
from agent.peer import wire
from agent.peer.connection import Handler, PeerConnection, RawReply, Refused
from agent.security.delegation import SignedDelegation
from agent.security.signing import SignatureError
from agent.store import CorruptChunk, NotFound, StoreError
from agent.transfer import delta, manifest_delta
from agent.transfer.catalog import lookup, public_chunk_ids
from agent.transfer.listing import MAX_LIST_ENTRIES, listing_entry
from agent.transfer.versions import kept_manifest, versions_answer

if TYPE_CHECKING:
    from agent.bandwidth import BandwidthGate
    from agent.ports import AccessRecorder, TrustView
    from agent.security.signing import Signer
    from agent.store import ContentStore, Manifest, ResourceRecord

__all__ = [
    "BULK_LINK",
    "BulkNotOnThisLink",
    "ChunkServer",
    "ChunkUnavailable",
    "NoSuchChunk",
    "NoSuchResource",
    "NotShared",
]

#: The transports that carry chunk replies (see PeerConnection.transport): TCP, and relay
#: circuits (agent/relay/, which run over TCP hops). BLE carries none.
BULK_LINK = "lan"
BULK_LINKS = frozenset({BULK_LINK, "relay"})
DEFAULT_CLASS = "demand"
#: Chunk replies one connection may have read but not yet sent. The replies leave one at a
#: time (the session's send lock), so a few ready behind the one on the wire keep the link
#: busy; more only buffer memory for a peer that may never read. The fetcher's larger
#: window is fine: its extra requests wait here, holding no chunk data.
MAX_REPLIES_IN_FLIGHT = 4
#: Chunk replies all *unpaired* connections together may have read and not yet sent. Each
#: unpaired session is capped (Connections allows 32) and each may hold 4 replies, so
#: without a shared pool strangers that never read could pin 32 x 4 x 1 MiB (the largest
#: chunk at the default size) on a Pi. With it, strangers share 8 replies (~8 MiB worst
#: case); a stranger that stops reading slows only other strangers, never a paired device.
MAX_UNPAIRED_REPLIES_IN_FLIGHT = 8


class NotShared(Refused):
    """The peer is not paired and asked for something that is not public."""

    kind = ErrorKind.UNTRUSTED


class NoSuchResource(Refused):
    """No resource by that name, ID or manifest hash is visible to this peer."""

    kind = ErrorKind.NOT_FOUND


class NoSuchChunk(Refused):
    """The chunk is not (or no longer) held here."""

    kind = ErrorKind.NOT_FOUND


class ChunkUnavailable(Refused):
    """The chunk is held but cannot be served: it failed verification (and was quarantined)
    or the disk could not read it."""

    kind = ErrorKind.INTEGRITY


class UnsignedHere(Refused):
    """The resource is held from before signing: no peer would believe its manifest."""

    kind = ErrorKind.UNTRUSTED


class BadDelegation(Refused):
    """A delegation handed to us is not one we can keep (forged, not ours, not from its
    publisher, expired)."""

    kind = ErrorKind.UNTRUSTED


class BulkNotOnThisLink(Refused):
    """A chunk was asked for over a link that carries no bulk data (BLE)."""

    kind = ErrorKind.REFUSED


class ChunkServer:
    """The serving policy for one store; its handlers are registered on the peer router."""

    def __init__(self, store: ContentStore, trust: TrustView, gate: BandwidthGate, *,
                 compress: bool, on_use: Callable[[str], None] | None = None,
                 access: AccessRecorder | None = None,
                 signer: Signer | None = None) -> None:
        self._store = store
        self._signer = signer  # this device: delegations handed to it are checked against it
        self._trust = trust
        self._gate = gate
        self._compress = compress
        self._on_use = on_use  # the authority counts which resources are asked for
        self._access = access  # the access log (agent/usage)
        self._public_chunks: frozenset[bytes] = frozenset()
        self._incomplete: frozenset[str] = frozenset()  # resource ids missing a chunk here
        # per connection: slots for replies read and not yet sent (dies with the connection)
        self._slots: weakref.WeakKeyDictionary[PeerConnection, _ReplySlots] = (
            weakref.WeakKeyDictionary())
        self._unpaired_slots = _ReplySlots(MAX_UNPAIRED_REPLIES_IN_FLIGHT)  # shared by all
        self.catalog_changed()

    def handlers(self) -> dict[str, Handler]:
        return {"list": self._list, "manifest": self._manifest, "chunk": self._chunk,
                "delegation": self._delegation, "versions": self._versions}

    def catalog_changed(self) -> None:
        """Holdings changed (publish, fetch, removal, a quarantined chunk): recompute what
        unpaired peers may get and which resources can no longer be served completely."""
        self._public_chunks = public_chunk_ids(self._store)
        self._incomplete = frozenset(r.resource_id for r in self._store.resources()
                                     if not self._store.complete(r.manifest))

    def _visible(self, rec: ResourceRecord, trusted: bool) -> bool:
        return trusted or rec.public

    async def _list(self, conn: PeerConnection, req: wire.Request) -> object:
        trusted = self._trust.is_trusted(conn.peer_id)
        out: list[dict[str, object]] = []
        for r in self._store.resources():
            if self._visible(r, trusted) and r.resource_id not in self._incomplete:
                entry = listing_entry(r)  # signed version record; None: nothing to prove
                if entry is not None:
                    out.append(entry)
                    if len(out) == MAX_LIST_ENTRIES:
                        break
        return out

    async def _delegation(self, conn: PeerConnection, req: wire.Request) -> object:
        """A paired publisher hands us a delegation for one of its resources."""
        if self._signer is None or not self._trust.is_trusted(conn.peer_id):
            raise NotShared("delegations are accepted from paired devices only")
        try:
            dlg = SignedDelegation.from_obj(req.args["d"])
        except SignatureError as e:
            raise BadDelegation(f"malformed delegation: {e}") from None
        d = dlg.delegation
        if d.publisher != conn.peer_id.hex():
            raise BadDelegation("a delegation is delivered by its publisher")
        try:
            await asyncio.to_thread(self._store.save_delegation, dlg, self._signer)
        except (SignatureError, StoreError) as e:
            raise BadDelegation(f"delegation refused: {e}") from None
        return {"resource_id": d.resource_id, "expires": d.expires}

    async def _versions(self, conn: PeerConnection, req: wire.Request) -> object:
        """The kept versions of one resource, as signed records (agent/transfer/versions)."""
        trusted = self._trust.is_trusted(conn.peer_id)
        rec = lookup(self._store, req.args["resource"])
        if rec is None or not self._visible(rec, trusted):
            raise NoSuchResource(f"no resource {req.args['resource']!r} here")
        return await asyncio.to_thread(versions_answer, self._store, rec)

    def _old_manifest(self, manifest_hash: str, trusted: bool) -> Manifest | None:
        """A kept older version's manifest (asked for by hash: `fetch --version`)."""
        for rec in self._store.resources():
            if self._visible(rec, trusted) and any(
                    e.manifest_hash == manifest_hash for e in rec.versions):
                return kept_manifest(self._store, rec, manifest_hash)
        return None

    async def _manifest(self, conn: PeerConnection, req: wire.Request) -> object:
        trusted = self._trust.is_trusted(conn.peer_id)
        rec = lookup(self._store, req.args["resource"])
        want = str(req.args["resource"]).lower()
        if rec is None and len(want) == 64:
            old = await asyncio.to_thread(self._old_manifest, want, trusted)
            if old is not None and old.signed:
                return old.envelope()
        if rec is None or not self._visible(rec, trusted):
            hint = "" if trusted else " (only public resources are shared before pairing)"
            raise NoSuchResource(f"no resource {req.args['resource']!r} here{hint}")
        if not rec.manifest.signed:  # kept from before signing: no peer would believe it
            raise UnsignedHere(f"{rec.name!r} is held unsigned here (published before signing)")
        if self._on_use is not None:
            self._on_use(rec.resource_id)
        if self._access is not None and "c" not in req.args:  # a use, not a prefetch/check
            self._access.record_access(conn.peer_id, rec.resource_id, rec.size, hit=True,
                                       source="local")
        env = rec.manifest.envelope()  # the publisher's signature, unchanged
        base = req.args.get("base")
        if isinstance(base, str) and base != rec.current:
            held = await asyncio.to_thread(kept_manifest, self._store, rec, base)
            d = (await asyncio.to_thread(manifest_delta.encode, held, rec.manifest)
                 if held is not None else None)
            if d is not None:  # the asker holds *base*: the changes only
                del env["manifest"]
                env["mdelta"] = d
        return env

    async def _chunk(self, conn: PeerConnection, req: wire.Request) -> RawReply:
        if conn.transport not in BULK_LINKS:
            raise BulkNotOnThisLink(f"chunks are served over the {BULK_LINK} link only")
        cid = bytes.fromhex(req.args["c"])  # the wire schema checked: 64 hex digits
        trusted = self._trust.is_trusted(conn.peer_id)
        if cid not in self._public_chunks and not trusted:
            raise NotShared("not paired: only chunks of public resources are served")
        slots = self._slots.get(conn)
        if slots is None:
            slots = self._slots[conn] = _ReplySlots(MAX_REPLIES_IN_FLIGHT)
        held = [slots] if trusted else [slots, self._unpaired_slots]
        taken: list[_ReplySlots] = []
        try:
            for s in held:  # before the read: what waits here holds no chunk data
                await s.acquire()
                taken.append(s)
            data = self._read(cid)
            diff = self._delta(req.args.get("b"), data, trusted)
            parts = wire.encode_chunk(req.id, cid, data if diff is None else diff,
                                      self._compress and req.args.get("z", True),
                                      delta=diff is not None)
        except BaseException:
            for s in taken:
                s.release()
            raise
        nbytes = sum(len(p) for p in parts)
        cls = req.args.get("cls", DEFAULT_CLASS)
        return RawReply(parts, _holding(taken, self._gate.permit(conn.peer_id.hex(), cls,
                                                                 nbytes)))

    def _delta(self, base_hex: object, data: bytes, trusted: bool) -> bytes | None:
        """The chunk as a delta against *base_hex*: 1-3 chunks the asker holds (its older
        version's chunks at the same offsets), when this store holds them too and the delta
        saves enough; else None (the whole chunk goes). An unpaired asker may name chunks
        of current public versions only: a delta against a private chunk would tell it that
        chunk is here (and something about its bytes)."""
        if not isinstance(base_hex, str):
            return None
        ids = [bytes.fromhex(base_hex[i:i + 64]) for i in range(0, len(base_hex), 64)]
        if not trusted and any(b not in self._public_chunks for b in ids):
            return None
        parts: list[bytes] = []
        try:
            for b in ids:
                parts.append(self._store.get_chunk(b))
        except (StoreError, OSError):  # not held (or damaged) here: send the chunk
            return None
        ends = tuple(itertools.accumulate(len(p) for p in parts))
        return delta.encode(b"".join(parts), data, ends)

    def unpaired_replies_in_flight(self) -> int:
        """Chunk replies read for unpaired connections, all together, not yet sent."""
        return self._unpaired_slots.held

    def replies_in_flight(self, conn: PeerConnection) -> int:
        """Chunk replies read for *conn* and not yet sent (what its memory bound counts)."""
        slots = self._slots.get(conn)
        return 0 if slots is None else slots.held

    def _read(self, cid: bytes) -> bytes:
        """The chunk's bytes, verified against its id (a corrupt copy is never served).

        Inline on the event loop, like the fetcher's put: a 256 KiB pread + BLAKE3 costs
        ~0.1-0.2 ms, less than a thread hand-off.
        """
        try:
            return self._store.get_chunk(cid)
        except NotFound:
            raise NoSuchChunk(f"chunk {cid.hex()[:16]} is not held here") from None
        except CorruptChunk:
            self.catalog_changed()  # quarantined: a resource lost a chunk (not on NotFound:
            # a peer may ask for any id, and a store that did not change needs no rescan)
            raise ChunkUnavailable(f"chunk {cid.hex()[:16]} failed verification here "
                                   "and was quarantined") from None
        except StoreError as e:
            raise ChunkUnavailable(f"chunk {cid.hex()[:16]}: {e}") from None
        except OSError as e:  # EIO and friends: the disk, not the request, is at fault
            raise ChunkUnavailable(f"chunk {cid.hex()[:16]} cannot be read here: "
                                   f"{e.strerror or e}") from None


class _ReplySlots:
    """A semaphore that also says how many are held (for the bound's tests and stats)."""

    def __init__(self, n: int) -> None:
        self._sem = asyncio.Semaphore(n)
        self.held = 0

    async def acquire(self) -> None:
        await self._sem.acquire()
        self.held += 1

    def release(self) -> None:
        self.held -= 1
        self._sem.release()


@contextlib.asynccontextmanager
async def _holding(slots: list[_ReplySlots],
                   permit: AbstractAsyncContextManager[None]) -> AsyncIterator[None]:
    """The reply's hold: the bandwidth permit, then the reply slots back (the connection's,
    and the strangers' pool for an unpaired one) once the send has returned (or failed, or
    was cancelled while waiting for the permit)."""
    try:
        async with permit:
            yield
    finally:
        for s in slots:
            s.release()
