"""Relayed fetch throughput: direct vs through 1 and 2 relays (agent/relay/).

    .venv/bin/python bench/relay.py [--mib 32] [--runs 3] [--json PATH]

Real Nodes in one process on loopback (mDNS off), a line A - R1 - R2 - B with only the
sessions the line needs; B publishes --mib of random bytes, A fetches it (the relayed
session opened first; its setup time is printed apart). Each figure is the median of --runs
fresh meshes (min-max beside it). All agents share one event loop and one core, so the relayed figures include
every hop's CPU: they compare the per-byte cost of relaying, not a network. Also printed: the
bytes each relay forwarded over the payload (frame and inner record overhead). Never
asserts; exits non-zero only if it could not measure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.config import config_from_dict
from agent.node import Node

MB = 1e6


def _config(data_dir: Path, name: str) -> Any:
    return config_from_dict({
        "node": {"name": name, "data_dir": str(data_dir), "mesh": f"bench-{os.getpid()}"},
        "lan": {"listen": "127.0.0.1", "port": 0, "mdns": False, "peer_timeout": 30.0},
        "ble": {"enabled": False}, "authority": {"enabled": False},
        "prefetch": {"enabled": False}, "usage": {"enabled": False},
    })


@contextlib.asynccontextmanager
async def line(n_relays: int, base: Path) -> AsyncIterator[list[Node]]:
    names = ["a", *(f"r{i + 1}" for i in range(n_relays)), "b"]
    chain: list[Node] = []
    tasks: list[asyncio.Future[None]] = []
    try:
        for name in names:
            node = Node(_config(base / name, name))
            tasks.append(asyncio.ensure_future(node.run()))
            await asyncio.wait_for(node.ready.wait(), 15)
            chain.append(node)
        a, b = chain[0], chain[-1]
        pairs = [(a, b), *itertools.pairwise(chain)]
        for x, y in pairs:
            for me, other in ((x, y), (y, x)):
                o = other.identity
                me.trust.add(o.device_id, o.public_key, other.cfg.node.name,
                             signing_key=o.signing_public)
        for x, y in itertools.pairwise(chain):
            assert y.connections.lan_port is not None
            await x.connections.connect(("127.0.0.1", y.connections.lan_port))
        for i in range(1, len(chain) - 2):  # each relay's resolver names the next one
            nxt = chain[i + 1].identity.device_id
            chain[i].relay.set_next_hop(lambda t, nxt=nxt: nxt)
        yield chain
    finally:
        for node in chain:
            node.stop()
        for t in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(t, 15)


async def one(n_relays: int, size: int) -> dict[str, float]:
    base = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    try:
        async with line(n_relays, base) as chain:
            a, b = chain[0], chain[-1]
            src = base / "payload.bin"
            src.write_bytes(os.urandom(size))
            b.store.publish_file(src, signer=b.identity)
            b.catalog_changed()
            t0 = time.perf_counter()
            if n_relays:
                await a.relay.open(b.identity.device_id, via=chain[1].identity.device_id)
            setup = time.perf_counter() - t0
            t0, c0 = time.perf_counter(), time.process_time()
            await a.fetcher.fetch("payload.bin")
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            relayed = [n.relay.forwarded_bytes for n in chain[1:-1]]
            return {"mb_s": size / wall / MB, "wall_s": wall, "cpu_s": cpu,
                    "setup_ms": setup * 1000,
                    "overhead": (max(relayed) / size - 1) if relayed else 0.0}
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    size = args.mib * 1024 * 1024
    out: dict[str, Any] = {"mib": args.mib, "runs": args.runs, "results": {}}
    for n in (0, 1, 2):
        runs = [await one(n, size) for _ in range(args.runs)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        med["mb_s_min"] = min(r["mb_s"] for r in runs)
        med["mb_s_max"] = max(r["mb_s"] for r in runs)
        out["results"][str(n)] = med
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mib", type=int, default=32)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    try:
        res = asyncio.run(main_async(args))
    except Exception as e:  # could not measure
        print(f"relay bench failed: {e}", file=sys.stderr)
        return 1
    print(f"fetch of {args.mib} MiB, median of {args.runs} (all agents in one process)")
    print(f"{'relays':>6} {'MB/s':>8} {'min-max':>13} {'vs direct':>9} {'wall s':>7} "
          f"{'CPU s':>6} {'setup ms':>9} {'overhead':>9}")
    direct = res["results"]["0"]["mb_s"]
    for n, r in res["results"].items():
        span = f"{r['mb_s_min']:.1f}-{r['mb_s_max']:.1f}"
        print(f"{n:>6} {r['mb_s']:>8.1f} {span:>13} {r['mb_s'] / direct:>9.2f} "
              f"{r['wall_s']:>7.2f} {r['cpu_s']:>6.2f} {r['setup_ms']:>9.1f} "
              f"{r['overhead'] * 100:>8.2f}%")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
