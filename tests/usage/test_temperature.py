"""Resource temperature: decayed frequency with known values, mesh view, prefetch budget."""

from __future__ import annotations

import math

import pytest

from agent.usage.temperature import (
    PeerHeat,
    PrefetchBudget,
    Temperature,
    decay,
    mesh_temperature,
    prefetch_budget,
)


def test_one_access_halves_every_half_life() -> None:
    t = Temperature(half_life=10.0)
    t.observe("a", 0.0)
    assert [t.value("a", x) for x in (0.0, 10.0, 20.0, 30.0)] == [1.0, 0.5, 0.25, 0.125]
    assert t.value("never", 5.0) == 0.0
    assert decay(8.0, -3.0, 10.0) == 8.0  # time never runs backwards


def test_accesses_add_up_after_decay() -> None:
    t = Temperature(half_life=10.0)
    t.observe("a", 0.0)
    t.observe("a", 10.0)
    assert t.value("a", 10.0) == 1.5
    assert t.value("a", 20.0) == 0.75
    late = Temperature(half_life=10.0)  # the same accesses, reported out of order
    late.observe("a", 10.0)
    late.observe("a", 0.0)
    assert late.value("a", 20.0) == 0.75


def test_hottest_and_eviction_of_the_coldest() -> None:
    t = Temperature(half_life=100.0, max_items=10)
    for i in range(10):
        for _ in range(i + 1):
            t.observe(f"r{i}", 0.0)
    assert t.hottest(2, 0.0) == [("r9", 10.0), ("r8", 9.0)]
    t.observe("new", 0.0)  # the 11th: the coldest tenth goes (r0 and ... down to 9 items)
    assert len(t) == 9 and t.value("r0", 0.0) == 0.0 and t.value("new", 0.0) == 1.0


def test_mesh_temperature_adds_peers_heat_decayed_from_their_time() -> None:
    local = Temperature(half_life=10.0)
    local.observe("a", 0.0)
    peers = [PeerHeat(10.0, {"a": 4.0}), PeerHeat(20.0, {"b": 1.0})]
    assert mesh_temperature(local, peers, "a", 20.0) == 0.25 + 2.0
    # a peer stating a time in the future counts as now, not as fresher
    assert mesh_temperature(local, [PeerHeat(1e9, {"a": 4.0})], "a", 20.0) == 0.25 + 4.0


def test_prefetch_budget_grows_with_temperature_and_saturates() -> None:
    mib = 1024 * 1024

    def b(t: float) -> PrefetchBudget:
        return prefetch_budget(t, base_bytes=mib, max_bytes=9 * mib, hot=8.0)

    assert b(0.0) == PrefetchBudget(mib, 1)
    assert b(8.0) == PrefetchBudget(5 * mib, 3)  # half the extra at `hot`
    assert b(24.0) == PrefetchBudget(7 * mib, 3)
    assert b(math.inf) == PrefetchBudget(9 * mib, 4)
    assert b(float("nan")) == b(-5.0) == b(0.0)
    budgets = [b(x).bytes for x in (0, 1, 2, 4, 8, 16, 1e6)]
    assert budgets == sorted(budgets)  # hotter never gets less
    with pytest.raises(ValueError):
        prefetch_budget(1.0, base_bytes=2, max_bytes=1, hot=1.0)
