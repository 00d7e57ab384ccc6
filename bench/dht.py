"""DHT simulation: lookup success, rounds, messages, time and memory, against flooding.

    .venv/bin/python bench/dht.py [--nodes 1000[,10000]] [--profiles churn,partition]
                                  [--lookups 2000] [--minutes 30] [--seed 1] [--json PATH]

Runs agent/dht/sim.py (real DhtNode tables, records and lookups; simulated network in
virtual time): per-endpoint one-way latency 5-50 ms, 1 % loss per message, 1 s request
timeout, 20 % of the nodes replaced per 10 virtual minutes, bucket refresh every 10 minutes.
Profiles: ``churn`` (the above), ``partition`` (also 30 % of the nodes cut off for 5 minutes
from minute 5; lookups during the cut stay on the asker's side), ``static`` (no churn, no
loss). Each row floods a sample of the same lookups over a random graph (mean degree 8) of the
same live nodes: the baseline. Targets ([9/13]): success >= 99 % at 1,000 and 10,000 nodes;
rounds p50 <= 2, p99 <= 4 and messages <= 1/20 of flooding at 1,000. Benchmarks never assert.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.dht.sim import SimConfig, Simulation  # noqa: E402
from bench._common import machine, print_table, write_json  # noqa: E402

PROFILES = ("churn", "partition", "static")
HEADERS = ["nodes", "profile", "lookups", "success % (95% low)", "rounds p50/p99", "msgs/lookup",
           "flood msgs", "ratio", "time p50/p99 ms", "maint msg/node/min", "contacts",
           "KiB/node", "RSS MiB", "cpu s"]


def config(nodes: int, profile: str, args: argparse.Namespace) -> SimConfig:
    cfg = SimConfig(nodes=nodes, lookups=args.lookups, resources=args.resources,
                    duration_s=60.0 * args.minutes, refresh_s=args.refresh_s, seed=args.seed)
    if profile == "partition":
        cfg = dataclasses.replace(cfg, partition=(300.0, 600.0, 0.3))
    elif profile == "static":
        cfg = dataclasses.replace(cfg, churn_fraction=0.0, loss=0.0)
    return cfg


def row(s: dict[str, Any]) -> list[str]:
    return [
        str(s["nodes"]), s["profile"], str(s["lookups"]),
        f"{100 * s['success']:.2f} ({100 * s['success_low95']:.2f})",
        f"{s['rounds_p50']:.0f}/{s['rounds_p99']:.0f}", f"{s['msgs_mean']:.1f}",
        f"{s['flood_msgs_mean']:.0f}", f"1/{s['flood_msgs_mean'] / s['msgs_mean']:.0f}",
        f"{s['time_p50_ms']:.0f}/{s['time_p99_ms']:.0f}",
        f"{s['maint_msgs_per_node_min']:.1f}", f"{s['contacts_per_node']:.0f}",
        f"{s['kib_per_node']:.1f}", f"{s['rss_mib']:.0f}", f"{s['cpu_s']:.0f}",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--nodes", default="1000", help="comma-separated node counts")
    ap.add_argument("--profiles", default="churn", help=f"comma-separated: {', '.join(PROFILES)}")
    ap.add_argument("--lookups", type=int, default=2000)
    ap.add_argument("--resources", type=int, default=500)
    ap.add_argument("--minutes", type=float, default=30.0, help="virtual minutes measured")
    ap.add_argument("--refresh-s", type=float, default=600.0, help="bucket refresh; 0 = off")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    try:
        counts = [int(n) for n in args.nodes.split(",")]
        profiles = args.profiles.split(",")
        if any(n < 10 for n in counts) or any(p not in PROFILES for p in profiles):
            raise ValueError
    except ValueError:
        print(f"error: --nodes takes counts >= 10, --profiles one of {', '.join(PROFILES)}; "
              "see --help", file=sys.stderr)
        return 2
    info = machine()
    rows, out = [], []
    for n in counts:
        for profile in profiles:
            t = time.process_time()
            # The simulation makes no reference cycles (refcounting frees every message and
            # lookup), but its millions of long-lived table entries made each cyclic-GC pass
            # walk them all: 40 % of the CPU at 10,000 nodes (py-spy). Off for the run.
            gc.disable()
            s = Simulation(config(n, profile, args)).run(
                lambda now, r, n=n, profile=profile, t=t: print(
                    f"  {n} nodes, {profile}: virtual {now / 60:.0f} min, "
                    f"{r.lookups} lookups, {r.maintenance_messages} maintenance messages, "
                    f"{time.process_time() - t:.0f} s CPU", file=sys.stderr, flush=True)
            ).summary()
            gc.enable()
            gc.collect()
            s["profile"], s["cpu_s"], s["seed"] = profile, time.process_time() - t, args.seed
            s["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak so far
            out.append(s)
            rows.append(row(s))
            print(f"  {n} nodes, {profile}: done in {s['cpu_s']:.0f} s CPU; "
                  f"maintenance messages {s['maint_by']}", file=sys.stderr, flush=True)
    print_table(HEADERS, rows)
    write_json(args.json, {"machine": info, "results": out})
    return 0 if out else 1


if __name__ == "__main__":
    raise SystemExit(main())
