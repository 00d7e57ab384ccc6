"""The model lifecycle's pure core: headroom and power, the training budget, the training
input, the advertisement peers exchange, and the "is the model worth running" judgement.

Why a module apart from :mod:`agent.usage.lifecycle`: that one holds the mesh-level decisions
(who trains, when, which offer); this one holds the per-device facts those decisions are fed
with and the strict schema of what a peer says about itself. Nothing here does I/O, awaits,
or reads a clock: :mod:`agent.usage.models` (the service) does, and passes the values in.
docs/prediction-lifecycle.md is the design.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from agent.predict.base import Predictor
from agent.usage.aggregate import MeshCounts
from agent.usage.lifecycle import POWER_STATES, TrainerCandidate

__all__ = [
    "MODEL_KINDS",
    "RESERVED_PREFIX",
    "Advert",
    "AdvertError",
    "TrainLedger",
    "cpu_headroom",
    "hit_ratio",
    "is_reserved",
    "judge",
    "model_name",
    "parse_advert",
    "power_state",
    "recent_requests",
    "sequences_from_counts",
]

#: Names starting with this are the agent's own resources (models), never user content.
#: Store names cannot hold "/" (agent/store/manifest.py validate_name), so dots separate.
RESERVED_PREFIX = ".shoal."
MODEL_KINDS = ("gru",)
DAY = 86400.0
MAX_LEDGER = 256  # training runs remembered (a day's worth at the shortest interval)
MAX_SEQS = 20_000  # training sequences built from counts
MAX_REPEAT = 32  # copies of one counted n-gram (a very hot gram must not drown the rest)


def model_name(kind: str) -> str:
    """The store name of the model resource of *kind*, e.g. ``.shoal.model.gru``."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}")
    return f"{RESERVED_PREFIX}model.{kind}"


def is_reserved(name: str) -> bool:
    """The resource is the agent's own (a model), not something a user published."""
    return name.startswith(RESERVED_PREFIX)


# ----------------------------------------------------------------- headroom and power

def cpu_headroom(load1: float, cores: int) -> float:
    """1 - (1-minute load average / cores), clamped to 0..1 (an idle device is 1)."""
    if cores <= 0 or not math.isfinite(load1):
        return 0.0
    return max(0.0, min(1.0, 1.0 - load1 / cores))


def power_state(supplies: Mapping[str, Mapping[str, str]]) -> tuple[str, float, str]:
    """(power, battery 0..1, how it was decided) from ``/sys/class/power_supply/*`` (each
    supply's ``type``, ``online``, ``status``, ``capacity`` files, stripped).

    No supply listed (a Pi on a wall adapter exposes none, nor does a container): assumed
    mains, and the note says so. A ``Mains``/``USB`` supply online: mains. Else a battery:
    charging or on battery, with its capacity."""
    if not supplies:
        return "mains", 1.0, "no power supply information: assumed mains"
    online = [n for n, s in supplies.items()
              if s.get("type", "") in ("Mains", "USB") and s.get("online", "") == "1"]
    batteries = [s for s in supplies.values() if s.get("type", "") == "Battery"]
    capacity = 1.0
    if batteries:
        try:
            capacity = max(0.0, min(1.0, int(batteries[0].get("capacity", "100")) / 100))
        except ValueError:
            capacity = 0.0
    if online:
        return "mains", capacity if batteries else 1.0, f"external power ({online[0]})"
    if not batteries:
        return "mains", 1.0, "no battery and no supply online: assumed mains"
    if batteries[0].get("status", "") in ("Charging", "Full"):
        return "charging", capacity, "battery charging"
    return "battery", capacity, "on battery"


# ----------------------------------------------------------------- the training budget

@dataclass
class TrainLedger:
    """CPU-seconds spent training, per run, for the rolling 24 h budget.

    Kept as (end time, CPU-s) pairs so the budget frees up as runs age out of the day,
    and persisted by the service so a restart does not reset it."""

    runs: list[tuple[float, float]]

    def spent(self, now: float) -> float:
        return sum(c for t, c in self.runs if now - t < DAY)

    def left(self, now: float, budget_s: float) -> float:
        return max(0.0, budget_s - self.spent(now))

    def charge(self, now: float, cpu_s: float) -> None:
        self.runs = [(t, c) for t, c in self.runs if now - t < DAY][-(MAX_LEDGER - 1):]
        self.runs.append((now, max(0.0, cpu_s)))

    def last(self) -> tuple[float, float] | None:
        return self.runs[-1] if self.runs else None

    def to_obj(self) -> list[list[float]]:
        return [[t, c] for t, c in self.runs]

    @classmethod
    def from_obj(cls, obj: object) -> TrainLedger:
        """Strict: a damaged file gives an empty ledger's worth of nothing but an error."""
        if not isinstance(obj, list) or len(obj) > MAX_LEDGER:
            raise ValueError(f"ledger must be a list of at most {MAX_LEDGER} runs")
        runs = []
        for row in obj:
            if (not isinstance(row, list) or len(row) != 2
                    or not all(isinstance(v, int | float) and not isinstance(v, bool)
                               and math.isfinite(v) and v >= 0 for v in row)):
                raise ValueError("ledger rows are [time, cpu seconds]")
            runs.append((float(row[0]), float(row[1])))
        return cls(runs)


# ----------------------------------------------------------------- training input

def sequences_from_counts(counts: MeshCounts, *, max_seqs: int = MAX_SEQS,
                          max_repeat: int = MAX_REPEAT) -> list[list[str]]:
    """Short training sequences from released n-gram counts: each context + next resource
    (2- and 3-grams), repeated by its count (capped). The model is trained on these only,
    so it is a function of what the k-anonymous (or DP) releases already disclosed
    (post-processing): it can reveal nothing of any device's raw log beyond them."""
    rows = sorted(((c, (*ctx, r)) for ctx, nxt in counts.next.items() if ctx
                   for r, c in nxt), key=lambda cg: (-cg[0], cg[1]))
    out: list[list[str]] = []
    for c, gram in rows:
        for _ in range(max(1, min(c, max_repeat))):
            if len(out) >= max_seqs:
                return out
            out.append(list(gram))
    return out


# ----------------------------------------------------------------- what a peer advertises

class AdvertError(ValueError):
    """A peer's advertisement does not follow the schema (ignored whole)."""


@dataclass(frozen=True)
class Advert:
    """What a device tells its paired peers: can it train, and which model does it hold."""

    headroom: float
    power: str
    battery: float
    budget_s: float
    model: tuple[str, int, str] | None  # (resource ID, version, publisher) it runs or holds

    def candidate(self, device_id: str) -> TrainerCandidate:
        return TrainerCandidate(device_id, self.headroom, self.power, self.battery,
                                self.budget_s)

    def to_obj(self) -> dict[str, object]:
        return {"headroom": self.headroom, "power": self.power, "battery": self.battery,
                "budget_s": self.budget_s,
                "model": list(self.model) if self.model is not None else None}


def _unit(v: object, what: str, hi: float = 1.0) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise AdvertError(f"{what} must be a number")
    if not 0.0 <= v <= hi:
        raise AdvertError(f"{what} out of range")
    return float(v)


def _hex(v: object, lo: int, hi: int, what: str) -> str:
    if (not isinstance(v, str) or not lo <= len(v) <= hi
            or any(c not in "0123456789abcdef" for c in v)):
        raise AdvertError(f"{what} must be {lo}..{hi} lowercase hex digits")
    return v


def parse_advert(obj: object) -> Advert:
    """Strict parse of a peer's advertisement (exact keys, bounded values)."""
    if not isinstance(obj, dict) or set(obj) != {"headroom", "power", "battery", "budget_s",
                                                  "model"}:
        raise AdvertError("advertisement must have exactly headroom, power, battery, "
                          "budget_s, model")
    power = obj["power"]
    if power not in POWER_STATES:
        raise AdvertError(f"power must be one of {', '.join(POWER_STATES)}")
    model = obj["model"]
    held: tuple[str, int, str] | None = None
    if model is not None:
        if not isinstance(model, list) or len(model) != 3:
            raise AdvertError("model must be [resource ID, version, publisher] or null")
        version = model[1]
        if isinstance(version, bool) or not isinstance(version, int) or not (
                1 <= version <= 2**31):
            raise AdvertError("model version must be a positive whole number")
        held = (_hex(model[0], 32, 32, "model resource ID"), version,
                _hex(model[2], 32, 64, "model publisher"))
    return Advert(_unit(obj["headroom"], "headroom"), str(power),
                  _unit(obj["battery"], "battery"), _unit(obj["budget_s"], "budget_s", DAY),
                  held)


# ----------------------------------------------------------------- is the model worth it

def hit_ratio(predictor: Predictor, requests: Iterable[tuple[str, str, float, int]], *,
              k: int = 4) -> tuple[int, int]:
    """Online (predict, then learn) evaluation on *requests* (device, resource, time, size):
    (hits, requests). A request counts as a hit when it was among the *k*
    resources predicted just before it."""
    hits = n = 0
    for dev, resource, t, size in requests:
        ranked = predictor.predict(dev, k)
        n += 1  # no prediction is a miss: a predictor that abstains does not score better
        hits += any(r == resource for r, _ in ranked)
        predictor.observe(dev, resource, t, size)
    return hits, n


def judge(model: tuple[int, int], fallback: tuple[int, int], *,
          min_requests: int = 20) -> tuple[bool, str]:
    """Whether to run the model rather than the fallback, from their (hits, predictions)
    on this device's recent log. Too few requests to tell: the model is used (it was
    trained on more of the mesh than this device has seen)."""
    mh, mn = model
    fh, fn = fallback
    if max(mn, fn) < min_requests:
        return True, f"too few recent requests to compare ({max(mn, fn)} < {min_requests})"
    mr = mh / mn if mn else 0.0
    fr = fh / fn if fn else 0.0
    if mr < fr:
        return False, f"scores worse than the fallback on the recent log ({mr:.3f} < {fr:.3f})"
    return True, f"scores at least the fallback on the recent log ({mr:.3f} >= {fr:.3f})"


def recent_requests(rows: Sequence[tuple[str, float, int]], device: str = "self"
                    ) -> list[tuple[str, str, float, int]]:
    """(resource, time, size) rows of this device's log as evaluation requests."""
    return [(device, r, t, s) for r, t, s in rows]
