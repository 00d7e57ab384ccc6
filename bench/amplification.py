"""Memory an unpaired attacker can pin in an agent: sessions that ask for chunks, never read.

The adversarial test of [6/13] found that 8 unpaired sessions each requesting 128 public
chunks and never reading their socket grew an agent by ~570 MiB (e0ae4ce). This script
repeats that attack against a real agent process on loopback and prints the agent's RSS
before and after, for several session counts, median of the runs with min-max.

    .venv/bin/python bench/amplification.py [--sessions 8 32] [--runs 5] [--requests 128]

The attacker uses the project's own session and wire modules with a fresh identity per
session (so it is never paired). Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.peer import wire  # noqa: E402
from agent.peer.hello import make_hello  # noqa: E402
from agent.security.identity import Identity  # noqa: E402
from agent.security.session.channel import open_channel  # noqa: E402
from agent.store import chunk_bytes  # noqa: E402

SHOAL = [sys.executable, "-m", "agent"]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def shoal(data: Path, *args: str) -> dict:
    out = subprocess.run([*SHOAL, "--data-dir", str(data), "--json", *args], check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out)


async def attack(port: int, mesh: str, chunk_ids: list[str], sessions: int,
                 requests: int) -> list[asyncio.StreamWriter]:
    """Open *sessions* unpaired sessions, send *requests* chunk requests on each, never read."""
    writers = []
    for n in range(sessions):
        ident = Identity.generate()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        ch = await open_channel(reader, writer, ident.private_key, initiator=True,
                                local_payload=make_hello(f"attacker-{n}", 0,
                                                         ident.signing_public, mesh))
        for i in range(requests):
            await ch.send(wire.encode_request(
                i + 1, "chunk", {"c": chunk_ids[i % len(chunk_ids)], "z": False}))
        writers.append(writer)
    return writers


def one_run(sessions: int, requests: int, size_mib: int) -> tuple[float, float]:
    tmp = Path(tempfile.mkdtemp(prefix="shoal-amp-"))
    mesh = f"amp{os.getpid()}"
    env = {**os.environ, "SHOAL_MESH": mesh}
    data = tmp / "agent"
    agent = subprocess.Popen([*SHOAL, "--data-dir", str(data), "run", "--local", "--name",
                              "victim"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if (data / "control.sock").exists():
                break
            time.sleep(0.05)
        time.sleep(0.5)
        sample = tmp / "sample.bin"
        payload = os.urandom(size_mib << 20)
        sample.write_bytes(payload)
        shoal(data, "publish", str(sample), "--public")
        port = shoal(data, "status")["lan_port"]
        # the same cut points the agent's store used (default chunk size)
        chunk_ids = [c.chunk_id.hex() for c in chunk_bytes(payload)]
        time.sleep(1.0)
        before = rss_mib(agent.pid)

        async def go() -> None:
            writers = await attack(port, mesh, chunk_ids, sessions, requests)
            await asyncio.sleep(3.0)  # let the agent read and queue all it will
            after_holder.append(rss_mib(agent.pid))
            for w in writers:
                w.close()

        after_holder: list[float] = []
        asyncio.run(go())
        return before, after_holder[0]
    finally:
        agent.terminate()
        agent.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, nargs="+", default=[8, 32])
    p.add_argument("--requests", type=int, default=128)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--size-mib", type=int, default=64)
    a = p.parse_args()
    print(f"{'sessions':>8} {'requests':>8} {'RSS before MiB':>16} {'RSS after MiB':>16} "
          f"{'growth MiB (median, min-max)':>30}")
    for n in a.sessions:
        runs = [one_run(n, a.requests, a.size_mib) for _ in range(a.runs)]
        growth = [after - before for before, after in runs]
        print(f"{n:>8} {a.requests:>8} {statistics.median(b for b, _ in runs):>16.1f} "
              f"{statistics.median(x for _, x in runs):>16.1f} "
              f"{statistics.median(growth):>10.1f} ({min(growth):.1f}-{max(growth):.1f})")


if __name__ == "__main__":
    main()
