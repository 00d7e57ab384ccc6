"""Multi-source fetch planner: which chunk to ask of which source, and when (sans-I/O).

The planner owns no sockets, tasks or clocks: every call is handed ``now`` and answers with
the requests to send. That keeps it deterministic, so thousands of seeded simulated fetches
(tests/transfer) can check its invariants in seconds; the asyncio side only moves bytes.

Policy, and why:

* **Pipelined windows.** Each source has a window of requests in flight, so a link never
  idles for a round trip between chunks.
* **The window follows the link.** It starts at ``initial_window``, grows by one per chunk
  delivered (slow start) up to a bandwidth-delay target, ``2 x throughput x min_rtt``, and is
  halved when requests time out. The minimum RTT (not the smoothed one) is used because the
  smoothed RTT includes the queue our own window builds at the source: sizing the window from
  it would feed back into ever larger queues.
* **Faster sources get more.** Each next chunk goes to the source expected to deliver it
  first (bytes already queued there / its measured throughput), so shares follow speed; near
  the end a source that would only deliver after everyone else is finished is left idle.
* **Bad sources are dropped.** A hash mismatch drops the source at once (it is lying or
  corrupt); ``max_failures_per_source`` consecutive failures (error replies, timeout rounds)
  drop it with the reason kept for the final error message.
* **A source that lacks a chunk is honest.** When a source answers that a chunk is not in
  its store (it never had it, or quarantined a corrupt copy: :meth:`on_not_held`), it is
  never asked for that chunk again and no failure is counted against it; once no active
  source holds some missing chunk, :attr:`failed` says so at once (waiting cannot help
  unless a new source turns up).
* **Endgame.** Once nothing is left to hand out, an idle source that would deliver a
  straggler sooner than its current holder gets a duplicate request; first arrival wins and
  the other copy is reported in :meth:`FetchPlanner.cancelled_requests`.
* **File order.** Pending chunks come out of a min-heap of manifest positions, so requeued
  chunks are retried first and a fetch progresses front to back (streaming, resume).

Memory is O(chunks) small integers plus O(sources x window) in-flight entries; no chunk data.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

HASH_MISMATCH = "hash mismatch"
"""``on_failure`` reason for a chunk whose content does not match its id: drops the source."""

TIMEOUT = "timeout"

_PENDING, _IN_FLIGHT, _DONE = 0, 1, 2
_EWMA_THROUGHPUT = 0.25  # weight of a new throughput sample
_EWMA_RTT = 0.125  # as TCP's SRTT
_MIN_SAMPLE_INTERVAL = 1e-3  # arrivals closer than this are merged into one rate sample
_SAMPLES_BEFORE_SHRINK = 4  # don't shrink the window on the first, noisiest estimates
_MAX_SKIPPED_SCAN = 256  # bound on pending chunks one source may pass over per request


@dataclass(frozen=True)
class Want:
    """A chunk still needed: its id (BLAKE3 hash) and length in bytes."""

    chunk_id: bytes
    length: int


@dataclass(frozen=True)
class SourceStats:
    """A snapshot of one source, for progress displays, logs and tests."""

    state: str  # "active" or "dropped"
    reason: str | None  # why it was dropped
    in_flight: int
    window: int
    completed: int
    bytes: int
    failures: int  # total failures counted against it
    consecutive_failures: int
    throughput: float | None  # EWMA of delivery rate, bytes/s
    rtt: float | None  # smoothed request latency, seconds
    min_rtt: float | None
    last_error: str | None


class _Source:
    """Mutable per-source state; only the planner touches it."""

    __slots__ = (
        "acc_bytes",
        "acc_start",
        "active",
        "banned",
        "bytes",
        "completed",
        "consecutive",
        "episode_start",
        "failures",
        "in_flight",
        "in_flight_bytes",
        "last_arrival",
        "last_error",
        "last_progress",
        "min_rtt",
        "name",
        "reason",
        "samples",
        "srtt",
        "throughput",
        "window",
    )

    def __init__(self, name: str, window: int, now: float) -> None:
        self.name = name
        self.active = True
        self.banned = False
        self.reason: str | None = None
        self.completed = 0
        self.bytes = 0
        self.failures = 0
        self.last_error: str | None = None
        self.reset(window, now)

    def reset(self, window: int, now: float) -> None:
        """Fresh link estimates: used when a source is (re)added."""
        self.window = window
        self.in_flight: dict[int, float] = {}  # chunk index -> send time, in send order
        self.in_flight_bytes = 0
        self.consecutive = 0
        self.throughput: float | None = None
        self.srtt: float | None = None
        self.min_rtt: float | None = None
        self.samples = 0
        self.last_arrival: float | None = None
        self.last_progress = now  # last arrival, or when it went from idle to busy
        self.acc_bytes = 0
        self.acc_start = now
        self.episode_start = -math.inf  # timeouts of requests sent before this don't count again


class FetchPlanner:
    """Plans one resource fetch across several sources. See the module docstring.

    Feed it events (``add_source``, ``remove_source``, ``on_chunk`` after the hash check,
    ``on_failure``); after each batch of events, and on a timer (every ~0.5 s: stall
    detection and endgame are time-based, and timeouts are due at ``next_deadline()``),
    call ``tick(now)``, ``cancelled_requests()`` and ``next_requests(now)`` and act on their
    answers. ``now`` is a monotonic clock (``loop.time()``) and must not go backwards.
    """

    def __init__(
        self,
        wants: Sequence[Want],
        *,
        initial_window: int = 4,
        max_window: int = 64,
        request_timeout: float = 10.0,
        max_failures_per_source: int = 3,
        endgame: bool = True,
        min_window: int = 2,
    ) -> None:
        if max_window < 1:
            raise ValueError("max_window must be at least 1")
        if initial_window < 1:
            raise ValueError("initial_window must be at least 1")
        if not request_timeout > 0:
            raise ValueError("request_timeout must be positive")
        if max_failures_per_source < 1:
            raise ValueError("max_failures_per_source must be at least 1")
        self.initial_window = min(initial_window, max_window)
        self.max_window = max_window
        self.request_timeout = float(request_timeout)
        self.max_failures_per_source = max_failures_per_source
        self.endgame = endgame
        # Floor for the BDP target: when both ends are CPU-bound (loopback, a Pi), request
        # latency grows with the window and a pure BDP estimate talks itself down to a window
        # of 2-3 that leaves both processes idle between chunks.
        self.min_window = max(1, min_window)

        # A manifest may repeat a chunk; fetching it once satisfies every position.
        self._wants: list[Want] = []
        self._index: dict[bytes, int] = {}
        for w in wants:
            if w.length < 0:
                raise ValueError("a chunk length cannot be negative")
            if w.chunk_id not in self._index:
                self._index[w.chunk_id] = len(self._wants)
                self._wants.append(w)
        n = len(self._wants)
        self._state = bytearray(n)  # _PENDING / _IN_FLIGHT / _DONE
        self._in_heap = bytearray(b"\x01" * n)
        self._heap: list[int] = list(range(n))  # sorted, hence already a heap
        self._copies: dict[int, list[str]] = {}  # in-flight chunk -> sources it is asked of
        self._failed_by: dict[int, set[str]] = {}  # chunk -> sources that failed it
        self._lacking: dict[int, set[str]] = {}  # chunk -> sources that do not hold it
        self._pending_count = n
        self.bytes_total = sum(w.length for w in self._wants)
        self._pending_bytes = self.bytes_total
        self.bytes_done = 0
        self._done_count = 0
        self._mean_length = max(1.0, self.bytes_total / n) if n else 1.0
        self._sources: dict[str, _Source] = {}
        self._cancelled: list[tuple[str, bytes]] = []

    # ----------------------------------------------------------------- status

    @property
    def done(self) -> bool:
        """Every wanted chunk has arrived."""
        return self._done_count == len(self._wants)

    @property
    def failed(self) -> str | None:
        """Why the fetch cannot finish, or None while it still can (or is done).

        Only set once at least one source was added and every source is dropped; the text
        names each source and what went wrong with it.
        """
        if self.done or not self._sources:
            return None
        active = [s for s in self._sources.values() if s.active]
        if active:
            lost = self._unobtainable(active)
            if not lost:
                return None
            first = self._wants[lost[0]].chunk_id.hex()[:16]
            return (f"{len(lost)} chunk(s) (first {first}) are held by none of the sources "
                    f"({', '.join(s.name for s in active)}): each answered that it does not "
                    "hold them")
        missing = len(self._wants) - self._done_count
        why = "; ".join(f"{s.name}: {s.reason}" for s in self._sources.values())
        return (
            f"{missing} of {len(self._wants)} chunks "
            f"({self.bytes_total - self.bytes_done} bytes) still missing and no usable "
            f"source is left: {why}"
        )

    @property
    def pending_count(self) -> int:
        """Chunks waiting to be requested (not in flight, not done)."""
        return self._pending_count

    @property
    def in_flight_count(self) -> int:
        """Distinct chunks currently requested from at least one source."""
        return len(self._copies)

    def active_sources(self) -> list[str]:
        return [s.name for s in self._sources.values() if s.active]

    def source_stats(self) -> dict[str, SourceStats]:
        return {
            s.name: SourceStats(
                state="active" if s.active else "dropped",
                reason=s.reason,
                in_flight=len(s.in_flight),
                window=s.window,
                completed=s.completed,
                bytes=s.bytes,
                failures=s.failures,
                consecutive_failures=s.consecutive,
                throughput=s.throughput,
                rtt=s.srtt,
                min_rtt=s.min_rtt,
                last_error=s.last_error,
            )
            for s in self._sources.values()
        }

    def next_deadline(self) -> float | None:
        """Earliest time a request can time out, i.e. when ``tick`` next has work; None if idle."""
        oldest = [
            next(iter(s.in_flight.values()))
            for s in self._sources.values()
            if s.active and s.in_flight
        ]
        return min(oldest) + self.request_timeout if oldest else None

    def lacks_needed(self, source: str) -> bool:
        """The source said it does not hold some chunk still missing (asking it again on the
        same session cannot fill that gap)."""
        return any(source in who for idx, who in self._lacking.items()
                   if self._state[idx] != _DONE)

    def _unobtainable(self, active: list[_Source]) -> list[int]:
        """Missing chunks that every active source said it does not hold, in file order."""
        names = {s.name for s in active}
        return sorted(idx for idx, who in self._lacking.items()
                      if self._state[idx] != _DONE and names <= who)

    # ----------------------------------------------------------------- sources

    def add_source(self, source: str, now: float) -> None:
        """A holder of the resource. Re-adding a dropped source revives it with fresh
        estimates, except one dropped for a hash mismatch: that one stays banned."""
        s = self._sources.get(source)
        if s is None:
            self._sources[source] = _Source(source, self.initial_window, now)
        elif not s.active and not s.banned:
            s.active = True
            s.reason = None
            s.reset(self.initial_window, now)
            for who in self._lacking.values():  # a new session: its store may have changed
                who.discard(source)

    def remove_source(self, source: str, reason: str, now: float) -> list[Want]:
        """The source went away (disconnect, shutdown). Returns the chunks it had in flight;
        they go back to the queue unless another copy is still in flight elsewhere."""
        s = self._sources.get(source)
        if s is None or not s.active:
            return []
        return [w for _, w in self._drop(s, reason)]

    # ----------------------------------------------------------------- events

    def on_chunk(self, source: str, chunk_id: bytes, now: float) -> bool:
        """A chunk arrived and its hash was verified. Returns True if it was needed, False
        for a duplicate (endgame loser, late reply) or a chunk this fetch never wanted."""
        idx = self._index.get(chunk_id)
        s = self._sources.get(source)
        sent: float | None = None
        if s is not None:
            s.consecutive = 0  # it is alive and honest
            s.last_progress = now
            if idx is not None and idx in s.in_flight:
                sent = s.in_flight.pop(idx)
                s.in_flight_bytes -= self._wants[idx].length
                copies = self._copies[idx]
                copies.remove(source)
                if not copies:
                    del self._copies[idx]
        if idx is None or self._state[idx] == _DONE:
            return False
        want = self._wants[idx]
        if self._state[idx] == _PENDING:  # a late reply after a timeout: still welcome
            self._pending_count -= 1
            self._pending_bytes -= want.length
        else:  # any copy still in flight elsewhere is now redundant
            for other in self._copies.pop(idx, []):
                o = self._sources[other]
                del o.in_flight[idx]
                o.in_flight_bytes -= want.length
                self._cancelled.append((other, want.chunk_id))
        self._state[idx] = _DONE
        self._done_count += 1
        self.bytes_done += want.length
        if s is not None:
            s.completed += 1
            s.bytes += want.length
            if sent is not None:
                self._measure(s, want.length, sent, now)
                if s.active:
                    self._adapt_window(s)
            s.last_arrival = now
        return True

    def on_failure(self, source: str, chunk_id: bytes, reason: str, now: float) -> None:
        """The source answered with an error, or sent data that failed verification
        (``reason=HASH_MISMATCH``, which drops it at once). The chunk goes back to the queue
        and, while other sources can serve it, will not be asked of this one again. If this
        drops the source, its other in-flight requests appear in ``cancelled_requests()``."""
        s = self._sources.get(source)
        idx = self._index.get(chunk_id)
        if s is not None and idx is not None and idx in s.in_flight:
            self._unassign(s, idx)
        if s is None or not s.active:
            return
        s.failures += 1
        s.last_error = reason
        s.last_progress = now
        if idx is not None:
            self._failed_by.setdefault(idx, set()).add(source)
        if reason == HASH_MISMATCH:
            s.banned = True
            why = f"sent chunk {chunk_id.hex()[:16]} with a bad hash (lying or corrupt)"
        else:
            s.consecutive += 1
            if s.consecutive < self.max_failures_per_source:
                return
            why = f"{s.consecutive} consecutive failures (last: {reason})"
        # Its other requests are abandoned: tell the caller through cancelled_requests().
        self._cancelled.extend((name, w.chunk_id) for name, w in self._drop(s, why))

    def on_not_held(self, source: str, chunk_id: bytes, reason: str, now: float) -> None:
        """The source answered that *chunk_id* is not in its store (never was, or it was
        quarantined there). That is an honest answer, not a failure: the source is never
        asked for this chunk again and keeps its standing; the chunk goes back to the
        queue for the others (see :attr:`failed` when nobody has it)."""
        s = self._sources.get(source)
        idx = self._index.get(chunk_id)
        if s is None or idx is None:
            return
        if idx in s.in_flight:
            self._unassign(s, idx)
        self._lacking.setdefault(idx, set()).add(source)
        s.last_error = reason
        s.last_progress = now  # it answered: not a stall

    def tick(self, now: float) -> list[tuple[str, Want]]:
        """Expire requests older than ``request_timeout``: requeue them, halve the window and
        count one failure per timeout round. Returns every request that the planner gave up
        on (including the in-flight ones of a source dropped here); the caller may cancel
        them. A late reply is still welcome in ``on_chunk``."""
        out: list[tuple[str, Want]] = []
        for s in list(self._sources.values()):
            if not s.active or not s.in_flight:
                continue
            expired: list[tuple[int, float]] = []
            for idx, sent in s.in_flight.items():
                if now - sent < self.request_timeout:
                    break  # in send order: the rest are younger
                expired.append((idx, sent))
            if not expired:
                continue
            for idx, _ in expired:
                self._unassign(s, idx)
                out.append((s.name, self._wants[idx]))
            # Requests sent before the last cut belong to the round already punished.
            if any(sent >= s.episode_start for _, sent in expired):
                s.episode_start = now
                s.window = max(1, s.window // 2)
                if s.throughput is not None:
                    s.throughput *= 0.5  # it delivers less than we thought: lose share
                s.failures += 1
                s.consecutive += 1
                s.last_error = TIMEOUT
                if s.consecutive >= self.max_failures_per_source:
                    out.extend(
                        self._drop(s, f"{s.consecutive} consecutive failures (last: timeout)")
                    )
        return out

    def cancelled_requests(self) -> list[tuple[str, bytes]]:
        """Requests abandoned since the last call: the losing copy of an endgame race, and
        the in-flight requests of a source ``on_failure`` dropped. The caller should cancel
        them or ignore their replies (``on_chunk`` still accepts a needed chunk). Drains."""
        out, self._cancelled = self._cancelled, []
        return out

    # ----------------------------------------------------------------- planning

    def next_requests(self, now: float) -> list[tuple[str, Want]]:
        """Fill every active source's window. The caller sends each (source, want)."""
        out: list[tuple[str, Want]] = []
        if self.done:
            return out
        active = [s for s in self._sources.values() if s.active]
        open_ = [s for s in active if len(s.in_flight) < s.window and not self._stalled(s, now)]
        ref = max((s.throughput for s in active if s.throughput), default=1.0)
        while open_ and self._pending_count:
            # Next chunk in file order to the source expected to deliver it first.
            s = min(
                open_, key=lambda x: (x.in_flight_bytes + self._mean_length) / (x.throughput or ref)
            )
            idx = self._take_for(s, active, now)
            if idx is None:
                open_.remove(s)
                continue
            self._assign(s, idx, now)
            out.append((s.name, self._wants[idx]))
            if len(s.in_flight) >= s.window:
                open_.remove(s)
        if self.endgame and self._pending_count == 0 and self._copies:
            self._endgame(active, now, out)
        return out

    def _take_for(self, s: _Source, active: list[_Source], now: float) -> int | None:
        """Pop the first pending chunk ``s`` should fetch, or None if it should stay idle.

        A chunk ``s`` already failed is left to a healthy source that has not; and ``s``
        stays idle when the sources able to serve the chunk would finish everything first.
        """
        healthy = [o for o in active if o is not s and not self._stalled(o, now)]
        skipped: list[int] = []
        found: int | None = None
        while self._heap:
            idx = heapq.heappop(self._heap)
            self._in_heap[idx] = 0
            if self._state[idx] != _PENDING:
                continue  # stale entry
            lacking = self._lacking.get(idx)
            if lacking and s.name in lacking:
                skipped.append(idx)  # it said it does not hold this one
                if len(skipped) >= _MAX_SKIPPED_SCAN:
                    break
                continue
            failed = self._failed_by.get(idx)
            able = [o for o in healthy if o.name not in failed] if failed else healthy
            if lacking:  # who lacks it cannot finish it: never idle s in its favour
                able = [o for o in able if o.name not in lacking]
            if failed and s.name in failed and able:
                skipped.append(idx)  # someone else can serve it
                if len(skipped) >= _MAX_SKIPPED_SCAN:
                    break
                continue
            if self._useless_at_tail(s, able):
                skipped.append(idx)
                break
            found = idx
            break
        for idx in skipped:
            self._in_heap[idx] = 1
            heapq.heappush(self._heap, idx)
        return found

    def _useless_at_tail(self, s: _Source, others: list[_Source]) -> bool:
        """True if ``others`` would finish all remaining work before ``s`` could deliver
        one more chunk: giving it one would only delay the end of the fetch."""
        if not s.throughput:
            return False
        measured = [(o.in_flight_bytes, o.throughput) for o in others if o.throughput]
        if not measured:
            return False
        rate = sum(tp for _, tp in measured)
        queued = self._pending_bytes + sum(b for b, _ in measured)
        # Chunks are indivisible: the others need at least one whole chunk time each, so
        # the source that would deliver soonest is never idled (no deadlock on the last one).
        soonest = min((b + self._mean_length) / tp for b, tp in measured)
        mine = (s.in_flight_bytes + self._mean_length) / s.throughput
        return mine > max(queued / rate, soonest)

    def _endgame(self, active: list[_Source], now: float, out: list[tuple[str, Want]]) -> None:
        """Nothing left to hand out: duplicate stragglers on sources that would beat them."""
        stragglers: list[tuple[float, int, str]] = []  # (expected arrival, chunk, holder)
        for h in active:
            stalled = self._stalled(h, now)
            ahead = 0
            for idx, sent in h.in_flight.items():
                ahead += self._wants[idx].length
                if len(self._copies[idx]) > 1:
                    continue
                if stalled:
                    eta = math.inf
                elif h.throughput is None:
                    eta = sent + self.request_timeout
                else:
                    eta = max(now, h.last_progress + ahead / h.throughput)
                stragglers.append((eta, idx, h.name))
        if not stragglers:
            return
        stragglers.sort(key=lambda t: (-t[0], t[1]))  # worst first
        helpers = sorted(
            (s for s in active if len(s.in_flight) < s.window and not self._stalled(s, now)),
            key=lambda s: -(s.throughput or 0.0),
        )
        taken: set[int] = set()
        for s in helpers:
            for eta, idx, holder in stragglers:
                if len(s.in_flight) >= s.window:
                    break
                if idx in taken or holder == s.name:
                    continue
                failed = self._failed_by.get(idx)
                if failed and s.name in failed:
                    continue
                lacking = self._lacking.get(idx)
                if lacking and s.name in lacking:
                    continue
                if s.throughput:
                    mine = now + (s.min_rtt or 0.0) + s.in_flight_bytes / s.throughput
                else:
                    mine = math.inf if eta < math.inf else 0.0  # unmeasured: only vs a stall
                if mine >= eta:
                    continue
                taken.add(idx)
                self._assign(s, idx, now)
                out.append((s.name, self._wants[idx]))

    # ----------------------------------------------------------------- internals

    def _stalled(self, s: _Source, now: float) -> bool:
        """Requests outstanding but nothing heard for far longer than its pace predicts."""
        if not s.in_flight:
            return False
        quiet = now - s.last_progress
        if s.throughput is None:
            return quiet > self.request_timeout / 2
        expected = 4 * self._mean_length / s.throughput + 2 * (s.srtt or 0.0)
        return quiet > max(expected, 0.05)

    def _assign(self, s: _Source, idx: int, now: float) -> None:
        if self._state[idx] == _PENDING:
            self._pending_count -= 1
            self._pending_bytes -= self._wants[idx].length
            self._state[idx] = _IN_FLIGHT
        if not s.in_flight:
            s.last_progress = now  # the silence clock starts with the first request
        s.in_flight[idx] = now
        s.in_flight_bytes += self._wants[idx].length
        self._copies.setdefault(idx, []).append(s.name)

    def _unassign(self, s: _Source, idx: int) -> None:
        """Take a request off ``s``; requeue the chunk if no other copy is in flight."""
        del s.in_flight[idx]
        length = self._wants[idx].length
        s.in_flight_bytes -= length
        copies = self._copies[idx]
        copies.remove(s.name)
        if copies:
            return
        del self._copies[idx]
        if self._state[idx] == _IN_FLIGHT:
            self._state[idx] = _PENDING
            self._pending_count += 1
            self._pending_bytes += length
            if not self._in_heap[idx]:
                self._in_heap[idx] = 1
                heapq.heappush(self._heap, idx)

    def _drop(self, s: _Source, reason: str) -> list[tuple[str, Want]]:
        s.active = False
        s.reason = reason
        lost = [(s.name, self._wants[idx]) for idx in s.in_flight]
        for idx in list(s.in_flight):
            self._unassign(s, idx)
        return lost

    def _measure(self, s: _Source, length: int, sent: float, now: float) -> None:
        """RTT and delivery-rate samples. The rate is measured over the time the source was
        busy for us (since its previous arrival, or since the request if it was idle), so
        back-to-back arrivals measure the link, not our window."""
        rtt = max(0.0, now - sent)
        s.srtt = rtt if s.srtt is None else (1 - _EWMA_RTT) * s.srtt + _EWMA_RTT * rtt
        if s.min_rtt is None or rtt < s.min_rtt:
            s.min_rtt = rtt
        start = sent if s.last_arrival is None or s.last_arrival < sent else s.last_arrival
        if s.acc_bytes == 0:
            s.acc_start = start
        s.acc_bytes += length
        elapsed = now - s.acc_start
        if elapsed >= _MIN_SAMPLE_INTERVAL:
            sample = s.acc_bytes / elapsed
            s.acc_bytes = 0
            if s.throughput is None:
                s.throughput = sample
            else:
                s.throughput += _EWMA_THROUGHPUT * (sample - s.throughput)
            s.samples += 1

    def _adapt_window(self, s: _Source) -> None:
        """+1 per delivered chunk below the BDP target, -1 above it (once measured)."""
        target = self._bdp_target(s)
        if target is None or s.window < target:
            s.window = min(self.max_window, s.window + 1)
        elif s.window > target and s.samples >= _SAMPLES_BEFORE_SHRINK:
            s.window -= 1

    def _bdp_target(self, s: _Source) -> int | None:
        """Window, in chunks, that keeps twice the bandwidth-delay product in flight."""
        if s.throughput is None or s.min_rtt is None:
            return None
        chunks = math.ceil(2 * s.throughput * s.min_rtt / self._mean_length)
        return max(min(self.min_window, self.max_window), min(self.max_window, chunks))
