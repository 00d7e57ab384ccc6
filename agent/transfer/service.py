"""Fetch service: turn "fetch NAME" into a multi-source transfer.

It asks the reachable peers for the resource's manifest, picks the version to fetch
(:func:`choose_version`), orders the holders (the resource's authority first: it is the
holder the mesh agreed serves it best), and runs a :class:`Fetch`. Peers are found through
the connections port; the authority through a lookup function; nothing here knows the node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from agent.errors import ErrorKind, ShoalError
from agent.log import kv
from agent.peer.connection import PeerConnection
from agent.peer.hello import parse_address
from agent.store import CorruptChunk, Manifest
from agent.transfer import delta
from agent.transfer.catalog import lookup, resource_entry
from agent.transfer.failure import summary
from agent.transfer.fetcher import (
    Choice,
    Fetch,
    FetchError,
    Offer,
    ProgressSink,
    choose_version,
    find_offers,
)

if TYPE_CHECKING:
    from agent.config import TransferConfig
    from agent.peer.connections import Connections
    from agent.ports import AccessRecorder, HolderFinder, TrustView
    from agent.store import ContentStore, ResourceRecord

log = logging.getLogger("shoal.fetch")

PEER_WAIT_POLL = 0.1
#: How long `fetch NAME` of a held resource waits for a first session before answering
#: with the local copy (just started: peers are still dialling).
HELD_CHECK_WAIT = 1.0
MAX_FRESH = 4096  # held resources whose "newest" check is remembered


@dataclass(frozen=True)
class AuthorityHint:
    """Who the replicated map names as a resource's authority (for ordering sources)."""

    holder: str  # device id hex
    name: str
    term: int
    epoch: int


AuthorityLookup = Callable[[str], AuthorityHint | None]
MirrorLookup = Callable[[str], list[str]]
"""The devices (ID hex) mirroring a resource for us (agent/mirrors): tried first."""


class ExportSink(Protocol):
    """Where ``fetch --stream`` sends the resource: its manifest first, then each chunk."""

    async def start(self, manifest: Manifest) -> None: ...

    async def data(self, chunk: bytes) -> None: ...


class NoHolders(ShoalError):
    """No reachable peer offers the resource (or no peer is reachable at all)."""

    kind = ErrorKind.NOT_FOUND


class FetchFailed(ShoalError):
    """The transfer started but could not complete; the message says why, per source."""

    kind = ErrorKind.UNREACHABLE


class FetchService:
    """Fetches on demand (the CLI) and, later, for the prefetch and mirror services."""

    def __init__(self, store: ContentStore, connections: Connections, cfg: TransferConfig, *,
                 connect_timeout: float, default_port: int,
                 authority: AuthorityLookup | None = None,
                 on_fetched: Callable[[], None] | None = None,
                 trust: TrustView | None = None, access: AccessRecorder | None = None,
                 mirrors: MirrorLookup | None = None,
                 holders: HolderFinder | None = None) -> None:
        self._access = access  # the access log (agent/usage)
        self._holders = holders  # holders beyond the neighbours (the DHT)
        self._mirrors = mirrors
        self._store = store
        self._trust = trust
        self._connections = connections
        self._cfg = cfg
        self._connect_timeout = connect_timeout
        self._default_port = default_port
        self._authority = authority
        self._on_fetched = on_fetched
        self.demand_in_flight = 0  # demand fetches moving chunks now (prefetch waits for 0)
        self.in_flight = 0  # fetches of any class moving chunks now (systemd STATUS, metrics)
        self.bytes_by_class: dict[str, int] = {}  # bytes fetched since start, per class
        # resource ID -> (monotonic time, version) when the held copy was last known newest
        self._fresh: OrderedDict[str, tuple[float, int]] = OrderedDict()

    async def fetch(self, resource: str, *, source: str | None = None,
                    traffic_class: str = "demand", progress: ProgressSink | None = None,
                    export: ExportSink | None = None,
                    max_size: int | None = None) -> dict[str, object]:
        """Fetch a resource by name or ID from the peers that hold it (or from *source*);
        then, with *export*, stream the fetched version to it. *max_size*: refuse (before
        any chunk moves) a version larger than this (the model service's bound)."""
        rec = lookup(self._store, resource, self.trusted_publisher)
        choice: Choice | None = None
        if rec is not None and source is None and rec.manifest.signed:
            # (an unsigned record, kept from before signing, is fetched again: a verified
            # version of the resource replaces it)
            note = self._fresh_note(rec)
            if note is None:
                choice, note = await self._newer_than_held(rec)
            if choice is None:
                if self._access is not None and traffic_class == "demand":
                    self._access.record_access(self._connections.device_id, rec.resource_id,
                                               rec.size, hit=True, source="local")
                if export is not None:
                    await self._export(rec.manifest, export, fresh=frozenset())
                return resource_entry(rec) | {"already_held": True, "sources": {},
                                              "why": note, "rejected": {}}
        if choice is None:
            conns = await self._sources(source)
            if not conns:
                raise NoHolders(f"no peer is reachable to fetch {resource!r} from "
                                "(see: shoal peers)")
            offers, errors = await self._offers(conns, resource, traffic_class,
                                                lookup=source is None)
            if not offers:
                for name, e in errors.items():  # the one line below counts; the log says who
                    log.debug("no offer", extra=kv(resource=resource, peer=name,
                                                   reason=str(e) or type(e).__name__))
                raise NoHolders(summary(resource, errors))
            choice = choose_version(offers, resource, trusted_publisher=self.trusted_publisher)
        return await self._run(choice, rec, traffic_class=traffic_class, progress=progress,
                               export=export, max_size=max_size, newest=source is None)

    async def _offers(self, conns: list[PeerConnection], resource: str, why: str, *,
                      lookup: bool) -> tuple[list[Offer], dict[str, BaseException]]:
        """Ask the sources that may hold *resource* for its manifest.

        Small neighbourhood: every neighbour is asked (one round trip). With *lookup* and a
        holder finder (the DHT), the finder is asked first when the neighbourhood exceeds
        its measured threshold (then only the holders it found are asked, every neighbour
        only if none of them offers), and after the neighbours when none of them offers but
        the mesh reaches beyond them. Holders it finds have sessions by then: ordinary
        sources from here on."""
        t = self._cfg
        finder = self._holders if lookup else None
        conns = list(conns)  # a snapshot: sessions the finder opens are not "already asked"
        asked = conns
        looked = False
        if finder is not None and finder.lookup_first(len(conns)):
            looked = True
            found = self._live(await finder.reach_holders(resource))
            if found:
                asked = found
        offers, errors = await find_offers(asked, resource, t.request_timeout,
                                           self.is_trusted, why=why)
        if offers:
            return offers, errors
        rest = [c for c in conns if c not in asked]
        if finder is not None and not looked and finder.beyond_neighbours():
            rest += [c for c in self._live(await finder.reach_holders(resource))
                     if c not in asked]
        if rest:
            more, errs = await find_offers(rest, resource, t.request_timeout,
                                           self.is_trusted, why=why)
            offers, errors = more, errors | errs
        if not offers and finder is not None and (looked or rest):
            # a holder's session can be replaced while it is asked (a relayed session gives
            # way to a direct one that just opened): ask once more, only over sessions that
            # were not asked already
            tried = set(map(id, asked)) | set(map(id, rest))
            again = [c for c in self._live(await finder.reach_holders(resource))
                     if id(c) not in tried]
            if again:
                more, errs = await find_offers(again, resource, t.request_timeout,
                                               self.is_trusted, why=why)
                offers, errors = more, errors | errs
        return offers, errors

    def _live(self, peer_ids: list[bytes]) -> list[PeerConnection]:
        wanted = set(peer_ids)
        return [c for c in self._connections.live_connections() if c.peer_id in wanted]

    async def sync_held(self, resource_id: str, *,
                        traffic_class: str = "mirror") -> dict[str, object]:
        """Bring a held resource to its newest believable version, by delta: only the chunks
        it lacks move, changed chunks as deltas against the held version's (``sync_to_latest``
        of followed copies and mirrors). The same rules as ``fetch`` (signatures, paired
        holders first, never an older version). ``updated`` says whether a version came;
        ``why`` what was checked. Records no access: a sync is not a use."""
        rec = self._store.find(resource_id)
        if not rec.manifest.signed:
            return resource_entry(rec) | {"updated": False, "why": "held unsigned: fetch it"}
        choice, note = await self._newer_than_held(rec)
        if choice is None:
            return resource_entry(rec) | {"updated": False, "why": note, "bytes_fetched": 0}
        out = await self._run(choice, rec, traffic_class=traffic_class, progress=None,
                              export=None, max_size=None, record=False)
        return out | {"updated": True}

    async def _run(self, choice: Choice, rec: ResourceRecord | None, *, traffic_class: str,
                   progress: ProgressSink | None, export: ExportSink | None,
                   max_size: int | None, record: bool = True,
                   newest: bool = True) -> dict[str, object]:
        """Fetch the chosen version (only the chunks not held; changed chunks of a held
        older version as deltas), then export it if asked."""
        t = self._cfg
        manifest = choice.manifest
        if max_size is not None and manifest.size > max_size:
            raise FetchFailed(f"{manifest.name!r} v{manifest.version} is {manifest.size} "
                              f"bytes, over the {max_size} allowed")
        holders, why = self._prefer_authority(manifest.resource_id, choice.holders)
        mirrors = self._mirrors(manifest.resource_id) if self._mirrors is not None else []
        if mirrors:  # a mirror kept for us is tried first (agent/mirrors)
            first = [c for c in holders if c.peer_id.hex() in mirrors]
            if first:
                holders = first + [c for c in holders if c not in first]
                why = f"mirror {first[0].name} first, then {why}"

        async def find_sources() -> list[PeerConnection]:
            # a private resource is fetched from paired sessions only
            return [c for c in self._connections.live_connections()
                    if manifest.public or self.is_trusted(c.peer_id)]

        older = (rec.manifest if rec is not None and rec.resource_id == manifest.resource_id
                 and rec.publisher == manifest.publisher else None)
        bases = (await asyncio.to_thread(delta.bases_for, older, manifest,
                                         self._store.has_chunk) if older is not None else {})
        job = Fetch(
            self._store, manifest, holders[: t.max_sources], traffic_class=traffic_class,
            initial_window=t.initial_window, max_window=t.max_window,
            request_timeout=t.request_timeout, stall_timeout=t.stall_timeout,
            find_sources=find_sources, progress=progress, bases=bases,
        )
        demand = traffic_class == "demand"
        self.demand_in_flight += demand
        self.in_flight += 1
        try:
            result = await job.run()
        except FetchError as e:
            raise FetchFailed(f"fetch of {manifest.name!r} failed: {e}") from None
        finally:
            self.demand_in_flight -= demand
            self.in_flight -= 1
        self.bytes_by_class[traffic_class] = (self.bytes_by_class.get(traffic_class, 0)
                                              + result.bytes_fetched)
        # a StoreError (quota, integrity) propagates with its own kind
        if newest:  # every reachable holder was asked (not one --from source)
            self.known_newest(manifest.resource_id, manifest.version)
        if self._on_fetched is not None:
            self._on_fetched()
        if export is not None:
            await self._export(manifest, export, fresh=result.stored)
        names = {c.peer_id.hex(): c.name for c in job.conns.values()}
        if rec is not None and rec.resource_id == manifest.resource_id:
            why = f"v{manifest.version} (held v{rec.version} was older): {why}"
        # the source that gave the most bytes served it; a prefetch, a mirror's own fetch
        # or a sync is not a request of this device's user (it must not feed the predictions)
        if self._access is not None and record and traffic_class == "demand":
            top = max(result.sources, key=lambda k: result.sources[k]["bytes"], default="")
            kind = "mirror:" if top and top in mirrors else ""
            self._access.record_access(self._connections.device_id, manifest.resource_id,
                                       manifest.size, hit=False,
                                       source=kind + top[:16] if top else "local")
        log.info("fetched", extra=kv(
            resource=manifest.name, size=manifest.size, seconds=round(result.seconds, 3),
            sources=",".join(names.values()), bytes=result.bytes_fetched))
        return resource_entry(self._store.find(manifest.resource_id)) | {
            "seconds": result.seconds, "bytes_fetched": result.bytes_fetched, "why": why,
            "deltas": job.deltas, "delta_bytes_saved": job.delta_bytes_saved,
            "rejected": choice.rejected,
            "sources": {names[k]: {"bytes": v["bytes"], "chunks": v["completed"],
                                   "state": v["state"], "reason": v["reason"],
                                   "window": v["window"], "failures": v["failures"],
                                   "min_rtt_ms": round((v["min_rtt"] or 0) * 1000, 2),
                                   "throughput": round(v["throughput"] or 0)}
                        for k, v in result.sources.items()},
        }

    async def _newer_than_held(self, rec: ResourceRecord) -> tuple[Choice | None, str]:
        """Ask the reachable holders whether a newer verified version of a held resource
        exists; the choice to fetch if so, else None and a sentence on what was checked.

        The same rules as any fetch (:func:`choose_version`): signatures verified, paired
        holders' versions first, private ones from paired sessions only. Only offers of this
        very resource (ID and publisher) count.
        """
        held = f"local v{rec.version}"
        conns = await self._sources(None, wait=min(self._connect_timeout, HELD_CHECK_WAIT))
        if not conns:
            return None, f"{held}; no holder reachable to check for newer"
        offers, _errors = await find_offers(conns, rec.resource_id, self._cfg.request_timeout,
                                            self.is_trusted, base=rec.manifest, why="check")
        same = [o for o in offers if o.manifest.resource_id == rec.resource_id
                and o.manifest.publisher == rec.publisher]
        if not same:
            return None, (f"{held}; none of {len(conns)} reachable peer(s) holds it "
                          "to check for newer")
        try:
            choice = choose_version(same, rec.resource_id,
                                    trusted_publisher=self.trusted_publisher)
        except FetchError as e:
            return None, f"{held}; no believable newer version ({e})"
        if choice.manifest.version <= rec.version:
            names = ", ".join(c.name for c in choice.holders[:3])
            self.known_newest(rec.resource_id, rec.version)
            return None, f"{held} is the newest (checked {len(same)} holder(s): {names})"
        return choice, ""

    def known_newest(self, resource_id: str, version: int) -> None:
        """*version* of a held resource was just found (or fetched as) the newest: fetches
        within ``[transfer] fresh_for`` serve it without asking the holders again."""
        self._fresh[resource_id] = (time.monotonic(), version)
        self._fresh.move_to_end(resource_id)
        while len(self._fresh) > MAX_FRESH:
            self._fresh.popitem(last=False)

    def stale(self, resource_id: str, version: int) -> None:
        """A paired device announced *version*: if it is newer than the one known newest,
        the next fetch asks the holders again."""
        known = self._fresh.get(resource_id)
        if known is not None and version > known[1]:
            del self._fresh[resource_id]

    def _fresh_note(self, rec: ResourceRecord) -> str | None:
        known = self._fresh.get(rec.resource_id)
        if known is None or known[1] != rec.version:
            return None
        age = time.monotonic() - known[0]
        if not 0 <= age < self._cfg.fresh_for:
            return None
        return (f"local v{rec.version}, the newest {age:.0f} s ago ([transfer] fresh_for "
                f"{self._cfg.fresh_for:g} s)")

    def is_trusted(self, peer_id: bytes) -> bool:
        """The session's peer is paired with us."""
        return self._trust is not None and self._trust.is_trusted(peer_id)

    def trusted_publisher(self, publisher_hex: str) -> bool:
        """Resources by this publisher are resolved first: ourselves or a paired device."""
        if publisher_hex == self._connections.device_id.hex():
            return True
        try:
            return self.is_trusted(bytes.fromhex(publisher_hex))
        except ValueError:
            return False

    async def export_to(self, manifest: Manifest, sink: ExportSink, *,
                        fresh: frozenset[bytes]) -> None:
        """Stream a held version into *sink* (see :meth:`_export`)."""
        await self._export(manifest, sink, fresh=fresh)

    async def _export(self, manifest: Manifest, sink: ExportSink, *,
                      fresh: frozenset[bytes]) -> None:
        """Read the resource back from the store, chunk by chunk, into *sink*.

        Chunks in *fresh* were hashed by this fetch moments ago, in memory, before they were
        written: reading them back is not hashed again (it would only compare the page cache
        with itself). Chunks that were already held (a resumed fetch, dedupe across
        resources, ``already_held``) come from the disk's past and are verified on read.
        """
        await sink.start(manifest)
        for entry in manifest.chunks:
            data = await asyncio.to_thread(self._store.get_chunk, entry.chunk_id,
                                           verify=entry.chunk_id not in fresh)
            if len(data) != entry.length:  # a short read: the pack changed under us
                raise CorruptChunk(f"chunk {entry.chunk_id.hex()} read back as {len(data)} "
                                   f"bytes, the manifest says {entry.length}")
            await sink.data(data)

    async def _sources(self, source: str | None,
                       wait: float | None = None) -> list[PeerConnection]:
        if source:
            return [await self._connections.connect(parse_address(source, self._default_port))]
        conns = self._connections.live_connections()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self._connect_timeout if wait is None else wait)
        while not conns and loop.time() < deadline:  # just started: peers are dialling
            await asyncio.sleep(PEER_WAIT_POLL)
            conns = self._connections.live_connections()
        return conns

    def _prefer_authority(self, resource_id: str, holders: list[PeerConnection]
                          ) -> tuple[list[PeerConnection], str]:
        """Order the sources: the resource's authority first, then the other holders.

        The authority is always among the sources (max_sources cuts the others); the rest
        add speed in parallel and take over when the authority fails. Returns the sources
        and a sentence saying why.
        """
        a = self._authority(resource_id) if self._authority is not None else None
        if a is None:
            return holders, f"no authority assigned: fetching from {len(holders)} holder(s)"
        first = [c for c in holders if c.peer_id.hex() == a.holder]
        if first:
            others = [c for c in holders if c is not first[0]]
            extra = f" plus {len(others)} other holder(s)" if others else ""
            return first[:1] + others, (
                f"authority {a.name} (term {a.term}, epoch {a.epoch}){extra}")
        return holders, (f"authority {a.name} (term {a.term}) is unreachable or lacks this "
                         f"version: fell back to {len(holders)} holder(s)")
