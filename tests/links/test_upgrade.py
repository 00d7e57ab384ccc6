"""agent.links.upgrade: make-before-break BLE → fast link, in virtual time with seeds."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from agent.links.upgrade import (
    Action,
    BringUpFast,
    FallBack,
    Notice,
    Phase,
    ReleaseBle,
    Send,
    SessionLost,
    TearDownFast,
    Upgrade,
    UpgradePolicy,
)


def _machine(seed: int = 1) -> Upgrade:
    return Upgrade(UpgradePolicy(), random.Random(seed))


def test_happy_path_holds_new_requests_until_ble_drains_then_releases_ble() -> None:
    m = _machine()
    assert m.start(0) == [BringUpFast(1)]
    assert m.submit(1, 0) == [Send(1, "ble")]
    assert m.submit(2, 0) == [Send(2, "ble")]
    assert m.fast_up(1) == []  # BLE still has two requests in flight
    assert m.phase is Phase.DRAINING
    assert m.submit(3, 1) == []  # held: never on two links, never out of order
    assert m.answered(1, "ble", 1) == []
    assert m.answered(2, "ble", 1) == [Send(3, "fast")]  # drained: the session moves
    assert m.phase is Phase.MOVED
    assert m.answered(3, "fast", 2) == [
        ReleaseBle(), Notice("session moved to the fast link; BLE released")]
    assert m.phase is Phase.UPGRADED and m.submit(4, 2) == [Send(4, "fast")]


def test_idle_session_moves_at_once() -> None:
    m = _machine()
    m.start(0)
    assert m.fast_up(1) == [ReleaseBle(), Notice("session moved to the fast link; BLE released")]


def test_negotiation_failure_says_why_falls_back_and_retries() -> None:
    m = _machine()
    m.start(0)
    m.submit(1, 0)
    out = m.fast_failed("GO negotiation failed (P2P status 1)", 3)
    assert out[:2] == [TearDownFast("GO negotiation failed (P2P status 1)"),
                       FallBack("GO negotiation failed (P2P status 1)")]
    notice = out[2]
    assert isinstance(notice, Notice)
    assert notice.text.startswith("staying on Bluetooth: GO negotiation failed (P2P status 1);")
    assert "attempt 2" in notice.text
    assert m.phase is Phase.BLE and m.last_failure == "GO negotiation failed (P2P status 1)"
    assert m.submit(2, 3) == [Send(2, "ble")]  # BLE keeps carrying the session
    assert m.retry_at is not None
    assert m.tick(m.retry_at - 0.01) == []
    assert m.tick(m.retry_at) == [BringUpFast(2)]


def test_bring_up_timeout_is_a_failure_with_a_reason() -> None:
    m = _machine()
    m.start(0)
    out = m.tick(20.0)
    assert out[0] == TearDownFast("fast link not up within 20 s")
    assert m.phase is Phase.BLE


def test_fast_link_dying_after_the_upgrade_resends_only_unanswered_on_ble() -> None:
    m = _machine()
    m.start(0)
    m.fast_up(1)
    assert [m.submit(r, 1) for r in (1, 2, 3)] == [[Send(r, "fast")] for r in (1, 2, 3)]
    m.answered(1, "fast", 2)
    out = m.fast_failed("P2P-GROUP-REMOVED reason=UNAVAILABLE", 3)
    assert [a for a in out if isinstance(a, Send)] == [Send(2, "ble"), Send(3, "ble")]
    assert FallBack("P2P-GROUP-REMOVED reason=UNAVAILABLE") in out
    assert not m.expects(2, "fast")  # a late answer on the dead link is not delivered
    assert m.answered(2, "fast", 3) == [] and m.expects(2, "ble")


def test_backoff_grows_is_capped_and_replays_with_the_seed() -> None:
    def delays(seed: int) -> list[float]:
        m = _machine(seed)
        out, now = [], 0.0
        m.start(now)
        for _ in range(10):
            m.fast_failed("timeout", now)
            assert m.retry_at is not None
            out.append(m.retry_at - now)
            now = m.retry_at
            assert m.tick(now) == [BringUpFast(m.attempt)]
        return out

    d = delays(7)
    assert d == delays(7) and d != delays(8)
    assert 1.5 <= d[0] <= 2.5 and d[3] > d[0]
    assert max(d) <= 120 * 1.25


def test_success_resets_the_backoff() -> None:
    m = _machine()
    m.start(0)
    for _ in range(4):
        m.fast_failed("timeout", 0)
        m.tick(m.retry_at or 0)
    m.fast_up(1)
    assert m.failures == 0


def test_ble_lost_before_the_move_ends_the_session_and_during_drain_moves_it() -> None:
    m = _machine()
    m.start(0)
    assert m.ble_down(1) == [SessionLost("BLE link lost before the fast link was up")]
    m = _machine()
    m.start(0)
    m.submit(1, 0)
    m.fast_up(1)
    m.submit(2, 1)
    assert m.ble_down(2) == [Send(1, "fast"), Send(2, "fast")]
    assert m.phase is Phase.MOVED
    assert m.fast_failed("group removed", 3)[-1] == SessionLost(
        "fast link lost (group removed) and BLE is gone too")


def test_duplicate_submit_is_a_caller_bug() -> None:
    m = _machine()
    m.submit(1, 0)
    with pytest.raises(ValueError):
        m.submit(1, 0)


class _Sim:
    """Two lossless links in virtual time; the fast one may fail to come up or die."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.m = Upgrade(UpgradePolicy(), random.Random(seed))
        self.now = 0.0
        self.pending: dict[str, list[int]] = {"ble": [], "fast": []}
        self.fast_alive = False
        self.bringing = False
        self.delivered: Counter[int] = Counter()
        self.submitted: list[int] = []
        self.lost = False
        self.released = False

    def act(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                assert a.link == "ble" or self.fast_alive, "sent on a dead fast link"
                assert not self.lost
                self.pending[a.link].append(a.request)
            elif isinstance(a, BringUpFast):
                self.bringing = True
            elif isinstance(a, TearDownFast):
                self.fast_alive = self.bringing = False
                self.pending["fast"].clear()
            elif isinstance(a, ReleaseBle):
                assert not self.pending["ble"] or all(
                    not self.m.expects(r, "ble") for r in self.pending["ble"])
                self.released = True
            elif isinstance(a, SessionLost):
                self.lost = True

    def step(self, next_id: int) -> None:
        r = self.rng.random()
        self.now += self.rng.uniform(0, 2)
        if r < 0.35:
            self.submitted.append(next_id)
            self.act(self.m.submit(next_id, self.now))
        elif r < 0.7:
            link = self.rng.choice(["ble", "fast"])
            if self.pending[link]:
                req = self.pending[link].pop(self.rng.randrange(len(self.pending[link])))
                if self.m.expects(req, link):
                    self.delivered[req] += 1
                self.act(self.m.answered(req, link, self.now))
        elif r < 0.8 and self.bringing:
            self.bringing = False
            if self.rng.random() < 0.6:
                self.fast_alive = True
                self.act(self.m.fast_up(self.now))
            else:
                self.act(self.m.fast_failed("GO negotiation failed", self.now))
        elif r < 0.84 and self.fast_alive:
            self.fast_alive = False
            self.pending["fast"].clear()
            self.act(self.m.fast_failed("group removed", self.now))
        else:
            self.act(self.m.tick(self.now))


@pytest.mark.parametrize("seed", range(200))
def test_every_request_is_answered_exactly_once_whatever_the_fast_link_does(seed: int) -> None:
    sim = _Sim(seed)
    sim.act(sim.m.start(0))
    for i in range(300):
        sim.step(i)
    # let it settle: links stop failing, every answer is delivered
    for _ in range(2000):
        if not (sim.pending["ble"] or sim.pending["fast"] or sim.m.held):
            break
        link = "ble" if sim.pending["ble"] else "fast"
        if not sim.pending[link]:
            sim.now += 30
            sim.act(sim.m.tick(sim.now))
            if sim.bringing:
                sim.bringing, sim.fast_alive = False, True
                sim.act(sim.m.fast_up(sim.now))
            continue
        req = sim.pending[link].pop(0)
        if sim.m.expects(req, link):
            sim.delivered[req] += 1
        sim.act(sim.m.answered(req, link, sim.now))
    assert not sim.lost  # BLE never died here
    assert all(n == 1 for n in sim.delivered.values()), sim.delivered.most_common(3)
    assert sorted(sim.delivered) == sorted(sim.submitted)
    assert not sim.m.inflight and not sim.m.held


def test_the_simulation_reaches_both_upgrades_and_fallbacks() -> None:
    """Guard against a vacuous exactly-once test: the random links really exercise both."""
    kinds: Counter[str] = Counter()
    for seed in range(50):
        sim = _Sim(seed)
        act = sim.act

        def counting(actions: list[Action], act: object = act) -> None:
            kinds.update(type(a).__name__ for a in actions)
            act(actions)  # type: ignore[operator]

        sim.act = counting  # type: ignore[method-assign]
        sim.act(sim.m.start(0))
        for i in range(300):
            sim.step(i)
    assert kinds["ReleaseBle"] >= 10 and kinds["FallBack"] >= 10
    assert kinds["Send"] > kinds["ReleaseBle"]
