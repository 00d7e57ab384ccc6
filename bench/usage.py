"""Micro-benchmark of the usage subsystem: what one access costs on the request path, what a
flush costs off it, and what building the shared aggregate of a full log costs.

Usage: .venv/bin/python bench/usage.py [--records 200000] [--requesters 50]
                                       [--resources 2000] [--dir DIR] [--json PATH]

* record: ``UsageService.record_access`` (hash memo lookup, encode, CRC-32, buffer append,
  temperature update) — per call, CPU time (process_time) over the whole run.
* flush: ``UsageService.tick`` (one write of the buffer, segment rotation, pruning) — per
  record written.
* aggregate: reading the whole log (bounded by [usage] max_bytes) and the k-anonymous
  release — per run, per record read, and its peak allocation (tracemalloc).
Benchmarks never assert.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.config import PredictConfig, UsageConfig
from agent.usage.service import UsageService


class _NoPeers:
    def live_connections(self) -> list[object]:
        return []


class _NoTrust:
    def is_trusted(self, device_id: bytes) -> bool:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--requesters", type=int, default=50)
    ap.add_argument("--resources", type=int, default=2000)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rng = random.Random(1)
    requesters = [rng.randbytes(32) for _ in range(args.requesters)]
    resources = [rng.randbytes(16).hex() for _ in range(args.resources)]
    calls = [(rng.choice(requesters), resources[min(int(rng.paretovariate(1.2)) - 1,
                                                    args.resources - 1)])
             for _ in range(args.records)]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        cfg = UsageConfig(max_buffered=args.records + 1)
        svc = UsageService(Path(tmp) / "usage", cfg, PredictConfig(),
                           connections=_NoPeers(), trust=_NoTrust())  # type: ignore[arg-type]
        c0 = time.process_time()
        for who, rid in calls:
            svc.record_access(who, rid, 262144, hit=True, source="local")
        record_s = time.process_time() - c0
        c0 = time.process_time()
        svc.tick()
        flush_s = time.process_time() - c0
        read = sum(1 for _ in svc.log.records())
        c0 = time.process_time()
        agg = svc.aggregate()
        agg_s = time.process_time() - c0
        svc.record_access(*calls[0], 262144, hit=True, source="local")  # not cached
        tracemalloc.start()  # a second run, for its peak allocation (not timed)
        svc.aggregate()
        agg_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out = {
            "python": platform.python_version(), "machine": platform.machine(),
            "records": args.records, "records_in_log": read,
            "log_bytes": svc.log.size_bytes(), "segments": svc.log.segment_count(),
            "record_us": round(record_s / args.records * 1e6, 3),
            "flush_us_per_record": round(flush_s / args.records * 1e6, 3),
            "aggregate_s": round(agg_s, 3),
            "aggregate_us_per_record": round(agg_s / max(1, read) * 1e6, 3),
            "aggregate_grams": len(agg.grams),
            "aggregate_peak_mib": round(agg_peak / 2**20, 1),
            "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        svc.close()
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
