"""The usage service: records every request, keeps temperatures, shares aggregates.

The asyncio adapter around the pure cores of :mod:`agent.usage`:

* **Recording** (:meth:`UsageService.record_access`, the :class:`agent.ports.AccessRecorder`
  the fetch and serve paths call): hash the requester, encode, buffer, bump the
  temperature. No I/O, no await: the buffer is written by :meth:`tick` off the request path.
* **Sharing**: every ``[predict] share_interval`` (± jitter, so a mesh that started together
  does not share in lock-step) the k-anonymous (or DP) aggregate of the log is sent, as a
  ``usage`` request, to each *paired* peer over a live LAN session — the same encrypted,
  mutually authenticated sessions every other operation rides. The handler refuses a
  session that is not paired, and refuses everything when ``[predict] share = false``;
  a received aggregate is parsed strictly (:func:`agent.usage.aggregate.parse_aggregate`),
  a hostile one rejected whole. Received aggregates are never forwarded: each device shares
  only what its own log released.
* **Mesh view**: :meth:`mesh_temperature`, :meth:`mesh_counts` and :meth:`budget` combine this
  device's numbers with the latest aggregate of each paired peer (bounded: at most
  :data:`MAX_PEERS` peers and :data:`MAX_RECEIVED_GRAMS` n-grams, the stalest forgotten
  first).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import ErrorKind
from agent.fsutil import atomic_write_bytes
from agent.log import kv
from agent.peer.connection import Handler, PeerConnection, Refused
from agent.usage.accesslog import AccessLog
from agent.usage.aggregate import (
    Aggregate,
    AggregateError,
    MeshCounts,
    merge,
    parse_aggregate,
    to_wire,
)
from agent.usage.ngrams import GramStats, SharePolicy, release_dp, release_k
from agent.usage.record import RecordError, encode_fields, parse_source
from agent.usage.requester import RequesterKeys
from agent.usage.temperature import (
    PeerHeat,
    PrefetchBudget,
    Temperature,
    mesh_temperature,
    prefetch_budget,
)

if TYPE_CHECKING:
    from agent.config import PredictConfig, UsageConfig
    from agent.peer import wire
    from agent.ports import ConnectionsPort, JSONValue, PeerLink, TrustView

log = logging.getLogger("shoal.usage")

OP = "usage"
MAX_PEERS = 16
MAX_RECEIVED_GRAMS = 32_768  # all peers together: ~6 MB parsed, whatever they send
SHARE_TIMEOUT = 10.0
SHARE_TRANSPORT = "lan"  # BLE is the control plane: no aggregates over it
MAX_RELEASE_FILE = 1024 * 1024


class NotPaired(Refused):
    """An unpaired session offered or asked for usage data."""

    kind = ErrorKind.UNTRUSTED


class SharingOff(Refused):
    """This device does not share usage (``[predict] share = false``)."""

    kind = ErrorKind.REFUSED


class BadAggregate(Refused):
    """The aggregate does not follow the schema."""

    kind = ErrorKind.INVALID


class UsageService:
    """Access log + temperature + sharing for one device."""

    def __init__(self, directory: Path, usage: UsageConfig, predict: PredictConfig, *,
                 connections: ConnectionsPort, trust: TrustView,
                 clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        self.dir = directory
        self.usage_cfg = usage
        self.cfg = predict
        self._connections = connections
        self._trust = trust
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        self._started = clock()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.log = AccessLog(directory / "log", max_bytes=usage.max_bytes,
                             max_age=usage.max_age, segment_bytes=usage.segment_bytes,
                             max_buffered=usage.max_buffered, clock=clock)
        self.keys = RequesterKeys(directory / "requester.key", usage.key_rotation,
                                  self._started)
        self.temperature = Temperature(usage.half_life)
        self.policy = SharePolicy(
            k=predict.share_k, epsilon=predict.share_epsilon, delta=predict.share_delta,
            max_grams_per_requester=predict.share_max_grams, top_n=predict.share_top_n,
            max_grams=predict.share_max_entries, half_life=usage.half_life)
        self.received: dict[str, Aggregate] = {}  # peer device ID hex -> latest aggregate
        self.counters = {"invalid": 0, "flush_errors": 0, "sent": 0, "send_failed": 0,
                         "received": 0, "refused": 0, "rejected": 0, "listener_failed": 0}
        self._listeners: list[Callable[[bytes, str, int, float], None]] = []
        self._dp_release: tuple[int, Aggregate] | None = self._load_dp_release()
        self._appended = 0  # records accepted since start (what invalidates the cache)
        self._k_cache: tuple[tuple[int, int, int], Aggregate] | None = None
        if self.log.damage.total():
            d = self.log.damage
            log.warning("access log damage skipped", extra=kv(
                corrupt_records=d.corrupt_records, torn_bytes=d.torn_bytes,
                bad_segments=d.bad_segments, dir=self.log.dir))

    @classmethod
    def open(cls, directory: Path, usage: UsageConfig, predict: PredictConfig, *,
             connections: ConnectionsPort, trust: TrustView) -> UsageService | None:
        """The service, or None with a warning when its directory cannot be used (a file
        where a directory should be, a read-only disk): the access log is advisory, the
        agent runs without it rather than not at all."""
        try:
            return cls(directory, usage, predict, connections=connections, trust=trust)
        except OSError as e:
            log.warning("access log unavailable: running without it", extra=kv(
                dir=directory, reason=e.strerror or e))
            return None

    # ----------------------------------------------------------------- the hot path
    def record_access(self, requester: bytes, resource_id: str, size: int, *, hit: bool,
                      source: str) -> None:
        """Buffer one access (AccessRecorder). A malformed argument is counted, never
        raised: recording must not fail a fetch."""
        try:
            kind, sid = parse_source(source)
            t = self._clock()
            frame = encode_fields(t, self.keys.epoch, self.keys.hash(requester),
                                  bytes.fromhex(resource_id), max(0, size), hit, kind, sid)
        except (ValueError, RecordError):
            self.counters["invalid"] += 1
            return
        if self.log.append_frame(frame, t):
            self._appended += 1
        self.temperature.observe(resource_id, t)
        for listener in self._listeners:
            try:
                listener(requester, resource_id, size, t)
            except Exception:  # a listener's bug must not fail the fetch it is told about
                self.counters["listener_failed"] += 1
                log.exception("access listener failed")

    def on_access(self, listener: Callable[[bytes, str, int, float], None]) -> None:
        """Call *listener(requester, resource_id, size, time)* after each recorded access,
        on the request path (it must only update memory: the online predictor)."""
        self._listeners.append(listener)

    # ----------------------------------------------------------------- background
    def tick(self) -> None:
        """Off the request path: rotate the requester key when its epoch ends, write the
        buffer, enforce the log's bounds. A disk error is logged and counted."""
        try:
            self.keys.rotate_if_due(self._clock())
            self.log.flush()
        except OSError as e:
            self.counters["flush_errors"] += 1
            log.warning("access log write failed", extra=kv(reason=e.strerror or e))

    async def run(self) -> None:
        """Flush every ``flush_interval``; share every ``share_interval`` ± jitter."""
        await self._warm_temperature()
        loop = asyncio.get_running_loop()
        next_share = loop.time() + self._jittered()
        while True:
            await asyncio.sleep(self.usage_cfg.flush_interval)
            self.tick()
            if self.cfg.share and loop.time() >= next_share:
                next_share = loop.time() + self._jittered()
                try:
                    await self.share_once()
                except Exception:  # a bug here must not take the agent (its TaskGroup) down
                    log.exception("usage sharing failed")

    def _jittered(self) -> float:
        j = self.cfg.share_jitter
        return self.cfg.share_interval * (1.0 + j * (2.0 * self._rng.random() - 1.0))

    async def _warm_temperature(self) -> None:
        """Temperatures from the log of earlier runs (in a thread: it reads the segments)."""
        start, half_life = self._started, self.usage_cfg.half_life

        def build() -> Temperature:
            since = start - self.usage_cfg.max_age
            return Temperature.from_accesses(
                ((r.resource_hex, r.time) for r in self.log.records(since)
                 if r.time < start), half_life)

        warm = await asyncio.to_thread(build)
        for r, v in warm.items(start).items():
            self.temperature.observe(r, start, weight=v)

    # ----------------------------------------------------------------- what is shared
    def aggregate(self) -> Aggregate:
        """What this device releases now: the k-anonymous aggregate of its log window, or
        (ε > 0) the DP release of the last complete key epoch, drawn once and kept."""
        now = self._clock()
        p = self.policy
        if p.epsilon <= 0:
            # nothing logged and nothing pruned since the last build: the same counts (an
            # idle device does not re-read its whole log every interval)
            key = (self._appended, self.log.size_bytes(), self.log.segment_count())
            if self._k_cache is not None and self._k_cache[0] == key:
                return self._k_cache[1]
            stats = GramStats(session_gap=p.session_gap, half_life=p.half_life)
            for rec in self.log.records(now - self.usage_cfg.max_age):
                stats.add(rec)
            agg = release_k(stats, p, now)
            self._k_cache = (key, agg)
            return agg
        period = self.keys.epoch - 1
        if self._dp_release is not None and self._dp_release[0] == period:
            return self._dp_release[1]
        stats = GramStats(session_gap=p.session_gap, half_life=p.half_life,
                          per_requester_cap=p.max_grams_per_requester)
        for rec in self.log.records(period * self.keys.rotation):
            if rec.epoch == period:
                stats.add(rec)
        agg = release_dp(stats, p, period, (period + 1) * self.keys.rotation, self._rng)
        self._dp_release = (period, agg)
        self._save_dp_release(period, agg)
        return agg

    def _load_dp_release(self) -> tuple[int, Aggregate] | None:
        """The release of a period survives restarts: drawing new noise for the same period
        would spend its budget twice."""
        with contextlib.suppress(OSError, ValueError, AggregateError, KeyError, TypeError):
            path = self.dir / "dp-release.json"
            if path.stat().st_size <= MAX_RELEASE_FILE:
                obj = json.loads(path.read_bytes())
                period = obj["period"]
                if isinstance(period, int) and not isinstance(period, bool):
                    return period, parse_aggregate(obj["aggregate"])
        return None

    def _save_dp_release(self, period: int, agg: Aggregate) -> None:
        data = json.dumps({"period": period, "aggregate": to_wire(agg)},
                          separators=(",", ":")).encode()
        try:
            atomic_write_bytes(self.dir / "dp-release.json", data, mode=0o600)
        except OSError as e:
            log.warning("cannot keep the DP release", extra=kv(reason=e.strerror or e))

    async def share_once(self) -> dict[str, str]:
        """Send this device's aggregate to every paired peer with a live LAN session; the
        result per peer name ("ok" or the reason). Nothing is sent when sharing is off."""
        if not self.cfg.share:
            return {}
        self.tick()  # the aggregate includes what is still buffered
        targets = [c for c in self._connections.live_connections()
                   if c.transport == SHARE_TRANSPORT and self._trust.is_trusted(c.peer_id)]
        if not targets:
            return {}
        agg = await asyncio.to_thread(self.aggregate)
        args: dict[str, JSONValue] = {"a": to_wire(agg)}

        async def send(conn: PeerLink) -> str:
            try:
                await conn.request(OP, args, timeout=SHARE_TIMEOUT)
            except Exception as e:  # one peer's failure must not stop the others
                self.counters["send_failed"] += 1
                log.debug("usage aggregate not delivered", extra=kv(peer=conn.name, reason=e))
                return str(e) or type(e).__name__
            self.counters["sent"] += 1
            return "ok"

        results = await asyncio.gather(*(send(c) for c in targets))
        log.debug("usage aggregate shared", extra=kv(
            peers=len(targets), grams=len(agg.grams), heat=len(agg.heat)))
        return {c.name: r for c, r in zip(targets, results, strict=True)}

    # ----------------------------------------------------------------- the peer operation
    def handlers(self) -> dict[str, Handler]:
        return {OP: self._on_usage}

    async def _on_usage(self, conn: PeerConnection, req: wire.Request) -> object:
        if not self.cfg.share:
            self.counters["refused"] += 1
            raise SharingOff("usage sharing is off on this device")
        if not self._trust.is_trusted(conn.peer_id):
            self.counters["refused"] += 1
            raise NotPaired("usage aggregates are exchanged between paired devices only")
        try:
            agg = parse_aggregate(req.args["a"])
        except AggregateError as e:
            self.counters["rejected"] += 1
            log.warning("usage aggregate rejected", extra=kv(peer=conn.name, reason=e))
            raise BadAggregate(f"aggregate rejected: {e}") from None
        peer = conn.peer_id.hex()
        self.received.pop(peer, None)
        self.received[peer] = agg  # newest last: the stalest is dropped first
        while (len(self.received) > MAX_PEERS
               or sum(len(a.grams) for a in self.received.values()) > MAX_RECEIVED_GRAMS):
            self.received.pop(next(iter(self.received)))
        self.counters["received"] += 1
        log.debug("usage aggregate received", extra=kv(
            peer=conn.name, grams=len(agg.grams), heat=len(agg.heat)))
        return {"grams": len(agg.grams)}

    def forget_peer(self, peer_id: bytes) -> None:
        """An unpaired device's aggregate stops counting."""
        self.received.pop(peer_id.hex(), None)

    # ----------------------------------------------------------------- the mesh view
    def _paired_aggregates(self) -> list[Aggregate]:
        return [a for p, a in self.received.items() if self._trust.is_trusted(bytes.fromhex(p))]

    def mesh_temperature(self, resource_id: str, now: float | None = None) -> float:
        now = self._clock() if now is None else now
        return mesh_temperature(self.temperature,
                                [PeerHeat(a.at, a.heat) for a in self._paired_aggregates()],
                                resource_id, now)

    def mesh_counts(self) -> MeshCounts:
        """The paired peers' n-gram counts merged (this device's own log is the local
        predictor's business: it may use its raw sequences, which never leave it)."""
        return merge(self._paired_aggregates(), top_n=self.policy.top_n,
                     max_contexts=self.policy.max_grams)

    def recent(self, n: int) -> list[tuple[str, float, int]]:
        """The newest *n* records of this device's log as (resource, time, size), oldest
        first: what the model service evaluates and predicts from (it stays on the device).
        Reads the log: call it off the event loop."""
        rows: deque[tuple[str, float, int]] = deque(maxlen=max(0, n))
        for rec in self.log.records(self._clock() - self.usage_cfg.max_age):
            rows.append((rec.resource_hex, rec.time, rec.size))
        return list(rows)

    def budget(self, resource_id: str, now: float | None = None) -> PrefetchBudget:
        return prefetch_budget(self.mesh_temperature(resource_id, now),
                               base_bytes=self.cfg.prefetch_base,
                               max_bytes=self.cfg.prefetch_max, hot=self.cfg.prefetch_hot)

    def describe(self) -> dict[str, object]:
        """What ``shoal usage`` shows: the log, the sharing state, the hottest resources."""
        now = self._clock()
        d = self.log.damage
        return {
            "log": {"bytes": self.log.size_bytes(), "segments": self.log.segment_count(),
                    "buffered": self.log.buffered, "dropped": self.log.dropped,
                    "damaged": d.corrupt_records + d.bad_segments, "key_epoch": self.keys.epoch},
            "share": self.cfg.share, "k": self.policy.k, "epsilon": self.policy.epsilon,
            "counters": dict(self.counters),
            "peers": [{"peer": p[:16], "at": a.at, "grams": len(a.grams), "heat": len(a.heat),
                       "paired": self._trust.is_trusted(bytes.fromhex(p))}
                      for p, a in self.received.items()],
            "hottest": [{"resource": r, "temperature": round(t, 3),
                         "mesh": round(self.mesh_temperature(r, now), 3),
                         "budget": self.budget(r, now).bytes}
                        for r, t in self.temperature.hottest(10, now)],
        }

    def close(self) -> None:
        try:
            self.log.close()
        except OSError as e:
            log.warning("access log close failed", extra=kv(reason=e.strerror or e))
