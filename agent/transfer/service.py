"""Fetch service: turn "fetch NAME" into a multi-source transfer.

It asks the reachable peers for the resource's manifest, picks the version to fetch
(:func:`choose_version`), orders the holders (the resource's authority first: it is the
holder the mesh agreed serves it best), and runs a :class:`Fetch`. Peers are found through
the connections port; the authority through a lookup function; nothing here knows the node.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.errors import ErrorKind, ShoalError
from agent.log import kv
from agent.peer.connection import PeerConnection
from agent.peer.hello import parse_address
from agent.store import NotFound, StoreError
from agent.transfer.fetcher import (
    Fetch,
    FetchError,
    ProgressSink,
    choose_version,
    find_offers,
    publisher_label,
)

if TYPE_CHECKING:
    from agent.config import TransferConfig
    from agent.peer.connections import Connections
    from agent.ports import TrustView
    from agent.store import ContentStore, ResourceRecord

log = logging.getLogger("shoal.fetch")

PEER_WAIT_POLL = 0.1


@dataclass(frozen=True)
class AuthorityHint:
    """Who the replicated map names as a resource's authority (for ordering sources)."""

    holder: str  # device id hex
    name: str
    term: int
    epoch: int


AuthorityLookup = Callable[[str], AuthorityHint | None]


class NoHolders(ShoalError):
    """No reachable peer offers the resource (or no peer is reachable at all)."""

    kind = ErrorKind.NOT_FOUND


class FetchFailed(ShoalError):
    """The transfer started but could not complete; the message says why, per source."""

    kind = ErrorKind.UNREACHABLE


def resource_entry(rec: ResourceRecord) -> dict[str, object]:
    """How a held resource is described to the CLI and to peers (`list`)."""
    m = rec.manifest
    return {
        "resource_id": m.resource_id, "name": m.name, "version": m.version,
        "size": m.size, "chunks": len(m.chunks), "public": rec.public,
        "manifest": m.manifest_hash, "publisher": m.publisher,
        "publisher_short": publisher_label(m.publisher), "signed": m.signed,
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


class FetchService:
    """Fetches on demand (the CLI) and, later, for the prefetch and mirror services."""

    def __init__(self, store: ContentStore, connections: Connections, cfg: TransferConfig, *,
                 connect_timeout: float, default_port: int,
                 authority: AuthorityLookup | None = None,
                 on_fetched: Callable[[], None] | None = None,
                 trust: TrustView | None = None) -> None:
        self._store = store
        self._trust = trust
        self._connections = connections
        self._cfg = cfg
        self._connect_timeout = connect_timeout
        self._default_port = default_port
        self._authority = authority
        self._on_fetched = on_fetched

    async def fetch(self, resource: str, *, source: str | None = None,
                    traffic_class: str = "demand",
                    progress: ProgressSink | None = None) -> dict[str, object]:
        """Fetch a resource by name or ID from the peers that hold it (or from *source*)."""
        rec = lookup(self._store, resource, self.trusted_publisher)
        if rec is not None and source is None and rec.manifest.signed:
            # (an unsigned record, kept from before signing, is fetched again: a verified
            # version of the resource replaces it)
            return resource_entry(rec) | {"already_held": True, "sources": {}}
        conns = await self._sources(source)
        if not conns:
            raise NoHolders(f"no peer is reachable to fetch {resource!r} from "
                            "(see: shoal peers)")
        t = self._cfg
        offers, errors = await find_offers(conns, resource, t.request_timeout,
                                           self.is_trusted)
        if not offers:
            why = "; ".join(f"{n}: {e}" for n, e in errors.items())
            raise NoHolders(f"no reachable peer holds {resource!r} ({why})")
        choice = choose_version(offers, resource, trusted_publisher=self.trusted_publisher)
        manifest = choice.manifest
        holders, why = self._prefer_authority(manifest.resource_id, choice.holders)

        async def find_sources() -> list[PeerConnection]:
            # a private resource is fetched from paired sessions only
            return [c for c in self._connections.live_connections()
                    if manifest.public or self.is_trusted(c.peer_id)]

        job = Fetch(
            self._store, manifest, holders[: t.max_sources], traffic_class=traffic_class,
            initial_window=t.initial_window, max_window=t.max_window,
            request_timeout=t.request_timeout, stall_timeout=t.stall_timeout,
            find_sources=find_sources, progress=progress,
        )
        try:
            result = await job.run()
        except FetchError as e:
            raise FetchFailed(f"fetch of {manifest.name!r} failed: {e}") from None
        # a StoreError (quota, integrity) propagates with its own kind
        if self._on_fetched is not None:
            self._on_fetched()
        names = {c.peer_id.hex(): c.name for c in job.conns.values()}
        log.info("fetched", extra=kv(
            resource=manifest.name, size=manifest.size, seconds=round(result.seconds, 3),
            sources=",".join(names.values()), bytes=result.bytes_fetched))
        return resource_entry(self._store.find(manifest.resource_id)) | {
            "seconds": result.seconds, "bytes_fetched": result.bytes_fetched, "why": why,
            "rejected": choice.rejected,
            "sources": {names[k]: {"bytes": v["bytes"], "chunks": v["completed"],
                                   "state": v["state"], "reason": v["reason"],
                                   "window": v["window"], "failures": v["failures"],
                                   "min_rtt_ms": round((v["min_rtt"] or 0) * 1000, 2),
                                   "throughput": round(v["throughput"] or 0)}
                        for k, v in result.sources.items()},
        }

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

    async def _sources(self, source: str | None) -> list[PeerConnection]:
        if source:
            return [await self._connections.connect(parse_address(source, self._default_port))]
        conns = self._connections.live_connections()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._connect_timeout
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
