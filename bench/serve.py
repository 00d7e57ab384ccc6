"""Serving-side CPU: what one chunk server costs per GiB it serves, isolated from the fetcher.

    .venv/bin/python bench/serve.py [--runs 5] [--size-mib 256] [--window 16] [--json PATH]

Why: ``bench/transfer.py`` measures whole agents, and on a shared machine its CPU figures
move by +-20 % between runs, which hides changes of a few percent on one side. Here the
server is this process: a ContentStore holding one mixed file (half log-like text, half
random), a ChunkServer behind a PeerConnection on a real loopback TCP SecureChannel, exactly
as in the agent. A client subprocess asks for every chunk (``z`` false, as the fetcher does
over loopback; ``--window`` requests in flight) and drops the bytes. Reported: the server's
user and system CPU-seconds per GiB served (getrusage around the session) and MB/s, median
(min-max) over --runs. Never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import GIB, MB, fmt_stat, generate, machine, stats, write_json

from agent.bandwidth import DEFAULT_WEIGHTS, BandwidthGate, LinkScheduler
from agent.peer import wire
from agent.peer.connection import PeerConnection
from agent.security.session import open_channel
from agent.store import ContentStore
from agent.transfer.server import ChunkServer


class _TrustAll:
    def is_trusted(self, device_id: bytes) -> bool:
        return True

    def get(self, device_id: bytes) -> None:
        return None


async def _refuse(conn: PeerConnection, req: wire.Request) -> object:
    raise RuntimeError("the client answers no requests")


async def serve_once(store: ContentStore, ids_file: Path, window: int) -> dict[str, float]:
    """Serve one client session; the server's CPU from its first byte to its close."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    gate = BandwidthGate(LinkScheduler(DEFAULT_WEIGHTS))
    handlers = ChunkServer(store, _TrustAll(), gate, compress=True).handlers()

    async def handle(conn: PeerConnection, req: wire.Request) -> object:
        return await handlers[req.op](conn, req)

    done: asyncio.Future[tuple[float, float, float]] = (
        asyncio.get_running_loop().create_future())

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ch = await open_channel(reader, writer, X25519PrivateKey.generate(), initiator=False)
        pc = PeerConnection(ch, peer_id=b"c" * 32, peer_key=ch.remote_static,
                            hello={"name": "client"}, handler=handle, outgoing=False,
                            address=("127.0.0.1", 1))
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        await pc.serve()
        r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        done.set_result((r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime, t1 - t0))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0, limit=1 << 20)
    port = server.sockets[0].getsockname()[1]
    client = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--client", str(port), str(ids_file), str(window))
    user, system, seconds = await done
    await client.wait()
    server.close()
    size = sum(r.manifest.size for r in store.resources())
    gib = size / GIB
    return {"user_cpu_s_per_GiB": user / gib, "sys_cpu_s_per_GiB": system / gib,
            "cpu_s_per_GiB": (user + system) / gib, "MBps": size / seconds / MB}


async def client(port: int, ids_file: Path, window: int) -> None:
    """Ask for every chunk over one session, ``window`` at a time; drop the bytes."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    ids = [bytes.fromhex(x) for x in ids_file.read_text().split()]
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    ch = await open_channel(reader, writer, X25519PrivateKey.generate(), initiator=True)
    pc = PeerConnection(ch, peer_id=b"s" * 32, peer_key=ch.remote_static,
                        hello={"name": "server"}, handler=_refuse, outgoing=True,
                        address=("127.0.0.1", port))
    serving = asyncio.create_task(pc.serve())
    slots = asyncio.Semaphore(window)

    async def one(cid: bytes) -> None:
        async with slots:
            reply = await pc.request("chunk", {"c": cid.hex(), "z": False}, timeout=60)
            if not isinstance(reply, wire.ChunkReply) or reply.chunk_id != cid:
                raise RuntimeError("wrong reply")

    await asyncio.gather(*(one(c) for c in ids))
    await pc.close()
    await serving


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--window", type=int, default=16, help="requests in flight")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--client", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.getLogger("shoal").setLevel(logging.ERROR)  # a session closing is not news here
    if args.client:
        port, ids_file, window = args.client
        asyncio.run(client(int(port), Path(ids_file), int(window)))
        return 0
    info = machine()
    print(f"chunk server CPU benchmark; machine: {info}")
    samples: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="shoal-bench-serve-") as tmp:
        work = Path(tmp)
        src = generate(work / "mixed.bin", args.size_mib, "mixed", 10)
        store = ContentStore(work / "store")
        try:
            m = store.publish_file(src, name=src.name, publisher="ab" * 16, public=True)
            src.unlink()
            ids_file = work / "ids.txt"
            ids_file.write_text("\n".join(c.chunk_id.hex() for c in m.chunks))
            print(f"{args.size_mib} MiB mixed, {len(m.chunks)} chunks; window {args.window}")
            for rep in range(max(1, args.runs) + 1):
                s = asyncio.run(serve_once(store, ids_file, args.window))
                if rep == 0:
                    continue  # warm-up: page cache, allocator
                samples.append(s)
                print(f"  run {rep}: {s['cpu_s_per_GiB']:.2f} CPU-s/GiB "
                      f"(user {s['user_cpu_s_per_GiB']:.2f}, sys {s['sys_cpu_s_per_GiB']:.2f}), "
                      f"{s['MBps']:.0f} MB/s")
        finally:
            store.close()
    summary: dict[str, Any] = {k: stats([s[k] for s in samples]) for k in samples[0]}
    print("\nserver, median (min-max): "
          f"CPU-s/GiB {fmt_stat(summary['cpu_s_per_GiB'], 2)}, "
          f"user {fmt_stat(summary['user_cpu_s_per_GiB'], 2)}, "
          f"sys {fmt_stat(summary['sys_cpu_s_per_GiB'], 2)}, "
          f"MB/s {fmt_stat(summary['MBps'], 0)}")
    write_json(args.json, {"benchmark": "serve", "machine": info, "argv": sys.argv,
                           "samples": samples, "summary": summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
