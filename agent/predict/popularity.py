"""Decayed popularity: what the whole mesh asks for most, recent requests weighing more.

Why: it is the cold-start answer (a device that has just joined has no context, but the mesh
knows what is hot) and the baseline every sequence model must beat. It is also the resource
temperature's shape: an exponentially decayed access count with half-life *half_life_s*.

The trick that keeps it cheap: a decayed count ``sum(exp(-(now - t_i) / tau))`` ranks resources
the same way at every ``now`` as ``log(sum(exp(t_i / tau)))``, a value that only grows when the
resource is asked for. So each request updates one number, and the top list is maintained
incrementally instead of re-sorting the table per prediction.
"""

from __future__ import annotations

import math
from collections.abc import Container

from agent.predict.base import Ranked, deep_size


def _logaddexp(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    return a + math.log1p(math.exp(b - a))


class Popularity:
    """Mesh-wide decayed request counts; the same ranking for every device."""

    name = "popularity"

    def __init__(self, half_life_s: float = 3600.0, max_resources: int = 4096,
                 top: int = 64) -> None:
        if half_life_s <= 0 or max_resources < 1 or top < 1:
            raise ValueError("popularity bounds must be positive")
        self.tau = half_life_s / math.log(2)
        self.max_resources = max_resources
        self.top_size = min(top, max_resources)
        self._lw: dict[str, float] = {}  # resource -> log of its time-scaled count
        self._top: list[str] = []  # best first, at most top_size
        self._t0: float | None = None  # time origin keeps exponents small
        self._now = 0.0
        self._total: float | None = None  # log of the time-scaled count of all requests

    def observe(self, device: str, resource: str, t: float, size: int) -> None:
        if self._t0 is None:
            self._t0 = t
        self._now = max(self._now, t)
        x = (t - self._t0) / self.tau
        lw = self._lw
        lw[resource] = _logaddexp(lw[resource], x) if resource in lw else x
        self._total = x if self._total is None else _logaddexp(self._total, x)
        if len(lw) > self.max_resources + self.max_resources // 4:
            self._prune()
        self._promote(resource)

    def _promote(self, resource: str) -> None:
        top, lw = self._top, self._lw
        if resource in top:
            top.remove(resource)
        elif len(top) >= self.top_size and lw[resource] <= lw[top[-1]]:
            return
        score = lw[resource]
        i = 0
        while i < len(top) and lw[top[i]] >= score:
            i += 1
        top.insert(i, resource)
        del top[self.top_size:]

    def _prune(self) -> None:
        keep = sorted(self._lw.items(), key=lambda kv: (-kv[1], kv[0]))[: self.max_resources]
        self._lw = dict(keep)
        self._top = [r for r in self._top if r in self._lw]

    def temperature(self, resource: str) -> float:
        """Decayed request count of *resource* at the latest observed time."""
        if resource not in self._lw or self._t0 is None:
            return 0.0
        return math.exp(self._lw[resource] - (self._now - self._t0) / self.tau)

    def predict(self, device: str, k: int, exclude: Container[str] = ()) -> Ranked:
        """The most popular resources; score = share of the mesh's decayed request mass."""
        total = self._total
        if total is None:
            return []
        out: Ranked = []
        for resource in self._top:
            if resource in exclude:
                continue
            out.append((resource, min(1.0, math.exp(self._lw[resource] - total))))
            if len(out) >= k:
                break
        return out

    def state_size(self) -> int:
        return len(self._lw) + len(self._top)

    def max_state(self) -> int:
        return self.max_resources + self.max_resources // 4 + self.top_size

    def memory_bytes(self) -> int:
        return deep_size(self._lw, self._top)

    def context_bytes(self) -> int:
        return 0
