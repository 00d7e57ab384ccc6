"""The shared aggregate: what one device tells its paired peers about the requests it saw.

Never a request sequence: only n-gram counts (n <= 3) over resource IDs that passed the
privacy release (:mod:`agent.usage.ngrams`), and a heat per resource (decayed frequency).
This module is the wire schema (strict both ways: a hostile aggregate is rejected whole,
with the reason) and the pure, bounded merge of several peers' aggregates.

Wire form (JSON, resource IDs listed once and referred to by index)::

    {"v": 1, "t": <sender wall-clock s>, "k": <k>, "e": <epsilon, 0 = none>,
     "r": ["<32 hex>", ...],
     "g": [[count, i_1, ..., i_n], ...],      n in 1..3: context i_1..i_(n-1), next i_n
     "h": [[i, heat], ...]}
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAX_GRAMS",
    "MAX_RESOURCES",
    "Aggregate",
    "AggregateError",
    "MeshCounts",
    "cap_grams",
    "merge",
    "parse_aggregate",
    "to_wire",
]

VERSION = 1
MAX_GRAMS = 4096
MAX_RESOURCES = 4096
MAX_N = 3
MAX_COUNT = 2**31
MAX_HEAT = 1e9
MAX_TIME = 2.0**40
_KEYS = frozenset({"v", "t", "k", "e", "r", "g", "h"})

Gram = tuple[str, ...]


class AggregateError(ValueError):
    """A received aggregate does not follow the schema (the whole message is rejected)."""


@dataclass(frozen=True)
class Aggregate:
    at: float  # the sender's wall-clock time the counts and heat refer to
    k: int  # each shared n-gram was produced by >= k distinct requesters at the sender
    epsilon: float  # > 0: counts carry geometric noise of this per-period budget
    grams: Mapping[Gram, int] = field(default_factory=dict)
    heat: Mapping[str, float] = field(default_factory=dict)


def _is_rid(v: object) -> bool:
    return (isinstance(v, str) and len(v) == 32
            and all(c in "0123456789abcdef" for c in v))


def to_wire(agg: Aggregate) -> dict[str, Any]:
    """The JSON form (deterministic order)."""
    rids = sorted({r for g in agg.grams for r in g} | set(agg.heat))
    index = {r: i for i, r in enumerate(rids)}
    grams = sorted(([c, *(index[r] for r in g)] for g, c in agg.grams.items()),
                   key=lambda row: (-row[0], row[1:]))
    heat = sorted(([index[r], h] for r, h in agg.heat.items()), key=lambda row: row[0])
    return {"v": VERSION, "t": agg.at, "k": agg.k, "e": agg.epsilon, "r": rids, "g": grams,
            "h": heat}


def _num(v: object, lo: float, hi: float, what: str, *, integer: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
        raise AggregateError(f"{what} must be a {'whole ' if integer else ''}number")
    if not (math.isfinite(v) and lo <= v <= hi):
        raise AggregateError(f"{what} out of range")
    return v


def parse_aggregate(obj: object) -> Aggregate:
    """The strict reading of a peer's aggregate; anything unexpected raises AggregateError."""
    if not isinstance(obj, dict) or set(obj) != _KEYS:
        raise AggregateError("an aggregate is an object with keys " + ",".join(sorted(_KEYS)))
    if obj["v"] != VERSION or isinstance(obj["v"], bool):
        raise AggregateError(f"unsupported aggregate version {obj['v']!r}")
    at = float(_num(obj["t"], 0, MAX_TIME, "t"))
    k = int(_num(obj["k"], 1, 1_000_000, "k", integer=True))
    eps = float(_num(obj["e"], 0, 100, "e"))
    rids, grams_raw, heat_raw = obj["r"], obj["g"], obj["h"]
    if not isinstance(rids, list) or len(rids) > MAX_RESOURCES or not all(map(_is_rid, rids)):
        raise AggregateError(f"r must be a list of at most {MAX_RESOURCES} resource IDs")
    if len(set(rids)) != len(rids):
        raise AggregateError("r lists a resource twice")
    if not isinstance(grams_raw, list) or len(grams_raw) > MAX_GRAMS:
        raise AggregateError(f"g must be a list of at most {MAX_GRAMS} n-grams")
    if not isinstance(heat_raw, list) or len(heat_raw) > MAX_RESOURCES:
        raise AggregateError(f"h must be a list of at most {MAX_RESOURCES} entries")
    n_r = len(rids)
    grams: dict[Gram, int] = {}
    for row in grams_raw:
        if not isinstance(row, list) or not 2 <= len(row) <= MAX_N + 1:
            raise AggregateError("an n-gram is [count, index, ...] with 1 to 3 indexes")
        count = int(_num(row[0], 1, MAX_COUNT, "an n-gram count", integer=True))
        gram = tuple(rids[int(_num(i, 0, n_r - 1, "an index", integer=True))]
                     for i in row[1:])
        if gram in grams:
            raise AggregateError("an n-gram is listed twice")
        grams[gram] = count
    heat: dict[str, float] = {}
    for row in heat_raw:
        if not isinstance(row, list) or len(row) != 2:
            raise AggregateError("a heat entry is [index, heat]")
        r = rids[int(_num(row[0], 0, n_r - 1, "an index", integer=True))]
        if r in heat:
            raise AggregateError("a resource has two heat entries")
        heat[r] = float(_num(row[1], 0, MAX_HEAT, "a heat"))
    return Aggregate(at, k, eps, grams, heat)


def cap_grams(grams: Mapping[Gram, int], *, top_n: int, max_grams: int,
              top_popular: int = 256, max_resources: int = MAX_RESOURCES) -> dict[Gram, int]:
    """What fits in one aggregate, keeping the largest counts (ties broken by the n-gram,
    so the result is deterministic): at most *top_n* next resources per context (and
    *top_popular* 1-grams: the popularity a temperature is built from), *max_grams* n-grams
    in all, and no more distinct resources than a receiver accepts."""
    by_context: dict[Gram, list[tuple[int, Gram]]] = defaultdict(list)
    for g, c in grams.items():
        by_context[g[:-1]].append((c, g))
    kept = [cg for ctx, rows in by_context.items()
            for cg in sorted(rows, key=lambda cg: (-cg[0], cg[1]))[
                : top_popular if ctx == () else top_n]]
    kept.sort(key=lambda cg: (-cg[0], cg[1]))
    out: dict[Gram, int] = {}
    resources: set[str] = set()
    for c, g in kept:
        if len(out) >= max_grams:
            break
        new = set(g) - resources
        if len(resources) + len(new) > max_resources:
            continue
        resources |= new
        out[g] = c
    return out


@dataclass(frozen=True)
class MeshCounts:
    """Merged n-gram counts: per context (0 to 2 resource IDs), the top next resources."""

    next: Mapping[Gram, tuple[tuple[str, int], ...]]

    def predict(self, context: Gram, k: int) -> list[tuple[str, float]]:
        """The *k* likeliest next resources after *context* (longest known suffix first),
        with their share of that context's counts."""
        for n in range(min(len(context), MAX_N - 1), -1, -1):
            ctx = tuple(context[len(context) - n:]) if n else ()
            rows = self.next.get(ctx)
            if rows:
                total = sum(c for _, c in rows)
                return [(r, c / total) for r, c in rows[:k]]
        return []


def merge(aggregates: Iterable[Aggregate], *, top_n: int, max_contexts: int) -> MeshCounts:
    """Sum the counts of several aggregates (pure; order does not matter) and keep, per
    context, the *top_n* next resources, and the *max_contexts* contexts with the most
    counts: the result is bounded whatever the peers sent."""
    total: dict[Gram, int] = defaultdict(int)
    for agg in aggregates:
        for g, c in agg.grams.items():
            total[g] = min(MAX_COUNT * 64, total[g] + c)
    by_context: dict[Gram, list[tuple[str, int]]] = defaultdict(list)
    for g, c in total.items():
        by_context[g[:-1]].append((g[-1], c))
    ranked = sorted(by_context.items(), key=lambda kv: (-sum(c for _, c in kv[1]), kv[0]))
    return MeshCounts({ctx: tuple(sorted(rows, key=lambda rc: (-rc[1], rc[0]))[:top_n])
                       for ctx, rows in ranked[:max_contexts]})
