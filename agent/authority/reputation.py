"""Reputation: which holder of a resource should be its authority.

Pure, deterministic functions; the clock is always passed in (seconds, any epoch), so the
same inputs give the same answer on every device and in tests.

Formula (all components in [0, 1], weights from :class:`ReputationWeights`)::

    score = integrity_penalty ** integrity_failures
            * (w_usage*U + w_quality*Q + w_uptime*T + w_load*(1 - L) + w_proximity*P)
            / (w_usage + w_quality + w_uptime + w_load + w_proximity)

    U = f / (f + usage_saturation)      f = uses decayed with half-life usage_half_life_s
    Q = (q_bitrate*min(1, bitrate/ref_bitrate) + q_resolution*min(1, pixels/ref_pixels)
         + q_errors*(1 - error_rate)) / (q_bitrate + q_resolution + q_errors)
    T = uptime ratio, L = load (utilisation), both clamped to [0, 1]
    P = proximity weight of the requester (0.5 when unknown, see proximity_weight)

Integrity failures multiply (rather than add) because one holder serving corrupt data
should lose authority even if it is otherwise excellent.

Authority only moves when a challenger beats the incumbent by the hysteresis margin
(relative, default 15%): scores jitter with load and radio conditions, and every move
costs a Raft round and cache churn on every device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class ReputationWeights:
    """Every tunable of the formula, validated on construction."""

    usage: float = 0.20
    quality: float = 0.30
    uptime: float = 0.25
    load: float = 0.15
    proximity: float = 0.10
    usage_half_life_s: float = 3600.0
    usage_saturation: float = 10.0
    """Decayed use count at which the usage component reaches 0.5."""
    ref_bitrate_bps: float = 8_000_000.0
    ref_pixels: float = 1920.0 * 1080.0
    q_bitrate: float = 0.4
    q_resolution: float = 0.3
    q_errors: float = 0.3
    integrity_penalty: float = 0.5
    """Score multiplier per integrity failure (0 < p <= 1)."""
    rssi_floor_dbm: float = -90.0
    rssi_ceiling_dbm: float = -30.0
    rtt_ref_ms: float = 50.0
    """RTT at which the RTT-based proximity is 0.5."""
    unknown_proximity: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not math.isfinite(v):
                raise ValueError(f"{f.name} must be finite")
        for name in ("usage", "quality", "uptime", "load", "proximity"):
            if getattr(self, name) < 0:
                raise ValueError(f"weight {name} must be >= 0")
        if self.usage + self.quality + self.uptime + self.load + self.proximity <= 0:
            raise ValueError("at least one weight must be positive")
        if min(self.q_bitrate, self.q_resolution, self.q_errors) < 0 or (
            self.q_bitrate + self.q_resolution + self.q_errors <= 0
        ):
            raise ValueError("quality sub-weights must be >= 0 with a positive sum")
        if (
            self.usage_half_life_s <= 0
            or self.usage_saturation <= 0
            or self.ref_bitrate_bps <= 0
            or self.ref_pixels <= 0
            or self.rtt_ref_ms <= 0
        ):
            raise ValueError("half-life, saturation and references must be > 0")
        if not 0 < self.integrity_penalty <= 1:
            raise ValueError("integrity_penalty must be in (0, 1]")
        if self.rssi_floor_dbm >= self.rssi_ceiling_dbm:
            raise ValueError("rssi_floor_dbm must be below rssi_ceiling_dbm")
        if not 0 <= self.unknown_proximity <= 1:
            raise ValueError("unknown_proximity must be in [0, 1]")


DEFAULT_WEIGHTS = ReputationWeights()


def _clamp01(x: float) -> float:
    if math.isnan(x):
        raise ValueError("NaN metric")
    return 0.0 if x < 0 else 1.0 if x > 1 else x


def decay(value: float, elapsed_s: float, half_life_s: float) -> float:
    """*value* after *elapsed_s* of exponential decay (a clock going back does not grow it)."""
    if elapsed_s <= 0:
        return value
    factor: float = 2.0 ** (-elapsed_s / half_life_s)  # float ** float is typed Any (complex)
    return value * factor


@dataclass(frozen=True, slots=True)
class UsageCounter:
    """Exponentially decayed use count, kept as (value at updated_at)."""

    value: float = 0.0
    updated_at: float = 0.0

    def value_at(self, now: float, half_life_s: float) -> float:
        return decay(self.value, now - self.updated_at, half_life_s)

    def record(self, now: float, half_life_s: float, count: float = 1.0) -> UsageCounter:
        """A new counter with *count* uses added at *now*."""
        at = max(now, self.updated_at)
        return UsageCounter(self.value_at(at, half_life_s) + count, at)


@dataclass(frozen=True, slots=True)
class QualityMetrics:
    bitrate_bps: float = 0.0
    width: int = 0
    height: int = 0
    error_rate: float = 0.0
    """Fraction of requests that failed, in [0, 1]."""
    integrity_failures: int = 0
    """Chunks that failed hash verification (recent window, decided by the caller)."""


@dataclass(frozen=True, slots=True)
class HolderStats:
    """Everything the score needs about one holder of one resource."""

    usage: UsageCounter = UsageCounter()
    quality: QualityMetrics = QualityMetrics()
    uptime: float = 0.0
    """Fraction of the observation window the device was reachable, in [0, 1]."""
    load: float = 0.0
    """Current utilisation, in [0, 1]."""


def usage_component(usage: UsageCounter, now: float, w: ReputationWeights) -> float:
    f = usage.value_at(now, w.usage_half_life_s)
    return f / (f + w.usage_saturation) if f > 0 else 0.0


def quality_component(q: QualityMetrics, w: ReputationWeights) -> float:
    b = _clamp01(q.bitrate_bps / w.ref_bitrate_bps)
    r = _clamp01(max(q.width, 0) * max(q.height, 0) / w.ref_pixels)
    e = 1.0 - _clamp01(q.error_rate)
    total = w.q_bitrate + w.q_resolution + w.q_errors
    return (w.q_bitrate * b + w.q_resolution * r + w.q_errors * e) / total


def proximity_weight(
    rssi_dbm: float | None = None,
    rtt_ms: float | None = None,
    weights: ReputationWeights = DEFAULT_WEIGHTS,
) -> float:
    """Closeness of a holder to the requester, in [0, 1].

    RSSI maps linearly from floor (0) to ceiling (1); RTT maps to rtt_ref/(rtt_ref+rtt).
    With both, the smaller wins (strong radio but slow path is still slow). With neither,
    `unknown_proximity`.
    """
    parts = []
    if rssi_dbm is not None:
        span = weights.rssi_ceiling_dbm - weights.rssi_floor_dbm
        parts.append(_clamp01((rssi_dbm - weights.rssi_floor_dbm) / span))
    if rtt_ms is not None:
        parts.append(weights.rtt_ref_ms / (weights.rtt_ref_ms + max(rtt_ms, 0.0)))
    return min(parts) if parts else weights.unknown_proximity


def score_components(
    stats: HolderStats,
    now: float,
    weights: ReputationWeights = DEFAULT_WEIGHTS,
    proximity: float | None = None,
) -> dict[str, float]:
    """The five [0, 1] components and the integrity multiplier (for explanations/logs)."""
    return {
        "usage": usage_component(stats.usage, now, weights),
        "quality": quality_component(stats.quality, weights),
        "uptime": _clamp01(stats.uptime),
        "load": 1.0 - _clamp01(stats.load),
        "proximity": weights.unknown_proximity if proximity is None else _clamp01(proximity),
        "integrity": weights.integrity_penalty ** max(stats.quality.integrity_failures, 0),
    }


def reputation_score(
    stats: HolderStats,
    now: float,
    weights: ReputationWeights = DEFAULT_WEIGHTS,
    proximity: float | None = None,
) -> float:
    """Score in [0, 1] of one holder for one resource (see module docstring)."""
    c = score_components(stats, now, weights, proximity)
    total = weights.usage + weights.quality + weights.uptime + weights.load + weights.proximity
    weighted = (
        weights.usage * c["usage"]
        + weights.quality * c["quality"]
        + weights.uptime * c["uptime"]
        + weights.load * c["load"]
        + weights.proximity * c["proximity"]
    )
    return c["integrity"] * weighted / total


def choose_authority(
    current: str | None, scores: Mapping[str, float], hysteresis: float = 0.15
) -> str | None:
    """The authority after considering *scores*, sticky toward *current*.

    The best candidate (highest score, ties to the smallest id) replaces the incumbent
    only if ``best > incumbent * (1 + hysteresis)``. An incumbent missing from *scores*
    (gone, no longer a holder) is replaced unconditionally. None if there are no candidates.
    """
    if hysteresis < 0 or not math.isfinite(hysteresis):
        raise ValueError("hysteresis must be a finite non-negative fraction")
    for holder, s in scores.items():
        if not math.isfinite(s):
            raise ValueError(f"score of {holder!r} is not finite")
    if not scores:
        return None
    best = min(scores, key=lambda h: (-scores[h], h))
    if current is None or current not in scores or best == current:
        return best
    return best if scores[best] > scores[current] * (1.0 + hysteresis) else current


def choose_voters(
    uptimes: Mapping[str, float], *, min_voters: int = 3, max_voters: int = 5
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split devices into (voters, learners) by uptime, highest first (ties by id).

    An odd voter count is used (5 if possible, else 3; with fewer than *min_voters*
    devices, all of them vote): an even count adds
    a device to every quorum without tolerating one more failure. Everyone else is a
    learner: it replicates the map for local reads but never slows down commits.
    """
    if not 1 <= min_voters <= max_voters:
        raise ValueError("need 1 <= min_voters <= max_voters")
    ranked = sorted(uptimes, key=lambda d: (-uptimes[d], d))
    n = min(len(ranked), max_voters)
    if n % 2 == 0 and n - 1 >= min_voters:
        n -= 1
    voters = tuple(sorted(ranked[:n]))
    learners = tuple(sorted(ranked[n:]))
    return voters, learners
