"""The prefetch planner: what to copy onto this device ahead of demand, what to drop, what to
stop (pure: every input is passed in, no I/O, no clock).

Inputs, once per planning round: the predictions for this device with their scores, each
predicted resource's size, temperature and whether it is already held; the prefetched
copies held here (the only content the planner may ever evict); the prefetch fetches
running; free store space; the link's measured capacity and whether demand traffic is
queued on it. Output: a list of jobs.

Rules, in order (each one is a test in tests/mirrors/test_planner.py):

1. **Cancel** a running prefetch whose resource is now held (the user fetched it meanwhile:
   demand overtook) or that dropped out of the predictions (below ``min_score`` or gone).
2. **Evict** prefetched copies, coldest first, while their total exceeds the device budget
   (the budget was lowered, or copies grew).
3. **Prefetch** the predictions best first, each only if: its score reaches ``min_score``;
   its rank is within the depth its temperature earns and its size within the bytes it
   earns (:func:`agent.usage.temperature.prefetch_budget`: hot resources get more); it is
   not held or already being fetched; the link can bring it within ``max_seconds``; no
   demand is queued on the link (prefetch never competes with a fetch a user waits for; the
   bandwidth classes also rank what is already running); fewer than ``max_pending`` run;
   and it fits: in the device budget and in free space above the reserve, after evicting
   prefetched copies that are worth less (not predicted, or predicted lower), LRU by
   temperature. Nothing is evicted for a candidate that would not fit anyway.

Never evicted: anything not in ``copies`` — published, fetched by the user, followed or
mirrored content is not the planner's to drop; a prefetched copy the user then fetched is
taken out of ``copies`` by the service (it became user content).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.usage.temperature import prefetch_budget

__all__ = ["Cancel", "Copy", "Evict", "Job", "Limits", "PlanInput", "Predicted", "Prefetch",
           "plan"]


@dataclass(frozen=True, slots=True)
class Predicted:
    """One prediction for this device, with what the planner needs to know about it."""

    resource: str
    score: float  # the predictor's score, 0..1
    size: int  # bytes of the version that would be fetched
    temperature: float  # mesh temperature
    held: bool = False  # a copy of it is here (any kind)


@dataclass(frozen=True, slots=True)
class Copy:
    """A prefetched copy held here: evictable."""

    resource: str
    size: int
    temperature: float
    at: float  # when it was prefetched (orders ties: the oldest goes first)


@dataclass(frozen=True, slots=True)
class Limits:
    device_budget: int  # bytes of prefetched copies (held + running) at most
    reserve: int = 0  # free store space prefetch never takes
    min_score: float = 0.05
    max_pending: int = 2
    max_seconds: float = 120.0
    base_bytes: int = 1024 * 1024  # [predict] prefetch_base
    max_bytes: int = 64 * 1024 * 1024  # [predict] prefetch_max
    hot: float = 8.0  # [predict] prefetch_hot
    max_depth: int = 4


@dataclass(frozen=True, slots=True)
class PlanInput:
    device: str  # the device planned for (this one)
    predictions: Sequence[Predicted]  # best first
    copies: Sequence[Copy] = ()
    pending: Sequence[tuple[str, int]] = ()  # (resource, size) being prefetched
    free_bytes: int | None = None  # store space left (None: no quota)
    link_capacity: float | None = None  # bytes/s measured, None: unknown
    demand_queued: int = 0  # demand sends waiting for the link


@dataclass(frozen=True, slots=True)
class Prefetch:
    resource: str
    device: str
    size: int
    reason: str


@dataclass(frozen=True, slots=True)
class Evict:
    resource: str
    size: int
    reason: str


@dataclass(frozen=True, slots=True)
class Cancel:
    resource: str
    reason: str


Job = Prefetch | Evict | Cancel


def plan(inp: PlanInput, lim: Limits) -> list[Job]:
    """This round's jobs for *inp* under *lim* (see the module docstring for the rules)."""
    jobs: list[Job] = []
    predicted = {p.resource: p for p in inp.predictions}
    held = {p.resource for p in inp.predictions if p.held}

    # 1. cancel what demand overtook or the predictions dropped
    pending: dict[str, int] = {}
    for rid, size in inp.pending:
        p = predicted.get(rid)
        if rid in held:
            jobs.append(Cancel(rid, "demand overtook: the resource is held now"))
        elif p is None or p.score < lim.min_score:
            jobs.append(Cancel(rid, "no longer predicted"))
        else:
            pending[rid] = size

    # 2. evict while over the device budget, coldest first
    copies = {c.resource: c for c in inp.copies}
    used = sum(c.size for c in copies.values()) + sum(pending.values())
    for c in sorted(copies.values(), key=_coldness):
        if used <= lim.device_budget:
            break
        jobs.append(Evict(c.resource, c.size, "over the device budget"))
        used -= c.size
        del copies[c.resource]
    free = inp.free_bytes

    # 3. prefetch the best predictions that earn it and fit
    if inp.demand_queued > 0:
        return jobs  # the link is busy with demand: start nothing new this round
    for rank, p in enumerate(inp.predictions):
        if len(pending) >= lim.max_pending:
            break
        if (p.score < lim.min_score or p.held or p.resource in pending
                or p.resource in copies):
            continue
        budget = prefetch_budget(p.temperature, base_bytes=lim.base_bytes,
                                 max_bytes=lim.max_bytes, hot=lim.hot,
                                 max_depth=lim.max_depth)
        if rank >= budget.depth or p.size > budget.bytes:
            continue
        if inp.link_capacity and p.size / inp.link_capacity > lim.max_seconds:
            continue
        victims = _room(p, copies, predicted, used, free, lim)
        if victims is None:
            continue
        for c in victims:
            jobs.append(Evict(c.resource, c.size, f"room for {p.resource[:12]}"))
            used -= c.size
            if free is not None:
                free += c.size
            del copies[c.resource]
        jobs.append(Prefetch(p.resource, inp.device, p.size,
                             f"predicted #{rank + 1} (score {p.score:.2f}, "
                             f"temperature {p.temperature:.2f})"))
        pending[p.resource] = p.size
        used += p.size
        if free is not None:
            free -= p.size
    return jobs


def _coldness(c: Copy) -> tuple[float, float, str]:
    return (c.temperature, c.at, c.resource)


def _room(p: Predicted, copies: dict[str, Copy], predicted: dict[str, Predicted],
          used: int, free: int | None, lim: Limits) -> list[Copy] | None:
    """The copies to evict so *p* fits (worth less than *p*, least worth first), [] if it
    fits already, None if it cannot fit even after evicting every such copy."""

    def short() -> bool:
        over_budget = used + p.size > lim.device_budget
        over_disk = free is not None and free - lim.reserve < p.size
        return over_budget or over_disk

    if not short():
        return []
    worth = sorted((c for c in copies.values() if _score(c, predicted) < p.score),
                   key=lambda c: (_score(c, predicted), *_coldness(c)))
    victims: list[Copy] = []
    for c in worth:
        victims.append(c)
        used -= c.size
        if free is not None:
            free += c.size
        if not short():
            return victims
    return None


def _score(c: Copy, predicted: dict[str, Predicted]) -> float:
    p = predicted.get(c.resource)
    return p.score if p is not None else 0.0
