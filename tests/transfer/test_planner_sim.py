"""FetchPlanner under the seeded discrete-event simulator (see transfer_sim.py).

Every run also checks the planner's invariants on every call (no request for a received
chunk, no chunk in flight twice outside endgame, windows within bounds); a failing run
names its seed so it can be replayed alone.
"""

from __future__ import annotations

import math
import random

from transfer_sim import (
    KIB,
    MIB,
    SimSource,
    make_chunks,
    random_planner_kw,
    random_source,
    run,
)

RUNS = 2000


def _scenario(seed: int, *, survivor: bool) -> tuple[list[SimSource], list, dict]:
    rng = random.Random(seed)
    chunks = make_chunks(rng, rng.randint(1, 60))
    n = rng.randint(1, 5)
    sources = [random_source(rng, f"peer{i}", reliable=survivor and i == 0) for i in range(n)]
    rng.shuffle(sources)
    return sources, chunks, random_planner_kw(rng)


def test_seeded_runs_always_complete_when_an_honest_source_survives() -> None:
    endgame_copies = 0
    for seed in range(RUNS):
        sources, chunks, kw = _scenario(seed, survivor=True)
        r = run(sources, chunks, seed=seed, label="survivor", **kw)
        assert r.done, f"seed={seed}: {r.failed}"
        assert r.data_ok, f"seed={seed}: assembled bytes differ"
        endgame_copies += r.duplicate_requests
    assert endgame_copies > 0  # the endgame path was exercised


def test_seeded_runs_fail_with_a_clear_reason_when_every_source_dies() -> None:
    failures = 0
    for seed in range(RUNS // 4):
        sources, chunks, kw = _scenario(seed + 10**6, survivor=False)
        rng = random.Random(seed)
        for s in sources:  # everyone dies early, one way or another
            if s.death_time == math.inf and s.lie_prob < 1:
                s.death_time = rng.uniform(0, 2)
                s.death_mode = rng.choice(["disconnect", "silent"])
        r = run(sources, chunks, seed=seed, label="all-die", **kw)
        if r.done:  # small fetches may beat the deaths
            assert r.data_ok
            continue
        failures += 1
        assert r.failed is not None, f"seed={seed}: neither done nor failed"
        assert "still missing and no usable source is left" in r.failed
        for s in sources:
            assert f"{s.name}: " in r.failed, f"seed={seed}: {s.name} not named: {r.failed}"
    assert failures > RUNS // 8


def test_disconnects_and_silence_are_both_reported() -> None:
    chunks = make_chunks(random.Random(1), 40)
    sources = [
        SimSource("a1", 1 * MIB, death_time=1.0, death_mode="disconnect"),
        SimSource("b2", 1 * MIB, death_time=1.0, death_mode="silent"),
    ]
    r = run(sources, chunks, seed=1, request_timeout=5.0)
    assert not r.done
    assert "a1: disconnected" in r.failed
    assert "b2: 3 consecutive failures (last: timeout)" in r.failed


def test_throughput_shares_track_source_speeds() -> None:
    for seed in range(5):
        chunks = make_chunks(random.Random(seed), 400)
        sources = [SimSource("fast", 10 * MIB), SimSource("slow", 1 * MIB)]
        r = run(sources, chunks, seed=seed)
        assert r.done
        ratio = r.accepted["fast"] / r.accepted["slow"]
        assert 7 <= ratio <= 14, f"seed={seed}: {r.accepted}"
        # and the pair is used well: close to the sum of both links
        ideal = sum(w.length for w, _ in chunks) / (11 * MIB)
        assert r.end_time < ideal * 1.1


def test_window_adapts_to_the_bandwidth_delay_product() -> None:
    chunks = make_chunks(random.Random(3), 300)
    near = run([SimSource("lan", 10 * MIB, latency=0.0005)], chunks, seed=3)
    far = run([SimSource("wan", 10 * MIB, latency=0.1)], chunks, seed=3, max_window=64)
    w_near = near.planner.source_stats()["lan"].window
    w_far = far.planner.source_stats()["wan"].window
    assert w_near <= 6 < 12 <= w_far <= 64
    # a long fat pipe is still filled: within 15% of its capacity
    ideal = sum(w.length for w, _ in chunks) / (10 * MIB) + 0.2
    assert far.end_time < ideal * 1.15
    capped = run([SimSource("wan", 10 * MIB, latency=0.1)], chunks, seed=3, max_window=5)
    assert capped.planner.source_stats()["wan"].window <= 5
    assert capped.end_time > far.end_time  # the cap costs throughput, as it should


def test_a_source_dying_mid_transfer_loses_its_chunks_to_the_others() -> None:
    chunks = make_chunks(random.Random(4), 100)
    duration = sum(w.length for w, _ in chunks) / (8 * MIB)  # both sources together
    sources = [SimSource("stays", 4 * MIB), SimSource("dies", 4 * MIB, death_time=duration / 2)]
    r = run(sources, chunks, seed=4)
    assert r.done and r.data_ok
    assert r.lost_on_removal["dies"] > 0  # it had work in flight when it went
    assert r.accepted["stays"] > 70 and r.accepted["dies"] < 30
    assert r.planner.source_stats()["dies"].reason == "disconnected"


def test_a_silent_source_is_timed_out_and_its_chunks_refetched() -> None:
    chunks = make_chunks(random.Random(5), 400)
    sources = [
        SimSource("stays", 4 * MIB),
        SimSource("hangs", 4 * MIB, death_time=2.0, death_mode="silent"),
    ]
    r = run(sources, chunks, seed=5, request_timeout=5.0)
    assert r.done and r.data_ok
    st = r.planner.source_stats()["hangs"]
    assert st.last_error == "timeout" and st.completed < 100
    assert r.accepted["stays"] > 300


def test_a_lying_source_is_dropped_and_the_fetch_is_byte_accurate() -> None:
    for seed in range(20):
        chunks = make_chunks(random.Random(seed), 50)
        sources = [SimSource("liar", 20 * MIB, lie_prob=0.5), SimSource("honest", 2 * MIB)]
        r = run(sources, chunks, seed=seed)
        assert r.done and r.data_ok
        st = r.planner.source_stats()["liar"]
        assert st.state == "dropped" and "bad hash" in st.reason
        assert st.failures == 1  # dropped on its first lie


def test_endgame_rescues_chunks_stuck_on_a_stalled_source() -> None:
    chunks = make_chunks(random.Random(6), 40, mean=64 * KIB)
    duration = sum(w.length for w, _ in chunks) / (2 * MIB)

    def sources() -> list[SimSource]:
        return [
            SimSource("ok", 1 * MIB),
            SimSource("stalls", 1 * MIB, death_time=duration * 0.8, death_mode="silent"),
        ]

    with_endgame = run(sources(), chunks, seed=6, request_timeout=30.0)
    without = run(sources(), chunks, seed=6, request_timeout=30.0, endgame=False)
    assert with_endgame.done and without.done
    assert with_endgame.duplicate_requests > 0 and without.duplicate_requests == 0
    assert without.end_time > 30.0  # had to wait for the timeout
    assert with_endgame.end_time < duration * 2  # virtual seconds, not a wall-clock check
