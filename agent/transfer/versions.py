"""Versions of a resource: which exist, who keeps them, and fetching an older one.

What a holder keeps (and so can serve): the manifest of each of the last
:data:`KEEP_VERSIONS` versions of a resource (the bound ``ContentStore.gc`` keeps); the
chunks of an old version stay while a kept manifest references them, and ``gc`` removes
older manifests and the chunks only they used. So an old version is fetchable from a holder
that still has its manifest *and* its chunks; ``versions`` says which (``held``).

The ``versions`` answer is a list of signed version records (the same form as a ``list``
entry, agent/transfer/listing.py: the publisher's or delegate's signature over
resource_id, version, name, publisher, manifest hash, size, public), plus three unsigned
extras for display (``created``, ``chunks_added``, ``chunks_removed``, ``held``), bounded and
type-checked by the receiver. A record that does not verify is dropped, as in ``list``.

Fetching version N (``shoal fetch NAME --version N``): a complete local copy is exported as
is; otherwise the manifest hash of version N comes from a verified record, the manifest is
asked for *by hash* (``manifest`` accepts a kept old manifest's hash) and verified
(signature, hash, resource, publisher, version), and its missing chunks are fetched. An
older version than the one held is *not* recorded as the held version (the store refuses
downgrades); its chunks stay until gc.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING, Any

from agent.errors import ErrorKind, ShoalError
from agent.log import kv
from agent.peer.connection import PeerConnection
from agent.security.signing import SignatureError
from agent.store import Manifest, ManifestError, NotFound
from agent.store.maintenance import DEFAULT_KEEP_VERSIONS
from agent.transfer import delta
from agent.transfer.catalog import lookup, publisher_label, resource_entry
from agent.transfer.fetcher import Fetch, FetchError, ask_manifest
from agent.transfer.listing import verified_entries

if TYPE_CHECKING:
    from agent.config import TransferConfig
    from agent.ports import ConnectionsPort
    from agent.store import ContentStore, ResourceRecord
    from agent.transfer.service import ExportSink, FetchService

log = logging.getLogger("shoal.versions")

#: Versions whose manifests a holder keeps and serves (the bound gc keeps too).
KEEP_VERSIONS = DEFAULT_KEEP_VERSIONS
#: Versions one ``versions`` answer lists at most (newest first).
MAX_LISTED = 32
ASK_TIMEOUT = 3.0


class VersionNotFound(ShoalError):
    """No reachable holder keeps that version (its manifest or chunks)."""

    kind = ErrorKind.NOT_FOUND


def kept_manifest(store: ContentStore, rec: ResourceRecord, manifest_hash: str
                  ) -> Manifest | None:
    """The manifest of one of the last KEEP_VERSIONS versions of *rec*, if still stored."""
    kept = [e.manifest_hash for e in rec.versions][-KEEP_VERSIONS:]
    if manifest_hash not in kept:
        return None
    try:
        return store.manifest(manifest_hash)
    except (NotFound, ManifestError):
        return None


def local_versions(store: ContentStore, rec: ResourceRecord) -> list[dict[str, Any]]:
    """The versions this store knows of *rec* (history), newest first, each with its
    listing entry when its manifest is kept (for peers) and whether it is complete here."""
    out: list[dict[str, Any]] = []
    kept = {e.manifest_hash for e in list(rec.versions)[-KEEP_VERSIONS:]}
    for e in reversed(list(rec.versions)[-MAX_LISTED:]):
        m = None
        if e.manifest_hash in kept:
            try:
                m = store.manifest(e.manifest_hash)
            except (NotFound, ManifestError):
                m = None
        entry = _entry_of(rec, m) if m is not None else None
        out.append({"version": e.version, "manifest": e.manifest_hash, "size": e.size,
                    "created": e.created, "chunks_added": e.chunks_added,
                    "chunks_removed": e.chunks_removed,
                    "held": m is not None and store.complete(m), "entry": entry})
    return out


def _entry_of(rec: ResourceRecord, m: Manifest) -> dict[str, object] | None:
    """The `list` entry form of version *m* (agent/transfer/listing.py), None if unsigned."""
    if m.signature is None or m.record_sig is None:
        return None
    out: dict[str, object] = {"resource_id": m.resource_id, "name": m.name,
                              "version": m.version, "size": m.size, "public": m.public,
                              "manifest": m.manifest_hash, "publisher": m.publisher,
                              "seal": {"x25519": m.signature.x25519.hex(),
                                       "ed25519": m.signature.ed25519.hex(),
                                       "vsig": m.record_sig.hex()}}
    if m.delegation is not None:
        out["dlg"] = m.delegation.to_obj()
    return out


def versions_answer(store: ContentStore, rec: ResourceRecord) -> list[dict[str, object]]:
    """What a holder answers to ``versions``: the signed record of each kept version plus
    the display extras."""
    out: list[dict[str, object]] = []
    for v in local_versions(store, rec):
        if v["entry"] is not None:
            out.append(v["entry"] | {"created": v["created"], "held": v["held"],
                                     "chunks_added": v["chunks_added"],
                                     "chunks_removed": v["chunks_removed"]})
    return out


def _extras(raw: object) -> dict[str, Any]:
    """The unsigned display fields of a peer's entry, or defaults when malformed."""
    out: dict[str, Any] = {"created": None, "held": False, "chunks_added": None,
                           "chunks_removed": None}
    if not isinstance(raw, dict):
        return out
    c = raw.get("created")
    if isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) and (
            0 <= c < 1e11):
        out["created"] = float(c)
    out["held"] = raw.get("held") is True
    for k in ("chunks_added", "chunks_removed"):
        n = raw.get(k)
        if isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 10**6:
            out[k] = n
    return out


class VersionService:
    """`shoal versions NAME` and `shoal fetch NAME --version N`."""

    def __init__(self, store: ContentStore, connections: ConnectionsPort,
                 fetcher: FetchService, cfg: TransferConfig) -> None:
        self._store = store
        self._connections = connections
        self._fetcher = fetcher
        self._cfg = cfg

    async def _remote(self, resource: str) -> list[tuple[PeerConnection, dict[str, Any]]]:
        """Verified version records from reachable peers (private ones from paired peers
        only), each with its holder's display extras."""
        conns: list[Any] = list(self._connections.live_connections())
        answers = await asyncio.gather(
            *(c.request("versions", {"resource": resource}, timeout=ASK_TIMEOUT)
              for c in conns), return_exceptions=True)
        out: list[tuple[PeerConnection, dict[str, Any]]] = []
        for conn, ans in zip(conns, answers, strict=True):
            if isinstance(ans, BaseException) or not isinstance(ans, list):
                continue
            trusted = self._fetcher.is_trusted(conn.peer_id)
            raw = ans[:MAX_LISTED]
            good, _dropped = verified_entries(raw, conn.name, trusted)
            by_hash = {str(r.get("manifest")): r for r in raw if isinstance(r, dict)}
            for e in good:
                out.append((conn, e | _extras(by_hash.get(str(e["manifest"])))))
        return out

    def _which(self, resource: str, rec: ResourceRecord | None,
               remote: list[tuple[PeerConnection, dict[str, Any]]]
               ) -> tuple[str, str, list[tuple[PeerConnection, dict[str, Any]]]]:
        """(resource_id, publisher) the user means and the remote records of it: the held
        resource; else one offered resource, trusted publishers first."""
        if rec is not None:
            same = [(c, e) for c, e in remote if e["resource_id"] == rec.resource_id
                    and e["publisher"] == rec.publisher]
            return rec.resource_id, rec.publisher, same
        groups: dict[tuple[str, str], list[tuple[PeerConnection, dict[str, Any]]]] = {}
        for c, e in remote:
            rid, pub = str(e["resource_id"]), str(e["publisher"])
            if rid.startswith(resource.lower()) or e["name"] == resource:
                groups.setdefault((rid, pub), []).append((c, e))
        if len(groups) > 1:
            trusted = {k: v for k, v in groups.items()
                       if self._fetcher.trusted_publisher(k[1])}
            groups = trusted or groups
        if not groups:
            raise VersionNotFound(f"no resource {resource[:80]!r} is held here or offered by a "
                                  "reachable peer (see: shoal resources)")
        if len(groups) > 1:
            names = ", ".join(f"{rid[:12]} by {publisher_label(pub)}" for rid, pub in groups)
            raise FetchError(f"{resource[:80]!r} names several resources: {names}; use the ID")
        (rid, pub), rows = next(iter(groups.items()))
        return rid, pub, rows

    async def versions(self, resource: str) -> dict[str, object]:
        """Every version known here or at reachable holders, newest first."""
        rec = lookup(self._store, resource, self._fetcher.trusted_publisher)
        local = await asyncio.to_thread(local_versions, self._store, rec) if rec else []
        remote = await self._remote(rec.resource_id if rec else resource)
        rid, pub, rows = self._which(resource, rec, remote)
        table: dict[int, dict[str, Any]] = {}
        name = rec.name if rec else ""
        for v in local:
            table[v["version"]] = {"version": v["version"], "manifest": v["manifest"],
                                   "size": v["size"], "created": v["created"],
                                   "chunks_added": v["chunks_added"],
                                   "chunks_removed": v["chunks_removed"],
                                   "here": v["held"], "holders": []}
        for conn, e in sorted(rows, key=lambda ce: not ce[1]["holder_trusted"]):
            name = name or str(e["name"])
            row = table.get(int(e["version"]))
            if row is None:
                row = table[int(e["version"])] = {
                    "version": e["version"], "manifest": e["manifest"], "size": e["size"],
                    "created": e["created"], "chunks_added": e["chunks_added"],
                    "chunks_removed": e["chunks_removed"], "here": False, "holders": []}
            elif row["manifest"] != e["manifest"]:
                continue  # a paired holder's record came first; never mix two manifests
            if e["held"]:
                row["holders"].append(conn.name)
        rows_out = [table[v] for v in sorted(table, reverse=True)]
        return {"resource_id": rid, "name": name, "publisher": pub,
                "publisher_short": publisher_label(pub),
                "held_version": rec.version if rec else None,
                "keep_versions": KEEP_VERSIONS, "versions": rows_out}

    async def fetch_version(self, resource: str, version: int,
                            export: ExportSink | None) -> dict[str, object]:
        """Fetch (if need be) and export version *version* of a resource."""
        rec = lookup(self._store, resource, self._fetcher.trusted_publisher)
        if rec is not None:
            for e in rec.versions:
                if e.version == version:
                    m = await asyncio.to_thread(kept_manifest, self._store, rec,
                                                e.manifest_hash)
                    if m is not None and await asyncio.to_thread(self._store.complete, m):
                        m.verify()
                        if export is not None:
                            await self._fetcher.export_to(m, export, fresh=frozenset())
                        return _result(m, rec, "held here", 0)
        remote = await self._remote(rec.resource_id if rec else resource)
        rid, pub, rows = self._which(resource, rec, remote)
        label = rec.name if rec else resource
        wanted = [(c, e) for c, e in rows if e["version"] == version and e["held"]]
        wanted.sort(key=lambda ce: not ce[1]["holder_trusted"])
        if not wanted:
            raise VersionNotFound(
                f"no reachable holder keeps v{version} of {label[:80]!r} (holders keep the "
                f"last {KEEP_VERSIONS} versions); see which exist: shoal versions "
                f"{rid[:12]}")
        mhash = str(wanted[0][1]["manifest"])  # paired holders' record first
        holders = [c for c, e in wanted if e["manifest"] == mhash]
        manifest = None
        for conn in holders:
            try:
                m = await ask_manifest(conn, mhash, ASK_TIMEOUT)
                if (m.manifest_hash, m.resource_id, m.publisher, m.version) != (
                        mhash, rid, pub, version):
                    raise FetchError(f"{conn.name} answered with another manifest")
                m.verify()
                manifest = m
                break
            except (FetchError, SignatureError, TimeoutError, ConnectionError) as e:
                log.warning("old manifest refused", extra=kv(peer=conn.name, reason=e))
            except Exception as e:  # a refusal (RemoteError): try the next holder
                log.debug("old manifest not served", extra=kv(peer=conn.name, reason=e))
        if manifest is None:
            raise VersionNotFound(f"no holder served a valid manifest of v{version} of "
                                  f"{label[:80]!r}; see: shoal versions {rid[:12]}")
        commit = rec is None or rec.version < version  # never record a downgrade
        bases = (delta.bases_for(rec.manifest, manifest, self._store.has_chunk)
                 if rec is not None else {})
        t = self._cfg
        job = Fetch(self._store, manifest, holders[: t.max_sources],
                    request_timeout=t.request_timeout, stall_timeout=t.stall_timeout,
                    initial_window=t.initial_window, max_window=t.max_window,
                    bases=bases, commit=commit)
        try:
            result = await job.run()
        except FetchError as e:
            raise VersionNotFound(f"fetch of v{version} of {label[:80]!r} failed: {e}; see: "
                                  f"shoal versions {rid[:12]}") from None
        if export is not None:
            await self._fetcher.export_to(manifest, export, fresh=result.stored)
        held = self._store.find(rid) if commit else rec
        return _result(manifest, held, f"from {', '.join(c.name for c in holders[:3])}",
                       result.bytes_fetched)


def _result(m: Manifest, rec: ResourceRecord | None, why: str,
            fetched: int) -> dict[str, object]:
    base = resource_entry(rec) if rec is not None else {}
    return base | {"resource_id": m.resource_id, "name": m.name, "version": m.version,
                   "size": m.size, "manifest": m.manifest_hash, "why": why,
                   "bytes_fetched": fetched, "sources": {}, "rejected": {},
                   "held_version": rec.version if rec is not None else None}
