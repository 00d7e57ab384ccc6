"""Follow service: keeps followed copies at their newest version (the asyncio adapter).

The decisions live in :class:`~agent.transfer.follow.policy.FollowPolicy`; this module runs
them: it verifies what paired sessions push (``version`` events: a signed version record,
the same form as a ``list`` entry; ``withdrawn`` events: a signed tombstone), calls
:meth:`FollowService.sync_to_latest` (delta fetch on the ``mirror`` class through
``FetchService.sync_held``) when the policy says so, replaces the user's exported file
atomically, and announces this device's own new versions.

Trust, in one place:
* an announcement counts only from a **paired** session and only if its record verifies
  against the followed resource's publisher (or a delegate it named); it only *triggers* a
  sync, which then applies every fetch rule again (signatures, paired holders first);
* a version never goes backwards: an announced version not above the held one is ignored,
  and the store refuses to record an older version (``VersionConflict``);
* a withdrawal is acted on only if the **publisher itself** signed it (agent/security/
  tombstone.py), whoever relays it (a paired session).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import ErrorKind, ShoalError
from agent.log import kv
from agent.peer.connection import PeerConnection, PeerGone, RemoteError
from agent.security.signing import SignatureError
from agent.security.tombstone import SignedTombstone, withdraw
from agent.store import Manifest, ManifestError, NotFound
from agent.transfer.catalog import lookup, publisher_label, resource_entry
from agent.transfer.follow.policy import FollowPolicy
from agent.transfer.follow.state import (
    FollowBook,
    Followed,
    WithdrawalBook,
    check_export_path,
)
from agent.transfer.listing import listing_entry, verify_entry

if TYPE_CHECKING:
    from agent.peer import wire
    from agent.peer.connection import Handler
    from agent.ports import ConnectionsPort, Spawner, TrustView
    from agent.security.signing import Signer
    from agent.store import ContentStore, ResourceRecord
    from agent.transfer.service import FetchService

log = logging.getLogger("shoal.follow")

#: a new session is asked for catch-up after this long (its peer-table row settles first)
CATCHUP_DELAY = 0.3
ANNOUNCE_TIMEOUT = 5.0
#: how long the loop sleeps when nothing is tracked (a follow wakes it at once)
IDLE = 3600.0


class FollowError(ShoalError):
    """A follow/unfollow/unpublish request that cannot be done (kind: invalid)."""

    kind = ErrorKind.INVALID


class FollowService:
    """`shoal follow/unfollow/unpublish`, version announcements and the sync loop."""

    def __init__(self, data_dir: Path, store: ContentStore, connections: ConnectionsPort,
                 trust: TrustView, fetcher: FetchService, spawn: Spawner, signer: Signer,
                 catalog_changed: Callable[[], None], *,
                 policy: FollowPolicy | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 export_tree: Callable[[Manifest, Path], object] | None = None) -> None:
        self._store = store
        # writes (or updates in place) a folder version in a directory; blocking
        # (agent/folders/exports.py update_tree, given by the node)
        self._export_tree = export_tree
        self._connections = connections
        self._trust = trust
        self._fetcher = fetcher
        self._spawn = spawn
        self._signer = signer
        self._catalog_changed = catalog_changed
        self._clock = clock
        self.policy = policy or FollowPolicy()
        self.book = FollowBook(data_dir)
        self.withdrawals = WithdrawalBook(data_dir)
        self._wake = asyncio.Event()
        self._last: dict[str, dict[str, object]] = {}  # rid -> last sync outcome
        self.dropped_announcements = 0  # from unpaired sessions, forged, or not news
        now = clock()
        for f in self.book.all():
            rec = self._held(f.resource_id)
            self.policy.track(f.resource_id, rec.version if rec else 0, now)

    def handlers(self) -> dict[str, Handler]:
        return {"tombstones": self._tombstones}

    # ------------------------------------------------------------------ commands
    async def follow(self, resource: str, to: str | None) -> dict[str, object]:
        """Follow a resource (fetching it first if it is not held); with *to*, keep the
        newest version exported at that absolute path (replaced atomically)."""
        if to is not None:
            try:
                check_export_path(to)
            except ValueError as e:
                raise FollowError(str(e)) from None
        rec = lookup(self._store, resource, self._fetcher.trusted_publisher)
        gone = self.withdrawals.get(rec.resource_id if rec else resource.lower())
        if gone is not None:
            raise FollowError(f"{resource[:80]!r} was withdrawn by its publisher "
                              f"({publisher_label(gone.tombstone.publisher)}); see what is "
                              "offered: shoal resources")
        fetched = None
        if rec is None or not rec.manifest.signed:
            fetched = await self._fetcher.fetch(resource)
            rec = self._store.find(str(fetched["resource_id"]))
        if rec.publisher == self._signer.device_id.hex():
            raise FollowError(f"{rec.name!r} is published by this device: it is always "
                              "current here")
        if to is not None:
            self._check_destination(to, folder=rec.manifest.is_folder)
        f = Followed(rec.resource_id, rec.publisher, rec.name, to, time.time())
        try:
            self.book.add(f)
        except ValueError as e:
            raise FollowError(str(e)) from None
        self.policy.untrack(rec.resource_id)
        self.policy.track(rec.resource_id, rec.version, self._clock())
        if to is not None:
            await self._export(f, rec)
        self._wake.set()
        log.info("following", extra=kv(resource=rec.name, id=rec.resource_id[:12],
                                       version=rec.version, to=to or "-"))
        return self._row(f) | {"fetched": fetched is not None}

    def _check_destination(self, to: str, *, folder: bool) -> None:
        """A file is exported to a file path, a folder into a directory (made if need be);
        either way the agent must be able to write there."""
        where = Path(to)
        if folder:
            if where.exists() and not where.is_dir():
                raise FollowError(f"{to} is a file: a folder is kept in a directory (--to DIR)")
            if self._export_tree is None:
                raise FollowError("this agent cannot write folders (no [watch]/folders support)")
            parent = where if where.is_dir() else where.parent
        else:
            if where.is_dir():
                raise FollowError(f"{to} is a directory: give the file's path (--to DIR/NAME)")
            parent = where.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise FollowError(f"{parent}: not a directory the agent (uid {os.getuid()}) "
                              "can write into")

    async def unfollow(self, resource: str) -> dict[str, object]:
        """Stop following; the copy stays held (and exported) as it is."""
        f = self._find(resource)
        self.book.remove(f.resource_id)
        self.policy.untrack(f.resource_id)
        log.info("unfollowed", extra=kv(resource=f.name, id=f.resource_id[:12]))
        return {"resource_id": f.resource_id, "name": f.name, "following": False}

    def list(self) -> list[dict[str, object]]:
        return [self._row(f) for f in self.book.all()]

    async def unpublish(self, resource: str) -> dict[str, object]:
        """Withdraw a resource this device publishes: sign a tombstone, tell paired
        sessions, remove it here (its chunks are freed by the next gc unless another
        resource uses them)."""
        rec = lookup(self._store, resource, self._fetcher.trusted_publisher)
        if rec is None:
            raise NotFound(f"no resource {resource[:80]!r} is held here (see: shoal resources "
                           "--local)")
        if rec.publisher != self._signer.device_id.hex():
            raise FollowError(f"only the publisher of {rec.name!r} "
                              f"({publisher_label(rec.publisher)}) can unpublish it; to drop "
                              "the copy here, unfollow it")
        t = withdraw(self._signer, rec.resource_id, rec.version, time.time())
        self.withdrawals.add(t)
        await asyncio.to_thread(self._store.remove_resource, rec.resource_id)
        self._catalog_changed()
        told = await self._broadcast("withdrawn", {"t": t.to_obj()})
        log.info("unpublished", extra=kv(resource=rec.name, id=rec.resource_id[:12],
                                         version=t.tombstone.version, told=told))
        return {"resource_id": rec.resource_id, "name": rec.name,
                "withdrawn_version": t.tombstone.version, "told": told}

    def published(self, rec: ResourceRecord) -> None:
        """This device published (or a delegate here made) a new version: tell the paired
        sessions, so followers fetch it now rather than at their next check."""
        entry = listing_entry(rec)
        if entry is not None:
            self._spawn(self._broadcast("version", {"e": entry}), "announce-version")

    async def sync_to_latest(self, resource_id: str, *,
                             traffic_class: str = "mirror") -> dict[str, object]:
        """Bring a held resource to its newest version by delta (only missing chunks move,
        changed chunks as deltas) and, if it is followed with an export path, replace that
        file atomically. Reusable by any service holding a copy (mirrors): see
        agent/ports.py ``ResourceSync``."""
        res = await self._fetcher.sync_held(resource_id, traffic_class=traffic_class)
        if res.get("updated"):
            rec = self._store.find(resource_id)
            f = self.book.get(resource_id)
            if f is not None and f.to is not None:
                await self._export(f, rec)
            entry = listing_entry(rec)  # now a holder: pass the (unchanged) signed record on
            if entry is not None:
                await self._broadcast("version", {"e": entry})
        return res

    # ------------------------------------------------------------------ the loop
    async def run(self) -> None:
        while True:
            now = self._clock()
            for rid, why in self.policy.due(now):
                self._spawn(self._sync(rid, why), f"follow-sync-{rid[:8]}")
            wake = self.policy.next_wakeup(now)
            delay = IDLE if wake is None else max(0.05, wake - now)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _sync(self, rid: str, why: str) -> None:
        ok, held = False, None
        try:
            res = await self.sync_to_latest(rid)
            ok, held = True, int(str(res.get("version", 0)))
            self._last[rid] = {"at": time.time(), "why": why, "updated": res.get("updated"),
                               "note": res.get("why"), "error": None,
                               "bytes_fetched": res.get("bytes_fetched", 0),
                               "deltas": res.get("deltas", 0),
                               "delta_bytes_saved": res.get("delta_bytes_saved", 0)}
            if res.get("updated"):
                log.info("followed resource updated", extra=kv(
                    id=rid[:12], version=held, why=why, bytes=res.get("bytes_fetched"),
                    deltas=res.get("deltas")))
        except NotFound:  # removed here meanwhile (withdrawn, or by hand): stop
            self.book.remove(rid)
            self.policy.untrack(rid)
            return
        except Exception as e:  # any failure is retried by the policy (with backoff)
            self._last[rid] = {"at": time.time(), "why": why, "updated": False,
                               "note": None, "error": str(e) or type(e).__name__}
            log.info("follow sync failed", extra=kv(id=rid[:12], why=why, reason=e))
        finally:
            if rid in self.policy.tracked():
                self.policy.done(rid, held, self._clock(), ok)
                self._wake.set()

    # ------------------------------------------------------------------ peers
    def session_opened(self, conn: PeerConnection) -> None:
        """A session opened: paired and we follow something: catch up (policy-bounded) and
        ask it for withdrawals of what we follow."""
        if self.book.all() and self._trust.is_trusted(conn.peer_id):
            self._spawn(self._catch_up(conn), "follow-catch-up")

    async def _catch_up(self, conn: PeerConnection) -> None:
        await asyncio.sleep(CATCHUP_DELAY)
        if self.policy.connected(self._clock()):
            self._wake.set()
        rids = [f.resource_id for f in self.book.all()][:256]
        with contextlib.suppress(PeerGone, RemoteError, TimeoutError, ConnectionError):
            ans = await conn.request("tombstones", {"r": rids}, timeout=ANNOUNCE_TIMEOUT)
            for raw in ans[:256] if isinstance(ans, list) else []:
                self._withdrawal(conn, raw)

    def on_event(self, conn: PeerConnection, op: str, args: dict[str, object]) -> None:
        """``version`` and ``withdrawn`` events (schema-checked by the wire layer)."""
        if not self._trust.is_trusted(conn.peer_id):
            self.dropped_announcements += 1
            log.warning("announcement from an unpaired device ignored", extra=kv(
                peer=conn.name, op=op))
            return
        if op == "version":
            self._announced(conn, args.get("e"))
        elif op == "withdrawn":
            self._withdrawal(conn, args.get("t"))

    def _announced(self, conn: PeerConnection, raw: object) -> None:
        try:
            e = verify_entry(raw)
        except (ManifestError, SignatureError) as err:
            self.dropped_announcements += 1
            log.warning("announced version refused", extra=kv(peer=conn.name, reason=err))
            return
        rid, version = str(e["resource_id"]), int(str(e["version"]))
        self._fetcher.stale(rid, version)  # a held copy is no longer known to be the newest
        f = self.book.get(rid)
        if f is None:
            return  # not followed here
        if e["publisher"] != f.publisher:
            self.dropped_announcements += 1
            log.warning("announced version by another publisher refused", extra=kv(
                peer=conn.name, id=rid[:12]))
            return
        if self.policy.announced(rid, version, self._clock()):
            log.info("new version announced", extra=kv(peer=conn.name, id=rid[:12],
                                                       version=version))
            self._wake.set()
        else:
            log.debug("announced version is not news", extra=kv(id=rid[:12], version=version))

    def _withdrawal(self, conn: PeerConnection, raw: object) -> None:
        try:
            t = SignedTombstone.from_obj(raw)
            t.verify()
        except SignatureError as err:
            self.dropped_announcements += 1
            log.warning("withdrawal refused", extra=kv(peer=conn.name, reason=err))
            return
        self._spawn(self._apply_withdrawal(t), "withdrawal")

    async def _apply_withdrawal(self, t: SignedTombstone) -> None:
        """The publisher withdrew a resource: stop following it and drop the copy held here
        (the exported file, the user's, stays); pass the tombstone on once."""
        d = t.tombstone
        if not self.withdrawals.add(t):
            return
        self.book.remove(d.resource_id)
        self.policy.untrack(d.resource_id)
        rec = self._held(d.resource_id)
        if rec is not None and rec.publisher == d.publisher and rec.version < d.version:
            await asyncio.to_thread(self._store.remove_resource, d.resource_id)
            self._catalog_changed()
        log.info("resource withdrawn by its publisher", extra=kv(
            id=d.resource_id[:12], publisher=publisher_label(d.publisher),
            dropped=rec is not None))
        await self._broadcast("withdrawn", {"t": t.to_obj()})

    async def _tombstones(self, conn: PeerConnection, req: wire.Request) -> object:
        if not self._trust.is_trusted(conn.peer_id):
            return []
        out = []
        for rid in req.args["r"]:
            t = self.withdrawals.get(str(rid).lower())
            if t is not None:
                out.append(t.to_obj())
        return out

    async def _broadcast(self, op: str, args: dict[str, Any]) -> int:
        """Send an event to every live paired session; how many it reached."""
        conns = [c for c in self._connections.live_connections()
                 if self._trust.is_trusted(c.peer_id)]
        sent = await asyncio.gather(*(self._send(c, op, args) for c in conns))
        return sum(sent)

    @staticmethod
    async def _send(conn: Any, op: str, args: dict[str, Any]) -> bool:
        try:
            async with asyncio.timeout(ANNOUNCE_TIMEOUT):
                await conn.send_event(op, args)
            return True
        except (PeerGone, TimeoutError, ConnectionError, OSError):
            return False

    # ------------------------------------------------------------------ helpers
    def _held(self, rid: str) -> ResourceRecord | None:
        try:
            return self._store.find(rid)
        except NotFound:
            return None

    def _find(self, resource: str) -> Followed:
        matches = [f for f in self.book.all() if f.resource_id == resource.lower()
                   or f.name == resource
                   or (len(resource) >= 6 and f.resource_id.startswith(resource.lower()))]
        if not matches:
            raise NotFound(f"{resource[:80]!r} is not followed here (see: shoal follow)")
        if len(matches) > 1:
            raise FollowError(f"{resource[:80]!r} matches {len(matches)} followed resources; "
                              "use the ID (see: shoal follow)")
        return matches[0]

    async def _export(self, f: Followed, rec: ResourceRecord) -> None:
        """Replace the user's copy atomically (temp file + rename: readers see the old or
        the new file, never a mix); every chunk is verified on the way."""
        if f.to is None:
            return
        try:
            if rec.manifest.is_folder:
                if self._export_tree is None:
                    raise FollowError("this agent cannot write folders")
                await asyncio.to_thread(self._export_tree, rec.manifest, Path(f.to))
            else:
                await asyncio.to_thread(self._store.export, rec.manifest, f.to)
        except (OSError, ShoalError) as e:
            self._last.setdefault(rec.resource_id, {})["export_error"] = str(e)
            log.warning("follow export failed", extra=kv(id=rec.resource_id[:12], to=f.to,
                                                         reason=e))

    def _row(self, f: Followed) -> dict[str, object]:
        rec = self._held(f.resource_id)
        st = self.policy.status(f.resource_id, self._clock())
        last = self._last.get(f.resource_id, {})
        return (resource_entry(rec) if rec is not None else {
            "resource_id": f.resource_id, "name": f.name, "version": None}) | {
            "to": f.to, "since": f.since, "announced": st.get("announced"),
            "syncing": st.get("syncing", False), "failures": st.get("failures", 0),
            "next_check_s": st.get("next_check_s"), "last": last or None}
