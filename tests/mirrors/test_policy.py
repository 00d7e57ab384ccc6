"""The Resource Mirror Manager's rules: scoring, create/expand/shrink/move/discard with
hysteresis, collaborative mirrors, and seeded simulations of thousands of rounds."""

from __future__ import annotations

import random

import pytest

from agent.mirrors.policy import (
    CreateMirror,
    Demand,
    DropMirror,
    MirrorJob,
    MirrorRules,
    MirrorUse,
    Node,
    node_score,
    plan_mirrors,
    similarity,
)

R = "ab" * 16
MB = 1024 * 1024
RULES = MirrorRules(create=2.0, keep=0.5, create_score=0.5, expand=16.0, expand_load=0.75,
                    cold_after=100.0, dwell=50.0, margin=0.25, max_mirrors=4,
                    max_bytes=100 * MB)


def dev(c: str) -> str:
    return c * 64


def origin(**kw: object) -> Node:
    return Node(dev("a"), rtt_ms=5.0, holds=frozenset({R}), **kw)  # type: ignore[arg-type]


def summary(jobs: list[MirrorJob]) -> list[tuple[str, str]]:
    return [(type(j).__name__, j.host[:1]) for j in jobs]


def test_scores_prefer_near_idle_fast_reputable_nodes() -> None:
    near, far = Node(dev("c"), rtt_ms=1.0), Node(dev("d"), rtt_ms=200.0)
    assert node_score(near) > node_score(far)
    assert node_score(Node(dev("c"), load=0.0)) > node_score(Node(dev("c"), load=1.0))
    assert node_score(Node(dev("c"), reputation=1.0)) > node_score(Node(dev("c"),
                                                                        reputation=0.0))
    assert node_score(Node(dev("c"), bandwidth=1e8)) > node_score(Node(dev("c"),
                                                                       bandwidth=1e5))
    shared = Node(dev("c"), hosts={R: 0.9})
    assert node_score(shared, R) > node_score(shared, "cd" * 16)
    for bad in (float("nan"), float("inf"), -1.0):  # hostile numbers never break the order
        s = node_score(Node(dev("c"), rtt_ms=bad, load=bad, reputation=bad, bandwidth=bad))
        assert 0.0 <= s <= 1.15


def test_cosine_similarity_of_temperature_vectors() -> None:
    assert similarity({"x": 1.0, "y": 1.0}, {"x": 2.0, "y": 2.0}) == pytest.approx(1.0)
    assert similarity({"x": 1.0}, {"y": 1.0}) == 0.0
    assert similarity({}, {"x": 1.0}) == 0.0


def test_creates_a_mirror_of_a_hot_singly_held_resource_on_the_best_non_holder() -> None:
    nodes = [origin(), Node(dev("c"), rtt_ms=1.0), Node(dev("d"), rtt_ms=80.0)]
    jobs, _ = plan_mirrors([Demand(R, MB, temperature=3.0)], nodes, [], RULES, 0.0)
    assert summary(jobs) == [("CreateMirror", "c")]
    assert "1 origin holder" in jobs[0].reason
    for d in (Demand(R, MB, 1.0), Demand(R, MB, 3.0, held=True),
              Demand(R, MB, 3.0, prefetching=True)):  # cold, held, prefetched: none
        assert plan_mirrors([d], nodes, [], RULES, 0.0)[0] == []
    # predicted with a high score counts as demand even before it is hot
    assert summary(plan_mirrors([Demand(R, MB, 0.0, score=0.9)], nodes, [], RULES, 0.0)[0]
                   ) == [("CreateMirror", "c")]


def test_no_mirror_when_enough_origins_and_none_clearly_better() -> None:
    nodes = [origin(), Node(dev("b"), rtt_ms=5.0, holds=frozenset({R})),
             Node(dev("c"), rtt_ms=4.0)]
    assert plan_mirrors([Demand(R, MB, 9.0)], nodes, [], RULES, 0.0)[0] == []
    far = [Node(dev("a"), rtt_ms=300.0, holds=frozenset({R})),
           Node(dev("b"), rtt_ms=300.0, holds=frozenset({R})), Node(dev("c"), rtt_ms=1.0)]
    jobs, _ = plan_mirrors([Demand(R, MB, 9.0)], far, [], RULES, 0.0)
    assert summary(jobs) == [("CreateMirror", "c")] and "closer" in jobs[0].reason


def test_bounds_mirrors_and_bytes() -> None:
    rids = [f"{i:032x}" for i in range(10)]
    nodes = [Node(dev("c"), rtt_ms=1.0)]
    jobs, _ = plan_mirrors([Demand(r, MB, 5.0) for r in rids], nodes, [], RULES, 0.0)
    assert len(jobs) == RULES.max_mirrors
    jobs, _ = plan_mirrors([Demand(r, 60 * MB, 5.0) for r in rids], nodes, [], RULES, 0.0)
    assert len(jobs) == 1  # 100 MB allowed: one 60 MB mirror


def test_discards_only_after_staying_cold_and_keeps_within_the_hysteresis_band() -> None:
    nodes = [origin(), Node(dev("c"), rtt_ms=1.0)]
    use = MirrorUse(R, dev("c"), 0.0, "hot", MB)
    jobs, kept = plan_mirrors([Demand(R, MB, 1.0)], nodes, [use], RULES, 10.0)
    assert jobs == [] and kept[0].cold_since is None  # between keep and create: kept
    jobs, kept = plan_mirrors([Demand(R, MB, 0.1)], nodes, [use], RULES, 10.0)
    assert jobs == [] and kept[0].cold_since == 10.0
    jobs, kept = plan_mirrors([Demand(R, MB, 0.1)], nodes, kept, RULES, 109.0)
    assert jobs == []
    jobs, kept = plan_mirrors([Demand(R, MB, 0.1)], nodes, kept, RULES, 110.0)
    assert summary(jobs) == [("DropMirror", "c")] and kept == []
    assert "cold" in jobs[0].reason


def test_drops_at_once_when_the_host_is_gone_or_the_resource_is_held_here() -> None:
    use = MirrorUse(R, dev("c"), 0.0, "hot", MB)
    jobs, kept = plan_mirrors([Demand(R, MB, 9.0)], [origin()], [use], RULES, 1.0)
    assert summary(jobs)[0] == ("DropMirror", "c") and kept == []
    jobs, _ = plan_mirrors([Demand(R, MB, 9.0, held=True)],
                           [origin(), Node(dev("c"))], [use], RULES, 1.0)
    assert summary(jobs) == [("DropMirror", "c")]


def test_moves_to_a_clearly_better_node_only_after_the_dwell_time() -> None:
    use = MirrorUse(R, dev("c"), 0.0, "hot", MB)
    moved = [origin(), Node(dev("c"), rtt_ms=300.0), Node(dev("d"), rtt_ms=1.0)]
    assert plan_mirrors([Demand(R, MB, 9.0)], moved, [use], RULES, 10.0)[0] == []
    jobs, kept = plan_mirrors([Demand(R, MB, 9.0)], moved, [use], RULES, 60.0)
    assert summary(jobs) == [("CreateMirror", "d"), ("DropMirror", "c")] and kept == []
    slightly = [origin(), Node(dev("c"), rtt_ms=3.0), Node(dev("d"), rtt_ms=1.0)]
    assert plan_mirrors([Demand(R, MB, 9.0)], slightly, [use], RULES, 60.0)[0] == []


def test_expands_when_very_hot_and_the_host_busy_then_shrinks_when_it_cools() -> None:
    nodes = [origin(), Node(dev("c"), rtt_ms=1.0, load=0.9), Node(dev("d"), rtt_ms=2.0)]
    use = MirrorUse(R, dev("c"), 0.0, "hot", MB)
    jobs, _ = plan_mirrors([Demand(R, MB, 20.0)], nodes, [use], RULES, 1.0)
    assert summary(jobs) == [("CreateMirror", "d")] and "expand" in jobs[0].reason
    two = [use, MirrorUse(R, dev("d"), 1.0, "expand", MB)]
    assert plan_mirrors([Demand(R, MB, 20.0)], nodes, two, RULES, 100.0)[0] == []
    jobs, kept = plan_mirrors([Demand(R, MB, 1.5)], nodes, two, RULES, 100.0)
    assert [type(j).__name__ for j in jobs] == ["DropMirror"] and len(kept) == 1
    assert "shrink" in jobs[0].reason


def test_devices_with_similar_usage_share_one_mirror() -> None:
    # c already mirrors R for a device whose usage is like ours: it beats a slightly
    # closer node that would need a second copy
    nodes = [origin(), Node(dev("c"), rtt_ms=3.0, hosts={R: 0.95}, holds=frozenset({R})),
             Node(dev("d"), rtt_ms=2.0)]
    jobs, _ = plan_mirrors([Demand(R, MB, 3.0)], nodes, [], RULES, 0.0)
    assert summary(jobs) == [("CreateMirror", "c")] and "shared" in jobs[0].reason
    # dissimilar usage: no bonus, the closer node wins
    nodes[1] = Node(dev("c"), rtt_ms=3.0, hosts={R: 0.0}, holds=frozenset({R}))
    assert summary(plan_mirrors([Demand(R, MB, 3.0)], nodes, [], RULES, 0.0)[0]) == [
        ("CreateMirror", "d")]


def test_jittering_demand_does_not_flap() -> None:
    """2000 rounds of a temperature jittering around the create threshold and RTTs
    jittering by 20 %: one mirror is created and kept, never dropped or moved."""
    rng = random.Random(7)
    using: list[MirrorUse] = []
    creates = drops = 0
    for t in range(2000):
        nodes = [origin(), Node(dev("c"), rtt_ms=5.0 * rng.uniform(0.8, 1.2)),
                 Node(dev("d"), rtt_ms=5.5 * rng.uniform(0.8, 1.2))]
        temp = 2.0 * rng.uniform(0.6, 1.4)
        jobs, using = plan_mirrors([Demand(R, MB, temp)], nodes, using, RULES, float(t))
        for j in jobs:
            if isinstance(j, CreateMirror):
                creates += 1
                using.append(MirrorUse(j.resource, j.host, float(t), j.reason, j.size))
            else:
                drops += 1
    assert (creates, drops) == (1, 0)


@pytest.mark.parametrize("seed", range(3))
def test_invariants_on_thousands_of_random_rounds(seed: int) -> None:
    rng = random.Random(seed)
    rids = [f"{i:032x}" for i in range(12)]
    for _ in range(1000):
        nodes = [Node(dev(c), rtt_ms=rng.choice([None, rng.uniform(0, 200)]),
                      load=rng.choice([None, rng.random()]),
                      reputation=rng.choice([None, rng.random()]),
                      holds=frozenset(rng.sample(rids, rng.randint(0, 4))),
                      hosts={r: rng.random() for r in rng.sample(rids, rng.randint(0, 2))},
                      room=rng.random() < 0.8) for c in "abcdef"[: rng.randint(0, 6)]]
        demand = [Demand(r, rng.randint(0, 50 * MB), rng.choice([0.0, 1.0, 3.0, 30.0]),
                         rng.random(), rng.random() < 0.1, rng.random() < 0.1)
                  for r in rng.sample(rids, rng.randint(0, 8))]
        using = [MirrorUse(r, dev(rng.choice("abcdefg")), rng.uniform(0, 100), "x",
                           rng.randint(0, 10 * MB),
                           rng.choice([None, rng.uniform(0, 100)]))
                 for r in rng.sample(rids, rng.randint(0, 4))]
        now = rng.uniform(100, 300)
        jobs, kept = plan_mirrors(demand, nodes, using, RULES, now)
        assert (jobs, kept) == plan_mirrors(demand, nodes, using, RULES, now)
        by = {n.device: n for n in nodes}
        want = {d.resource: d for d in demand}
        creates = [j for j in jobs if isinstance(j, CreateMirror)]
        assert len(kept) + len(creates) <= max(RULES.max_mirrors, len(using))
        for j in creates:
            n = by[j.host]
            assert j.resource in n.hosts or (j.resource not in n.holds and n.room)
            d = want.get(j.resource)
            assert d is None or not (d.held or d.prefetching) or "move" in j.reason
        for j in jobs:
            if isinstance(j, DropMirror):
                assert any(u.resource == j.resource and u.host == j.host for u in using)
        for u in kept:
            assert u.host in by  # a mirror on a vanished host is never kept
