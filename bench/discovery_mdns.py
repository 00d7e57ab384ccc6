"""mDNS discovery latency between two network namespaces (needs root; see TESTBED §1).

Starts LanDiscovery on two hosts of a fresh :class:`harness.Lan` at the same moment, ``--trials``
times for each probing mode, and prints start -> peer-seen (the later of the two starts to the
event) as median / p95 / max. Usage: ``sudo .venv/bin/python bench/discovery_mdns.py``.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "netns"))

from harness import Lan, netns_available, spawn_jsonl  # noqa: E402

DRIVER = str(ROOT / "tests" / "radio_lan" / "lan_driver.py")


def trial(lan: Lan, probe: bool) -> list[float]:
    ids = [secrets.token_hex(8) for _ in range(2)]
    # one mesh per trial: a driver never reports an agent of another trial or run
    extra = ["--mesh", f"bench-{secrets.token_hex(6)}"] + ([] if probe else ["--no-probe"])
    procs = [
        spawn_jsonl(
            lan.host(i + 1), [sys.executable, DRIVER, "--name", f"h{i + 1}", "--id", ids[i], *extra]
        )
        for i in range(2)
    ]
    try:
        starts = [p.wait_for(lambda o: o["kind"] == "starting")["t"] for p in procs]
        out = []
        for i, p in enumerate(procs):
            ev = p.wait_for(lambda o, i=i: o["kind"] == "seen" and o["short_id"] == ids[1 - i])
            out.append(ev["t"] - max(starts))
        return out
    finally:
        for p in procs:
            p.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=10)
    args = ap.parse_args()
    reason = netns_available()
    if reason:
        print(f"skipped: {reason}")
        return 0
    with Lan(2) as lan:
        for probe in (True, False):
            samples = sorted(t for _ in range(args.trials) for t in trial(lan, probe))
            p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
            print(
                f"probe={probe!s:5}  n={len(samples):3}  median {statistics.median(samples):.3f} s"
                f"  p95 {p95:.3f} s  max {samples[-1]:.3f} s"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
