"""N-gram statistics over the access log, and the privacy release of what may be shared.

Pure: records in, an :class:`~agent.usage.aggregate.Aggregate` out. Two releases, with the
guarantees docs/privacy.md states precisely:

* :func:`release_k` (default) — **k-anonymity threshold**: an n-gram (n <= 3, consecutive
  requests of one requester within ``session_gap``) is shared only when at least *k*
  distinct requesters produced it within one key epoch (requester hashes are only
  comparable inside an epoch: see :mod:`agent.usage.requester`). Its count is the number of
  (requester, epoch) pairs that produced it: one requester repeating a transition a
  thousand times counts once per epoch, so a count never reveals one person's habits.
  Heat (decayed access count) is shared only for resources whose 1-gram passed.
* :func:`release_dp` — **(ε, δ)-differential privacy per period** (one key epoch), on top of
  the threshold: each requester contributes to at most *m* distinct n-grams in the period;
  each n-gram's count of distinct requesters gets two-sided geometric noise with
  α = exp(-ε/m) and is released only if the true count is >= k *and* the noisy count is >=
  τ = k + t, t from :func:`dp_threshold`. The noise is drawn once per period (the service
  caches the release), so repeating it costs no budget.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

from agent.usage.aggregate import Aggregate, Gram, cap_grams
from agent.usage.record import AccessRecord
from agent.usage.temperature import Temperature

__all__ = ["GramStats", "SharePolicy", "dp_threshold", "release_dp", "release_k",
           "two_sided_geometric"]

MAX_N = 3


@dataclass(frozen=True)
class SharePolicy:
    k: int = 3
    epsilon: float = 0.0  # 0 = k-anonymity only
    delta: float = 1e-6
    max_grams_per_requester: int = 4  # m: the contribution bound (DP)
    top_n: int = 8  # next resources kept per context
    max_grams: int = 2048
    session_gap: float = 1800.0  # a longer pause starts a new sequence
    half_life: float = 3600.0


class GramStats:
    """Who produced which n-gram, per key epoch; bounded in every dimension.

    Memory is what bounds this on a Pi (a full 4 MiB log is ~60 000 records): resource IDs
    and requester hashes are interned (one object each, however often they occur), and an
    (n-gram, epoch) produced by a single requester, the common case, holds that requester
    itself instead of a set. Without a contribution cap (the k-anonymity release), a full
    table forgets the n-grams with a single producer (the least likely to reach k;
    forgetting only ever under-counts, the safe direction for the threshold).
    """

    def __init__(self, *, session_gap: float, half_life: float,
                 per_requester_cap: int | None = None, max_tracked: int = 32_768,
                 max_requesters: int = 10_000, max_heat: int = 4096) -> None:
        self.session_gap = session_gap
        self.cap = per_requester_cap
        # With a contribution cap (DP) the table can hold every n-gram of every tracked
        # requester, so no n-gram is ever forgotten or refused: which n-grams are counted
        # must not depend on other requesters' data, or one requester could change many
        # counts (docs/privacy.md, guarantee 2).
        if per_requester_cap is not None:
            max_tracked = per_requester_cap * max_requesters
        self.max_tracked = max_tracked
        self.max_requesters = max_requesters
        # (gram, epoch) -> the requester hash, or the set of them once there are several
        self._producers: dict[tuple[Gram, int], bytes | set[bytes]] = {}
        self._history: dict[tuple[int, bytes], tuple[float, tuple[str, ...]]] = {}
        self._contributed: dict[tuple[int, bytes], set[Gram]] = defaultdict(set)
        self._names: dict[bytes, str] = {}
        self._who: dict[bytes, bytes] = {}
        self.heat = Temperature(half_life, max_items=max_heat)
        self.overflow = 0  # n-grams or requesters not tracked because a bound was reached
        self.records = 0

    def add(self, rec: AccessRecord) -> None:
        self.records += 1
        r = self._names.get(rec.resource)
        if r is None:
            r = rec.resource.hex()
            if len(self._names) < self.max_tracked:  # else uncached: never a dropped record
                self._names[rec.resource] = r
        requester = self._who.setdefault(rec.requester, rec.requester)
        self.heat.observe(r, rec.time)
        who = (rec.epoch, requester)
        last = self._history.get(who)
        if last is None and len(self._history) >= self.max_requesters:
            self.overflow += 1
            return
        prev: tuple[str, ...] = ()
        if last is not None and 0 <= rec.time - last[0] <= self.session_gap:
            prev = last[1]
        self._history[who] = (rec.time, (*prev, r)[-(MAX_N - 1):])
        for n in range(1, min(MAX_N, len(prev) + 1) + 1):
            self._count((*prev[len(prev) - (n - 1):], r) if n > 1 else (r,), who)

    def _count(self, gram: Gram, who: tuple[int, bytes]) -> None:
        epoch, requester = who
        if self.cap is not None:
            mine = self._contributed[who]
            if gram not in mine:
                if len(mine) >= self.cap:
                    return
                mine.add(gram)
        key = (gram, epoch)
        held = self._producers.get(key)
        if held is None:
            if (len(self._producers) >= self.max_tracked
                    and (self.cap is not None or not self._forget_singletons())):
                self.overflow += 1
                return
            self._producers[key] = requester
        elif isinstance(held, bytes):
            if held != requester:
                self._producers[key] = {held, requester}
        else:
            held.add(requester)

    def _forget_singletons(self) -> bool:
        single = [k for k, held in self._producers.items() if isinstance(held, bytes)]
        for k in single:
            del self._producers[k]
        self.overflow += len(single)
        return bool(single)

    def items(self) -> Iterator[tuple[Gram, int, int]]:
        """(n-gram, epoch, distinct requesters) for everything tracked."""
        for (gram, epoch), held in self._producers.items():
            yield gram, epoch, 1 if isinstance(held, bytes) else len(held)

    def counts(self) -> dict[Gram, dict[int, int]]:
        """Per n-gram, per epoch, how many distinct requesters produced it (for tests and
        diagnostics: the releases use :meth:`items`, which builds nothing)."""
        out: dict[Gram, dict[int, int]] = defaultdict(dict)
        for gram, epoch, n in self.items():
            out[gram][epoch] = n
        return out

    def distinct(self, gram: Gram) -> int:
        """The most distinct requesters that produced *gram* within one epoch."""
        return max(self.counts().get(gram, {}).values(), default=0)


def release_k(stats: GramStats, policy: SharePolicy, now: float) -> Aggregate:
    """The k-anonymity release of everything in *stats*, as of *now*."""
    best: dict[Gram, int] = {}
    total: dict[Gram, int] = {}
    for g, _epoch, n in stats.items():
        best[g] = max(best.get(g, 0), n)
        total[g] = total.get(g, 0) + n
    grams = {g: total[g] for g, n in best.items() if n >= policy.k}
    grams = cap_grams(grams, top_n=policy.top_n, max_grams=policy.max_grams)
    heat = {g[0]: round(stats.heat.value(g[0], now), 6) for g in grams if len(g) == 1}
    return Aggregate(now, policy.k, 0.0, grams, {r: h for r, h in heat.items() if h > 0})


def dp_threshold(k: int, epsilon: float, delta: float, m: int) -> int:
    """τ: the noisy count an n-gram needs, so that the chance that any of a requester's *m*
    n-grams is released only because of them is at most δ: m·α^(τ-k)/(1+α) <= δ."""
    alpha = math.exp(-epsilon / m)
    t = math.ceil(math.log(delta * (1 + alpha) / m) / math.log(alpha))
    return k + max(1, t)


def two_sided_geometric(alpha: float, rng: random.Random) -> int:
    """Z with P(Z = z) = (1-α)/(1+α)·α^|z| (the difference of two geometric draws)."""
    def geometric() -> int:
        u = 1.0 - rng.random()  # (0, 1]
        return math.floor(math.log(u) / math.log(alpha))
    return geometric() - geometric()


def release_dp(stats: GramStats, policy: SharePolicy, epoch: int, period_end: float,
               rng: random.Random) -> Aggregate:
    """The (ε, δ)-DP release of key epoch *epoch* (stats must have been built with
    ``per_requester_cap = policy.max_grams_per_requester``)."""
    if stats.cap is None or stats.cap > policy.max_grams_per_requester:
        raise ValueError("DP release needs stats built with the policy's contribution cap")
    m = policy.max_grams_per_requester
    alpha = math.exp(-policy.epsilon / m)
    tau = dp_threshold(policy.k, policy.epsilon, policy.delta, m)
    grams: dict[Gram, int] = {}
    passing = sorted((g, n) for g, e, n in stats.items() if e == epoch and n >= policy.k)
    for g, c in passing:  # sorted: the noise draws do not depend on dict order
        noisy = c + two_sided_geometric(alpha, rng)
        if noisy >= tau:
            grams[g] = noisy
    grams = cap_grams(grams, top_n=policy.top_n, max_grams=policy.max_grams)
    heat = {g[0]: float(c) for g, c in grams.items() if len(g) == 1}
    return Aggregate(period_end, policy.k, policy.epsilon, grams, heat)
