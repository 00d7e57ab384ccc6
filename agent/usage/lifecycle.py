"""Model lifecycle decisions (pure): who trains, when to retrain, which model to use.

The design is docs/prediction-lifecycle.md; these are its decisions as pure functions, so
the service that will run them (reports carrying headroom, the model published as a signed
resource) can be wired without re-deciding anything, and a simulation can drive them.
Nothing here trains or moves a model.

* :func:`choose_trainer` — the device with the most CPU headroom × training budget among
  those on mains power (or charging above half), with hysteresis so the role does not flap.
* :func:`drift` — how far the merged next-resource distributions moved since the model was
  trained (mass-weighted Jensen–Shannon divergence, in bits, 0..1).
* :func:`should_retrain` — drifted or old, but never more often than the minimum interval,
  and never beyond the budget.
* :func:`choose_model` — with several model versions on offer (a partition healed), the
  newest by the elected trainer, else the newest; none: fall back to the counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from agent.usage.aggregate import MeshCounts

__all__ = ["ModelOffer", "TrainerCandidate", "choose_model", "choose_trainer", "drift",
           "should_retrain"]

POWER_STATES = ("mains", "charging", "battery")


@dataclass(frozen=True)
class TrainerCandidate:
    device_id: str
    cpu_headroom: float  # 1 - load/cores, 0..1
    power: str  # "mains", "charging" or "battery"
    battery: float  # 0..1 (1.0 on mains)
    budget_s: float  # CPU-seconds per day it accepts to spend training

    @property
    def eligible(self) -> bool:
        return (self.budget_s > 0 and self.cpu_headroom > 0 and
                (self.power == "mains" or (self.power == "charging" and self.battery >= 0.5)))

    @property
    def score(self) -> float:
        return max(0.0, min(1.0, self.cpu_headroom)) * self.budget_s


def choose_trainer(candidates: Iterable[TrainerCandidate], incumbent: str | None, *,
                   hysteresis: float = 0.15) -> str | None:
    """The device that should train: the eligible one with the best score (ties: lowest
    device ID); the incumbent keeps the role while eligible unless beaten by more than
    *hysteresis* (a relative margin). None when nobody is eligible."""
    eligible = sorted((c for c in candidates if c.eligible),
                      key=lambda c: (-c.score, c.device_id))
    if not eligible:
        return None
    best = eligible[0]
    current = next((c for c in eligible if c.device_id == incumbent), None)
    if current is not None and best.score <= current.score * (1.0 + hysteresis):
        return current.device_id
    return best.device_id


def _js(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Jensen–Shannon divergence of two distributions, in bits (0..1)."""
    out = 0.0
    for r in set(p) | set(q):
        a, b = p.get(r, 0.0), q.get(r, 0.0)
        m = (a + b) / 2
        if a > 0:
            out += a / 2 * math.log2(a / m)
        if b > 0:
            out += b / 2 * math.log2(b / m)
    return max(0.0, min(1.0, out))


def _dist(rows: Sequence[tuple[str, int]]) -> tuple[dict[str, float], int]:
    total = sum(c for _, c in rows)
    return ({r: c / total for r, c in rows} if total else {}), total


def drift(old: MeshCounts, new: MeshCounts) -> float:
    """How much the next-resource distributions changed, 0 (same) to 1 (disjoint): the JS
    divergence per context, weighted by the context's share of the counts (old and new
    together). A context present on one side only counts as fully changed."""
    weights: dict[tuple[str, ...], int] = {}
    per: dict[tuple[str, ...], float] = {}
    for ctx in set(old.next) | set(new.next):
        p, np_ = _dist(old.next.get(ctx, ()))
        q, nq = _dist(new.next.get(ctx, ()))
        weights[ctx] = np_ + nq
        per[ctx] = 1.0 if not p or not q else _js(p, q)
    total = sum(weights.values())
    if total == 0:
        return 0.0
    return sum(per[c] * w for c, w in weights.items()) / total


def should_retrain(*, drift_bits: float, since_last_s: float | None, budget_left_s: float,
                   estimated_cost_s: float, threshold: float = 0.1,
                   min_interval_s: float = 6 * 3600.0, max_age_s: float = 86400.0
                   ) -> tuple[bool, str]:
    """Whether the trainer should train now, and why (for the log)."""
    if estimated_cost_s > budget_left_s:
        return False, "over today's training budget"
    if since_last_s is None:
        return True, "no model yet"
    if since_last_s < min_interval_s:
        return False, "trained less than the minimum interval ago"
    if drift_bits > threshold:
        return True, f"usage drifted ({drift_bits:.2f} bits > {threshold})"
    if since_last_s >= max_age_s:
        return True, "the model is older than the maximum age"
    return False, "the model still fits"


@dataclass(frozen=True)
class ModelOffer:
    """One version of the model resource a device could use (its manifest verified)."""

    version: int
    publisher: str  # device ID hex of the trainer that signed it
    trusted: bool  # publisher is paired (or this device)


def choose_model(offers: Iterable[ModelOffer], trainer: str | None) -> ModelOffer | None:
    """Which model to run: among trusted offers, the newest by the elected trainer, else the
    newest (ties: lowest publisher ID). None: no model, use the merged counts."""
    trusted = [o for o in offers if o.trusted]
    if not trusted:
        return None
    mine = [o for o in trusted if o.publisher == trainer]
    pool = mine or trusted
    return max(pool, key=lambda o: (o.version, [-ord(ch) for ch in o.publisher]))
