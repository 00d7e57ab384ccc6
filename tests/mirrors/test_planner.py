"""The prefetch planner: each rule on its own, then seeded simulations (thousands of rounds)
that check the invariants on random states and on a device replaying a sequence."""

from __future__ import annotations

import random

import pytest

from agent.mirrors.planner import (
    Cancel,
    Copy,
    Evict,
    Job,
    Limits,
    PlanInput,
    Predicted,
    Prefetch,
    plan,
)

MB = 1024 * 1024
LIM = Limits(device_budget=10 * MB, reserve=MB, min_score=0.1, max_pending=2, max_seconds=60,
             base_bytes=MB, max_bytes=8 * MB, hot=4.0, max_depth=4)


def rid(i: int) -> str:
    return f"{i:032x}"


def P(i: int, score: float, size: int = MB // 2, temp: float = 4.0,
      held: bool = False) -> Predicted:
    return Predicted(rid(i), score, size, temp, held)


def kinds(jobs: list[Job]) -> list[tuple[str, str]]:
    return [(type(j).__name__, j.resource) for j in jobs]


def test_prefetches_the_best_predictions_within_max_pending() -> None:
    jobs = plan(PlanInput("me", [P(1, 0.9), P(2, 0.5), P(3, 0.4)]), LIM)
    assert kinds(jobs) == [("Prefetch", rid(1)), ("Prefetch", rid(2))]
    assert all(isinstance(j, Prefetch) and j.device == "me" for j in jobs)


def test_skips_held_low_scores_and_what_is_already_running() -> None:
    preds = [P(1, 0.9, held=True, temp=40), P(2, 0.05, temp=40), P(3, 0.8, temp=40),
             P(4, 0.7, temp=40)]  # hot: the depth it earns reaches the fourth
    jobs = plan(PlanInput("me", preds, pending=[(rid(3), MB // 2)]), LIM)
    assert kinds(jobs) == [("Prefetch", rid(4))]


def test_a_cold_resource_earns_less_depth_and_fewer_bytes_than_a_hot_one() -> None:
    big = 3 * MB
    cold = plan(PlanInput("me", [P(1, 0.9, big, temp=0.0)]), LIM)
    hot = plan(PlanInput("me", [P(1, 0.9, big, temp=40.0)]), LIM)
    assert cold == [] and kinds(hot) == [("Prefetch", rid(1))]
    # depth: a cold second prediction is beyond the depth a cold resource earns
    assert kinds(plan(PlanInput("me", [P(1, 0.9, temp=0), P(2, 0.8, temp=0)]), LIM)) == [
        ("Prefetch", rid(1))]


def test_cancels_what_demand_overtook_and_what_is_no_longer_predicted() -> None:
    jobs = plan(PlanInput("me", [P(1, 0.9, held=True), P(2, 0.05)],
                          pending=[(rid(1), MB), (rid(2), MB), (rid(3), MB)]), LIM)
    assert [(type(j).__name__, j.resource, j.reason.split(":")[0]) for j in jobs] == [
        ("Cancel", rid(1), "demand overtook"), ("Cancel", rid(2), "no longer predicted"),
        ("Cancel", rid(3), "no longer predicted")]


def test_starts_nothing_while_demand_is_queued_on_the_link() -> None:
    assert plan(PlanInput("me", [P(1, 0.9)], demand_queued=3), LIM) == []


def test_skips_what_the_link_cannot_bring_in_time() -> None:
    slow = PlanInput("me", [P(1, 0.9, 2 * MB, temp=40)], link_capacity=10_000)
    assert plan(slow, LIM) == []
    fast = PlanInput("me", [P(1, 0.9, 2 * MB, temp=40)], link_capacity=10 * MB)
    assert kinds(plan(fast, LIM)) == [("Prefetch", rid(1))]


def test_evicts_colder_less_wanted_copies_lru_by_temperature_to_make_room() -> None:
    lim = Limits(device_budget=2 * MB, min_score=0.1, max_pending=2)
    copies = [Copy(rid(10), MB, 0.5, 1.0), Copy(rid(11), MB, 0.1, 2.0)]
    jobs = plan(PlanInput("me", [P(1, 0.9, MB)], copies), lim)
    assert kinds(jobs) == [("Evict", rid(11)), ("Prefetch", rid(1))]


def test_never_evicts_a_copy_predicted_higher_and_evicts_nothing_in_vain() -> None:
    lim = Limits(device_budget=2 * MB, min_score=0.1, max_pending=2)
    copies = [Copy(rid(10), MB, 0.5, 1.0), Copy(rid(11), MB, 0.1, 2.0)]
    preds = [P(10, 0.95, MB), P(11, 0.9, MB), P(1, 0.5, MB)]
    assert plan(PlanInput("me", preds, copies), lim) == []
    # too big to fit even with every copy gone: nothing is evicted for it
    assert plan(PlanInput("me", [P(1, 0.9, 3 * MB, temp=40)], copies),
                Limits(device_budget=2 * MB, max_bytes=8 * MB)) == []


def test_evicts_down_to_a_lowered_budget_coldest_first() -> None:
    copies = [Copy(rid(i), MB, float(i), 0.0) for i in range(5)]
    jobs = plan(PlanInput("me", [], copies), Limits(device_budget=2 * MB))
    assert kinds(jobs) == [("Evict", rid(0)), ("Evict", rid(1)), ("Evict", rid(2))]


def test_respects_free_space_and_the_reserve() -> None:
    assert plan(PlanInput("me", [P(1, 0.9, MB)], free_bytes=int(1.5 * MB)), LIM) == []
    assert kinds(plan(PlanInput("me", [P(1, 0.9, MB)], free_bytes=3 * MB), LIM)) == [
        ("Prefetch", rid(1))]


# ----------------------------------------------------------------- random states
def _random_state(rng: random.Random) -> tuple[PlanInput, Limits]:
    n = rng.randint(0, 12)
    ids = rng.sample(range(1, 40), n + 8)
    preds = sorted((Predicted(rid(i), rng.random(), rng.randint(0, 6 * MB),
                              rng.choice([0.0, 0.5, 3.0, 50.0]), rng.random() < 0.2)
                    for i in ids[:n]), key=lambda p: -p.score)
    copies = [Copy(rid(i), rng.randint(1, 3 * MB), rng.random() * 10, rng.random() * 100)
              for i in ids[n:n + rng.randint(0, 6)]]
    held = {p.resource for p in preds if p.held} | {c.resource for c in copies}
    preds = [Predicted(p.resource, p.score, p.size, p.temperature, p.resource in held)
             for p in preds]
    pending = [(p.resource, p.size) for p in preds if rng.random() < 0.2]
    lim = Limits(device_budget=rng.randint(0, 16) * MB, reserve=rng.randint(0, 2) * MB,
                 min_score=rng.choice([0.0, 0.1, 0.3]), max_pending=rng.randint(1, 4),
                 max_seconds=rng.choice([1.0, 60.0]), base_bytes=MB, max_bytes=8 * MB,
                 hot=4.0, max_depth=rng.randint(1, 6))
    inp = PlanInput("me", preds, copies, pending,
                    free_bytes=rng.choice([None, rng.randint(0, 20) * MB]),
                    link_capacity=rng.choice([None, 1e5, 1e7]),
                    demand_queued=rng.choice([0, 0, 0, 2]))
    return inp, lim


@pytest.mark.parametrize("seed", range(4))
def test_invariants_hold_on_thousands_of_random_states(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(1000):
        inp, lim = _random_state(rng)
        jobs = plan(inp, lim)
        assert jobs == plan(inp, lim)  # deterministic
        copies = {c.resource: c for c in inp.copies}
        preds = {p.resource: p for p in inp.predictions}
        evicted = {j.resource for j in jobs if isinstance(j, Evict)}
        cancelled = {j.resource for j in jobs if isinstance(j, Cancel)}
        started = [j for j in jobs if isinstance(j, Prefetch)]
        assert evicted <= set(copies), "only prefetched copies are ever evicted"
        for rid_, _ in inp.pending:  # every pending job demand overtook or lost is cancelled
            p = preds.get(rid_)
            assert (rid_ in cancelled) == (p is None or p.held or p.score < lim.min_score)
        if inp.demand_queued:
            assert not started
        still = [s for r, s in inp.pending if r not in cancelled]
        assert len(still) + len(started) <= max(lim.max_pending, len(still))
        for j in started:
            p = preds[j.resource]
            assert not p.held and p.score >= lim.min_score and j.resource not in copies
            assert j.resource not in dict(inp.pending)
        if started:
            kept = sum(c.size for r, c in copies.items() if r not in evicted)
            assert kept + sum(still) + sum(j.size for j in started) <= lim.device_budget
            if inp.free_bytes is not None:
                freed = sum(copies[r].size for r in evicted)
                assert (inp.free_bytes + freed - sum(j.size for j in started)
                        >= lim.reserve)


def test_a_device_replaying_a_sequence_gets_hits_and_never_loses_user_content() -> None:
    """Ten seeded runs of 300 requests each: a device walks a cyclic sequence with noise,
    an oracle-ish predictor (right 70 % of the time) feeds the planner, jobs are applied.
    The user keeps what it used for a few requests then deletes it (one resource it keeps
    for good). Prefetch gives local hits; user content and the budget are never violated."""
    for seed in range(10):
        rng = random.Random(seed)
        seq = [rid(i) for i in range(1, 13)]
        sizes = {r: rng.randint(MB // 4, 2 * MB) for r in seq}
        lim = Limits(device_budget=4 * MB, min_score=0.2, max_pending=2, max_depth=3,
                     base_bytes=MB, max_bytes=4 * MB, hot=2.0)
        kept_for_good = seq[0]
        user: dict[str, int] = {kept_for_good: 10**9}  # user content -> deleted at step
        copies: dict[str, Copy] = {}
        temp: dict[str, float] = {}
        hits = 0
        pos = 0
        for t in range(300):
            user = {r: until for r, until in user.items() if until > t}
            pos = (pos + 1) % len(seq) if rng.random() < 0.9 else rng.randrange(len(seq))
            r = seq[pos]
            if r in copies:
                hits += 1
                del copies[r]  # used: the user's content now, the planner's no more
            if r not in user:
                user[r] = t + 3
            temp = {k: v * 0.9 for k, v in temp.items()}
            temp[r] = temp.get(r, 0.0) + 1.0
            nxt = seq[(pos + 1) % len(seq)] if rng.random() < 0.7 else rng.choice(seq)
            preds = [Predicted(nxt, 0.8, sizes[nxt], temp.get(nxt, 0.0),
                               nxt in user or nxt in copies)]
            jobs = plan(PlanInput("me", preds, list(copies.values())), lim)
            for j in jobs:
                if isinstance(j, Evict):
                    assert j.resource not in user and j.resource in copies
                    del copies[j.resource]
                elif isinstance(j, Prefetch):  # completes before the next request
                    assert j.resource not in user
                    copies[j.resource] = Copy(j.resource, j.size, temp.get(j.resource, 0.0),
                                              float(t))
            assert sum(c.size for c in copies.values()) <= lim.device_budget
        assert kept_for_good in user
        assert hits / 300 > 0.3, (seed, hits)
