"""Emulated tier: two real agents (`shoal run`, separate processes and data dirs) whose only
way to meet is BLE — real bless on hci0/hci1 and real bleak, through BlueZoo on a private
dbus-daemon (mDNS off). The test process is a third device (hci2) that reads the plaintext
GATT values the way any phone could.

Covers: advertise + scan, connect, NodeInfo and resource characteristics, the encrypted
session, `shoal peers` / `shoal resources` through BLE alone, pairing over BLE (`shoal pair
ble:NAME`, which needs the node's `ble:` routing of pair_start), handover to TCP, fetch over
TCP.
Skips with a reason when dbus-daemon or BlueZoo is missing (scripts/setup-bluezoo.sh).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bluezoo_env import missing, prepare_adapters, private_bluez

from agent.links.ble.tag import node_tag, tag_epoch
from radio.ble import profile as p
from tests.integration.agents import Agent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(missing() is not None, reason=str(missing())),
]


def agent_config(adapter: str, handover: bool = True) -> str:
    return (
        '[lan]\nlisten = "127.0.0.1"\nmdns = false\n'
        f'[ble]\nenabled = true\nadapter = "{adapter}"\nresource_slots = 4\n'
        f"connect_timeout = 20\nhandover = {str(handover).lower()}\n"
    )


@pytest.fixture
def bluez(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with private_bluez(tmp_path / "bluez", adapters=3) as address:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)  # agents inherit it
        asyncio.run(prepare_adapters(["hci0", "hci1", "hci2"]))
        yield address


@pytest.fixture
def make_agents(tmp_path: Path, bluez: str) -> Iterator[Callable[..., tuple[Agent, Agent]]]:
    started: list[Agent] = []

    def make(handover: bool = True) -> tuple[Agent, Agent]:
        for name, adapter in (("b", "hci1"), ("a", "hci0")):
            agent = Agent(name, tmp_path / name)
            agent.config(agent_config(adapter, handover))
            started.append(agent)
        return started[1], started[0]

    try:
        yield make
    finally:
        for agent in started:
            agent.stop(timeout=10)


def poll(fn: Callable[[], Any], what: str, agents: list[Agent], timeout: float = 90.0) -> Any:
    """Call ``fn`` until it returns something truthy (a guard, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.3)
    logs = "\n".join(f"--- {a.name} ---\n{a.log()}" for a in agents)
    raise AssertionError(f"{what}: not reached\n{logs}")


async def read_as_third_device(
    device_id: bytes, count: int
) -> tuple[p.NodeInfo, list[p.ResourceEntry]]:
    """Scan on hci2 for the agent's current rotating tag, connect, read plaintext values
    (NodeInfo again until it shows ``count`` entries: the agent may still be polling its
    store after a publish)."""
    from radio.ble.bleak_central import BleakCentral

    want = {node_tag(device_id, tag_epoch(time.time()) + d) for d in (-1, 0, 1)}
    central = BleakCentral(adapter="hci2")
    found: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    central.add_callback(
        lambda s: s.node_tag in want and not found.done() and found.set_result(s.address))
    await central.start()
    try:
        address = await asyncio.wait_for(found, 30)
    finally:
        await central.stop()
    client = central.client()
    await client.connect(address, timeout=20)
    try:
        # Reads only: BlueZoo cannot give a second central notifications on a characteristic
        # that already notifies another one (it falls back to AcquireNotify, which bless lacks);
        # paging over Control/Events is covered by the simulator tier.
        for _ in range(100):
            info = p.NodeInfo.decode(await client.read(p.NODEINFO_UUID))
            if info.catalog_count == count:
                break
            await asyncio.sleep(0.1)
        entries = [p.decode_slot(await client.read(p.resource_slot_uuid(i)))
                   for i in range(4)]
        assert entries[info.populated_slots:] == [None] * (4 - info.populated_slots)
        return info, [e for e in entries if e is not None]
    finally:
        await client.disconnect()


def test_two_agents_meet_over_ble_and_hand_over(
    tmp_path: Path, make_agents: Callable[..., tuple[Agent, Agent]]
) -> None:
    a, b = make_agents()
    both = [a, b]
    b.start()
    pub = tmp_path / "pub.bin"
    pub.write_bytes(os.urandom(300_000))
    priv = tmp_path / "priv.bin"
    priv.write_bytes(os.urandom(200_000))
    b.cli("publish", str(pub), "--public")
    b.cli("publish", str(priv))
    a.start()
    b_id = bytes.fromhex(b.json("id")["hex"])

    # discovery, session and RSSI through BLE alone (mDNS is off)
    def b_in_peers() -> dict[str, Any] | None:
        row = next((x for x in a.json("peers") if x["name"] == "b"), None)
        ok = row and "ble" in row["sources"] and row["rssi"] is not None and row["connected"]
        return row if ok else None

    row = poll(b_in_peers, "b appears in a's peers via BLE", both)
    assert row["peer_id"] == b_id.hex()

    # plaintext GATT as a third device sees it: NodeInfo + public entries only
    info, entries = asyncio.run(read_as_third_device(b_id, 1))
    pub_id = next(x for x in b.json("resources", "--local")["local"] if x["name"] == "pub.bin")
    priv_id = next(x for x in b.json("resources", "--local")["local"] if x["name"] == "priv.bin")
    assert info.device_id == b_id[:8] and info.catalog_count == 1
    assert info.flags & p.FLAG_LAN and info.lan_port == b.port
    assert [e.resource_prefix for e in entries] == [bytes.fromhex(pub_id["resource_id"])[:8]]
    assert bytes.fromhex(priv_id["resource_id"])[:8] not in {e.resource_prefix for e in entries}

    # catalog over the encrypted session: unpaired -> public only
    def remote_names() -> set[str]:
        return {x["name"] for x in a.json("resources")["remote"] if x["holder"] == "b"}

    assert poll(lambda: remote_names() == {"pub.bin"}, "b's public catalog at a", both)

    # handover: a TCP session to the same device (whichever side was central asked)
    poll(lambda: (r := b_in_peers()) and "lan" in r["sources"] and r["addresses"],
         "handover to TCP", both)
    a_status = a.json("status")
    assert a_status["connected"] >= 2  # the BLE session is kept next to the TCP one

    # bulk over TCP: BLE refuses it, so this succeeds only because of the handover
    fetched = a.json("fetch", "pub.bin", "--no-output", timeout=120)
    assert fetched["size"] == pub.stat().st_size and "b" in fetched["sources"]
    out = tmp_path / "out.bin"
    a.cli("fetch", "pub.bin", "-o", str(out))
    assert out.read_bytes() == pub.read_bytes()


def test_pairing_over_ble_with_the_cli(
    tmp_path: Path, make_agents: Callable[..., tuple[Agent, Agent]]
) -> None:
    """`shoal pair ble:b`: numeric comparison on the BLE session, then private resources are
    listed and fetched (over the LAN link the handover opened)."""
    a, b = make_agents()
    both = [a, b]
    b.start()
    priv = tmp_path / "priv.bin"
    priv.write_bytes(os.urandom(200_000))
    b.cli("publish", str(priv))
    a.start()
    poll(lambda: next((x for x in a.json("peers") if x["name"] == "b" and x["connected"]
                       and "lan" in x["sources"]), None), "BLE session and handover", both)
    assert [x for x in a.json("resources")["remote"] if x["holder"] == "b"] == []

    # both screens show the same code, then both confirm
    b.cli("pair", "--open")
    started = a.json("pair", "ble:b", "--no-wait")
    pending_b = b.json("pair", "--pending")
    assert [x["code"] for x in pending_b] == [started["code"]]
    a.cli("pair", "--code", started["code"], "--no-wait")
    done = b.json("pair", "--code", started["code"], "--timeout", "30")
    assert done["complete"]
    assert poll(lambda: next(x for x in a.json("peers") if x["name"] == "b")["trusted"],
                "a trusts b", both)
    assert {x["name"] for x in a.json("resources")["remote"]} == {"priv.bin"}
    fetched = a.json("fetch", "priv.bin", "--no-output", timeout=120)
    assert fetched["size"] == priv.stat().st_size
    out = tmp_path / "out.bin"
    a.cli("fetch", "priv.bin", "-o", str(out))
    assert out.read_bytes() == priv.read_bytes()


def test_ble_alone_carries_peers_and_catalog_but_no_bulk(
    tmp_path: Path, make_agents: Callable[..., tuple[Agent, Agent]]
) -> None:
    """handover = false: everything `shoal peers` / `shoal resources` show about b came over
    BLE; a fetch is refused with a clear reason instead of crawling over the radio."""
    a, b = make_agents(handover=False)
    both = [a, b]
    b.start()
    pub = tmp_path / "pub.bin"
    pub.write_bytes(os.urandom(50_000))
    b.cli("publish", str(pub), "--public")
    a.start()

    def row() -> dict[str, Any] | None:
        r = next((x for x in a.json("peers") if x["name"] == "b"), None)
        return r if r and r["connected"] and r["rssi"] is not None else None

    found = poll(row, "b connected over BLE", both)
    assert found["sources"] == ["ble"] and found["addresses"] == []
    remote = poll(lambda: a.json("resources")["remote"], "b's catalog over BLE", both)
    assert [(x["name"], x["holder"]) for x in remote] == [("pub.bin", "b")]
    res = a.cli("fetch", "pub.bin", "--no-output", check=False, timeout=120)
    assert res.returncode != 0 and "not sent over BLE" in res.stderr
    assert poll(row, "BLE session still up", both)["connected"]
