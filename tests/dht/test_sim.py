"""A small seeded simulation: lookups succeed under churn and loss in few rounds, far fewer
messages than flooding; deterministic for a seed; partitions heal."""

from __future__ import annotations

from agent.dht.sim import SimConfig, Simulation

SMALL = SimConfig(nodes=200, lookups=2000, resources=100, duration_s=1200.0, refresh_s=0.0,
                  flood_samples=5, seed=7)


def test_lookups_succeed_under_churn_in_few_rounds() -> None:
    s = Simulation(SMALL).run().summary()
    assert s["lookups"] == 2000
    assert s["success"] >= 0.99
    assert s["rounds_p50"] <= 2 and s["rounds_p99"] <= 4
    assert s["churned"] == 80  # 20 % of 200 per 10 virtual minutes, for 20 minutes
    assert s["msgs_mean"] * 20 <= s["flood_msgs_mean"]
    assert s["rejected_records"] == 0


def test_same_seed_same_figures() -> None:
    cfg = SimConfig(nodes=100, lookups=200, resources=30, duration_s=600.0, refresh_s=0.0,
                    flood_samples=2, seed=3)
    assert Simulation(cfg).run().summary() == Simulation(cfg).run().summary()


def test_partition_then_heal() -> None:
    cfg = SimConfig(nodes=150, lookups=600, resources=60, duration_s=900.0, refresh_s=0.0,
                    partition=(200.0, 500.0, 0.3), flood_samples=2, seed=11)
    s = Simulation(cfg).run().summary()
    assert s["success"] >= 0.97  # lookups inside one side, then across the healed mesh
