"""A small seeded simulation: lookups succeed under churn and loss in few rounds, far fewer
messages than flooding; deterministic for a seed; partitions heal."""

from __future__ import annotations

import dataclasses
import gc
import random

from agent.dht.keyspace import random_id
from agent.dht.lookup import Lookup, State
from agent.dht.records import ProviderRecord, make_record
from agent.dht.routing import RoutingTable
from agent.dht.sim import SimConfig, SimLookup, SimTable, Simulation, sim_signer

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


def _tables(n: int, seed: int) -> tuple[list[bytes], list[tuple[RoutingTable, SimTable]]]:
    rng = random.Random(seed)
    ids = [random_id(rng) for _ in range(n)]
    pairs = []
    for own in ids[:40]:
        plain, fast = RoutingTable(own), SimTable(own)
        for other in rng.sample(ids, 150):
            plain.observe(other, 0.0)
            fast.observe(other, 0.0)
        pairs.append((plain, fast))
    return ids, pairs


def test_sim_table_closest_is_routing_table_closest() -> None:
    """The simulation's bucket-walk ``closest`` gives exactly RoutingTable's answer."""
    rng = random.Random(5)
    ids, pairs = _tables(600, 4)
    for plain, fast in pairs:
        contacts = plain.contacts()
        targets = [random_id(rng) for _ in range(15)] + [plain.own, contacts[0], contacts[-1]]
        for target in targets:
            for n in (None, 0, 1, 3, 20, 500):
                for exclude in (None, contacts[1], rng.choice(ids)):
                    assert fast.closest(target, n, exclude=exclude) == plain.closest(
                        target, n, exclude=exclude)


def test_sim_lookup_decides_like_lookup() -> None:
    """SimLookup and Lookup fed the same replies, failures and late answers ask the same
    nodes in the same order and end with the same rounds, closest nodes and providers."""
    ids, pairs = _tables(600, 6)
    tables = {plain.own: plain for plain, _ in pairs}
    rng = random.Random(8)
    rec_holder = ids[0]
    for trial in range(60):
        target = random_id(rng)
        seeds = pairs[trial % len(pairs)][0].closest(target)
        want = trial % 3
        plain = Lookup(target, want_providers=want, max_candidates=40 if trial % 2 else 160)
        plain.seed(seeds)
        fast = SimLookup.adopt(plain)
        plain = Lookup(target, want_providers=want, max_candidates=plain.max_candidates)
        plain.seed(seeds)
        pending: list[bytes] = []
        steps = 0
        while not plain.finished and steps < 400:
            steps += 1
            assert fast.finished is False
            asked = plain.next_queries()
            assert fast.next_queries() == asked
            assert fast.in_flight == plain.in_flight
            pending += asked
            rng.shuffle(pending)
            while pending and (rng.random() < 0.6 or not asked):
                node = pending.pop()
                fate = rng.random()
                if fate < 0.2:
                    plain.on_failure(node)
                    fast.on_failure(node)
                else:
                    table = tables.get(node)
                    closer = tuple(table.closest(target) if table else rng.sample(ids, 20))
                    recs: tuple[ProviderRecord, ...] = ()
                    if want and fate > 0.93:
                        recs = (make_record(target, rec_holder, b"sim", 0.0,
                                            sim_signer(rec_holder)),)
                    plain.on_reply(node, closer, recs)
                    fast.on_reply(node, closer, recs)
                    if fate > 0.97:  # a duplicate, late answer: ignored by both
                        plain.on_reply(node, closer)
                        fast.on_reply(node, closer)
                assert fast.in_flight == plain.in_flight
                assert fast._frontier() == plain._frontier()
        assert fast.finished and plain.finished
        assert (fast.rounds, fast.closest(), list(fast.providers)) == (
            plain.rounds, plain.closest(), list(plain.providers))


def test_maintenance_is_counted_by_cause() -> None:
    cfg = SimConfig(nodes=120, lookups=100, resources=20, duration_s=900.0, flood_samples=1,
                    seed=5)
    s = Simulation(cfg).run().summary()
    assert set(s["maint_by"]) <= {"publish", "join", "refresh", "ping"}
    assert s["maint_by"]["refresh"] > 0 and s["maint_by"]["join"] > 0
    assert sum(s["maint_by"].values()) == round(s["maint_msgs_per_node_min"] * 120 * 15)


def test_disjoint_paths_never_share_a_node_and_cost_d_times() -> None:
    """S/Kademlia's d disjoint paths: no node is asked by two paths of one lookup; every
    lookup still succeeds with 20 % eclipse attackers (random IDs, answering only with each
    other), at about d times the messages."""
    base = SimConfig(nodes=200, lookups=300, resources=40, duration_s=300.0, churn_fraction=0.0,
                     refresh_s=0.0, flood_samples=1, adversaries=0.2, seed=4)
    plain = Simulation(base).run().summary()
    sim = Simulation(dataclasses.replace(base, paths=3))
    jobs = []
    done = sim._lookup_done
    sim._lookup_done = lambda job, now: (jobs.append(job), done(job, now))  # type: ignore[method-assign]
    three = sim.run().summary()
    assert len(sim.sybils) == 40 and jobs
    for job in jobs:
        asked = [{c for c, v in lk.candidates.items() if v.state is not State.NEW}
                 for lk in job.paths]
        assert len(asked) == 3
        assert not (asked[0] & asked[1] or asked[0] & asked[2] or asked[1] & asked[2])
    assert plain["success"] >= 0.99 and three["success"] >= 0.99
    assert three["msgs_mean"] >= 2 * plain["msgs_mean"]


def test_a_run_leaves_no_cyclic_garbage() -> None:
    """bench/dht.py turns the cyclic GC off during a run (at 10,000 nodes it cost 40 % of the
    CPU): that is only safe while the simulation frees everything by reference counting."""
    gc.collect()
    gc.disable()
    try:
        sim = Simulation(SimConfig(nodes=120, lookups=100, resources=20, duration_s=900.0,
                                   flood_samples=1, seed=9))
        sim.run()
        assert gc.collect() == 0
    finally:
        gc.enable()
