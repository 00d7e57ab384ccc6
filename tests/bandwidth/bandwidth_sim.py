"""Virtual-time driver for LinkScheduler: peers' links as FIFO servers, no asyncio.

Each peer's link sends released items one after another at ``capacity`` bytes/s (``inf``
= instantly) and reports each completion with ``on_sent``, as the asyncio gate does. The
driver polls after every event and when the scheduler asks to be woken.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

from agent.bandwidth import LinkScheduler

KIB = 1024
MIB = 1024 * KIB


@dataclass
class Send:
    tag: object
    peer: str
    cls: str
    nbytes: int
    enqueued: float
    released: float = math.nan
    done: float = math.nan


@dataclass
class VirtualLinks:
    sched: LinkScheduler
    capacity: dict[str, float] = field(default_factory=dict)  # per peer; default inf
    now: float = 0.0
    log: list[Send] = field(default_factory=list)  # in release order
    max_in_flight: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._events: list[tuple[float, int, str, object]] = []
        self._seq = 0
        self._busy: dict[str, float] = {}
        self._sends: dict[int, Send] = {}
        self._in_flight: dict[str, int] = {}
        self._wake_at = math.inf  # one armed wake-up, like the gate's timer

    def _push(self, t: float, kind: str, arg: object = None) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, self._seq, kind, arg))

    def enqueue_at(self, t: float, peer: str, cls: str, nbytes: int, tag: object = None) -> Send:
        send = Send(tag, peer, cls, nbytes, t)
        self._push(t, "enqueue", send)
        return send

    def run(self, until: float) -> None:
        """Process events up to virtual time ``until``."""
        while self._events and self._events[0][0] <= until:
            self.now, _, kind, arg = heapq.heappop(self._events)
            if kind == "enqueue":
                assert isinstance(arg, Send)
                self._sends[id(arg)] = arg
                self.sched.enqueue(arg.peer, arg.cls, arg.nbytes, arg, self.now)
            elif kind == "done":
                assert isinstance(arg, Send)
                arg.done = self.now
                self._in_flight[arg.peer] -= 1
                self.sched.on_sent(arg.peer, arg.nbytes, self.now)
            elif kind == "wake" and self.now >= self._wake_at:
                self._wake_at = math.inf
            if self._events and self._events[0][0] == self.now:
                continue  # finish this instant first
            tokens, delay = self.sched.poll(self.now)
            for tok in tokens:
                assert isinstance(tok, Send)
                tok.released = self.now
                self.log.append(tok)
                cap = self.capacity.get(tok.peer, math.inf)
                start = max(self.now, self._busy.get(tok.peer, 0.0))
                end = start + (tok.nbytes / cap if cap < math.inf else 0.0)
                self._busy[tok.peer] = end
                n = self._in_flight[tok.peer] = self._in_flight.get(tok.peer, 0) + 1
                self.max_in_flight[tok.peer] = max(self.max_in_flight.get(tok.peer, 0), n)
                self._push(end, "done", tok)
            if delay is not None and self.now + delay < self._wake_at:
                self._wake_at = self.now + delay
                self._push(self._wake_at, "wake")
        self.now = until

    def bytes_by(self, attr: str, since: float = 0.0, until: float = math.inf) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.log:
            if since <= s.released < until:
                key = getattr(s, attr)
                out[key] = out.get(key, 0) + s.nbytes
        return out


def bucket_respected(times_sizes: list[tuple[float, int]], rate: float, burst: float) -> bool:
    """True if the sends fit a (burst, rate) envelope: over every interval t, at most
    rate * t + burst bytes. Checked by replaying a token bucket that must never go below 0."""
    tokens, last = burst, None
    for t, n in times_sizes:
        if last is not None:
            tokens = min(burst, tokens + (t - last) * rate)
        last = t
        tokens -= n
        if tokens < -1e-6:
            return False
    return True
