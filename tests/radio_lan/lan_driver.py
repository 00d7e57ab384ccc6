"""Run one LanDiscovery in this process (a test host) and report as JSON lines.

stdout, one object per line (``t`` is ``time.monotonic()``, shared by every process on the
machine, so timings compare across namespaces):
``{"kind": "starting"}``, ``{"kind": "started"}``, ``{"kind": "seen", ...LanPeerSeen}``,
``{"kind": "gone", "short_id"}``, ``{"kind": "updated"}``, ``{"kind": "stopped"}``.
stdin commands: ``stop``, ``update PORT``; end of input stops and exits, so a child never
outlives its test.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
import time

from radio.lan import DEFAULT_MESH, LanDiscovery, LanEvent, LanPeerSeen


def emit(kind: str, **fields: object) -> None:
    print(json.dumps({"kind": kind, "t": time.monotonic(), **fields}), flush=True)


async def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--id", required=True)
    ap.add_argument("--port", type=int, default=7400)
    ap.add_argument("--version", type=int, default=1)
    ap.add_argument("--interfaces", default="")
    ap.add_argument("--include-loopback", action="store_true")
    ap.add_argument("--mesh", default=os.environ.get("SHOAL_MESH", DEFAULT_MESH))
    ap.add_argument("--no-probe", action="store_true")
    ap.add_argument("--poll", type=float, default=3.0)
    ap.add_argument("--rebuild", action="store_true", help="force the rebuild path")
    ap.add_argument("--debug", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, stream=sys.stderr)

    async def on_event(event: LanEvent) -> None:
        fields = dataclasses.asdict(event)
        emit("seen" if isinstance(event, LanPeerSeen) else "gone", **fields)

    disc = LanDiscovery(
        args.name,
        args.id,
        args.port,
        args.version,
        interfaces=[i for i in args.interfaces.split(",") if i],
        include_loopback=args.include_loopback,
        mesh=args.mesh,
        on_event=on_event,
        probe=not args.no_probe,
        poll_interval=args.poll,
    )
    if args.rebuild:
        disc._update_in_place = False
    emit("starting")
    await disc.start()
    emit("started", instance=disc.instance_name, interfaces=[i.address for i in disc.interfaces])
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        cmd, *rest = line.split()
        if cmd == "stop":
            break
        if cmd == "update":
            await disc.update(port=int(rest[0]))
            emit("updated")
    t0 = time.monotonic()
    await disc.stop()
    emit("stopped", took=time.monotonic() - t0)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
