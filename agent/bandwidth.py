"""Traffic classes and link sharing: a sans-I/O scheduler and a thin asyncio gate.

Every send carries a class, ``demand`` > ``relay`` > ``mirror`` > ``prefetch``. ``relay`` is
what this device forwards for others (agent/relay/): someone's demand, but not ours.
Background traffic must never starve a fetch a user is waiting for, yet must use all the
capacity nobody else wants.

:class:`LinkScheduler` (pure, ``now`` passed in) decides which queued send may go next:

* **Classes share by weight** (default 16:4:1) with deficit round robin, counted in bytes:
  under saturation each backlogged class gets at least ``weight / sum(backlogged weights)``
  of the link, and a lone class gets everything (work-conserving). DRR rather than strict
  priority so mirroring still trickles while a demand fetch runs.
* **Peers share fairly within a class**: the backlogged peer served fewest bytes goes next.
* **Hard limits** (bytes/s, 0 = unlimited), global and per peer, are token buckets with a
  burst of two chunks: over any interval ``t`` at most ``rate * t + burst`` bytes go.
* **Queues stay here, not in socket buffers.** A peer gets at most ``max_inflight_per_peer``
  sends outstanding (released but not reported back with :meth:`LinkScheduler.on_sent`), and
  once its send rate is measured, no more bytes in flight than ``queue_target`` seconds of
  that rate (always at least one send). On a link slower than its configured limit the
  backlog therefore waits in the scheduler, where a demand send can overtake prefetch.

:class:`BandwidthGate` is the asyncio side: ``async with gate.permit(peer, cls, n): send``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from agent.config import BandwidthConfig

CHUNK = 256 * 1024
DEFAULT_WEIGHTS: Mapping[str, int] = {"demand": 16, "relay": 8, "mirror": 4, "prefetch": 1}

_EWMA = 0.25  # weight of a new capacity sample
_MIN_SAMPLE = 1e-4  # seconds: shorter send intervals carry no rate information
_MIN_DELAY = 1e-4  # never ask to be polled sooner than this (no busy loops on rounding)


class TokenBucket:
    """Rate limiter: ``rate`` bytes/s, holding at most ``burst`` bytes of credit.

    A send larger than the burst is let through when the bucket is full and leaves it in
    debt, so an oversized item delays what follows instead of blocking forever."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def refill(self, now: float) -> None:
        if self.stamp is not None and now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        if self.stamp is None or now > self.stamp:
            self.stamp = now

    def allows(self, nbytes: int) -> bool:
        return self.tokens >= min(nbytes, self.burst)

    def take(self, nbytes: int) -> None:
        self.tokens -= nbytes

    def wait(self, nbytes: int) -> float:
        """Seconds until ``allows(nbytes)`` (given no other takes)."""
        return max(0.0, (min(nbytes, self.burst) - self.tokens) / self.rate)


class _Item:
    __slots__ = ("cls", "enqueued", "nbytes", "peer", "token")

    def __init__(self, token: object, peer: str, cls: str, nbytes: int, now: float) -> None:
        self.token = token
        self.peer = peer
        self.cls = cls
        self.nbytes = nbytes
        self.enqueued = now


class _Class:
    """One traffic class: per-peer FIFOs plus its DRR deficit."""

    __slots__ = (
        "count",
        "deficit",
        "in_turn",
        "name",
        "quantum",
        "queued_bytes",
        "queues",
        "served",
    )

    def __init__(self, name: str, weight: int, quantum: int) -> None:
        self.name = name
        self.quantum = weight * quantum
        self.deficit = 0
        self.in_turn = False  # its quantum for the current round is granted
        self.queues: dict[str, deque[_Item]] = {}  # backlogged peers only
        self.served: dict[str, int] = {}  # bytes served per backlogged peer, for fairness
        self.count = 0
        self.queued_bytes = 0


class _Peer:
    __slots__ = ("bucket", "capacity", "in_flight", "in_flight_bytes", "last_done", "releases")

    def __init__(self, bucket: TokenBucket | None) -> None:
        self.bucket = bucket
        self.in_flight = 0
        self.in_flight_bytes = 0
        self.releases: deque[float] = deque()  # release times of sends in flight, FIFO
        self.last_done = -math.inf
        self.capacity: float | None = None  # measured send rate, bytes/s


class LinkScheduler:
    """Shares links among traffic classes and peers; see the module docstring.

    Use: ``enqueue`` sends as they are wanted; ``poll(now)`` returns the tokens that may go
    now and how long until the next one may; report each released send's completion with
    ``on_sent`` (always exactly once, failed or not). ``cancel`` withdraws a queued send.
    """

    def __init__(
        self,
        weights: Mapping[str, int] = DEFAULT_WEIGHTS,
        *,
        global_limit: float = 0,
        per_peer_limit: float = 0,
        quantum: int = CHUNK,
        burst: int | None = None,
        max_inflight_per_peer: int = 2,
        queue_target: float = 0.05,
    ) -> None:
        if not weights:
            raise ValueError("at least one traffic class is needed")
        for name, w in weights.items():
            if not isinstance(w, int) or isinstance(w, bool) or w < 1:
                raise ValueError(f"weight of class {name!r} must be an integer >= 1, not {w!r}")
        if global_limit < 0 or per_peer_limit < 0:
            raise ValueError("limits are bytes/s >= 0 (0 = unlimited)")
        if quantum < 1 or max_inflight_per_peer < 0 or queue_target <= 0:
            raise ValueError("quantum >= 1, max_inflight_per_peer >= 0, queue_target > 0")
        self.weights = dict(weights)
        self.burst = burst if burst is not None else 2 * quantum
        if self.burst < 1:
            raise ValueError("burst must be positive")
        self.per_peer_limit = float(per_peer_limit)
        self.global_limit = float(global_limit)
        self.max_inflight_per_peer = max_inflight_per_peer
        self.queue_target = queue_target
        self._classes = {n: _Class(n, w, quantum) for n, w in weights.items()}
        self._active: deque[_Class] = deque()  # backlogged classes, DRR order
        self._items: dict[int, _Item] = {}  # id(token) -> queued item, for cancel
        self._peers: dict[str, _Peer] = {}
        self._global = TokenBucket(global_limit, self.burst) if global_limit else None
        self._global_capacity: float | None = None
        self._global_last_done = -math.inf
        self._drain_reports = False
        self._max_item = 0
        self.released_bytes: dict[str, int] = dict.fromkeys(weights, 0)  # cumulative, by class

    @classmethod
    def from_config(cls, cfg: BandwidthConfig, **kw: object) -> LinkScheduler:
        """The agent's ``[bandwidth]`` section: weights and limits."""
        weights = {
            "demand": cfg.demand_weight,
            "relay": cfg.relay_weight,
            "mirror": cfg.mirror_weight,
            "prefetch": cfg.prefetch_weight,
        }
        return cls(
            weights,
            global_limit=cfg.global_limit,
            per_peer_limit=cfg.per_peer_limit,
            **kw,  # type: ignore[arg-type]
        )

    # ----------------------------------------------------------------- queue

    def enqueue(self, peer: str, cls: str, nbytes: int, token: object, now: float) -> None:
        """Queue a send of ``nbytes`` to ``peer``; ``token`` comes back from ``poll``."""
        c = self._classes.get(cls)
        if c is None:
            raise ValueError(f"unknown traffic class {cls!r} (known: {', '.join(self.weights)})")
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        if id(token) in self._items:
            raise ValueError("token is already queued")
        item = _Item(token, peer, cls, nbytes, now)
        self._max_item = max(self._max_item, nbytes)
        self._items[id(token)] = item
        q = c.queues.get(peer)
        if q is None:
            # A peer joining the backlog starts level with the least-served one: no banked
            # credit from idle time, no penalty for past use.
            c.served[peer] = min(c.served.values(), default=0)
            q = c.queues[peer] = deque()
        q.append(item)
        if c.count == 0:
            # A class waking up behind a lighter one's turn does not wait for that turn to
            # end: demand pauses a prefetch turn, which resumes afterwards with the credit it
            # had (no fresh quantum), so shares are unchanged. Otherwise it joins the round
            # at the back, as in DRR.
            head = self._active[0] if self._active else None
            if head is not None and self.weights[cls] > self.weights[head.name]:
                self._active.appendleft(c)
            else:
                self._active.append(c)
        c.count += 1
        c.queued_bytes += nbytes
        if peer not in self._peers:
            self._peers[peer] = self._new_peer(now)

    def cancel(self, token: object) -> bool:
        """Withdraw a queued send. False if it is unknown or already released."""
        item = self._items.pop(id(token), None)
        if item is None:
            return False
        c = self._classes[item.cls]
        q = c.queues[item.peer]
        q.remove(item)
        if not q:
            del c.queues[item.peer], c.served[item.peer]
        c.count -= 1
        c.queued_bytes -= item.nbytes
        if c.count == 0:
            self._deactivate(c)
        return True

    def queued(self, cls: str | None = None) -> int:
        """Sends waiting (in one class, or all)."""
        if cls is not None:
            return self._classes[cls].count
        return sum(c.count for c in self._classes.values())

    def in_flight(self, peer: str) -> int:
        p = self._peers.get(peer)
        return p.in_flight if p else 0

    # ----------------------------------------------------------------- scheduling

    def poll(self, now: float) -> tuple[list[object], float | None]:
        """Release what may go now, in weighted order. Returns (tokens, delay): poll again
        after ``delay`` seconds, or on the next enqueue/on_sent if it is None."""
        if self._global:
            self._global.refill(now)
        for p in self._peers.values():
            if p.bucket:
                p.bucket.refill(now)
        out: list[object] = []
        while True:
            item = self._pick()
            if item is None:
                return out, self._delay_peers()
            if self._global and not self._global.allows(item.nbytes):
                return out, max(_MIN_DELAY, self._global.wait(item.nbytes))
            self._release(item, now)
            out.append(item.token)

    def _pick(self) -> _Item | None:
        """The next item by DRR across classes, or None if every class is held back.

        When nothing can go (typically: the one link is at its in-flight cap) the DRR state
        is left untouched, so the class whose turn it is continues it on the next poll. A
        class held back while another can go loses its turn, keeping bounded credit."""
        if not any(self._head(c) for c in self._active):
            return None
        while True:
            c = self._active[0]
            item = self._head(c)
            if item is None:
                c.deficit = min(c.deficit, c.quantum + self._max_item)
                self._next_turn()
                continue
            if not c.in_turn:
                c.deficit += c.quantum
                c.in_turn = True
            if item.nbytes <= c.deficit:
                return item
            self._next_turn()  # not enough credit this round: it accumulates

    def _deactivate(self, c: _Class) -> None:
        """``c`` has emptied: out of the round, and (DRR) it keeps no credit."""
        self._active.remove(c)
        c.deficit = 0
        c.in_turn = False

    def _next_turn(self) -> None:
        self._active[0].in_turn = False
        self._active.rotate(-1)

    def _head(self, c: _Class) -> _Item | None:
        """Head of the least-served peer queue in ``c`` whose peer may send now."""
        best: _Item | None = None
        best_served = 0
        for peer, q in c.queues.items():
            served = c.served[peer]
            if best is not None and served >= best_served:
                continue
            if self._may_send(self._peers[peer], q[0].nbytes):
                best, best_served = q[0], served
        return best

    def _may_send(self, p: _Peer, nbytes: int) -> bool:
        if p.bucket and not p.bucket.allows(nbytes):
            return False
        if p.in_flight == 0:
            return True  # always one send in flight: progress on any link
        if self.max_inflight_per_peer and p.in_flight >= self.max_inflight_per_peer:
            return False
        # Beyond one send, only while less than queue_target seconds of the measured rate
        # is in flight. Deliberately independent of the item's size: every class's head is
        # then equally eligible, so the check cannot skew the weighted shares.
        return p.capacity is None or p.in_flight_bytes < p.capacity * self.queue_target

    def _release(self, item: _Item, now: float) -> None:
        c = self._classes[item.cls]
        q = c.queues[item.peer]
        q.popleft()
        c.served[item.peer] += item.nbytes
        if not q:
            del c.queues[item.peer], c.served[item.peer]
        c.count -= 1
        c.queued_bytes -= item.nbytes
        c.deficit -= item.nbytes
        if c.count == 0:
            self._deactivate(c)
        del self._items[id(item.token)]
        self.released_bytes[c.name] += item.nbytes
        if self._global:
            self._global.take(item.nbytes)
        p = self._peers[item.peer]
        if p.bucket:
            p.bucket.take(item.nbytes)
        p.in_flight += 1
        p.in_flight_bytes += item.nbytes
        p.releases.append(now)

    def _delay_peers(self) -> float | None:
        """Nothing can go: when will a per-peer bucket let something through? None when
        only completions (on_sent) can unblock, or nothing is queued."""
        delay: float | None = None
        for c in self._classes.values():
            for peer, q in c.queues.items():
                p = self._peers[peer]
                if p.bucket and not p.bucket.allows(q[0].nbytes):
                    d = max(_MIN_DELAY, p.bucket.wait(q[0].nbytes))
                    delay = d if delay is None else min(delay, d)
        return delay

    # ----------------------------------------------------------------- measurement

    def on_sent(self, peer: str, nbytes: int, now: float, *, measured: bool = True) -> None:
        """A released send to ``peer`` finished (or failed/was abandoned: ``measured=False``).
        Frees its in-flight slot and, if measured, feeds the capacity estimate: bytes over
        the time the link was busy with it (since its release, or the previous completion)."""
        p = self._peers.get(peer)
        if p is None or p.in_flight == 0:
            return
        p.in_flight -= 1
        p.in_flight_bytes = max(0, p.in_flight_bytes - nbytes)
        released = p.releases.popleft()
        if measured and nbytes > 0:
            p.capacity = _sample(p.capacity, nbytes, now - max(released, p.last_done))
            if not self._drain_reports:
                self._global_capacity = _sample(
                    self._global_capacity, nbytes, now - max(released, self._global_last_done)
                )
        p.last_done = now
        self._global_last_done = now

    def on_drained(self, now: float, nbytes: int) -> None:
        """Optional: ``nbytes`` left the shared link at ``now`` (e.g. from interface
        counters). When used, it alone drives the global capacity estimate."""
        if not self._drain_reports:
            self._drain_reports = True
            self._global_capacity = None
        elif nbytes > 0:
            self._global_capacity = _sample(
                self._global_capacity, nbytes, now - self._global_last_done
            )
        self._global_last_done = now

    def capacity_estimate(self, peer: str | None = None) -> float | None:
        """Measured send rate (bytes/s) to ``peer``, or over all peers if None (from
        ``on_drained`` if reported, else from completions). The per-peer figure bounds that
        peer's bytes in flight; the aggregate one is informational (links to different
        peers may be different radios, so it must not throttle them jointly)."""
        if peer is None:
            return self._global_capacity
        p = self._peers.get(peer)
        return p.capacity if p else None

    def forget(self, peer: str) -> None:
        """Drop an idle peer's state (estimates, bucket); a no-op while it has work."""
        p = self._peers.get(peer)
        if p and p.in_flight == 0 and not any(peer in c.queues for c in self._classes.values()):
            del self._peers[peer]

    def _new_peer(self, now: float) -> _Peer:
        bucket = TokenBucket(self.per_peer_limit, self.burst, now) if self.per_peer_limit else None
        return _Peer(bucket)


def _sample(old: float | None, nbytes: int, elapsed: float) -> float | None:
    if elapsed < _MIN_SAMPLE:
        return old
    rate = nbytes / elapsed
    return rate if old is None else old + _EWMA * (rate - old)


class _Ticket:
    """The scheduler token for one permit: its future, and whether its slot is back."""

    __slots__ = ("finished", "fut", "nbytes", "peer", "released")

    def __init__(self, fut: asyncio.Future[None], peer: str, nbytes: int) -> None:
        self.fut = fut
        self.peer = peer
        self.nbytes = nbytes
        self.released = False
        self.finished = False


class BandwidthGate:
    """asyncio adapter over a :class:`LinkScheduler` (uses the event loop's clock).

    ``async with gate.permit(peer, cls, nbytes): await send(...)`` waits for the scheduler
    to release the send, and reports it done when the block exits; the send inside should
    await the transport's drain so that completion means the bytes left. Cancelling a
    waiting permit withdraws it; an exception in the block frees the slot unmeasured.
    """

    def __init__(self, scheduler: LinkScheduler) -> None:
        self.scheduler = scheduler
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    @contextlib.asynccontextmanager
    async def permit(self, peer: str, cls: str, nbytes: int) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        ticket = _Ticket(loop.create_future(), peer, nbytes)
        self.scheduler.enqueue(peer, cls, nbytes, ticket, loop.time())
        self._pump()
        try:
            await ticket.fut
        except BaseException:
            if ticket.released:
                self._finish(ticket, measured=False)
            else:
                self.scheduler.cancel(ticket)
            self._pump()
            raise
        ok = False
        try:
            yield
            ok = True
        finally:
            self._finish(ticket, measured=ok)
            self._pump()

    def close(self) -> None:
        """Stop the wake-up timer (the gate can still be used; it re-arms on demand)."""
        if self._timer:
            self._timer.cancel()
        self._timer, self._timer_at = None, math.inf

    def _finish(self, ticket: _Ticket, *, measured: bool) -> None:
        if not ticket.finished:
            ticket.finished = True
            now = asyncio.get_running_loop().time()
            self.scheduler.on_sent(ticket.peer, ticket.nbytes, now, measured=measured)

    def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        tokens, delay = self.scheduler.poll(now)
        for t in cast("list[_Ticket]", tokens):
            t.released = True
            if t.fut.done():  # its waiter was cancelled in the meantime: slot back
                self._finish(t, measured=False)
            else:
                t.fut.set_result(None)
        if delay is None:
            return
        when = now + delay
        if self._timer is not None and self._timer_at <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, math.inf
        self._pump()
