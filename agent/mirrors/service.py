"""The prefetch and mirror service: runs the pure rules each round and executes their jobs.

Every ``[prefetch] interval`` it:

1. **Prefetch** (requester side): asks the predictor for this device's next requests,
   looks up their sizes (a manifest from a holder, cached), and runs
   :func:`agent.mirrors.planner.plan`; prefetches through the fetch service in the
   ``prefetch`` bandwidth class (the chunk requests carry the class, so every source's
   scheduler serves them behind demand), evicts and cancels as told.
2. **Mirrors** (requester side): asks each paired peer which mirrors it hosts, scores the
   paired peers (RTT of the live session; load, bandwidth, reputation and holdings from
   their authority reports) and runs :func:`agent.mirrors.policy.plan_mirrors`; asks the
   chosen host to hold (``mirror`` request), renews the leases, releases dropped mirrors.
   While a mirror is in use the fetch service tries it first (:meth:`mirrors_for`).
3. **Hosting**: expires leases; a hosted mirror follows new versions
   (:meth:`sync_to_latest`, every ``sync_interval``).

Trust: the ``mirror`` request is refused from an unpaired session; a mirror address only
ever comes from this device's own choice among paired sessions, and :meth:`mirrors_for`
forgets a host the moment it is unpaired. Every answer from a peer is parsed strictly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agent.errors import ErrorKind
from agent.fsutil import atomic_write_bytes
from agent.log import kv
from agent.mirrors.hosting import HostLedger, Refusal
from agent.mirrors.planner import Cancel, Copy, Evict, Limits, PlanInput, Predicted, Prefetch, plan
from agent.mirrors.policy import (
    CreateMirror,
    Demand,
    DropMirror,
    MirrorRules,
    MirrorUse,
    Node,
    plan_mirrors,
    similarity,
)
from agent.mirrors.stats import PrefetchEntry, Summary, mark_used, summarise
from agent.peer.connection import Handler, PeerConnection, Refused
from agent.usage.record import AccessRecord

if TYPE_CHECKING:
    from agent.config import PredictConfig, PrefetchConfig
    from agent.peer import wire
    from agent.ports import ConnectionsPort, HolderStatsPort, PeerLink, Spawner, TrustView

log = logging.getLogger("shoal.mirrors")

OP = "mirror"
ASK_TIMEOUT = 5.0
MAX_ENTRIES = 1024  # prefetch ledger entries kept (the oldest settled ones go first)
MAX_SIZES = 1024  # resource sizes remembered
MAX_HOSTS_LISTED = 64  # hosted mirrors one peer may list to us
HOTTEST = 16  # this device's hottest resources considered for mirrors
SCAN_OVERLAP = 600.0  # seconds of the access log read again each round (see _account)
HEX = set("0123456789abcdef")


class NotPaired(Refused):
    kind = ErrorKind.UNTRUSTED


class MirrorsOff(Refused):
    kind = ErrorKind.REFUSED


class HostFull(Refused):
    kind = ErrorKind.QUOTA


class BadMirrorRequest(Refused):
    kind = ErrorKind.INVALID


@dataclass(frozen=True)
class PeerFacts:
    """What the authority's reports say about a paired device."""

    load: float | None = None
    reputation: float | None = None
    bandwidth: float | None = None  # bytes/s it reported it can send
    holds: frozenset[str] = frozenset()


class StoreLike(Protocol):
    def resources(self) -> Sequence[Any]: ...

    def remove_resource(self, resource_id: str) -> None: ...

    def usage(self) -> tuple[int, int | None]: ...


class UsageLog(Protocol):
    def records(self, since: float = 0.0) -> Iterator[AccessRecord]: ...


class RequesterKeys(Protocol):
    @property
    def epoch(self) -> int: ...

    def hash(self, requester: bytes) -> bytes: ...


class Temperatures(Protocol):
    def items(self, now: float) -> dict[str, float]: ...


class UsageView(Protocol):
    """What the service reads of the usage service: temperatures and the access log."""

    @property
    def log(self) -> UsageLog: ...

    @property
    def keys(self) -> RequesterKeys: ...

    @property
    def received(self) -> Mapping[str, Any]: ...

    @property
    def temperature(self) -> Temperatures: ...

    def mesh_temperature(self, resource_id: str, now: float | None = None) -> float: ...



Fetch = Callable[[str, str, int | None], Awaitable[dict[str, object]]]
Predict = Callable[[int], tuple[str, list[tuple[str, float]]]]
OfferSize = Callable[[str], Awaitable[tuple[int, frozenset[str]] | None]]
"""A resource's size and who offers it (device ID hex), asked of the paired holders."""
Facts = Callable[[str], PeerFacts | None]


def _is_rid(v: object) -> bool:
    return isinstance(v, str) and len(v) == 32 and set(v) <= HEX


def parse_listing(ans: object) -> tuple[dict[str, float], bool]:
    """A peer's ``mirror list`` answer: {resource: similarity} and whether it has room.
    Anything off-schema is rejected whole (ValueError)."""
    if not isinstance(ans, dict) or set(ans) != {"hosts", "room"}:
        raise ValueError("mirror listing: expected {hosts, room}")
    hosts, room = ans["hosts"], ans["room"]
    if not isinstance(room, bool) or not isinstance(hosts, dict) or len(hosts) > MAX_HOSTS_LISTED:
        raise ValueError("mirror listing: bad hosts or room")
    out: dict[str, float] = {}
    for rid, sim in hosts.items():
        if (not _is_rid(rid) or isinstance(sim, bool) or not isinstance(sim, (int, float))
                or not 0.0 <= sim <= 1.0):
            raise ValueError("mirror listing: bad entry")
        out[rid] = float(sim)
    return out, room


class MirrorService:
    """Prefetch onto this device, mirrors for this device, mirrors hosted for peers."""

    def __init__(self, cfg: PrefetchConfig, predict_cfg: PredictConfig, directory: Path, *,
                 me: bytes, store: StoreLike, fetch: Fetch, predict: Predict,
                 usage: UsageView, connections: ConnectionsPort, trust: TrustView,
                 link: HolderStatsPort, facts: Facts, offer_size: OfferSize,
                 spawn: Spawner, catalog_changed: Callable[[], None],
                 clock: Callable[[], float] = time.time,
                 demand_active: Callable[[], int] = lambda: 0) -> None:
        self.cfg = cfg
        self.dir = directory
        self.me = me
        self._store = store
        self._fetch = fetch
        self._predict = predict
        self._usage = usage
        self._connections = connections
        self._trust = trust
        self._link = link
        self._facts = facts
        self._offer_size = offer_size
        self._spawn = spawn
        self._catalog_changed = catalog_changed
        self._clock = clock
        self._demand_active = demand_active  # this device's demand fetches in flight
        self.limits = Limits(
            device_budget=cfg.device_budget, reserve=cfg.reserve, min_score=cfg.min_score,
            max_pending=cfg.max_pending, max_seconds=cfg.max_seconds,
            base_bytes=predict_cfg.prefetch_base, max_bytes=predict_cfg.prefetch_max,
            hot=predict_cfg.prefetch_hot, max_depth=cfg.depth)
        self.rules = MirrorRules(
            create=cfg.mirror_temperature, keep=cfg.mirror_keep,
            cold_after=cfg.mirror_cold_after, dwell=cfg.mirror_dwell, margin=cfg.mirror_margin,
            max_mirrors=cfg.max_mirrors, max_bytes=cfg.host_budget)
        self.hosting = HostLedger(max_hosted=cfg.host_max, max_bytes=cfg.host_budget,
                                  lease=cfg.lease)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.entries: dict[str, PrefetchEntry] = self._load_entries()
        self.pending: dict[str, tuple[int, asyncio.Task[object]]] = {}
        self.using: dict[tuple[str, str], MirrorUse] = {}  # (resource, host hex) -> use
        self._renewed: dict[tuple[str, str], float] = {}
        self.sizes: dict[str, int] = {}
        self.holders: dict[str, frozenset[str]] = {}  # who offered it when its size was asked
        self.last: dict[str, object] = {"predictor": None, "predictions": [], "jobs": []}
        self.counters = {"prefetched": 0, "prefetch_failed": 0, "evicted": 0, "cancelled": 0,
                         "mirrors_created": 0, "mirrors_dropped": 0, "mirror_refused": 0,
                         "hosted": 0, "host_refused": 0, "synced": 0, "sync_failed": 0}
        self._scanned = 0.0
        self.last_own_request = -math.inf  # wall-clock time of this device's newest request
        self._throughput: float | None = None  # bytes/s of our recent prefetches
        self._wake = asyncio.Event()  # set by own_access: re-plan now

    # ----------------------------------------------------------------- the loop
    async def run(self) -> None:
        """A full round every ``interval``; between rounds, each request of this device's
        user re-plans the prefetch at once (the next request may come in a second: a
        prediction acted on at the next round would arrive after it)."""
        loop = asyncio.get_running_loop()
        next_round = loop.time() + self.cfg.interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_round - loop.time()))
            if self._wake.is_set():
                self._wake.clear()
                try:
                    await self.react()
                except Exception:  # a bug here must not take the agent down
                    log.exception("prefetch re-plan failed")
                if loop.time() < next_round:
                    continue
            try:
                await self.step()
            except Exception:  # a bug here must not take the agent (its TaskGroup) down
                log.exception("prefetch/mirror round failed")
            next_round = loop.time() + self.cfg.interval

    def own_access(self, requester: bytes, resource_id: str, size: int, t: float) -> None:
        """The usage service's listener: a request of this device's user wakes the loop."""
        if requester == self.me:
            self.last_own_request = max(self.last_own_request, t)
            self._wake.set()

    async def react(self) -> None:
        """Re-plan the prefetch from the predictions as they are now (no mirror rules, no
        log scan: those wait for the full round)."""
        name, ranked = self._predict(self.cfg.depth)
        await self.plan_prefetch(name, ranked)

    async def step(self) -> None:
        """One round: hit accounting, prefetch, mirrors, hosting. Only a device in use (a
        request of its own within ``active_window``) acts on predictions: an idle one would
        only spend bytes on what the mesh's other devices read (the cold-start predictor
        falls back to their released counts)."""
        held = {k: e for k, e in self.entries.items() if e.state == "held"}
        if await asyncio.to_thread(self._account, held):
            self._save_entries()
        if self._clock() - self.last_own_request <= self.cfg.active_window:
            name, ranked = self._predict(self.cfg.depth)
            await self.plan_prefetch(name, ranked)
            if self.cfg.mirrors:
                await self.plan_mirrors(ranked)
        elif self.pending or self.using:
            await self.plan_prefetch("idle", [])  # cancels what runs
            if self.cfg.mirrors:
                await self.plan_mirrors([])
        await self.host_round()

    # ----------------------------------------------------------------- accounting
    def _own(self, rec: AccessRecord) -> bool:
        keys = self._usage.keys
        return rec.epoch == keys.epoch and rec.requester == keys.hash(self.me)

    def _account(self, held: dict[str, PrefetchEntry]) -> bool:
        """Mark the prefetched copies in *held* the user then asked for (they become user
        content; True if any did); note this device's newest own request. Runs in a worker
        thread: *held* is a snapshot taken on the loop."""
        # records reach the log when its buffer is flushed, stamped with their own time:
        # re-read a margin before the last scan (both uses below are idempotent)
        since = self._scanned - SCAN_OVERLAP
        self._scanned = self._clock()
        recs = list(self._usage.log.records(since))
        for rec in recs:
            if not self._own(rec):
                continue
            self.last_own_request = max(self.last_own_request, rec.time)
            hosted = self.hosting.hosted.get(rec.resource_hex)
            if hosted is not None and rec.time >= hosted.since:
                hosted.user_content = True  # our user wants it too: never removed for a lease
        return bool(held) and bool(mark_used(recs, self._own, held))

    def _held(self) -> dict[str, Any]:
        return {r.resource_id: r for r in self._store.resources()}

    # ----------------------------------------------------------------- prefetch
    async def _size(self, rid: str, held: dict[str, Any]) -> int | None:
        if rid in held:
            return int(held[rid].size)
        if rid not in self.sizes:
            offer = await self._offer_size(rid)
            if offer is None:
                return None
            while len(self.sizes) >= MAX_SIZES:
                self.holders.pop(next(iter(self.sizes)), None)
                self.sizes.pop(next(iter(self.sizes)))
            self.sizes[rid], self.holders[rid] = offer
        return self.sizes[rid]

    async def plan_prefetch(self, predictor: str, ranked: list[tuple[str, float]]) -> None:
        now = self._clock()
        held = self._held()
        preds: list[Predicted] = []
        for rid, score in ranked[: self.cfg.depth]:
            if not _is_rid(rid):
                continue
            size = await self._size(rid, held)
            if size is None:
                continue
            preds.append(Predicted(rid, score, size, self._usage.mesh_temperature(rid, now),
                                   rid in held))
        for rid in list(self.pending):
            if self.pending[rid][1].done():
                del self.pending[rid]
        copies = [Copy(rid, e.size, self._usage.mesh_temperature(rid, now), e.at)
                  for rid, e in self.entries.items() if e.state == "held" and rid in held]
        used, quota = self._store.usage()
        jobs = plan(PlanInput(
            self.me.hex(), preds, copies, [(r, s) for r, (s, _) in self.pending.items()],
            free_bytes=None if quota is None else quota - used,
            link_capacity=self._throughput,
            demand_queued=self._link.queued("demand") + self._demand_active()),
            self.limits)
        self.last = {"predictor": predictor, "at": now,
                     "predictions": [{"resource": p.resource, "score": round(p.score, 4),
                                      "size": p.size, "temperature": round(p.temperature, 3),
                                      "held": p.held} for p in preds],
                     "jobs": [_job_obj(j) for j in jobs]}
        evicted = False
        for job in jobs:
            if isinstance(job, Cancel):
                size, task = self.pending.pop(job.resource, (0, None))
                if task is not None:
                    task.cancel()
                self.entries[job.resource] = PrefetchEntry(now, size, "cancelled")
                self.counters["cancelled"] += 1
                log.info("prefetch cancelled", extra=kv(resource=job.resource,
                                                        reason=job.reason))
            elif isinstance(job, Evict):
                await asyncio.to_thread(self._store.remove_resource, job.resource)
                e = self.entries.get(job.resource)
                if e is not None:
                    e.state = "evicted"
                self.counters["evicted"] += 1
                evicted = True
                log.info("prefetched copy evicted", extra=kv(resource=job.resource,
                                                             reason=job.reason))
            elif isinstance(job, Prefetch):
                task = self._spawn(self._prefetch(job.resource, job.size),
                                   f"prefetch-{job.resource[:8]}")
                self.pending[job.resource] = (job.size, task)
        if evicted:
            self._catalog_changed()
        if jobs:
            self._trim_entries()
            self._save_entries()

    async def _prefetch(self, rid: str, size: int) -> None:
        start = time.monotonic()
        try:
            r = await self._fetch(rid, "prefetch", max(size, 1))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.counters["prefetch_failed"] += 1
            log.info("prefetch failed", extra=kv(resource=rid, reason=e))
            return
        if r.get("already_held"):
            return  # demand got there first: not ours to evict
        moved = r.get("bytes_fetched")
        took = time.monotonic() - start
        if isinstance(moved, int) and moved > 0 and took > 0:
            rate = moved / took
            self._throughput = rate if self._throughput is None else (
                0.75 * self._throughput + 0.25 * rate)
        self.entries[rid] = PrefetchEntry(self._clock(), size, "held",
                                          moved if isinstance(moved, int) else size)
        self.counters["prefetched"] += 1
        self._save_entries()
        log.info("prefetched", extra=kv(resource=rid, size=size))

    # ----------------------------------------------------------------- mirrors we use
    def mirrors_for(self, resource_id: str) -> list[str]:
        """The hosts (device ID hex) mirroring *resource_id* for us: paired ones only."""
        out = []
        for (rid, host) in self.using:
            if rid == resource_id and self._paired(host):
                out.append(host)
        return out

    def _paired(self, device_hex: str) -> bool:
        try:
            return self._trust.is_trusted(bytes.fromhex(device_hex))
        except ValueError:
            return False

    def _paired_links(self) -> list[PeerLink]:
        return [c for c in self._connections.live_connections()
                if c.transport == "lan" and self._trust.is_trusted(c.peer_id)]

    async def _ask(self, conn: PeerLink, args: dict[str, Any]) -> object:
        return await conn.request(OP, args, timeout=ASK_TIMEOUT)

    async def _nodes(self, conns: list[PeerLink]) -> list[Node]:
        """The paired candidates; drops a mirror in use that its host's listing lacks (the
        host could not fetch it, or dropped it) once it had time to appear."""
        now = self._clock()

        async def one(c: PeerLink) -> Node:
            hosts: dict[str, float] = {}
            room = True
            try:
                hosts, room = parse_listing(await self._ask(c, {"do": "list"}))
                for key, u in list(self.using.items()):
                    if (u.host == c.peer_id.hex() and u.resource not in hosts
                            and now - u.since > 4 * self.cfg.interval + ASK_TIMEOUT):
                        del self.using[key]
                        self.counters["mirrors_dropped"] += 1
                        log.info("mirror dropped", extra=kv(
                            resource=u.resource, host=c.name, reason="the host lacks it"))
            except ValueError as e:
                log.warning("mirror listing rejected", extra=kv(peer=c.name, reason=e))
            except Exception as e:  # one peer's failure must not stop the others
                log.debug("no mirror listing", extra=kv(peer=c.name, reason=e))
            me = c.peer_id.hex()
            f = self._facts(me) or PeerFacts()
            offered = frozenset(r for r, hs in self.holders.items() if me in hs)
            rtt = getattr(c, "rtt", None)
            return Node(me, rtt * 1000 if isinstance(rtt, float) else None,
                        f.bandwidth, f.load, f.reputation, f.holds | offered | frozenset(hosts),
                        hosts, room)

        return list(await asyncio.gather(*(one(c) for c in conns)))

    async def plan_mirrors(self, ranked: list[tuple[str, float]]) -> None:
        now = self._clock()
        held = self._held()
        temps = self._usage.temperature.items(now)
        scores = {r: s for r, s in ranked if _is_rid(r)}
        hot = sorted(temps.items(), key=lambda kv: (-kv[1], kv[0]))[:HOTTEST]
        wanted = dict.fromkeys([r for r, _ in hot if _is_rid(r)] + list(scores))
        demand: list[Demand] = []
        for rid in wanted:
            t, s = temps.get(rid, 0.0), scores.get(rid, 0.0)
            interesting = (t >= self.rules.create or s >= self.rules.create_score
                           or any(k[0] == rid for k in self.using))
            if not interesting:
                continue
            size = await self._size(rid, held)
            if size is None:
                continue
            demand.append(Demand(rid, size, t, s, rid in held, rid in self.pending))
        if not demand and not self.using:
            return
        conns = self._paired_links()
        nodes = await self._nodes(conns)
        jobs, kept = plan_mirrors(demand, nodes, list(self.using.values()), self.rules, now)
        log.debug("mirror round", extra=kv(
            demand=",".join(f"{d.resource[:8]}:{d.temperature:.1f}/{d.score:.2f}"
                            f"{'H' if d.held else ''}{'P' if d.prefetching else ''}"
                            for d in demand),
            nodes=",".join(f"{n.device[:8]}:{len(n.holds)}" for n in nodes),
            jobs=len(jobs)))
        self.using = {(u.resource, u.host): u for u in kept}
        by_id = {c.peer_id.hex(): c for c in conns}
        for job in jobs:
            conn = by_id.get(job.host)
            if isinstance(job, DropMirror):
                self.using.pop((job.resource, job.host), None)
                self._renewed.pop((job.resource, job.host), None)
                self.counters["mirrors_dropped"] += 1
                log.info("mirror dropped", extra=kv(resource=job.resource, host=job.host[:16],
                                                    reason=job.reason))
                if conn is not None:
                    self._spawn(self._quiet(self._ask(conn, {"do": "release",
                                                             "r": job.resource})),
                                "mirror-release")
            elif (isinstance(job, CreateMirror) and conn is not None
                  and await self._hold(conn, job.resource, job.size)):
                self.using[(job.resource, job.host)] = MirrorUse(
                    job.resource, job.host, now, job.reason, job.size)
                self._renewed[(job.resource, job.host)] = now
                self.counters["mirrors_created"] += 1
                log.info("mirror created", extra=kv(resource=job.resource,
                                                    host=conn.name, reason=job.reason))
        for key, u in list(self.using.items()):  # renew leases at half their length
            conn = by_id.get(u.host)
            due = now - self._renewed.get(key, 0.0) >= self.cfg.lease / 2
            if conn is not None and due and await self._hold(conn, u.resource, u.size):
                self._renewed[key] = now

    async def _hold(self, conn: PeerLink, rid: str, size: int) -> bool:
        try:
            ans = await self._ask(conn, {"do": "hold", "r": rid, "n": size})
        except Exception as e:
            self.counters["mirror_refused"] += 1
            log.info("mirror not held", extra=kv(peer=conn.name, resource=rid, reason=e))
            return False
        return isinstance(ans, dict) and ans.get("ok") is True

    @staticmethod
    async def _quiet(coro: Awaitable[object]) -> None:
        with contextlib.suppress(Exception):
            await coro

    # ----------------------------------------------------------------- hosting
    def handlers(self) -> dict[str, Handler]:
        return {OP: self._on_mirror}

    async def _on_mirror(self, conn: PeerConnection, req: wire.Request) -> object:
        if not self._trust.is_trusted(conn.peer_id):
            self.counters["host_refused"] += 1
            raise NotPaired("mirrors are kept for paired devices only")
        if not self.cfg.enabled or not self.cfg.mirrors:
            raise MirrorsOff("this device does not host mirrors ([prefetch] mirrors = false)")
        do, peer = req.args["do"], conn.peer_id.hex()
        if do == "list":
            return {"hosts": self._listing(peer), "room": self.hosting.room()}
        rid = req.args.get("r")
        if not _is_rid(rid):
            raise BadMirrorRequest("a resource ID (32 hex digits) is needed")
        assert isinstance(rid, str)
        if do == "release":
            self._remove(self.hosting.release(peer, rid))
            return {"ok": True}
        size = req.args.get("n", 0)
        held = rid in self._held()
        try:
            h = self.hosting.hold(peer, rid, int(size), self._clock(), held_already=held,
                                  reason=f"for {conn.name}")
        except Refusal as e:
            self.counters["host_refused"] += 1
            raise HostFull(str(e)) from None
        if not held and h.synced == 0.0:
            h.synced = self._clock()
            self.counters["hosted"] += 1
            self._spawn(self.sync_to_latest(rid), f"mirror-{rid[:8]}")
        return {"ok": True}

    def _room_for(self, rid: str) -> int:
        """Bytes a hosted copy of *rid* may take: the host budget less the other copies (the
        size a requester states is never trusted)."""
        h = self.hosting.hosted.get(rid)
        return max(0, self.hosting.max_bytes - self.hosting.bytes() + (h.size if h else 0))

    def _listing(self, asker: str) -> dict[str, float]:
        """Our hosted mirrors and how similar the asker's usage is to their requesters'
        (cosine of the temperature vectors they released in their usage aggregates)."""
        got = self._usage.received
        mine = getattr(got.get(asker), "heat", None) or {}
        out: dict[str, float] = {}
        for rid, h in list(self.hosting.hosted.items())[:MAX_HOSTS_LISTED]:
            sims = [similarity(mine, getattr(got.get(r), "heat", None) or {})
                    for r in h.leases if r != asker]
            out[rid] = round(max(sims, default=1.0 if asker in h.leases else 0.0), 4)
        return out

    async def sync_to_latest(self, rid: str) -> None:
        """Bring a hosted mirror to the newest version a paired holder offers: only the
        chunks it lacks move (the fetch skips chunks held), signatures verified as on any
        fetch, never more than the host budget allows. One function so the ``follow``
        work's delta sync can replace it. A first fetch that fails ends the mirror (the
        requester sees it missing from our listing and stops using it)."""
        h = self.hosting.hosted.get(rid)
        try:
            await self._fetch(rid, "mirror", self._room_for(rid) if h is not None else None)
        except Exception as e:
            self.counters["sync_failed"] += 1
            log.info("mirror sync failed", extra=kv(resource=rid, reason=e))
            if h is not None and not h.user_content and rid not in self._held():
                self.hosting.hosted.pop(rid, None)
            return
        self.counters["synced"] += 1
        rec = self._held().get(rid)
        if h is not None and rec is not None:
            h.size = int(rec.size)

    async def host_round(self) -> None:
        now = self._clock()
        for rid in self.hosting.expire(now):
            self._remove(rid)
        for h in list(self.hosting.hosted.values()):
            if now - h.synced >= self.cfg.sync_interval:
                h.synced = now
                await self.sync_to_latest(h.resource)

    def _remove(self, rid: str | None) -> None:
        if rid is None or rid not in self._held():
            return
        with contextlib.suppress(Exception):
            self._store.remove_resource(rid)
        self._catalog_changed()
        log.info("mirror copy removed", extra=kv(resource=rid))

    def unpaired(self, peer_id: bytes) -> None:
        """A device is no longer paired: its leases end, and we stop using its mirrors."""
        peer = peer_id.hex()
        for rid in self.hosting.forget_requester(peer):
            self._remove(rid)
        self.using = {k: u for k, u in self.using.items() if u.host != peer}

    # ----------------------------------------------------------------- persistence
    def _load_entries(self) -> dict[str, PrefetchEntry]:
        out: dict[str, PrefetchEntry] = {}
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError, AttributeError):
            path = self.dir / "prefetched.json"
            if path.stat().st_size <= 256 * 1024:
                for rid, e in json.loads(path.read_bytes()).items():
                    if (_is_rid(rid) and e["state"] in ("held", "used", "evicted",
                                                        "cancelled")
                            and all(isinstance(e[k], (int, float)) and not isinstance(e[k], bool)
                                    for k in ("at", "size", "fetched"))):
                        out[rid] = PrefetchEntry(float(e["at"]), int(e["size"]), e["state"],
                                                 int(e["fetched"]))
        return dict(list(out.items())[-MAX_ENTRIES:])

    def _trim_entries(self) -> None:
        while len(self.entries) > MAX_ENTRIES:
            settled = next((k for k, e in self.entries.items() if e.state != "held"), None)
            self.entries.pop(settled if settled is not None else next(iter(self.entries)))

    def _save_entries(self) -> None:
        data = json.dumps({k: {"at": e.at, "size": e.size, "state": e.state,
                               "fetched": e.fetched} for k, e in self.entries.items()})
        try:
            atomic_write_bytes(self.dir / "prefetched.json", data.encode(), mode=0o600)
        except OSError as e:
            log.warning("cannot keep the prefetch ledger", extra=kv(reason=e.strerror or e))

    # ----------------------------------------------------------------- reporting
    async def describe_prefetch(self) -> dict[str, object]:
        """What ``shoal prefetch`` shows (the access log is read in a worker thread, over a
        copy of the ledger)."""
        entries = {k: dataclasses.replace(e) for k, e in self.entries.items()}
        s = await asyncio.to_thread(lambda: summarise(self._records(), self._own, entries))
        now = self._clock()
        temps = self._usage.temperature.items(now)
        top = sorted(temps.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        predictor, ranked = self._predict(self.cfg.depth)  # now, not as of the last round
        held = self._held()
        predictions = [{"resource": r, "score": round(sc, 4),
                        "size": int(held[r].size) if r in held else self.sizes.get(r),
                        "temperature": round(self._usage.mesh_temperature(r, now), 3),
                        "held": r in held} for r, sc in ranked if _is_rid(r)]
        return {
            "enabled": self.cfg.enabled, "mirrors": self.cfg.mirrors,
            "active": now - self.last_own_request <= self.cfg.active_window,
            "predictor": predictor, "predictions": predictions,
            "last_jobs": self.last["jobs"],
            "pending": sorted(self.pending),
            "hottest": [{"resource": r, "temperature": round(t, 3),
                         "mesh": round(self._usage.mesh_temperature(r, now), 3)}
                        for r, t in top],
            "stats": _stats_obj(s, entries),
            "budget": {"device": self.cfg.device_budget, "reserve": self.cfg.reserve,
                       "held": sum(e.size for e in entries.values() if e.state == "held")},
            "counters": dict(self.counters),
        }

    def _records(self) -> Iterator[AccessRecord]:
        return self._usage.log.records(self._clock() - 7 * 86400)

    async def describe_mirrors(self) -> dict[str, object]:
        """What ``shoal mirrors`` shows: mirrors used here and mirrors hosted here."""
        hosted = sorted((rid, h.since) for rid, h in self.hosting.hosted.items())
        s, served = await asyncio.to_thread(self._served, dict(hosted))
        rows: list[dict[str, object]] = []
        live = {c.peer_id.hex(): c.address for c in self._connections.live_connections()}
        for (rid, host), u in sorted(self.using.items()):
            addr = live.get(host)
            rows.append({"role": "using", "resource": rid, "device": host,
                         "address": f"{addr[0]}:{addr[1]}" if addr else None,
                         "name": self._name(host), "since": u.since, "reason": u.reason,
                         "served": s.mirror_served.get((rid, host[:16]), 0)})
        for rid, h in sorted(self.hosting.hosted.items()):
            rows.append({"role": "hosting", "resource": rid, "device": self.me.hex(),
                         "name": "this device", "since": h.since, "reason": h.reason,
                         "served": served.get(rid, 0), "requesters": len(h.leases)})
        return {"enabled": self.cfg.enabled and self.cfg.mirrors, "mirrors": rows,
                "hosted_bytes": self.hosting.bytes(), "counters": dict(self.counters)}

    def _served(self, hosted: dict[str, float]) -> tuple[Summary, dict[str, int]]:
        """(this device's requests by source, requests from others per hosted resource since
        it was hosted): one pass over the log, in a worker thread."""
        served: dict[str, int] = {}
        for rec in self._usage.log.records(min(hosted.values(), default=self._clock())):
            since = hosted.get(rec.resource_hex)
            if since is not None and rec.time >= since and not self._own(rec):
                served[rec.resource_hex] = served.get(rec.resource_hex, 0) + 1
        return summarise(self._records(), self._own, {}), served

    def _name(self, host: str) -> str:
        with contextlib.suppress(ValueError):
            d = self._trust.get(bytes.fromhex(host))
            if d is not None:
                return d.name
        return host[:16]



def _stats_obj(s: Any, entries: dict[str, PrefetchEntry]) -> dict[str, object]:
    settled = s.used + sum(1 for e in entries.values() if e.state in ("evicted", "cancelled"))
    return {"prefetched": s.prefetched, "used": s.used, "held_unused": s.held_unused,
            "wasted_bytes": s.wasted_bytes, "local_hits": s.local_hits,
            "mirror_hits": s.mirror_hits, "peer_fetches": s.peer_fetches,
            "used_ratio": round(s.used / settled, 4) if settled else None}


def _job_obj(j: object) -> dict[str, object]:
    if isinstance(j, Prefetch):
        return {"job": "prefetch", "resource": j.resource, "size": j.size, "reason": j.reason}
    if isinstance(j, Evict):
        return {"job": "evict", "resource": j.resource, "size": j.size, "reason": j.reason}
    assert isinstance(j, Cancel)
    return {"job": "cancel", "resource": j.resource, "reason": j.reason}
