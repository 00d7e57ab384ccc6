"""The training run, as a child process: ``python -m agent.usage.trainjob IN OUT``.

Why a process of its own: training is seconds to minutes of numpy on a device that must keep
serving. In a child it never blocks the agent's event loop nor holds its GIL; it runs at the
lowest priority (``nice 19``) and under kernel limits the agent cannot forget to enforce:
``RLIMIT_CPU`` (the CPU-seconds left in today's training budget: the kernel kills the run
when they are spent) and ``RLIMIT_AS`` (memory). A killed or failed run leaves no model.

IN is a JSON file the agent wrote (training sequences of resource IDs and the
hyper-parameters, bounded); OUT receives the model's bytes (:meth:`GRUModel.to_bytes`).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

MAX_INPUT = 64 * 1024 * 1024
# A small mesh releases a few dozen n-grams: a batch of 128 windows would give a handful of
# gradient steps per run. Repeating the data up to this many sequences gives enough steps;
# the cost stays bounded by it (and by RLIMIT_CPU).
MIN_SEQS = 2048
PARAMS = {"vocab": (2, 4096), "dim": (2, 128), "hidden": (2, 256), "epochs": (1, 64),
          "window": (2, 32), "max_windows": (1, 50_000)}


def limit(cpu_s: int, mem_bytes: int) -> None:
    """Lowest priority; the kernel stops the run past *cpu_s* CPU-seconds or *mem_bytes*."""
    os.nice(19)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    if mem_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print("usage: python -m agent.usage.trainjob IN OUT CPU_S MEM_BYTES", file=sys.stderr)
        return 2
    src, dst = Path(argv[0]), Path(argv[1])
    limit(max(1, int(argv[2])), int(argv[3]))
    if src.stat().st_size > MAX_INPUT:
        print("training input too large", file=sys.stderr)
        return 2
    job = json.loads(src.read_bytes())
    params = {k: int(job["params"][k]) for k in PARAMS}
    for k, (lo, hi) in PARAMS.items():
        if not lo <= params[k] <= hi:
            print(f"parameter {k} out of range", file=sys.stderr)
            return 2
    from agent.predict.traces import Request
    from agent.predict.train import train_gru

    seqs = [list(map(str, s)) for s in job["seqs"]]
    base = list(seqs)
    while seqs and len(seqs) < MIN_SEQS:
        seqs += base
    requests: list[Request] = []
    t = 0.0
    for i, seq in enumerate(seqs):  # each sequence its own session
        for r in seq:
            requests.append(Request(t, f"s{i}", str(r), 0))
            t += 1.0
        t += 10_000.0
    started = time.process_time()
    model = train_gru(requests, session_gap_s=3600.0, seed=1, **params)
    data = model.to_bytes()
    tmp = dst.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dst)
    print(json.dumps({"cpu_s": round(time.process_time() - started, 3), "bytes": len(data),
                      "vocab": len(model.vocab)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
