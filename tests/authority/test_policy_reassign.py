"""Leader reassignment decisions (pure): what to Assign or Revoke, and when."""

from __future__ import annotations

from agent.authority.authority_map import (
    Assign,
    AuthorityMap,
    Command,
    Revoke,
    encode_command,
)
from agent.authority.policy import (
    HolderReport,
    LeaderView,
    Liveness,
    Reassigner,
    Reports,
    Timing,
)
from agent.authority.raft.messages import Entry
from agent.authority.reputation import HolderStats, QualityMetrics

T = Timing()
R = "ab" * 16


class World:
    """A leader's inputs, built by hand."""

    def __init__(self) -> None:
        self.map = AuthorityMap()
        self.reports = Reports(T)
        self.live = Liveness(T)
        self.re = Reassigner(T, hysteresis=0.15)
        self.members = frozenset({"me", "a", "b"})
        self.match: dict[str, int] = {}

    def report(self, member: str, quality: float, now: float, rid: str = R) -> None:
        stats = HolderStats(quality=QualityMetrics(bitrate_bps=quality * 8e6), uptime=1.0)
        new = self.reports.update(member, HolderReport(now, 0.0, 1.0, {rid: stats}))
        self.re.newly_held(new)
        self.live.heard(member, now)

    def commit(self, cmd: Command, now: float) -> None:
        e = Entry(self.map.applied_index + 1, 1, data=encode_command(cmd))
        res = self.map.apply(e)
        assert res is not None and res.accepted and res.assignment is not None
        self.re.applied(R, res.assignment, now)

    def evaluate(self, now: float, *, full: bool = False) -> list[Command]:
        view = LeaderView("me", self.members, self.match)
        return self.re.evaluate(view, self.map, self.reports, self.live, now, now, full=full)


def test_new_resource_goes_to_the_best_live_holder() -> None:
    w = World()
    w.re.became_leader(0.0)
    w.report("a", 0.5, 0.0)
    w.report("b", 0.9, 0.0)
    assert w.evaluate(0.1) == [Assign(R, "b", 0)]
    assert w.evaluate(0.2) == []  # in flight: not proposed again before proposal_retry


def test_dead_holder_is_replaced_only_after_dead_after_as_leader() -> None:
    w = World()
    w.re.became_leader(0.0)
    w.report("a", 0.9, 0.0)
    w.report("b", 0.5, 0.0)
    w.commit(Assign(R, "a", 0), 0.1)
    for t in (0.2, 0.4, 0.6):
        w.live.heard("b", t)
    assert w.evaluate(0.5) == []  # a silent only 0.5 s
    assert w.evaluate(0.65) == [Assign(R, "b", 1)]


def test_new_leader_measures_silence_from_its_election() -> None:
    w = World()
    w.report("a", 0.9, 0.0)  # heard as a follower, long ago
    w.report("b", 0.5, 0.0)
    w.commit(Assign(R, "a", 0), 0.0)
    w.re.became_leader(10.0)
    w.live.heard("b", 10.0)
    assert w.evaluate(10.3, full=True) == []  # leader for 0.3 s only
    w.live.heard("b", 10.5)
    w.report("b", 0.5, 10.5)
    assert w.evaluate(10.65) == [Assign(R, "b", 1)]


def test_live_incumbent_losing_on_score_is_revoked_first() -> None:
    w = World()
    w.re.became_leader(0.0)
    w.report("a", 0.0, 0.0)
    w.commit(Assign(R, "a", 0), 0.0)
    w.report("b", 1.0, 1.0)
    w.live.heard("a", 1.0)
    assert w.evaluate(1.0, full=True) == [Revoke(R, 1)]
    w.commit(Revoke(R, 1), 1.1)
    w.match = {"a": 0}
    w.live.heard("a", 1.5)
    w.live.heard("b", 1.5)
    assert w.evaluate(1.2) == []  # lease not over
    assert w.evaluate(1.6) == []  # lease over, but a has not got the Revoke in its log yet
    w.match = {"a": w.map.applied_index}
    assert w.evaluate(1.61) == [Assign(R, "b", 2)]


def test_revoked_holder_that_dies_is_not_waited_for() -> None:
    w = World()
    w.re.became_leader(0.0)
    w.report("a", 0.3, 0.0)
    w.commit(Assign(R, "a", 0), 0.0)
    w.report("b", 0.9, 0.5)
    w.commit(Revoke(R, 1), 0.5)
    w.live.heard("b", 1.2)
    w.report("b", 0.9, 1.2)
    assert w.evaluate(1.2) == [Assign(R, "b", 2)]  # a silent since 0.0 (>= dead_after)


def test_live_incumbent_that_stopped_holding_is_revoked_not_replaced() -> None:
    w = World()
    w.re.became_leader(0.0)
    w.report("a", 0.9, 0.0)
    w.commit(Assign(R, "a", 0), 0.0)
    w.report("b", 0.5, 0.5)
    w.reports.update("a", HolderReport(0.5, 0.0, 1.0, {}))  # a dropped the resource
    w.live.heard("a", 0.5)
    assert w.evaluate(0.6, full=True) == [Revoke(R, 1)]


def test_hysteresis_keeps_a_slightly_worse_incumbent() -> None:
    w = World()
    w.re.became_leader(0.0)
    w.report("a", 0.80, 0.0)
    w.commit(Assign(R, "a", 0), 0.0)
    w.report("b", 0.85, 0.1)
    w.live.heard("a", 0.1)
    assert w.evaluate(0.2, full=True) == []


def test_reindex_after_snapshot() -> None:
    w = World()
    w.commit(Assign(R, "a", 0), 0.0)
    fresh = Reassigner(T)
    fresh.reindex(w.map)
    assert fresh.by_holder == {"a": {R}}


def test_dead_predecessor_is_replaced_on_its_true_silence() -> None:
    """The leader we followed was heard every heartbeat: no extra wait after our election
    (this keeps leader-failover time), unlike holders heard only through reports."""
    w = World()
    w.report("a", 0.9, 0.0)
    w.report("b", 0.5, 0.0)
    w.commit(Assign(R, "a", 0), 0.0)
    w.live.heard("a", 10.0)  # a led us until it died at ~10.0
    w.re.became_leader(10.4, predecessor="a")
    w.live.heard("b", 10.5)
    w.report("b", 0.5, 10.5)
    assert w.evaluate(10.65) == [Assign(R, "b", 1)]
