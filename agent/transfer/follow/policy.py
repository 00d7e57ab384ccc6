"""When to bring each followed resource up to date: a pure policy, driven by a clock.

Why pure: the decisions (sync now because a paired peer announced v7; check on reconnect;
check every ten minutes anyway; back off after a failure; never more than two syncs at
once) are what can go wrong at scale — a storm of checks after a Wi-Fi blip, a follower
that never catches up because one announcement was lost. They are tested here with a
seeded simulation in virtual time (tests/transfer/test_follow_policy.py); the asyncio
adapter (agent/transfer/follow/service.py) only runs what :meth:`FollowPolicy.due` returns.

Three triggers, all bounded:

* **announcement** — a paired session pushed a verified version record newer than the
  held version: sync as soon as a slot is free (backoff after failures still applies);
* **catch-up** — a paired session opened: check every followed resource, at most once per
  :attr:`catchup_gap` seconds per resource (reconnect storms cost nothing extra);
* **periodic** — every :attr:`interval` seconds (±10 % jitter, so followers do not check in
  step), in case an announcement and a catch-up were both missed.

A sync that fails is retried with exponential backoff (``retry_base`` · 2^n, capped at
``retry_max``) while a newer version is known to exist; otherwise the next periodic check
retries. At most ``max_in_flight`` syncs run at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["FollowPolicy"]

ANNOUNCED, CATCHUP, PERIODIC, FIRST, RETRY = "announced", "catch-up", "periodic", "first", \
    "retry"


@dataclass
class _Track:
    held: int
    target: int = 0  # newest version a paired peer announced (0: none)
    pending: str = ""  # why a sync is wanted now ("" = none)
    next_check: float = 0.0
    retry_at: float = 0.0
    last_check: float = float("-inf")
    failures: int = 0
    in_flight: bool = False
    syncs: int = 0


class FollowPolicy:
    """Per followed resource: the version held, the newest announced, when to check."""

    def __init__(self, *, interval: float = 600.0, catchup_gap: float = 30.0,
                 retry_base: float = 5.0, retry_max: float = 600.0, max_in_flight: int = 2,
                 jitter: float = 0.1, rng: random.Random | None = None) -> None:
        if interval <= 0 or retry_base <= 0 or retry_max < retry_base or max_in_flight < 1:
            raise ValueError("follow policy: intervals must be positive, max_in_flight >= 1")
        self.interval = interval
        self.catchup_gap = catchup_gap
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.max_in_flight = max_in_flight
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._t: dict[str, _Track] = {}

    # -- the followed set ------------------------------------------------------------------
    def track(self, rid: str, held: int, now: float) -> None:
        """Start following *rid* (held at version *held*): check once right away."""
        if rid not in self._t:
            self._t[rid] = _Track(held, pending=FIRST, next_check=self._next(now))

    def untrack(self, rid: str) -> None:
        self._t.pop(rid, None)

    def tracked(self) -> list[str]:
        return list(self._t)

    def held(self, rid: str) -> int | None:
        t = self._t.get(rid)
        return None if t is None else t.held

    # -- triggers ----------------------------------------------------------------------------
    def announced(self, rid: str, version: int, now: float) -> bool:
        """A paired peer announced (verified) *version* of *rid*; True if it is news (newer
        than held and than any announced before): then a sync is queued."""
        t = self._t.get(rid)
        if t is None or version <= max(t.held, t.target):
            return False
        t.target = version
        t.pending = ANNOUNCED
        t.failures = 0  # a new version may well be fetchable where the old one failed
        t.retry_at = now
        return True

    def connected(self, now: float) -> list[str]:
        """A paired session opened: the resources queued for a catch-up check."""
        out = []
        for rid, t in self._t.items():
            if not t.pending and now - t.last_check >= self.catchup_gap:
                t.pending = CATCHUP
                out.append(rid)
        return out

    # -- what to do now ------------------------------------------------------------------------
    def due(self, now: float) -> list[tuple[str, str]]:
        """Syncs to start now, as (resource ID, why), within the concurrency bound; each is
        marked in flight until :meth:`done`."""
        free = self.max_in_flight - sum(1 for t in self._t.values() if t.in_flight)
        if free <= 0:
            return []
        ready: list[tuple[int, float, str, str]] = []
        for rid, t in self._t.items():
            if t.in_flight or t.retry_at > now:
                continue
            if t.pending:
                rank = 0 if t.pending == ANNOUNCED else 1
                ready.append((rank, t.last_check, rid, t.pending))
            elif t.next_check <= now:
                ready.append((2, t.last_check, rid, PERIODIC))
        ready.sort()
        out = []
        for _rank, _last, rid, why in ready[:free]:
            t = self._t[rid]
            t.in_flight = True
            t.syncs += 1
            out.append((rid, why))
        return out

    def done(self, rid: str, held: int | None, now: float, ok: bool) -> None:
        """A sync ended: *held* is the version held now (None: unknown/unchanged)."""
        t = self._t.get(rid)
        if t is None:
            return
        t.in_flight = False
        t.last_check = now
        if held is not None:
            t.held = max(t.held, held)
        t.next_check = self._next(now)
        if ok:
            t.failures = 0
            t.retry_at = now
        else:
            t.failures += 1
            back = min(self.retry_max, self.retry_base * 2 ** min(t.failures - 1, 30))
            t.retry_at = now + back * (1 + self._rng.uniform(0, self.jitter))
        # still behind a version a paired peer announced: try again (after any backoff)
        t.pending = RETRY if t.target > t.held else ""

    def next_wakeup(self, now: float) -> float | None:
        """The earliest time :meth:`due` may return something (None: nothing tracked)."""
        times = []
        for t in self._t.values():
            if t.in_flight:
                continue
            times.append(max(t.retry_at, now) if t.pending else max(t.next_check, t.retry_at))
        return min(times) if times else None

    def status(self, rid: str, now: float) -> dict[str, object]:
        t = self._t.get(rid)
        if t is None:
            return {}
        return {"held": t.held, "announced": t.target or None, "pending": t.pending or None,
                "syncing": t.in_flight, "failures": t.failures,
                "next_check_s": round(max(0.0, t.next_check - now), 1), "syncs": t.syncs}

    def _next(self, now: float) -> float:
        return now + self.interval * (1 + self._rng.uniform(-self.jitter, self.jitter))
