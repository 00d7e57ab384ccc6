"""What members told the leader about their holdings: the inputs to reputation scores."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.errors import ErrorKind, ShoalError

from ..reputation import (
    HolderStats,
    QualityMetrics,
    ReputationWeights,
    UsageCounter,
    reputation_score,
)
from .timing import Timing

#: Holdings read from one report (the wire bounds the object at 4096 keys anyway).
MAX_HOLDINGS = 4096
#: Largest count a report may carry (uses, bitrate, integrity failures): JSON's safe integer.
MAX_COUNT = float(2**53)


class BadReport(ShoalError):
    """A member's report carries a value no honest agent sends (not finite, out of range).

    The whole report is dropped (the member's previous one stays): a peer that sends
    Infinity or NaN is broken or hostile, and half of its report is no better than none.
    Python's json reads ``Infinity``/``NaN`` (and ``1e999`` as inf), and ``int(inf)`` raises
    OverflowError, so every number is checked here rather than trusted to arithmetic.
    """

    kind = ErrorKind.INVALID


def _number(value: Any, what: str, lo: float, hi: float) -> float:
    """*value* as a finite float in [lo, hi] (bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadReport(f"{what} is not a number")
    f = float(value)
    if not math.isfinite(f) or not lo <= f <= hi:
        raise BadReport(f"{what} is out of range ({value!r:.20})")
    return f


def parse_holdings(raw: Mapping[Any, Any], *, load: Any, up: Any, wall: float
                   ) -> tuple[float, float, dict[str, HolderStats], dict[str, str]]:
    """Read a report's ``load``, ``up`` and holdings ``{rid: [usage, bitrate, err,
    integrity, name]}``; returns (load, uptime, stats by resource, names by resource).

    Entries of the wrong shape are skipped (an older or newer agent may add fields); a number
    that is not finite or out of range raises :class:`BadReport` for the whole report.
    """
    load_f = _number(load, "load", 0.0, 1.0)
    up_f = _number(up, "up", 0.0, 1.0)
    holdings: dict[str, HolderStats] = {}
    names: dict[str, str] = {}
    for rid, entry in list(raw.items())[:MAX_HOLDINGS]:
        if not (isinstance(rid, str) and len(rid) == 32 and isinstance(entry, list)
                and len(entry) == 5 and isinstance(entry[4], str) and len(entry[4]) <= 255):
            continue
        usage = _number(entry[0], "usage", 0.0, MAX_COUNT)
        bitrate = _number(entry[1], "bitrate", 0.0, MAX_COUNT)
        err = _number(entry[2], "error rate", 0.0, 1.0)
        integrity = _number(entry[3], "integrity failures", 0.0, MAX_COUNT)
        names[rid] = entry[4]
        holdings[rid] = HolderStats(
            usage=UsageCounter(usage, wall),
            quality=QualityMetrics(bitrate_bps=bitrate, error_rate=err,
                                   integrity_failures=int(integrity)),
            uptime=up_f, load=load_f,
        )
    return load_f, up_f, holdings, names


@dataclass
class HolderReport:
    """What one member last told us about its holdings (leader input for scores)."""

    received: float
    load: float
    uptime: float
    holdings: dict[str, HolderStats] = field(default_factory=dict)


@dataclass
class Reports:
    timing: Timing
    weights: ReputationWeights = field(default_factory=ReputationWeights)
    by_member: dict[str, HolderReport] = field(default_factory=dict)

    def touch(self, member: str, now: float) -> bool:
        """An unchanged report arrived: keep the parsed stats. False if none is known."""
        rep = self.by_member.get(member)
        if rep is None:
            return False
        rep.received = now
        return True

    def update(self, member: str, report: HolderReport) -> set[str]:
        """Store a changed report; returns the resources this member newly holds."""
        previous = self.by_member.get(member)
        self.by_member[member] = report
        known = previous.holdings.keys() if previous is not None else set()
        return set(report.holdings.keys() - known)

    def fresh(self, report: HolderReport, now: float) -> bool:
        return now - report.received < self.timing.report_stale

    def uptime(self, member: str) -> float:
        rep = self.by_member.get(member)
        return rep.uptime if rep is not None else 0.0

    def scores(self, resource_id: str, now: float, wall: float) -> dict[str, float]:
        """Reputation of each holder of *resource_id* known from recent reports (*wall* is
        the wall clock, which usage counters decay against)."""
        out: dict[str, float] = {}
        for holder, rep in self.by_member.items():
            stats = rep.holdings.get(resource_id)
            if stats is not None and self.fresh(rep, now):
                out[holder] = reputation_score(stats, wall, self.weights)
        return out

    def held_resources(self, members: set[str], now: float) -> set[str]:
        out: set[str] = set()
        for holder, rep in self.by_member.items():
            if holder in members and self.fresh(rep, now):
                out.update(rep.holdings)
        return out
