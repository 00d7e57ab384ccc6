"""Neighbours or DHT: where a fetch should stop asking every neighbour ([dht] threshold).

    .venv/bin/python bench/dht_threshold.py [--sizes 2,4,8,12,16,24,32] [--holders 1]
                                            [--reps 20] [--rtt-ms 20] [--json PATH]

Real agents (in-process Nodes on loopback, one event loop): a hub with *n* paired
neighbours, *holders* of them holding a public resource (announced through the DHT as the
agent does it). For each n, two ways to find the holders' offers, *reps* times each:

* ``ask-all``: the manifest request to every neighbour at once (what fetch did before the DHT):
  2 n messages, one round trip.
* ``dht``: ``DhtService.find_holders`` (GET_PROVIDERS, alpha = 3, stops at the first holder
  record), then the manifest request to the holders found: the lookup's requests and replies
  plus 2 per holder; the lookup's rounds plus one round trip.

Columns: messages per find (counted), the lookup's rounds, measured time per find on loopback
(all agents share one CPU here, so it grows with the work every device does: a cost figure,
not a network latency), and a projected latency on a link of --rtt-ms per round trip plus
that measured time. The threshold is the smallest n from which the DHT path costs at most
half the messages of asking everyone and its measured time is no worse (docs/dht.md says
which value that gave). Benchmarks never assert.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.config import config_from_dict  # noqa: E402
from agent.node import Node  # noqa: E402
from agent.transfer.fetcher import find_offers  # noqa: E402
from bench._common import machine, print_table, write_json  # noqa: E402

HEADERS = ["neighbours", "holders", "ask-all msgs", "dht msgs (local/remote)", "dht rounds",
           "ask-all ms", "dht ms (local/remote)", "proj. ask-all ms", "proj. dht ms",
           "dht cheaper"]


def _config(data_dir: Path, name: str) -> Any:
    return config_from_dict({
        "node": {"name": name, "data_dir": str(data_dir)},
        "lan": {"listen": "127.0.0.1", "port": 0, "mdns": False, "heartbeat_interval": 5.0,
                "peer_timeout": 60.0},
        "ble": {"enabled": False}, "authority": {"enabled": False},
        "prefetch": {"enabled": False}, "usage": {"enabled": False},
        "watch": {"enabled": False}, "store": {"avg_chunk_size": 16 * 1024},
    })


async def _wait(pred: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        await asyncio.sleep(0.02)


class DirectOpener:
    """Reaches any agent of the bench by dialling it (what the relay gives a real mesh:
    every device reachable), so a holder's announcement lands on the k closest devices."""

    def __init__(self, me: Node, ports: dict[bytes, int]) -> None:
        self.me, self.ports = me, ports

    async def open(self, target: bytes, via: bytes | None = None) -> Any:
        return await self.me.connections.connect(("127.0.0.1", self.ports[target]))


async def measure(n: int, holders: int, reps: int, rtt_ms: float) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="dht-threshold-"))
    nodes: list[Node] = []
    tasks: list[asyncio.Future[None]] = []
    try:
        for i in range(n + 1):
            node = Node(_config(base / f"n{i}", f"n{i}"))
            tasks.append(asyncio.ensure_future(node.run()))
            await asyncio.wait_for(node.ready.wait(), 30)
            nodes.append(node)
        hub, others = nodes[0], nodes[1:]
        for me in nodes:
            for o in nodes:
                if o is not me:
                    me.trust.add(o.identity.device_id, o.identity.public_key, o.cfg.node.name,
                                 signing_key=o.identity.signing_public)
        ports = {x.identity.device_id: x.connections.lan_port or 0 for x in nodes}
        for o in others:
            assert o.dht is not None
            o.dht.use_opener(DirectOpener(o, ports))
            await hub.connections.connect(("127.0.0.1", ports[o.identity.device_id]))
        payload = base / "resource.bin"
        payload.write_bytes(os.urandom(64 * 1024))
        first = others[0]
        rid = first.store.publish_file(payload, public=True, signer=first.identity).resource_id
        for h in others[1:holders]:  # the same resource at more holders: fetched from the first
            await h.fetcher.fetch(rid, source=f"127.0.0.1:{first.connections.lan_port}")
        for h in others[:holders]:
            h.catalog_changed()
        dht = hub.dht
        assert dht is not None
        await _wait(lambda: all(h.dht is not None and h.dht.counters.announced > 0
                                for h in others[:holders]), "announcements")
        await _wait(lambda: len(dht.node.table) == n, "the hub's table")
        await asyncio.sleep(0.5)  # let bootstrap lookups finish before counting
        conns = hub.connections.live_connections()
        ask_t: list[float] = []
        dht_t: list[float] = []
        dht_msgs: list[int] = []
        remote_t: list[float] = []
        remote_msgs: list[int] = []
        rounds: list[int] = []
        for _ in range(reps):
            t0 = time.perf_counter()
            offers, _ = await find_offers(conns, rid, 10.0)
            ask_t.append(time.perf_counter() - t0)
            assert len(offers) == holders, (len(offers), holders)
            for remote in (False, True):
                kept = (dict(dht.node.store.records), dht.node.store.bytes_used)
                if remote:  # the hub is not among the devices that store the record
                    dht.node.store.records, dht.node.store.bytes_used = {}, 0
                c0 = dht.counters.requests_out
                t0 = time.perf_counter()
                records = await dht.find_holders(rid)
                ids = {r.holder for r in records}
                found = [c for c in conns if c.peer_id in ids]
                offers, _ = await find_offers(found, rid, 10.0)
                (remote_t if remote else dht_t).append(time.perf_counter() - t0)
                # every request sent is a message and so is its reply (the lookup stops at
                # the first holder record; the other replies still cross the link)
                msgs = 2 * (dht.counters.requests_out - c0) + 2 * len(found)
                (remote_msgs if remote else dht_msgs).append(msgs)
                if remote:
                    rounds.append(dht.counters.last_rounds)
                    dht.node.store.records, dht.node.store.bytes_used = kept
        ask_ms = statistics.median(ask_t) * 1000
        dht_ms = statistics.median(dht_t) * 1000
        far_ms = statistics.median(remote_t) * 1000
        r = statistics.median(rounds)
        far_msgs = statistics.median(remote_msgs)
        return {"neighbours": n, "holders": holders, "ask_all_msgs": 2 * n,
                "dht_local_msgs": statistics.median(dht_msgs), "dht_msgs": far_msgs,
                "dht_rounds": r, "ask_all_ms": round(ask_ms, 2),
                "dht_local_ms": round(dht_ms, 2), "dht_ms": round(far_ms, 2),
                "projected_ask_all_ms": round(rtt_ms + ask_ms, 1),
                "projected_dht_ms": round((r + 1) * rtt_ms + far_ms, 1),
                "dht_cheaper": far_msgs <= n and far_ms <= ask_ms}
    finally:
        for node in nodes:
            node.stop()
        for task in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 15)
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="2,4,8,12,16,24,32")
    ap.add_argument("--holders", type=int, default=1)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--rtt-ms", type=float, default=20.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    logging.disable(logging.INFO)
    os.environ.setdefault("SHOAL_MESH", f"bench-{os.getpid()}")
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        rows.append(asyncio.run(measure(n, min(args.holders, n), args.reps, args.rtt_ms)))
        print(f"  n={n} done", file=sys.stderr)
    print_table(HEADERS, [[r["neighbours"], r["holders"], r["ask_all_msgs"],
                           f'{r["dht_local_msgs"]:g} / {r["dht_msgs"]:g}',
                           r["dht_rounds"], r["ask_all_ms"],
                           f'{r["dht_local_ms"]} / {r["dht_ms"]}',
                           r["projected_ask_all_ms"], r["projected_dht_ms"],
                           "yes" if r["dht_cheaper"] else "no"] for r in rows])
    cheaper = [r["neighbours"] for r in rows if r["dht_cheaper"]]
    print(f"threshold: the DHT first from {min(cheaper)} neighbours" if cheaper
          else "threshold: the DHT was never cheaper in this range")
    write_json(args.json, {"machine": machine(), "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
