"""LanDiscovery between separate hosts (network namespaces on one bridge), one process each.

Each host runs ``lan_driver.py`` with default interface selection (``eth0`` inside its
namespace; loopback excluded), as an agent would. Times are ``time.monotonic()`` from the
children, comparable across namespaces.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import JsonProc, Lan, spawn_jsonl, tool_missing
from zeroconf.asyncio import AsyncZeroconf

pytestmark = pytest.mark.netns

DRIVER = str(Path(__file__).resolve().parent / "lan_driver.py")


def start_driver(lan: Lan, i: int, short_id: str, *extra: str) -> JsonProc:
    return spawn_jsonl(
        lan.host(i), [sys.executable, DRIVER, "--name", f"host {i}", "--id", short_id, *extra]
    )


def seen(short_id: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda o: (
        o["kind"] == "seen"
        and o["short_id"] == short_id
        and all(o[k] == v for k, v in fields.items())
    )


def gone(short_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda o: o["kind"] == "gone" and o["short_id"] == short_id


def test_three_hosts_discover_each_other_within_target(lan: Lan) -> None:
    ids = [secrets.token_hex(8) for _ in range(3)]
    procs = [start_driver(lan, i + 1, ids[i]) for i in range(3)]
    starts = [p.wait_for(lambda o: o["kind"] == "starting")["t"] for p in procs]
    worst = 0.0
    for i, proc in enumerate(procs):
        for j in range(3):
            if i == j:
                continue
            ev = proc.wait_for(seen(ids[j]))
            assert ev["addresses"] == [lan.host(j + 1).addr]
            assert ev["interface"] == "eth0" and ev["name"] == f"host {j + 1}"
            # visible to i after max(i started, j started): the later start is what counts
            delay = ev["t"] - max(starts[i], starts[j])
            worst = max(worst, delay)
    print(f"netns, probing: worst start -> peer seen {worst:.3f} s")
    assert not any(o.get("short_id") == ids[0] for o in procs[0].lines)
    for proc in procs:
        assert proc.close() == 0


def test_goodbye_across_the_bridge(lan: Lan) -> None:
    ids = [secrets.token_hex(8) for _ in range(3)]
    procs = [start_driver(lan, i + 1, ids[i], "--no-probe") for i in range(3)]
    for j in (0, 2):
        procs[j].wait_for(seen(ids[1]))
    procs[1].send("stop")
    procs[1].wait_for(lambda o: o["kind"] == "stopped")
    for j in (0, 2):  # records live for minutes (TTL): a gone event here is the goodbye
        procs[j].wait_for(gone(ids[1]), timeout=30)


@pytest.mark.skipif(tool_missing("iptables") is not None, reason="`iptables` is not installed")
def test_partitioned_peer_is_not_reported_gone(lan_factory: Callable[[int], Lan]) -> None:
    """mDNS keeps records for minutes: liveness is the agent's heartbeat, not ours."""
    lan = lan_factory(2)
    ids = [secrets.token_hex(8) for _ in range(2)]
    procs = [start_driver(lan, i + 1, ids[i], "--no-probe") for i in range(2)]
    procs[0].wait_for(seen(ids[1]))
    lan.partition(2)
    time.sleep(2.0)
    assert not any(gone(ids[1])(o) for o in procs[0].lines)
    lan.heal(2)


def test_interface_appearing_later_gets_advertised(lan_factory: Callable[[int], Lan]) -> None:
    lan = lan_factory(2)
    ids = [secrets.token_hex(8) for _ in range(2)]
    lan.unplug(1)  # host 1 starts with loopback only: nothing to advertise on
    h1 = start_driver(lan, 1, ids[0], "--poll", "0.5")
    h2 = start_driver(lan, 2, ids[1], "--poll", "0.5")
    assert h1.wait_for(lambda o: o["kind"] == "started")["interfaces"] == []
    h2.wait_for(lambda o: o["kind"] == "started")
    time.sleep(0.5)
    t_plug = time.monotonic()
    lan.plug(1)
    ev = h2.wait_for(seen(ids[0]), timeout=10)
    back = h1.wait_for(seen(ids[1]), timeout=10)
    print(
        f"netns: plug -> advertised {ev['t'] - t_plug:.3f} s (poll 0.5 s + probing); "
        f"plug -> peer seen {back['t'] - t_plug:.3f} s"
    )
    assert ev["addresses"] == [lan.host(1).addr]

    # The interface disappears: host 1 can no longer see anyone on the LAN...
    lan.unplug(1)
    h1.wait_for(gone(ids[1]), timeout=10)
    # ...and comes back.
    n = len(h1.lines)
    lan.plug(1)
    h1.wait_for(lambda o: o in h1.lines[n:] and seen(ids[1])(o), timeout=10)
    for proc in (h1, h2):
        assert proc.close() == 0


@pytest.mark.parametrize("mode", ["in-place", "rebuild"])
def test_new_address_is_advertised(lan_factory: Callable[[int], Lan], mode: str) -> None:
    if mode == "in-place" and not hasattr(AsyncZeroconf, "async_update_interfaces"):
        pytest.skip("zeroconf < 0.150 has no async_update_interfaces: rebuild only")
    lan = lan_factory(2)
    ids = [secrets.token_hex(8) for _ in range(2)]
    extra = ["--poll", "0.5", "--no-probe"] + (["--rebuild"] if mode == "rebuild" else [])
    h1 = start_driver(lan, 1, ids[0], *extra)
    h2 = start_driver(lan, 2, ids[1], *extra)
    h2.wait_for(seen(ids[0], addresses=[lan.host(1).addr]))
    n = len(h2.lines)
    second = f"{lan.subnet}.201"
    lan.host(1).ip("addr", "add", f"{second}/24", "dev", "eth0")
    ev = h2.wait_for(lambda o: seen(ids[0])(o) and second in o["addresses"], timeout=8)
    assert set(ev["addresses"]) == {lan.host(1).addr, second}
    flapped = any(gone(ids[0])(o) for o in h2.lines[n:])
    assert flapped == (mode == "rebuild")  # in place: peers never see us go away
    for proc in (h1, h2):
        assert proc.close() == 0
