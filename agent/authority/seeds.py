"""Running simulator seeds, serially or over processes: shared by both simulators.

Why one module: :mod:`agent.authority.sim` (the Raft core) and :mod:`agent.authority.mesh_sim`
(the policy over Raft) each check thousands of seeds; how a seed range is split over
processes and how failures are collected and ordered is the same for both.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

C = TypeVar("C")


def check_seeds(run: Callable[[int, C | None], object], violation: type[Exception],
                seeds: Sequence[int], config: C | None) -> list[str]:
    """Run *seeds*; one report per seed that raised *violation* (each says how to replay)."""
    failures = []
    for s in seeds:
        try:
            run(s, config)
        except violation as exc:
            failures.append(str(exc))
    return failures


def run_parallel(check: Callable[[Sequence[int], C | None], list[str]], seeds: Sequence[int],
                 config: C | None, workers: int | None) -> list[str]:
    """*check* (a module-level function, so it pickles) spread over processes; the reports
    ("seed N: ...") come back ordered by seed, whatever the split."""
    workers = workers or os.cpu_count() or 1
    seeds = list(seeds)
    if workers <= 1 or len(seeds) < 2:
        return check(seeds, config)
    chunks = [seeds[i::workers] for i in range(workers)]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        parts = pool.map(check, chunks, [config] * workers)
        failures = [f for part in parts for f in part]
    return sorted(failures, key=lambda f: int(f.split()[1].rstrip(":")))
