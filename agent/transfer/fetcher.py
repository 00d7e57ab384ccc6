"""Asyncio side of a fetch: find holders, then drive the FetchPlanner with real requests.

The planner decides; this module only moves bytes: it sends the planner's requests over peer
sessions, verifies and stores each chunk off the event loop, and reports arrivals, failures
and timeouts back. Chunks already in the store are never requested, so a fetch interrupted by
a crash of either side resumes where it stopped when it is run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.errors import ErrorKind, ShoalError
from agent.log import kv
from agent.peer import wire
from agent.peer.connection import PeerConnection, PeerGone, RemoteError
from agent.security.identity import short_device_id
from agent.security.signing import SignatureError
from agent.store import ChunkMismatch, Manifest, ManifestError, QuotaExceeded, StoreError
from agent.transfer import delta, manifest_delta
from agent.transfer.catalog import publisher_label
from agent.transfer.planner import HASH_MISMATCH, TIMEOUT, FetchPlanner, Want

if TYPE_CHECKING:
    from agent.store import ContentStore

log = logging.getLogger("shoal.transfer")

#: Refusal kinds from a chunk server that mean "this chunk is not in my store" (never held,
#: or quarantined after failing its hash there): ask other sources, never this one again.
NOT_HELD_KINDS = frozenset({ErrorKind.NOT_FOUND, ErrorKind.INTEGRITY})
IN_FLIGHT_BUDGET = 16 * 1024 * 1024  # bytes requested but not yet stored, all sources together
POLL = 0.25
MIN_BYTES_IN_FLIGHT = 2 * 1024 * 1024  # per source: keeps CPU-bound ends busy (see planner)


class FetchError(ShoalError):
    """The resource cannot be fetched; the message says why, per source."""

    kind = ErrorKind.UNREACHABLE


class AmbiguousName(FetchError):
    """A name matches several resources: the user must choose by ID."""

    kind = ErrorKind.AMBIGUOUS


class UntrustedOffers(FetchError):
    """Peers offered the resource, but no offer was believable (bad signatures, private
    content from unpaired sessions); the message names each source and why."""

    kind = ErrorKind.UNTRUSTED


@dataclass(frozen=True)
class _NotHeld:
    """A chunk request's outcome: the source said the chunk is not in its store."""

    reason: str


@dataclass
class Offer:
    """One peer's answer to 'which manifest do you hold for this name?'.

    *trusted*: the session's peer is paired with us. The manifest's signature is checked
    by :func:`choose_version`, not here.
    """

    conn: PeerConnection
    manifest: Manifest
    trusted: bool = False


@dataclass
class Choice:
    """What :func:`choose_version` decided: the version, who holds it (paired first), and
    every offer it refused, by peer name, with the reason (to report the source)."""

    manifest: Manifest
    holders: list[PeerConnection]
    rejected: dict[str, str] = field(default_factory=dict)


@dataclass
class FetchResult:
    manifest: Manifest
    bytes_fetched: int
    seconds: float
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    already_held: bool = False
    #: Chunks this fetch received, hashed and wrote itself (not ones already held): an
    #: export right after the fetch may read these back without hashing them again.
    stored: frozenset[bytes] = frozenset()


ProgressSink = Callable[[dict[str, Any]], Awaitable[None]]
FindSources = Callable[[], Awaitable[list[PeerConnection]]]


async def ask_manifest(conn: PeerConnection, resource: str, timeout: float,
                       base: Manifest | None = None, why: str = "demand") -> Manifest:
    """The manifest envelope *conn* offers (signature parsed, not yet verified). With
    *base* (a version held here) the answer may be a manifest delta against it
    (agent/transfer/manifest_delta.py): rebuilt here, then parsed like a whole one. *why*
    (a traffic class, or ``check`` for a freshness check) tells the holder whether this is
    a use of the resource it should log (``demand`` only)."""
    args: dict[str, Any] = {"resource": resource}
    if base is not None:
        args["base"] = base.manifest_hash
    if why != "demand":
        args["c"] = why
    answer = await conn.request("manifest", args, timeout=timeout)
    if base is not None and isinstance(answer, dict) and "mdelta" in answer and (
            "manifest" not in answer):
        try:
            text = manifest_delta.apply(base, answer["mdelta"])
        except ManifestError as e:
            raise FetchError(f"{conn.name} sent an invalid manifest delta: {e}") from None
        answer = {k: v for k, v in answer.items() if k != "mdelta"} | {
            "manifest": text.decode("ascii")}
    if not isinstance(answer, dict) or not isinstance(answer.get("manifest"), str):
        raise FetchError(f"{conn.name} sent a malformed manifest answer")
    try:
        return Manifest.from_envelope(answer)
    except (ManifestError, SignatureError) as e:
        raise FetchError(f"{conn.name} sent an invalid manifest: {e}") from None


def _never(peer_id: bytes) -> bool:
    return False


async def find_offers(
    conns: Sequence[PeerConnection], resource: str, timeout: float,
    is_trusted: Callable[[bytes], bool] = _never, base: Manifest | None = None,
    why: str = "demand",
) -> tuple[list[Offer], dict[str, BaseException]]:
    """Ask every peer at once; return the offers (marked by whether the session's peer is
    paired, per *is_trusted*) and, per peer name, why it had none (the exception itself, so
    the caller can tell "not held" from "unreachable": :mod:`agent.transfer.failure`).
    *base*: the version held here (answers may be manifest deltas against it)."""
    results = await asyncio.gather(
        *(ask_manifest(c, resource, timeout, base, why) for c in conns),
        return_exceptions=True
    )
    offers: list[Offer] = []
    errors: dict[str, BaseException] = {}
    for conn, res in zip(conns, results, strict=True):
        if isinstance(res, Manifest):
            offers.append(Offer(conn, res, is_trusted(conn.peer_id)))
        elif isinstance(res, BaseException):
            errors[conn.name] = res
    return offers, errors


def _no_publisher(publisher_hex: str) -> bool:
    return False


def believable(offers: Sequence[Offer]) -> tuple[list[Offer], dict[str, str]]:
    """Keep the offers whose content we may believe; say why each other one was dropped.

    An offer counts only if its manifest is signed by its publisher (the signer's keys
    hash to the ``publisher`` ID and the signature verifies): a session proves who
    relays, not who wrote. A private resource counts only from a paired session.
    """
    good: list[Offer] = []
    rejected: dict[str, str] = {}
    for o in offers:
        try:
            o.manifest.verify()
        except SignatureError as e:
            rejected[o.conn.name] = f"{type(e).__name__}: {e}"
        else:
            if o.manifest.public or o.trusted:
                good.append(o)
                continue
            rejected[o.conn.name] = "offered a private resource over an unpaired session"
        log.warning("offer rejected", extra=kv(
            peer=o.conn.name, id=short_device_id(o.conn.peer_id), resource=o.manifest.name,
            version=o.manifest.version, reason=rejected[o.conn.name]))
    return good, rejected


def choose_version(offers: list[Offer], resource: str, *,
                   trusted_publisher: Callable[[str], bool] = _no_publisher) -> Choice:
    """Pick one resource, the version to fetch, and every peer holding exactly it.

    1. Drop offers that are not believable (:func:`believable`); they are reported.
    2. A resource is the pair (publisher, resource_id): a forger re-using someone's
       resource_id under its own key is a different resource. Several candidates: an ID
       (prefix) match narrows first, then resources by trusted publishers (ourselves or
       paired devices) win; still several: refuse to guess, naming each publisher.
    3. The version comes from paired holders when any offer it: an unpaired peer's higher
       version never displaces a paired holder's (it is still signed, but trust decides
       whose offers count first). Only without paired holders does the newest version
       among (signed, public) unpaired offers win.
    4. Holders of exactly that manifest, paired first: chunks are verified by hash, so
       an unpaired holder of the same bytes adds speed, never risk.
    """
    good, rejected = believable(offers)
    if not good:
        why = "; ".join(f"{n}: {r}" for n, r in rejected.items())
        raise UntrustedOffers(f"no believable offer for {resource!r} ({why})")
    groups: dict[tuple[str, str], list[Offer]] = {}
    for o in good:
        groups.setdefault((o.manifest.resource_id, o.manifest.publisher), []).append(o)
    if len(groups) > 1:
        by_id = {k: v for k, v in groups.items() if k[0].startswith(resource.lower())}
        groups = by_id or groups
    if len(groups) > 1:
        rank = {k: (trusted_publisher(k[1]), any(o.trusted for o in v))
                for k, v in groups.items()}
        top = max(rank.values())
        groups = {k: v for k, v in groups.items() if rank[k] == top}
    if len(groups) > 1:
        choices = ", ".join(
            f"{rid[:12]} by {publisher_label(pub)} (from {os_[0].conn.name})"
            for (rid, pub), os_ in groups.items())
        raise AmbiguousName(f"{resource!r} names several resources: {choices}; fetch by ID")
    group = next(iter(groups.values()))
    pool = [o for o in group if o.trusted] or group
    best = max(pool, key=lambda o: (o.manifest.version, o.manifest.created)).manifest
    same = [o for o in group if o.manifest.manifest_hash == best.manifest_hash]
    holders = [o.conn for o in sorted(same, key=lambda o: not o.trusted)]
    return Choice(best, holders, rejected)


class Fetch:
    """One resource fetch across several holders, resumable and bounded in memory."""

    def __init__(
        self,
        store: ContentStore,
        manifest: Manifest,
        holders: Sequence[PeerConnection],
        *,
        traffic_class: str = "demand",
        initial_window: int = 4,
        max_window: int = 16,
        request_timeout: float = 10.0,
        stall_timeout: float = 30.0,
        find_sources: FindSources | None = None,
        progress: ProgressSink | None = None,
        bases: Mapping[bytes, tuple[bytes, ...]] | None = None,
        commit: bool = True,
    ) -> None:
        self.store = store
        #: chunk -> chunks held here that a source may send it as a delta against
        #: (agent/transfer/delta.py): the older version's chunks at the same offsets
        self.bases = dict(bases or {})
        #: record the manifest as the resource's held version at the end; False for an
        #: older version fetched only to export it (the store keeps the newer one)
        self.commit = commit
        self.deltas = 0  # chunks that arrived as deltas
        self.delta_bytes_saved = 0
        self.manifest = manifest
        self.cls = traffic_class
        self.request_timeout = request_timeout
        self.stall_timeout = stall_timeout
        self.find_sources = find_sources
        self.progress = progress
        self.conns: dict[str, PeerConnection] = {}
        self._holders = list(holders)
        self._init_window = initial_window
        self._max_window = max_window
        self._tasks: dict[tuple[str, bytes], asyncio.Task[None]] = {}
        self._results: asyncio.Queue[tuple[str, Want, Any]] = asyncio.Queue()
        self.planner: FetchPlanner | None = None
        self.stored: set[bytes] = set()
        self._lost: set[str] = set()  # sources dropped because their session died
        self._missing_chunks = len(manifest.chunks)  # set by run(): chunks not held yet

    async def run(self) -> FetchResult:
        t0 = time.monotonic()
        store, m = self.store, self.manifest
        await asyncio.to_thread(store.put_manifest, m)
        missing = await asyncio.to_thread(store.missing_chunks, m)
        wants = [Want(c.chunk_id, c.length) for c in missing]
        self._missing_chunks = len(missing)
        per_source = max(
            1, IN_FLIGHT_BUDGET // max(1, m.avg_chunk_size * 2) // max(1, len(self._holders))
        )
        self.planner = planner = FetchPlanner(
            wants,
            initial_window=min(self._init_window, per_source),
            max_window=max(1, min(self._max_window, per_source)),
            request_timeout=self.request_timeout,
            min_window=max(2, min(per_source, MIN_BYTES_IN_FLIGHT // max(1, m.avg_chunk_size))),
        )
        already = m.size - planner.bytes_total
        for conn in self._holders:
            self._add(conn)
        stalled_since: float | None = None
        progress_mark = -1
        last_report = 0.0
        t_loop = time.monotonic()
        try:
            while not planner.done:
                now = time.monotonic()
                for src, want in planner.next_requests(now):
                    self._send(src, want)
                if planner.failed or not planner.active_sources():
                    # the clock restarts only on real progress, so a source that keeps
                    # being re-recruited and keeps failing cannot hold a fetch forever
                    stalled_since = stalled_since or now
                    if now - stalled_since > self.stall_timeout:
                        raise FetchError(planner.failed or "no peer holds this resource")
                    if not await self._recruit() and planner.failed:
                        raise FetchError(planner.failed)  # every source refused: no point waiting
                elif planner.bytes_done != progress_mark:
                    progress_mark = planner.bytes_done
                    stalled_since = None
                deadline = planner.next_deadline()
                wait = POLL if deadline is None else max(0.0, min(POLL, deadline - now))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._handle(await self._results.get())
                while not self._results.empty():
                    await self._handle(self._results.get_nowait())
                now = time.monotonic()
                for src, want in planner.tick(now):
                    self._cancel(src, want.chunk_id)
                for src, cid in planner.cancelled_requests():
                    self._cancel(src, cid)
                if self.progress and (now - last_report > 0.2 or planner.done):
                    last_report = now
                    await self.progress(self._progress(already, now - t0))
        finally:
            for task in self._tasks.values():
                task.cancel()
        t_commit = time.monotonic()
        if self.commit:
            await asyncio.to_thread(store.commit_resource, m)
        seconds = time.monotonic() - t0
        log.debug("fetch phases", extra=kv(
            resource=m.name, prepare_s=round(t_loop - t0, 3),
            transfer_s=round(t_commit - t_loop, 3),
            commit_s=round(time.monotonic() - t_commit, 3)))
        return FetchResult(
            m,
            planner.bytes_done,
            seconds,
            {n: vars(s) for n, s in planner.source_stats().items()},
            already_held=planner.bytes_total == 0,
            stored=frozenset(self.stored),
        )

    def _progress(self, already: int, elapsed: float) -> dict[str, Any]:
        assert self.planner is not None
        p = self.planner
        chunks = len(self.manifest.chunks)
        return {
            "done": already + p.bytes_done,
            "total": self.manifest.size,
            "elapsed": elapsed,
            "sources": len(p.active_sources()),
            # held before this fetch began (a resumed fetch): the CLI's rate leaves them out
            "already": already,
            "chunks_total": chunks,
            "chunks_already": chunks - self._missing_chunks,
        }

    def _add(self, conn: PeerConnection) -> None:
        assert self.planner is not None
        name = conn.peer_id.hex()
        self.conns[name] = conn
        self._lost.discard(name)
        self.planner.add_source(name, time.monotonic())

    async def _recruit(self) -> bool:
        """All sources gone: look for holders again (a restarted peer, a new one).

        A source dropped on the same session for refusing chunks (it lacks or quarantined
        them) or for lying is not asked again: only a new session, or one dropped for
        timeouts, may help. Returns whether anyone could still help.
        """
        if self.find_sources is None:
            return False
        assert self.planner is not None
        stats = self.planner.source_stats()
        hopeful = False
        for conn in await self.find_sources():
            name = conn.peer_id.hex()
            old, st = self.conns.get(name), stats.get(name)
            if old is conn and st is not None:
                if st.state == "active":
                    # one that said it lacks a missing chunk cannot fill the gap on this
                    # session; another holder may (asked below if new)
                    hopeful = hopeful or not self.planner.lacks_needed(name)
                    continue
                if TIMEOUT not in (st.last_error or "") and "timeout" not in (st.reason or ""):
                    continue  # refused or lied on this very session: asking again is futile
            hopeful = True
            with contextlib.suppress(
                FetchError, RemoteError, PeerGone, TimeoutError, ConnectionError
            ):
                offered = await ask_manifest(
                    conn, self.manifest.manifest_hash, self.request_timeout
                )
                if offered.manifest_hash == self.manifest.manifest_hash:
                    log.info("source joined", extra=kv(peer=conn.name))
                    self._add(conn)
        return hopeful or self._lost_sessions()

    def _lost_sessions(self) -> bool:
        """Some source was dropped because its connection died (PeerGone, recorded by type,
        not read back from the drop reason): it may come back."""
        return bool(self._lost)

    def _send(self, src: str, want: Want) -> None:
        conn = self.conns[src]
        key = (src, want.chunk_id)
        old = self._tasks.pop(key, None)
        if old is not None:
            old.cancel()
        self._tasks[key] = asyncio.create_task(self._request(src, conn, want))

    def _compress(self, src: str) -> bool:
        """Ask for lz4 except over loopback, the one link faster than lz4 (~0.8 GB/s/core).

        Decided from the address, not from measured rates: throughput measured with
        compression on depends on the compression itself (a feedback loop that flaps), and
        the sender's own send rate only shows its socket buffer filling.
        """
        addr = self.conns[src].address
        if addr is None:
            return True
        with contextlib.suppress(ValueError):
            return not ipaddress.ip_address(addr[0]).is_loopback
        return True

    def _cancel(self, src: str, chunk_id: bytes) -> None:
        task = self._tasks.pop((src, chunk_id), None)
        if task is not None:
            task.cancel()

    async def _request(self, src: str, conn: PeerConnection, want: Want) -> None:
        base = self.bases.get(want.chunk_id)
        args: dict[str, Any] = {"c": want.chunk_id.hex(), "cls": self.cls,
                                "z": self._compress(src)}
        if base:
            args["b"] = "".join(b.hex() for b in base)
        try:
            reply = await conn.request("chunk", args, timeout=self.request_timeout * 3)
            if not isinstance(reply, wire.ChunkReply) or reply.chunk_id != want.chunk_id:
                raise FetchError(f"{conn.name} answered with the wrong chunk")
            data = reply.data
            if reply.delta:
                if not base:
                    raise delta.DeltaError("a delta nobody asked for")
                try:
                    held = b"".join([self.store.get_chunk(b) for b in base])
                except StoreError:  # gone or damaged since: ask for the whole chunk next
                    self.bases.pop(want.chunk_id, None)
                    raise
                data = delta.apply(held, data, want.length)
                self.deltas += 1
                self.delta_bytes_saved += want.length - len(reply.data)
            # Inline, not in a thread: hashing + writing 256 KiB takes ~0.2 ms, less than a
            # thread hand-off and its wake-up latency; the loop stays responsive enough.
            # put_chunk hashes the peer's bytes before anything is written: the one check
            # that guards this device against a lying or broken peer (never skipped; a
            # rebuilt delta is checked the same way).
            if self.store.put_chunk(want.chunk_id, data):
                self.stored.add(want.chunk_id)
            result: Any = None
        except asyncio.CancelledError:
            raise
        except (ChunkMismatch, delta.DeltaError):
            result = HASH_MISMATCH
        except PeerGone as e:
            result = PeerGone(str(e))
        except QuotaExceeded as e:  # no other source can help: the fetch stops (see _handle)
            result = e
        except RemoteError as e:
            result = _NotHeld(str(e)) if e.remote_kind in NOT_HELD_KINDS else (
                str(e) or type(e).__name__)
        except (FetchError, TimeoutError, StoreError, ConnectionError) as e:
            result = str(e) or type(e).__name__
        await self._results.put((src, want, result))

    async def _handle(self, item: tuple[str, Want, Any]) -> None:
        src, want, result = item
        assert self.planner is not None
        now = time.monotonic()
        if self._tasks.get((src, want.chunk_id)) is not None:
            self._tasks.pop((src, want.chunk_id), None)
        if result is None:
            self.planner.on_chunk(src, want.chunk_id, now)
        elif isinstance(result, _NotHeld):
            self.planner.on_not_held(src, want.chunk_id, result.reason, now)
        elif isinstance(result, PeerGone):
            if src in self.planner.active_sources():  # dropped now, for this reason
                self._lost.add(src)
            log.info("source lost", extra=kv(peer=self.conns[src].name, reason=result))
            self.planner.remove_source(src, f"connection lost ({result})", now)
        else:
            if isinstance(result, QuotaExceeded):
                raise result  # keeps its kind (quota) up to the CLI
            self.planner.on_failure(src, want.chunk_id, result, now)
