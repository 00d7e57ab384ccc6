"""Agent start-up with many resources: start-to-ready (the agent's ``startup_ms`` span, from the
identity loaded to ready) and the store open alone, wall and CPU.

Usage:
    .venv/bin/python bench/startup.py make DIR [--resources 1000]   # a data dir to start on
    .venv/bin/python bench/startup.py once DIR                      # one start: prints
                                                                    # wall_ms cpu_ms open_cpu_ms
Run ``once`` in a fresh process per sample (the agent locks its data dir) and interleave the
two trees compared, e.g. PYTHONPATH=/work/main vs PYTHONPATH=. ; take medians. The first
start of a new agent on an older store also re-signs its resources once (version records):
time it separately. Benchmarks never assert.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

from agent.config import config_from_dict
from agent.node import Node
from agent.security.identity import load_or_create_identity
from agent.store import ContentStore


def make(data_dir: Path, n: int) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    ident, _ = load_or_create_identity(data_dir)
    src = data_dir / "src"
    src.mkdir(exist_ok=True)
    with ContentStore(data_dir / "store") as st:
        for i in range(n):
            p = src / f"r{i}.txt"
            p.write_bytes(os.urandom(512) + str(i).encode())
            st.publish_file(p, signer=ident)


async def _ready(data_dir: Path) -> tuple[float, float]:
    c0 = time.process_time()
    node = Node(config_from_dict({
        "node": {"name": "bench", "data_dir": str(data_dir)},
        "lan": {"listen": "127.0.0.1", "port": 0, "mdns": False}, "ble": {"enabled": False}}))
    task = asyncio.ensure_future(node.run())
    await node.ready.wait()
    wall = (time.monotonic() - node.started) * 1000
    cpu = (time.process_time() - c0) * 1000
    node.stop()
    await task
    return wall, cpu


def once(data_dir: Path) -> None:
    c0 = time.process_time()
    ContentStore(data_dir / "store").close()
    open_cpu = (time.process_time() - c0) * 1000
    wall, cpu = asyncio.run(_ready(data_dir))
    print(f"{wall:.0f} {cpu:.0f} {open_cpu:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("make", "once"))
    ap.add_argument("dir", type=Path)
    ap.add_argument("--resources", type=int, default=1000)
    a = ap.parse_args()
    if a.what == "make":
        make(a.dir, a.resources)
    else:
        once(a.dir)


if __name__ == "__main__":
    main()
