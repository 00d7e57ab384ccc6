"""BLE control-plane benchmark: discovery -> authenticate -> catalog -> handover to TCP.

    .venv/bin/python bench/ble_control.py [--mtu 23,185,247,517] [--latency-ms 7.5]
                                          [--entries 100] [--bluezoo auto|yes|no] [--json PATH]

Two real Nodes in one process (LAN on 127.0.0.1, mDNS off): ``b`` publishes --entries public
resources and only advertises; ``a`` only scans. ``a``'s BleLink runs exactly the agent code;
every GATT operation of its central goes through a counting client, so the numbers are what
the link paid. Three flows per MTU:

* ``agent``     the default: subscribe, Noise msg1 -> msg2, msg3 + `endpoints` in one write,
                then TCP (the catalog is then read over TCP, costing BLE nothing);
* ``catalog``   catalog_on_connect: `list` also rides in the msg3 write, so the whole catalog
                arrives over BLE (notifications) before the handover;
* ``plaintext`` no session: NodeInfo + resource slots + catalog pages (what any phone can read).

A *round trip* is an ATT request the central waits for: a read, a write with response, or
the CCC descriptor write of a subscription. Counted from "connected" until the handover
starts (the `endpoints` answer is in). Links: the simulator (radio.sim, real clock,
--latency-ms one-way per ATT PDU) and, when available, real bless + bleak through BlueZoo
(fixed MTU; see tests/links/ble/bluezoo_env.py). Never asserts; the target is <= 3 round
trips from connect to handover.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "links" / "ble"))

from agent.config import config_from_dict  # noqa: E402
from agent.links.ble import BleBackends, BleLink, BleTiming, bluez_backends, sim_backends  # noqa: E402
from agent.links.ble.central import read_public_catalog  # noqa: E402
from agent.links.ble.stats import CountingGattClient  # noqa: E402
from agent.node import Node  # noqa: E402
from radio.ble import CentralChannel  # noqa: E402
from radio.sim import LinkParams, RealClock, SimAir  # noqa: E402

TIMING = BleTiming(evaluate_interval=0.05, grace=0.5, backoff_base=0.2, backoff_max=2.0,
                   housekeeping_interval=0.5)
MESH = os.environ.get("SHOAL_MESH") or f"bench-{secrets.token_hex(6)}"  # one per run
KEYS = ("round_trips", "reads", "writes_with_response", "subscribes", "notifications",
        "att_ops", "bytes_to_peripheral", "bytes_to_central")


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in KEYS}


async def start_node(base: Path, name: str) -> tuple[Node, asyncio.Task[None]]:
    cfg = config_from_dict({
        "node": {"name": name, "data_dir": str(base / name), "mesh": MESH},
        "lan": {"listen": "127.0.0.1", "port": 0, "mdns": False, "heartbeat_interval": 5.0,
                "peer_timeout": 60.0},
        "ble": {"enabled": False, "resource_slots": 8, "connect_timeout": 20.0},
    })
    node = Node(cfg)
    task = asyncio.ensure_future(node.run())
    await asyncio.wait_for(node.ready.wait(), 10)
    return node, task


async def publish_many(node: Node, base: Path, count: int) -> None:
    src = base / "files"
    src.mkdir(exist_ok=True)
    for i in range(count):
        path = src / f"resource-{i:03d}.bin"
        path.write_bytes(os.urandom(64) + bytes(i % 256 for _ in range(448)))
        await node._cmd_publish({"path": str(path), "public": True}, None)


async def flow(backends: tuple[BleBackends, BleBackends], *, entries: int, catalog: bool,
               adapters: tuple[str, str] = ("hci0", "hci1")) -> dict[str, Any]:
    """One discovery -> handover run; returns the counters of each phase."""
    base = Path(tempfile.mkdtemp(prefix="ble-bench-"))
    events: list[tuple[str, float, dict[str, Any]]] = []
    done = asyncio.Event()

    def observe(event: str, info: dict[str, Any]) -> None:
        events.append((event, time.perf_counter(), info))
        if event in ("catalog" if catalog else "handover", "failed", "closed"):
            done.set()

    b, b_task = await start_node(base, "b")
    a, a_task = await start_node(base, "a")
    try:
        await publish_many(b, base, entries)
        b.ble = BleLink(b, replace(b.cfg.ble, enabled=True, scan=False, adapter=adapters[0]),
                        backends[0], timing=TIMING)
        await b.ble.start()
        a.ble = BleLink(a, replace(a.cfg.ble, enabled=True, advertise=False,
                                   adapter=adapters[1]),
                        backends[1], timing=replace(TIMING, catalog_on_connect=catalog),
                        observer=observe)
        t0 = time.perf_counter()
        await a.ble.start()
        try:
            await asyncio.wait_for(done.wait(), 120)
        except TimeoutError:
            raise RuntimeError(f"BLE flow stuck after {[e for e, _, _ in events]}") from None
        if catalog and not any(e == "handover" for e, _, _ in events):
            await asyncio.wait_for(_until(lambda: any(e == "handover" for e, _, _ in events)), 60)
        at = {e: (t, i) for e, t, i in events}
        if "failed" in at or "handover" not in at:
            why = at["failed"][1].get("reason") if "failed" in at else "link closed"
            raise RuntimeError(f"BLE flow failed: {why} after {[e for e, _, _ in events]}")
        tcp = next(c for c in a.live_connections() if c.address is not None)
        assert tcp.peer_id == b.identity.device_id
        c0 = at["connected"][1]["counters"]
        out: dict[str, Any] = {
            "discovery_ms": round((at["connecting"][0] - t0) * 1000, 1),
            "connect_ms": round((at["connected"][0] - at["connecting"][0]) * 1000, 1),
            "to_handover_ms": round((at["endpoints"][0] - at["connected"][0]) * 1000, 1),
            "tcp_ms": round((at["handover"][0] - at["endpoints"][0]) * 1000, 1),
            "handover_ok": bool(at["handover"][1].get("ok")),
            "phases": {
                "subscribe": diff(at["subscribed"][1]["counters"], c0),
                "handshake": diff(at["authenticated"][1]["counters"],
                                  at["subscribed"][1]["counters"]),
                "msg3+requests": diff(at["endpoints"][1]["counters"],
                                      at["authenticated"][1]["counters"]),
            },
            "connect_to_handover": diff(at["endpoints"][1]["counters"], c0),
        }
        if catalog:
            out["catalog_entries"] = at["catalog"][1]["entries"]
            out["connect_to_catalog"] = diff(at["catalog"][1]["counters"], c0)
        else:
            t1 = time.perf_counter()
            listed = await tcp.request("list", {})
            out["catalog_entries"] = len(listed)
            out["catalog_over_tcp_ms"] = round((time.perf_counter() - t1) * 1000, 2)
        return out
    finally:
        for node in (a, b):
            node.stop()
        for task in (a_task, b_task):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 15)
        shutil.rmtree(base, ignore_errors=True)


async def _until(pred: Any) -> None:
    while not pred():
        await asyncio.sleep(0.01)


async def plaintext(server_backends: BleBackends, client: Any, address_of: Any, *,
                    entries: int) -> dict[str, Any]:
    """NodeInfo + slots + pages of the public catalog, no session."""
    base = Path(tempfile.mkdtemp(prefix="ble-bench-"))
    b, b_task = await start_node(base, "b")
    try:
        await publish_many(b, base, entries)
        b.ble = BleLink(b, replace(b.cfg.ble, enabled=True, scan=False), server_backends,
                        timing=TIMING)
        await b.ble.start()
        counting = CountingGattClient(client)
        cch = CentralChannel(counting)
        t0 = time.perf_counter()
        await counting.connect(await address_of(b), timeout=20, on_disconnect=cch.on_disconnect)
        t1 = time.perf_counter()
        await cch.open()
        _, got = await read_public_catalog(counting, cch)
        t2 = time.perf_counter()
        await counting.disconnect()
        c = counting.counters.snapshot()
        return {"catalog_entries": len(got), "connect_ms": round((t1 - t0) * 1000, 1),
                "read_ms": round((t2 - t1) * 1000, 1),
                "connect_to_catalog": {k: c[k] for k in KEYS}}
    finally:
        b.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(b_task, 15)
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- links
def sim_air(mtu: int, latency_ms: float) -> SimAir:
    return SimAir(1, clock=RealClock(), notify_broadcast=True,
                  link=LinkParams(mtu=mtu, latency_s=latency_ms / 1000, connect_latency_s=0.03))


async def run_sim(mtu: int, latency_ms: float, entries: int) -> dict[str, Any]:
    out: dict[str, Any] = {"link": "sim", "mtu": mtu, "latency_ms": latency_ms}
    for name, catalog in (("agent", False), ("catalog", True)):
        async with sim_air(mtu, latency_ms) as air:
            nb, na = air.add_node("b"), air.add_node("a", (1.0, 0.0))
            out[name] = await flow((sim_backends(nb), sim_backends(na)), entries=entries,
                                   catalog=catalog)
    async with sim_air(mtu, latency_ms) as air:
        nb, probe = air.add_node("b"), air.add_node("probe", (1.0, 0.0))

        async def address(_: Node) -> str:
            return nb.address

        out["plaintext"] = await plaintext(sim_backends(nb), probe.client(), address,
                                           entries=entries)
    return out


async def run_bluezoo(entries: int) -> dict[str, Any]:
    from bluezoo_env import prepare_adapters, private_bluez

    from agent.links.ble.tag import node_tag, tag_epoch
    from radio.ble.bleak_central import BleakCentral

    out: dict[str, Any] = {"link": "bluezoo", "mtu": "fixed (BlueZoo)", "latency_ms": None}
    with tempfile.TemporaryDirectory(prefix="ble-bench-bz-") as tmp:
        for name, catalog in (("agent", False), ("catalog", True)):
            with private_bluez(Path(tmp) / name, adapters=2) as address:
                os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = address
                await prepare_adapters(["hci0", "hci1"])
                cfg_b = argparse.Namespace(advertise=True, scan=False, adapter="hci0")
                cfg_a = argparse.Namespace(advertise=False, scan=True, adapter="hci1")
                out[name] = await flow((bluez_backends(cfg_b), bluez_backends(cfg_a)),
                                       entries=entries, catalog=catalog)
        with private_bluez(Path(tmp) / "plain", adapters=2) as address:
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = address
            await prepare_adapters(["hci0", "hci1"])
            central = BleakCentral(adapter="hci1")

            async def find(node: Node) -> str:
                want = node_tag(node.identity.device_id, tag_epoch(time.time()))
                found: asyncio.Future[str] = asyncio.get_running_loop().create_future()
                central.add_callback(lambda s: s.node_tag == want and not found.done()
                                     and found.set_result(s.address))
                await central.start()
                try:
                    return await asyncio.wait_for(found, 30)
                finally:
                    await central.stop()

            cfg_b = argparse.Namespace(advertise=True, scan=False, adapter="hci0")
            out["plaintext"] = await plaintext(bluez_backends(cfg_b), central.client(), find,
                                               entries=entries)
            out["mtu"] = "fixed (BlueZoo)"
    return out


# --------------------------------------------------------------------------- report
def table(results: list[dict[str, Any]]) -> str:
    head = (f"{'link':8} {'MTU':>5} {'flow':10} {'RT':>3} {'rd':>3} {'wr':>3} {'ccc':>3} "
            f"{'ntf':>5} {'C->P B':>7} {'P->C B':>7} {'entries':>7} {'ms':>8}")
    lines = [head, "-" * len(head)]
    for r in results:
        mtu = str(r["mtu"]) if isinstance(r["mtu"], int) else "fixed"
        for name in ("agent", "catalog", "plaintext"):
            x = r.get(name)
            if x is None:
                continue
            key = "connect_to_handover" if name == "agent" else "connect_to_catalog"
            c = x[key]
            ms = x.get("to_handover_ms", x.get("read_ms", 0.0))
            label = {"agent": "agent", "catalog": "catalog", "plaintext": "plaintext"}[name]
            lines.append(
                f"{r['link']:8} {mtu:>5} {label:10} {c['round_trips']:>3} {c['reads']:>3} "
                f"{c['writes_with_response']:>3} {c['subscribes']:>3} {c['notifications']:>5} "
                f"{c['bytes_to_peripheral']:>7} {c['bytes_to_central']:>7} "
                f"{x['catalog_entries']:>7} {ms:>8.1f}")
            if name == "catalog":
                h = x["connect_to_handover"]
                lines.append(f"{'':8} {'':>5} {'  ..handover':10} {h['round_trips']:>3} "
                             f"{h['reads']:>3} {h['writes_with_response']:>3} "
                             f"{h['subscribes']:>3} {h['notifications']:>5} "
                             f"{h['bytes_to_peripheral']:>7} {h['bytes_to_central']:>7} "
                             f"{'':>7} {x['to_handover_ms']:>8.1f}")
    lines.append("")
    lines.append("RT = round trips the central waited for (reads + writes with response + CCC "
                 "write), from connect until\nthe handover starts (agent) or the catalog is in "
                 "(catalog, plaintext); '..handover' = catalog flow\nuntil its handover starts. "
                 "ms = connect -> handover (agent/catalog) or the plaintext read.")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for mtu in args.mtu:
        print(f"sim MTU {mtu} ...", file=sys.stderr, flush=True)
        results.append(await run_sim(mtu, args.latency_ms, args.entries))
    if args.bluezoo != "no":
        from bluezoo_env import missing

        reason = missing()
        if reason and args.bluezoo == "yes":
            raise SystemExit(f"BlueZoo requested but unavailable: {reason}")
        if reason:
            print(f"skipping BlueZoo: {reason}", file=sys.stderr)
        else:
            print("BlueZoo (real bless + bleak) ...", file=sys.stderr, flush=True)
            results.append(await run_bluezoo(args.entries))
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mtu", type=lambda s: [int(x) for x in s.split(",")],
                    default=[23, 185, 247, 517], help="ATT MTUs for the simulator")
    ap.add_argument("--latency-ms", type=float, default=7.5,
                    help="one-way latency per ATT PDU in the simulator (default 7.5)")
    ap.add_argument("--entries", type=int, default=100, help="public catalog entries")
    ap.add_argument("--bluezoo", choices=("auto", "yes", "no"), default="auto")
    ap.add_argument("--json", type=Path, help="write results as JSON to this path")
    args = ap.parse_args()
    import logging

    # ERROR by default: session-close chatter at shutdown is expected; BENCH_LOG=DEBUG to see
    logging.basicConfig(level=getattr(logging, os.environ.get("BENCH_LOG", "ERROR")))
    results = asyncio.run(main_async(args))
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {"machine": platform.platform(), "python": platform.python_version(),
               "entries": args.entries, "results": results}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
