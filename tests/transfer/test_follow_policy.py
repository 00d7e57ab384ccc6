"""The follow policy (agent/transfer/follow/policy.py), in virtual time.

The seeded simulation: one publisher makes versions at random times; several followers hear
(or miss) each announcement, reconnect now and then (sometimes in storms), and their syncs
fail at random. Whatever happens, every follower must reach the newest version within one
periodic interval plus the backoff bound, never run more syncs at once than allowed, and
never check more than the triggers justify (no storms).
"""

from __future__ import annotations

import random

import pytest

from agent.transfer.follow.policy import FollowPolicy

RID = "ab" * 16


def test_an_announcement_queues_a_sync_and_a_stale_one_does_not() -> None:
    p = FollowPolicy(rng=random.Random(1))
    p.track(RID, 3, 0.0)
    assert p.due(0.0) == [(RID, "first")]
    p.done(RID, 3, 1.0, ok=True)
    assert p.due(2.0) == []
    assert not p.announced(RID, 3, 2.0)  # not newer than held
    assert not p.announced(RID, 2, 2.0)  # a downgrade is never news
    assert p.announced(RID, 4, 2.0)
    assert not p.announced(RID, 4, 2.0)  # already known
    assert p.due(2.0) == [(RID, "announced")]


def test_failures_back_off_exponentially_while_a_newer_version_is_known() -> None:
    p = FollowPolicy(retry_base=5, retry_max=40, jitter=0.0, rng=random.Random(1))
    p.track(RID, 1, 0.0)
    p.due(0.0)
    p.done(RID, 1, 0.0, ok=True)
    p.announced(RID, 2, 0.0)
    now, waits = 0.0, []
    for _ in range(5):
        assert p.due(now) == [(RID, "announced" if not waits else "retry")]
        p.done(RID, 1, now, ok=False)
        nxt = p.next_wakeup(now)
        assert nxt is not None
        waits.append(nxt - now)
        now = nxt
    assert waits == [5, 10, 20, 40, 40]


def test_reconnect_storms_cost_one_check_per_gap() -> None:
    p = FollowPolicy(catchup_gap=30, rng=random.Random(1))
    p.track(RID, 1, 0.0)
    p.due(0.0)
    p.done(RID, 1, 0.0, ok=True)
    assert p.connected(10.0) == []  # checked 10 s ago
    assert p.connected(31.0) == [RID]
    assert p.connected(31.5) == []  # already queued
    assert p.due(31.5) == [(RID, "catch-up")]


@pytest.mark.parametrize("seed", range(6))
def test_seeded_simulation_followers_converge_within_bounds(seed: int) -> None:
    rng = random.Random(seed)
    interval, retry_max, max_in_flight = 600.0, 300.0, 2
    n_res, n_followers, horizon = 5, 8, 6 * 3600.0
    rids = [f"{i:032x}" for i in range(n_res)]
    latest = dict.fromkeys(rids, 1)
    publish_times = sorted((rng.uniform(0, horizon - 2 * interval - retry_max),
                            rng.choice(rids)) for _ in range(40))
    followers = []
    for _ in range(n_followers):
        p = FollowPolicy(interval=interval, retry_max=retry_max, max_in_flight=max_in_flight,
                         rng=random.Random(rng.random()))
        for r in rids:
            p.track(r, 1, 0.0)
        followers.append({"p": p, "held": dict.fromkeys(rids, 1), "flight": {}, "syncs": 0})
    now, step = 0.0, 1.0
    events = list(publish_times)
    last_publish = dict.fromkeys(rids, 0.0)
    while now < horizon:
        while events and events[0][0] <= now:
            _, r = events.pop(0)
            latest[r] += 1
            last_publish[r] = now
            for f in followers:
                if rng.random() < 0.7:  # 30 % of announcements are lost
                    f["p"].announced(r, latest[r], now)
        if rng.random() < 0.002:  # a reconnect storm: every follower at once, many times
            for f in followers:
                for _ in range(5):
                    f["p"].connected(now)
        for f in followers:
            p = f["p"]
            for r, t_end in list(f["flight"].items()):
                if t_end <= now:
                    del f["flight"][r]
                    ok = rng.random() < 0.8  # 20 % of syncs fail
                    if ok:
                        f["held"][r] = latest[r]
                    p.done(r, f["held"][r], now, ok)
            for r, _why in p.due(now):
                f["flight"][r] = now + rng.uniform(1, 20)
                f["syncs"] += 1
            assert len(f["flight"]) <= max_in_flight
        now += step
    for f in followers:
        assert f["held"] == latest, "a follower fell behind"
        # bounded: the syncs are explained by the triggers (first, announcements, retries,
        # periodic checks, catch-ups), not a storm
        periodic = n_res * horizon / (interval * 0.9)
        assert f["syncs"] <= n_res + len(publish_times) * 6 + periodic + 200


def test_the_policy_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        FollowPolicy(interval=0)
    with pytest.raises(ValueError):
        FollowPolicy(max_in_flight=0)
