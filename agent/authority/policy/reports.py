"""What members told the leader about their holdings: the inputs to reputation scores."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..reputation import HolderStats, ReputationWeights, reputation_score
from .timing import Timing


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
