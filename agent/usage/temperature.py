"""Resource temperature: exponentially decayed access frequency, and what it buys.

An access at time t adds 1 to a resource's temperature; the temperature halves every
``half_life`` seconds: T(r, now) = Σ_i 2^(-(now - t_i) / half_life). Kept incrementally as
(value, as of) per resource, so an access costs O(1). Everything here is pure and
deterministic: time is always passed in (wall-clock seconds), never read.

* :class:`Temperature` — this device's temperatures (bounded: the coldest are forgotten).
* :func:`mesh_temperature` — this device's plus what paired peers shared (their heat,
  decayed from the time they stated, which is clamped so a skewed clock cannot inflate it).
* :func:`prefetch_budget` — maps a temperature to a prefetch budget: a cold resource gets
  the base, a hot one approaches the maximum (half the extra at ``hot``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["PrefetchBudget", "Temperature", "decay", "mesh_temperature", "prefetch_budget"]


def decay(value: float, dt: float, half_life: float) -> float:
    """*value* after *dt* seconds of halving every *half_life* (dt < 0 counts as 0)."""
    if dt <= 0:
        return value
    return value * math.pow(2.0, -dt / half_life)


class Temperature:
    """Decayed access counts per resource; at most *max_items* are remembered."""

    def __init__(self, half_life: float, max_items: int = 4096) -> None:
        if not half_life > 0 or max_items < 1:
            raise ValueError("half_life must be > 0 and max_items >= 1")
        self.half_life = half_life
        self.max_items = max_items
        self._items: dict[str, tuple[float, float]] = {}  # resource -> (value, as of)

    def __len__(self) -> int:
        return len(self._items)

    def observe(self, resource: str, t: float, weight: float = 1.0) -> None:
        """One access (or *weight* accesses) at time *t*."""
        value, at = self._items.get(resource, (0.0, t))
        if t >= at:
            value, at = decay(value, t - at, self.half_life) + weight, t
        else:  # an older access arriving late: decay it to our reference time instead
            value += decay(weight, at - t, self.half_life)
        self._items[resource] = (value, at)
        if len(self._items) > self.max_items:
            self._evict(t, resource)

    def value(self, resource: str, now: float) -> float:
        item = self._items.get(resource)
        if item is None:
            return 0.0
        return decay(item[0], now - item[1], self.half_life)

    def items(self, now: float) -> dict[str, float]:
        return {r: decay(v, now - at, self.half_life) for r, (v, at) in self._items.items()}

    def hottest(self, n: int, now: float) -> list[tuple[str, float]]:
        """The *n* hottest resources, hottest first (ties by resource ID)."""
        return sorted(self.items(now).items(), key=lambda kv: (-kv[1], kv[0]))[:n]

    def _evict(self, now: float, spare: str) -> None:
        """Forget the coldest tenth at once (amortised: not a scan per access); never the
        resource just accessed, or a newcomer could never get in."""
        keep = max(1, self.max_items - max(1, self.max_items // 10))
        coldest = sorted((kv for kv in self.items(now).items() if kv[0] != spare),
                         key=lambda kv: (kv[1], kv[0]))
        for r, _ in coldest[: len(self._items) - keep]:
            del self._items[r]

    @classmethod
    def from_accesses(cls, accesses: Iterable[tuple[str, float]], half_life: float,
                      max_items: int = 4096) -> Temperature:
        temp = cls(half_life, max_items)
        for resource, t in accesses:
            temp.observe(resource, t)
        return temp


@dataclass(frozen=True)
class PeerHeat:
    """What one peer stated: heat per resource as of its time *at* (wall-clock)."""

    at: float
    heat: Mapping[str, float]


def mesh_temperature(local: Temperature, peers: Iterable[PeerHeat], resource: str,
                     now: float) -> float:
    """This device's temperature of *resource* plus every peer's shared heat, decayed with
    the local half-life from the peer's stated time. A stated time in the future counts as
    *now*: a peer's fast clock must not make its heat look fresher than it is."""
    total = local.value(resource, now)
    for p in peers:
        h = p.heat.get(resource)
        if h:
            total += decay(h, now - min(p.at, now), local.half_life)
    return total


@dataclass(frozen=True)
class PrefetchBudget:
    bytes: int
    depth: int  # how many predicted next resources may be prefetched


def prefetch_budget(temperature: float, *, base_bytes: int, max_bytes: int, hot: float,
                    base_depth: int = 1, max_depth: int = 4) -> PrefetchBudget:
    """A budget that grows with temperature: T = 0 gives the base, T = *hot* gives half way
    to the maximum, T → ∞ approaches the maximum (a saturating curve, so one runaway
    resource cannot take the whole budget: f = T / (T + hot))."""
    if hot <= 0 or max_bytes < base_bytes or max_depth < base_depth:
        raise ValueError("need hot > 0, max_bytes >= base_bytes, max_depth >= base_depth")
    if not temperature > 0:  # zero, negative or NaN: cold
        f = 0.0
    elif math.isinf(temperature):
        f = 1.0
    else:
        f = temperature / (temperature + hot)
    return PrefetchBudget(base_bytes + int((max_bytes - base_bytes) * f),
                          base_depth + int((max_depth - base_depth) * f + 0.5))
