"""The Resource Mirror Manager's rules (pure: state and time in, jobs out).

Each device runs the manager for its *own* demand: it knows its own requests exactly (the
raw log never leaves it), measures its own round trips to each paired device, and is the
one whose fetches a mirror should speed up. A mirror is a copy of a resource on a paired
device (the *host*) that the requester's fetches try first; the host holds it on a lease
the requester renews (:mod:`agent.mirrors.hosting`), so a requester that vanishes costs the
host nothing for long.

**Where** (:func:`node_score`, every component in [0, 1])::

    score = (0.35 P + 0.25 B + 0.20 (1 - L) + 0.20 R) / 1.0  + 0.15 S (collaboration bonus)

* P, proximity: ``rtt_ref / (rtt_ref + rtt)`` (0.5 unknown). Weighted most: the point of a
  mirror is to be near its requester, and a fetch's windows make latency its throughput.
* B, bandwidth: the link rate to the node against ``bw_ref`` (0.5 unknown). Bulk bytes.
* L, load: the node's serving load from its authority report (0.5 unknown). A busy uplink
  serves slowly, and demand traffic there outranks a mirror's.
* R, reputation: the node's reputation (integrity failures, uptime; 0.5 unknown). A mirror
  that disappears or serves corrupt chunks is worse than none (the hash check catches the
  corruption, but the fetch then waits for another source).
* S, sharing: the node already mirrors the resource, times how similar the usage of the
  devices it mirrors for is to ours (cosine of temperature vectors, :func:`similarity`).
  Sharing a mirror costs no transfer and no storage: devices with similar usage converge
  on one mirror (*collaborative mirrors*).

**When** (hysteresis: the thresholds to create are above those to keep, and a mirror stays
at least ``dwell`` seconds, so a mirror does not flap as temperatures jitter):

* *create* when a resource is hot here (temperature ≥ ``create``) or predicted with a
  score ≥ ``create_score``, is not held here and not being prefetched here, and either its
  origin has fewer than ``min_sources`` holders or the best candidate beats the best holder
  by ``margin``; at most ``max_mirrors`` mirrors and ``max_bytes`` in all;
* *expand* (a second mirror) when it is very hot (≥ ``expand``) and the mirror's host is
  loaded (≥ ``expand_load``); *shrink* back when it cools below ``create`` or both hosts are
  idle;
* *move* when another candidate beats the current host by ``margin`` after ``dwell``
  (demand moved: this device is now closer to another node);
* *discard* when it stayed below ``keep`` (and unpredicted) for ``cold_after``, or at once
  when the host is no longer a paired, reachable candidate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["CreateMirror", "Demand", "DropMirror", "MirrorJob", "MirrorRules", "MirrorUse",
           "Node", "Weights", "node_score", "plan_mirrors", "similarity"]


@dataclass(frozen=True, slots=True)
class Weights:
    proximity: float = 0.35
    bandwidth: float = 0.25
    load: float = 0.20
    reputation: float = 0.20
    sharing: float = 0.15
    rtt_ref_ms: float = 20.0  # the RTT at which proximity is 0.5
    bw_ref: float = 10e6  # bytes/s at which bandwidth is 0.5


@dataclass(frozen=True, slots=True)
class Node:
    """A paired device that could host a mirror, as this device sees it."""

    device: str  # device ID hex
    rtt_ms: float | None = None
    bandwidth: float | None = None  # bytes/s measured to it
    load: float | None = None  # 0..1 from its authority report
    reputation: float | None = None  # 0..1
    holds: frozenset[str] = frozenset()  # resources it holds (origin copies and mirrors)
    hosts: Mapping[str, float] = field(default_factory=dict)  # mirrored resource -> similarity
    room: bool = True  # it accepts another mirror (its host bounds)


@dataclass(frozen=True, slots=True)
class Demand:
    resource: str
    size: int
    temperature: float  # this device's temperature of it
    score: float = 0.0  # prediction score (0: not predicted)
    held: bool = False  # held here (a mirror would not be used)
    prefetching: bool = False  # the prefetch planner is bringing it here


@dataclass(frozen=True, slots=True)
class MirrorUse:
    """A mirror this device uses."""

    resource: str
    host: str
    since: float
    reason: str
    size: int = 0
    cold_since: float | None = None  # when it fell below ``keep`` (None: it is not cold)


@dataclass(frozen=True, slots=True)
class MirrorRules:
    create: float = 2.0
    keep: float = 0.5
    create_score: float = 0.5
    expand: float = 16.0
    expand_load: float = 0.75
    cold_after: float = 600.0
    dwell: float = 300.0
    margin: float = 0.25
    min_sources: int = 2
    max_per_resource: int = 2
    max_mirrors: int = 8
    max_bytes: int = 1024**3
    weights: Weights = Weights()


@dataclass(frozen=True, slots=True)
class CreateMirror:
    resource: str
    host: str
    size: int
    reason: str


@dataclass(frozen=True, slots=True)
class DropMirror:
    resource: str
    host: str
    reason: str


MirrorJob = CreateMirror | DropMirror


def _unit(x: float | None, default: float = 0.5) -> float:
    if x is None or not math.isfinite(x):
        return default
    return min(1.0, max(0.0, x))


def node_score(n: Node, resource: str | None = None, w: Weights = Weights()) -> float:
    """How good a host *n* is for *resource* (see the module docstring), in [0, 1.15]."""
    p = 0.5 if n.rtt_ms is None or not n.rtt_ms >= 0 else w.rtt_ref_ms / (w.rtt_ref_ms
                                                                             + n.rtt_ms)
    b = 0.5 if not n.bandwidth or not n.bandwidth > 0 else n.bandwidth / (n.bandwidth
                                                                          + w.bw_ref)
    base = (w.proximity * _unit(p) + w.bandwidth * _unit(b) + w.load * (1 - _unit(n.load))
            + w.reputation * _unit(n.reputation))
    total = w.proximity + w.bandwidth + w.load + w.reputation
    share = _unit(n.hosts.get(resource), 0.0) if resource is not None else 0.0
    return base / total + w.sharing * share


def similarity(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Cosine similarity of two temperature vectors (0 when either is empty)."""
    dot = sum(v * b.get(k, 0.0) for k, v in a.items())
    na = math.sqrt(sum(v * v for v in a.values()))
    nb = math.sqrt(sum(v * v for v in b.values()))
    if not na > 0 or not nb > 0:
        return 0.0
    return max(0.0, min(1.0, dot / (na * nb)))


def _ranked(resource: str, nodes: Iterable[Node], w: Weights,
            exclude: set[str]) -> list[tuple[float, Node]]:
    """Candidate hosts for *resource*, best first (ties by device ID): not holding it as
    origin (a holder is a source already), unless it already mirrors it; with room."""
    out = [(node_score(n, resource, w), n) for n in nodes
           if n.device not in exclude and (resource in n.hosts
                                           or (resource not in n.holds and n.room))]
    return sorted(out, key=lambda sn: (-sn[0], sn[1].device))


def plan_mirrors(demand: Sequence[Demand], nodes: Sequence[Node],
                 using: Sequence[MirrorUse], rules: MirrorRules, now: float
                 ) -> tuple[list[MirrorJob], list[MirrorUse]]:
    """This round's jobs, and the mirrors in use afterwards (``cold_since`` updated; a
    created mirror appears once the service confirms it, not here)."""
    w = rules.weights
    jobs: list[MirrorJob] = []
    by_node = {n.device: n for n in nodes}
    want = {d.resource: d for d in demand}
    kept: list[MirrorUse] = []
    mine: dict[str, list[MirrorUse]] = {}

    def drop(u: MirrorUse, reason: str) -> None:
        jobs.append(DropMirror(u.resource, u.host, reason))

    # existing mirrors: discard, move, shrink
    for u in sorted(using, key=lambda u: (u.resource, u.since, u.host)):
        d = want.get(u.resource)
        host = by_node.get(u.host)
        if host is None:
            drop(u, "host is no longer a paired, reachable device")
            continue
        if d is not None and d.held:
            drop(u, "held here now")
            continue
        temp = d.temperature if d is not None else 0.0
        predicted = d is not None and d.score >= rules.create_score
        cold = temp < rules.keep and not predicted
        cold_since = (u.cold_since if u.cold_since is not None else now) if cold else None
        if cold_since is not None and now - cold_since >= rules.cold_after:
            drop(u, f"cold (temperature {temp:.2f} below {rules.keep} for "
                    f"{now - cold_since:.0f} s)")
            continue
        u = MirrorUse(u.resource, u.host, u.since, u.reason, u.size, cold_since)
        mine.setdefault(u.resource, []).append(u)
    for rid, us in sorted(mine.items()):
        d = want.get(rid)
        temp = d.temperature if d is not None else 0.0
        if len(us) > 1:  # shrink: demand cooled, or nobody is busy any more
            idle = all(_unit(by_node[x.host].load) < rules.expand_load / 2 for x in us)
            if temp < rules.create or idle:
                us.sort(key=lambda x: (node_score(by_node[x.host], rid, w), x.host))
                while len(us) > 1 and (now - us[0].since >= rules.dwell):
                    drop(us.pop(0), "shrink: demand cooled" if temp < rules.create
                         else "shrink: hosts idle")
        others = {x.host for x in us}
        for u in us:  # move: a clearly better host, after the dwell time
            current = node_score(by_node[u.host], rid, w)
            best = _ranked(rid, nodes, w, others) if now - u.since >= rules.dwell else []
            if best and best[0][0] > current * (1 + rules.margin):
                new = best[0][1].device
                jobs.append(CreateMirror(rid, new, u.size,
                                         f"move from {u.host[:16]} (score {best[0][0]:.2f} "
                                         f"against {current:.2f})"))
                drop(u, f"moved to {new[:16]}")
                others.add(new)
            else:
                kept.append(u)

    # new mirrors and expansion
    count = len(kept) + sum(isinstance(j, CreateMirror) for j in jobs)
    total = sum(u.size for u in kept)
    for d in sorted(demand, key=lambda d: (-d.temperature, -d.score, d.resource)):
        if count >= rules.max_mirrors:
            break
        if d.held or d.prefetching:
            continue
        hosts = [u for u in kept if u.resource == d.resource]
        if hosts:
            if (len(hosts) < rules.max_per_resource and d.temperature >= rules.expand
                    and all(_unit(by_node[u.host].load) >= rules.expand_load for u in hosts)):
                best = _ranked(d.resource, nodes, w, {u.host for u in hosts})
                if best and total + d.size <= rules.max_bytes:
                    jobs.append(CreateMirror(d.resource, best[0][1].device, d.size,
                                             f"expand: temperature {d.temperature:.1f}, "
                                             "mirror host busy"))
                    count += 1
                    total += d.size
            continue
        if any(isinstance(j, CreateMirror) and j.resource == d.resource for j in jobs):
            continue
        if d.temperature < rules.create and d.score < rules.create_score:
            continue
        if total + d.size > rules.max_bytes:
            continue
        best = _ranked(d.resource, nodes, w, set())
        if not best:
            continue
        holders = [node_score(n, d.resource, w) for n in nodes if d.resource in n.holds
                   and d.resource not in n.hosts]
        top, node = best[0]
        if len(holders) >= rules.min_sources and top <= max(holders) * (1 + rules.margin):
            continue
        why = ("shared mirror" if d.resource in node.hosts else
               f"{len(holders)} origin holder(s)" if len(holders) < rules.min_sources
               else "closer than the origin")
        heat = (f"temperature {d.temperature:.1f}" if d.temperature >= rules.create
                else f"predicted {d.score:.2f}")
        jobs.append(CreateMirror(d.resource, node.device, d.size, f"{heat}, {why}"))
        count += 1
        total += d.size
    return jobs, kept
