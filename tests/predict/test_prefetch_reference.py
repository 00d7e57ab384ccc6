"""bench/prefetch_reference.py: the traces README's protocol with unbounded baselines, on
hand-made traces whose answers are known."""

from __future__ import annotations

from types import ModuleType

import pytest
from bench_loader import load_bench

from agent.predict.traces import Request


@pytest.fixture(scope="module")
def ref() -> ModuleType:
    return load_bench("prefetch_reference")


def scan(clients: int, length: int) -> list[Request]:
    """Every client walks the same tiles in the same order, one client after another."""
    return [Request(float(c * length + i), f"c{c}", f"tile{i}", 100)
            for c in range(clients) for i in range(length)]


def test_a_repeated_scan_is_predicted_by_markov_and_missed_by_lru(ref: ModuleType) -> None:
    reqs = scan(10, 50)  # test part: the last 3 clients, each scan seen 7 times before
    assert ref.replay(reqs, 0, 100) == 0.0  # each client asks for each tile once
    # Markov-1: every request but each client's first was prefetched by the one before
    assert ref.replay(reqs, 1, 100) == pytest.approx(147 / 150)
    assert ref.replay(reqs, 2, 100) == pytest.approx(147 / 150)


def test_a_bound_on_contexts_is_not_what_the_reference_has(ref: ModuleType) -> None:
    """More distinct transitions than any bounded table holds: still all learnt."""
    reqs = scan(4, 30_000)
    assert ref.replay(reqs, 1, 10) > 0.99


def test_caches_are_emptied_at_the_split_but_models_keep_learning(ref: ModuleType) -> None:
    reqs = [Request(float(i), "c", f"r{i % 5}", 1) for i in range(100)]
    # LRU of 5 objects over a cycle of 5: everything hits except the 5 misses after the split
    assert ref.replay(reqs, 0, 5) == pytest.approx(25 / 30)
