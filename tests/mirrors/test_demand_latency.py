"""Prefetch never slows demand: with the agent's LinkScheduler (default weights, the gate's
in-flight bound), a deep prefetch + mirror backlog on the same link leaves the latency of
demand chunks where it is without any backlog (virtual time, no wall clock)."""

from __future__ import annotations

import statistics

from bandwidth_sim import MIB, VirtualLinks

from agent.bandwidth import CHUNK, LinkScheduler

RATE = 8 * MIB  # bytes/s of the link


def _demand_latencies(backlog: bool, scale: int = 1) -> list[float]:
    links = VirtualLinks(LinkScheduler(), capacity={"b": RATE})
    if backlog:  # 200 MiB of prefetch and 50 MiB of mirror sync queued before any demand
        for i in range(800 * scale):
            links.enqueue_at(0.0, "b", "prefetch", CHUNK, ("p", i))
        for i in range(200 * scale):
            links.enqueue_at(0.0, "b", "mirror", CHUNK, ("m", i))
    demand = [links.enqueue_at(1.0 + 0.37 * i, "b", "demand", CHUNK, ("d", i))
              for i in range(60)]
    links.run(60.0)
    assert all(d.done == d.done for d in demand)  # every demand send completed (not NaN)
    return [d.done - d.enqueued for d in demand]


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20)[-1]


def test_a_prefetch_backlog_does_not_slow_demand() -> None:
    off, on = _demand_latencies(False), _demand_latencies(True)
    chunk_time = CHUNK / RATE
    # a demand chunk waits at most for what is already on the wire (the in-flight bound:
    # two sends), never for the backlog: 250 MiB would be half a minute at this rate
    assert max(on) <= max(off) + 2 * chunk_time + 1e-9
    assert p95(on) <= 1.1 * p95(off) + 2 * chunk_time
    assert statistics.median(on) <= statistics.median(off) + 2 * chunk_time


def test_demand_latency_does_not_grow_with_the_backlog() -> None:
    """Four times the backlog, the same demand latencies: demand never queues behind it."""
    assert _demand_latencies(True, scale=4) == _demand_latencies(True, scale=1)
