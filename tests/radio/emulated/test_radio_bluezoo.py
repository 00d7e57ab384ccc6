"""Real bless (hci0) serving real bleak (hci1) through BlueZoo, a user-space mock of BlueZ.

Needs (test-only; BlueZoo is GPL-2.0, never a runtime dependency):
  * ``dbus-daemon``  (Debian: ``apt-get install -y dbus``)
  * ``bluezoo``      (``pip install bluezoo``; any environment: set ``SHOAL_BLUEZOO`` to the
    executable if it is not on PATH, e.g. a separate venv's ``bin/bluezoo``)
Skips with a reason when either is missing. Each test gets a private system bus and a fresh
BlueZoo (restarting per test is what keeps BlueZoo state from leaking). BlueZoo has a fixed MTU
(509) and no read offsets, so this tier checks the wiring, not the ATT corner cases (the
simulator does those).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from radio.base import Sighting
from radio.ble import CentralChannel, PeripheralChannel
from radio.ble import profile as p

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tests.links.ble.bluezoo_env import missing, prepare_adapters, private_bluez

pytestmark = [pytest.mark.slow, pytest.mark.skipif(missing() is not None, reason=str(missing()))]


@pytest.fixture
def bluez(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private system bus with a fresh BlueZoo (two adapters) for this test only."""
    with private_bluez(tmp_path / "bluez", adapters=2) as address:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
        yield address


CATALOG = [p.ResourceEntry(i.to_bytes(8, "big"), i * 10, i) for i in range(40)]


async def _serve(channel: PeripheralChannel) -> None:
    while True:
        central, raw = await channel.receive()
        request = p.decode_control(raw)
        assert isinstance(request, p.CatalogPageRequest)
        await channel.send(central, p.encode_control(p.serve_page(request, CATALOG, 1)))


async def test_bless_serves_bleak_end_to_end(bluez: str) -> None:
    from radio.ble.bleak_central import BleakCentral
    from radio.ble.bless_peripheral import BlessPeripheral

    await prepare_adapters(["hci0", "hci1"])
    periph = BlessPeripheral("Shoal", adapter="hci0")
    pch = PeripheralChannel(periph)
    await periph.start(p.shoal_service_spec(2), pch.on_write, pch.on_disconnect)
    assert periph.tapped
    info = p.NodeInfo(b"DEVICE01", p.FLAG_CATALOG_PAGING, len(CATALOG), 1, 0, 2)
    periph.set_value(p.NODEINFO_UUID, info.encode())
    for slot in range(2):
        periph.set_value(p.resource_slot_uuid(slot), CATALOG[slot].encode())
    await periph.advertiser.start(p.SERVICE_UUID, p.Advert(1, b"TAG001", 4).encode())
    server = asyncio.ensure_future(_serve(pch))

    central = BleakCentral(adapter="hci1")
    # Subscribe before start(): BlueZ reports a device once and then only on changes, so a
    # consumer attached after the first report can wait forever (BlueZoo's RSSI never moves).
    seen: dict[bytes, Sighting] = {}
    changed = asyncio.Event()

    def on_sighting(s: Sighting) -> None:
        seen[s.node_tag] = s
        changed.set()

    central.add_callback(on_sighting)
    await central.start()

    async def first_tag(tag: bytes) -> Sighting:
        while tag not in seen:
            changed.clear()
            await changed.wait()
        return seen[tag]

    sighting = await asyncio.wait_for(first_tag(b"TAG001"), 20)
    assert (sighting.protocol_version, sighting.flags) == (1, 4)

    # tag rotation re-registers the advertisement and the scanner sees the new tag
    await periph.advertiser.start(p.SERVICE_UUID, p.Advert(1, b"TAG002", 4).encode())
    await asyncio.wait_for(first_tag(b"TAG002"), 20)
    await central.stop()

    client = central.client()
    channel = CentralChannel(client)
    await client.connect(sighting.address, timeout=20, on_disconnect=channel.on_disconnect)
    try:
        assert p.NodeInfo.decode(await client.read(p.NODEINFO_UUID)) == info
        assert p.decode_slot(await client.read(p.resource_slot_uuid(1))) == CATALOG[1]
        assert p.decode_slot(await client.read(p.resource_slot_uuid(0))) == CATALOG[0]
        assert 20 <= client.max_write_size(p.CONTROL_UUID) <= 512
        await channel.open()
        entries: list[p.ResourceEntry] = []
        while len(entries) < len(CATALOG):
            await channel.send(p.encode_control(p.CatalogPageRequest(len(entries), 64)))
            page = p.decode_control(await asyncio.wait_for(channel.receive(), 10))
            assert isinstance(page, p.CatalogPage)
            entries.extend(page.entries)
        assert entries == CATALOG
        (central_id,) = periph.centrals
        assert central_id.startswith("/org/bluez/hci0/dev_")  # options tap saw the device
        assert periph.max_payload(central_id) == client.max_write_size(p.CONTROL_UUID)
    finally:
        await client.disconnect()
    for _ in range(50):  # Device1.Connected=False reaches the peripheral
        if not periph.centrals:
            break
        await asyncio.sleep(0.1)
    assert periph.centrals == frozenset()
    server.cancel()
    await periph.stop()
