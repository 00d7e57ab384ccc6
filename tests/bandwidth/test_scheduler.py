"""LinkScheduler in virtual time: weighted shares, latency, limits, fairness, adaptation."""

from __future__ import annotations

import math
import random

import pytest
from bandwidth_sim import KIB, MIB, VirtualLinks, bucket_respected

from agent.bandwidth import CHUNK, DEFAULT_WEIGHTS, LinkScheduler, TokenBucket
from agent.config import BandwidthConfig

CLASSES = ("demand", "mirror", "prefetch")


def flood(links: VirtualLinks, peer: str, cls: str, n: int, size: int = CHUNK, t: float = 0.0):
    return [links.enqueue_at(t, peer, cls, size, (cls, i)) for i in range(n)]


def shares(counts: dict[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()}


@pytest.mark.parametrize("limited_by", ["global_limit", "slow_link"])
def test_drr_shares_match_weights_under_saturation(limited_by: str) -> None:
    if limited_by == "global_limit":
        links = VirtualLinks(LinkScheduler(DEFAULT_WEIGHTS, global_limit=10 * MIB))
    else:  # no configured limit: the link itself is the bottleneck
        links = VirtualLinks(LinkScheduler(DEFAULT_WEIGHTS), capacity={"p": 10 * MIB})
    rng = random.Random(1)
    for cls in CLASSES:
        for i in range(3000):
            links.enqueue_at(0.0, "p", cls, rng.randint(64 * KIB, 512 * KIB), (cls, i))
    links.run(60.0)
    got = shares(links.bytes_by("cls", since=1.0))
    assert got["demand"] == pytest.approx(16 / 21, abs=0.02)
    assert got["mirror"] == pytest.approx(4 / 21, abs=0.02)
    assert got["prefetch"] == pytest.approx(1 / 21, abs=0.01)
    # saturated: the link was kept busy
    assert sum(links.bytes_by("cls", since=1.0).values()) >= 0.97 * 59 * 10 * MIB


def test_custom_weights_and_items_larger_than_the_quantum() -> None:
    sched = LinkScheduler({"a": 3, "b": 1}, global_limit=MIB, quantum=1 * KIB)
    links = VirtualLinks(sched)
    flood(links, "p", "a", 2000, 10 * KIB)
    flood(links, "p", "b", 2000, 10 * KIB)
    links.run(20.0)
    got = shares(links.bytes_by("cls"))
    assert got["a"] == pytest.approx(0.75, abs=0.02)


def test_demand_latency_is_bounded_while_prefetch_floods() -> None:
    cap = 2 * MIB  # a slow link, no configured limit: queueing must happen in the scheduler
    links = VirtualLinks(LinkScheduler(DEFAULT_WEIGHTS), capacity={"p": cap})
    flood(links, "p", "prefetch", 1000)
    flood(links, "p", "mirror", 300)
    demands = [links.enqueue_at(0.7 + 1.3 * i, "p", "demand", CHUNK, i) for i in range(40)]
    links.run(60.0)
    slot = CHUNK / cap
    for d in demands:
        # at most the sends already handed to the link, then its own
        assert d.done - d.enqueued <= 3 * slot + 1e-9, (d, slot)
    assert links.max_in_flight["p"] <= 2
    assert links.sched.queued("prefetch") > 500  # the backlog waits here, not in the socket


def test_limits_hold_over_a_long_run() -> None:
    rng = random.Random(7)
    g, pp = 4 * MIB, 1.5 * MIB
    sched = LinkScheduler(DEFAULT_WEIGHTS, global_limit=g, per_peer_limit=pp)
    links = VirtualLinks(sched)
    t = 0.0
    while t < 300:
        t += rng.expovariate(40)
        links.enqueue_at(
            t, rng.choice("abcd"), rng.choice(CLASSES), rng.randint(1, 2 * CHUNK), None
        )
    links.run(320.0)
    log = [(s.released, s.nbytes) for s in links.log]
    assert bucket_respected(log, g, sched.burst)
    for peer in "abcd":
        mine = [(s.released, s.nbytes) for s in links.log if s.peer == peer]
        assert bucket_respected(mine, pp, sched.burst), peer
    # offered ~40 * 256 KiB/s > 4 MiB/s: the global limit is the binding one, and used fully
    total = sum(n for _, n in log if 10 <= _ < 300)
    assert total >= 0.95 * g * 290


def test_work_conserving_prefetch_alone_gets_everything() -> None:
    links = VirtualLinks(LinkScheduler(DEFAULT_WEIGHTS, global_limit=8 * MIB))
    flood(links, "p", "prefetch", 2000)
    links.run(20.0)
    assert sum(links.bytes_by("cls", until=20.0).values()) >= 0.97 * 20 * 8 * MIB
    # demand arriving takes its share at once; prefetch keeps its 1/17
    flood(links, "p", "demand", 2000, t=20.0)
    links.run(40.0)
    got = shares(links.bytes_by("cls", since=21.0))
    assert got["prefetch"] == pytest.approx(1 / 17, abs=0.01)


def test_peers_share_a_class_fairly_in_bytes() -> None:
    links = VirtualLinks(LinkScheduler(DEFAULT_WEIGHTS, global_limit=6 * MIB))
    flood(links, "small", "prefetch", 8000, 32 * KIB)
    flood(links, "large", "prefetch", 2000, 512 * KIB)
    flood(links, "mid", "prefetch", 4000, CHUNK)
    links.run(30.0)
    got = shares(links.bytes_by("peer"))
    for peer in ("small", "large", "mid"):
        assert got[peer] == pytest.approx(1 / 3, abs=0.02), got


def test_a_late_peer_does_not_bank_credit_nor_starve_others() -> None:
    links = VirtualLinks(LinkScheduler(DEFAULT_WEIGHTS, global_limit=4 * MIB))
    flood(links, "early", "mirror", 2000)
    flood(links, "late", "mirror", 2000, t=10.0)
    links.run(20.0)
    got = shares(links.bytes_by("peer", since=10.5))
    assert got["late"] == pytest.approx(0.5, abs=0.03)


def test_per_peer_limit_leaves_the_rest_to_other_peers() -> None:
    sched = LinkScheduler(DEFAULT_WEIGHTS, per_peer_limit=1 * MIB)
    links = VirtualLinks(sched, capacity={"a": 50 * MIB, "b": 50 * MIB})
    flood(links, "a", "demand", 500)
    flood(links, "b", "prefetch", 500)
    links.run(10.0)
    by_peer = links.bytes_by("peer")
    # demand on a is capped by a's limit; b's prefetch is not held back by it
    assert by_peer["a"] <= 1 * MIB * 10 + sched.burst
    assert by_peer["b"] == pytest.approx(by_peer["a"], rel=0.1)


def test_capacity_estimate_follows_the_link_and_bounds_bytes_in_flight() -> None:
    slow = VirtualLinks(LinkScheduler(DEFAULT_WEIGHTS), capacity={"p": 1 * MIB})
    flood(slow, "p", "prefetch", 100)
    slow.run(30.0)
    assert slow.sched.capacity_estimate("p") == pytest.approx(1 * MIB, rel=0.05)
    # 50 ms of 1 MiB/s is less than a chunk: one send at a time once measured
    assert all(
        later.released >= earlier.done
        for earlier, later in zip(slow.log[2:], slow.log[3:], strict=False)
    )
    fast = VirtualLinks(LinkScheduler(DEFAULT_WEIGHTS), capacity={"p": 100 * MIB})
    flood(fast, "p", "prefetch", 100)
    fast.run(30.0)
    assert fast.sched.capacity_estimate("p") == pytest.approx(100 * MIB, rel=0.05)
    assert fast.max_in_flight["p"] == 2
    assert fast.sched.capacity_estimate() is not None


def test_poll_reports_when_to_come_back() -> None:
    sched = LinkScheduler(DEFAULT_WEIGHTS, global_limit=MIB, burst=CHUNK)
    assert sched.poll(0.0) == ([], None)
    for i in range(3):
        sched.enqueue("p", "mirror", CHUNK, i, 0.0)
    tokens, delay = sched.poll(0.0)
    assert tokens == [0]
    assert delay == pytest.approx(0.25)
    assert sched.poll(0.1)[0] == []
    tokens, _ = sched.poll(0.25)
    assert tokens == [1]


def test_in_flight_cap_releases_on_completion_only() -> None:
    sched = LinkScheduler(DEFAULT_WEIGHTS, max_inflight_per_peer=2)
    for i in range(5):
        sched.enqueue("p", "demand", CHUNK, i, 0.0)
    assert sched.poll(0.0) == ([0, 1], None)  # no timer: only on_sent unblocks
    sched.on_sent("p", CHUNK, 0.001, measured=False)
    assert sched.poll(0.001)[0] == [2]
    assert sched.in_flight("p") == 2


def test_cancel_withdraws_a_queued_send() -> None:
    sched = LinkScheduler(DEFAULT_WEIGHTS, max_inflight_per_peer=1)
    a, b, c = object(), object(), object()
    for tok in (a, b, c):
        sched.enqueue("p", "prefetch", CHUNK, tok, 0.0)
    assert sched.poll(0.0)[0] == [a]
    assert not sched.cancel(a)  # already released
    assert sched.cancel(b)
    assert not sched.cancel(b)
    sched.on_sent("p", CHUNK, 0.1)
    assert sched.poll(0.1)[0] == [c]
    assert sched.queued() == 0


def test_strict_about_classes_and_settings() -> None:
    sched = LinkScheduler(DEFAULT_WEIGHTS)
    with pytest.raises(ValueError, match="unknown traffic class 'bulk'"):
        sched.enqueue("p", "bulk", 1, object(), 0.0)
    tok = object()
    sched.enqueue("p", "demand", 1, tok, 0.0)
    with pytest.raises(ValueError, match="already queued"):
        sched.enqueue("p", "demand", 1, tok, 0.0)
    for bad in ({}, {"demand": 0}, {"demand": 1.5}):
        with pytest.raises(ValueError):
            LinkScheduler(bad)
    with pytest.raises(ValueError):
        LinkScheduler(DEFAULT_WEIGHTS, global_limit=-1)


def test_from_config() -> None:
    cfg = BandwidthConfig(global_limit=5_000_000, per_peer_limit=1_000_000, mirror_weight=8)
    sched = LinkScheduler.from_config(cfg)
    assert sched.weights == {"demand": 16, "relay": 8, "mirror": 8, "prefetch": 1}
    assert sched.global_limit == 5_000_000 and sched.per_peer_limit == 1_000_000


def test_token_bucket_oversized_send_goes_when_full_and_leaves_debt() -> None:
    b = TokenBucket(rate=100, burst=50, now=0.0)
    assert b.allows(80)
    b.take(80)
    assert not b.allows(10)
    assert b.wait(10) == pytest.approx(0.4)
    b.refill(1.0)
    assert b.tokens == pytest.approx(50)
    assert math.isclose(b.wait(1000), 0.0)


def test_random_operations_keep_the_books_straight() -> None:
    """Seeded fuzz: tokens come out once, cancelled ones never, caps hold, nothing sticks."""
    for seed in range(300):
        _fuzz_one(seed)


def _fuzz_one(seed: int) -> None:
    rng = random.Random(seed)
    cap = rng.choice([0, 1, 2, 3])
    sched = LinkScheduler(
        {"demand": rng.randint(1, 20), "mirror": rng.randint(1, 5), "prefetch": 1},
        global_limit=rng.choice([0, 0, 2 * MIB]),
        per_peer_limit=rng.choice([0, 0, MIB]),
        max_inflight_per_peer=cap,
        burst=rng.choice([None, 64 * KIB]),
    )
    now, n = 0.0, 0
    queued: dict[int, str] = {}  # token -> peer
    in_flight: dict[str, list[tuple[int, int]]] = {}
    sizes: dict[int, int] = {}

    def poll() -> float | None:
        tokens, delay = sched.poll(now)
        for tok in tokens:
            assert tok in queued, (seed, tok)
            peer = queued.pop(tok)
            in_flight.setdefault(peer, []).append((tok, sizes[tok]))
            if cap:
                assert len(in_flight[peer]) <= cap, seed
        if not tokens and delay is None and queued:
            # stuck only while waiting for completions, never for nothing
            assert all(in_flight.get(p) for p in queued.values()), seed
        return delay

    for _ in range(400):
        op = rng.random()
        if op < 0.4:
            n += 1
            peer = rng.choice("abc")
            sizes[n] = rng.randint(0, 300 * KIB)
            sched.enqueue(peer, rng.choice(CLASSES), sizes[n], n, now)
            queued[n] = peer
        elif op < 0.5 and n:
            tok = rng.randint(1, n)
            assert sched.cancel(tok) == (tok in queued), seed
            queued.pop(tok, None)
        elif op < 0.75 and any(in_flight.values()):
            peer = rng.choice([p for p, v in in_flight.items() if v])
            _, size = in_flight[peer].pop(0)
            sched.on_sent(peer, size, now, measured=rng.random() < 0.8)
        else:
            now += rng.expovariate(20)
            poll()
    for _ in range(100_000):  # drain: complete everything, wait as told
        if not queued:
            break
        for peer, sends in in_flight.items():
            for _, size in sends:
                sched.on_sent(peer, size, now)
            sends.clear()
        delay = poll()
        now += delay if delay is not None else 0.001
    assert not queued and sched.queued() == 0, seed
