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
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from radio.base import Sighting
from radio.ble import CentralChannel, PeripheralChannel
from radio.ble import profile as p

DBUS_DAEMON = shutil.which("dbus-daemon")
BLUEZOO = os.environ.get("SHOAL_BLUEZOO") or shutil.which("bluezoo")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(DBUS_DAEMON is None, reason="dbus-daemon not installed (apt: dbus)"),
    pytest.mark.skipif(
        BLUEZOO is None, reason="bluezoo not found (pip install bluezoo, or set SHOAL_BLUEZOO)"
    ),
]

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <limit name="max_replies_per_connection">1000000</limit>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/><allow send_type="signal"/>
    <allow send_type="method_return"/><allow send_type="error"/>
    <allow receive_type="method_call"/><allow receive_type="signal"/>
    <allow receive_type="method_return"/><allow receive_type="error"/>
  </policy>
</busconfig>
"""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture
def bluez(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    socket = tmp_path / "system_bus"
    config = tmp_path / "bus.conf"
    config.write_text(BUS_CONFIG.format(socket=socket))
    assert DBUS_DAEMON is not None and BLUEZOO is not None
    daemon = subprocess.Popen(
        [DBUS_DAEMON, f"--config-file={config}", "--nofork"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not socket.exists():
        if time.monotonic() > deadline or daemon.poll() is not None:
            _stop(daemon)
            pytest.skip("private dbus-daemon did not start")
        time.sleep(0.05)
    address = f"unix:path={socket}"
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
    zoo_log = (tmp_path / "bluezoo.log").open("wb")
    zoo = subprocess.Popen(
        [BLUEZOO, "--auto-enable", "--scan-interval", "1",
         "-a", "00:00:00:01:00:00", "-a", "00:00:00:02:00:00"],
        env={**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": address},
        stdout=zoo_log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield address
    finally:
        _stop(zoo)
        _stop(daemon)
        zoo_log.close()


async def _prepare_adapters() -> None:
    """BlueZoo needs the adapters powered and discoverable before scanning finds anything."""
    from dbus_next import Variant
    from dbus_next.aio import MessageBus
    from dbus_next.constants import BusType

    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        for name in ("hci0", "hci1"):
            for _ in range(100):  # BlueZoo registers its name shortly after starting
                try:
                    intro = await bus.introspect("org.bluez", f"/org/bluez/{name}")
                    break
                except Exception:
                    await asyncio.sleep(0.1)
            else:
                pytest.skip("BlueZoo did not publish its adapters")
            props = bus.get_proxy_object("org.bluez", f"/org/bluez/{name}", intro).get_interface(
                "org.freedesktop.DBus.Properties"
            )
            await props.call_set("org.bluez.Adapter1", "Powered", Variant("b", True))
            await props.call_set("org.bluez.Adapter1", "Discoverable", Variant("b", True))
    finally:
        bus.disconnect()


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

    await _prepare_adapters()
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
