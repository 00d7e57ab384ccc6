"""bleak central backend with autospec'd bleak 3.1 objects (no D-Bus in this tier).

``mock.create_autospec(BleakScanner/BleakClient)`` checks every constructor and method call
against the installed bleak signatures, so a call that would break on real bleak fails here.
"""

from __future__ import annotations

import random
import uuid
from typing import Any
from unittest import mock

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakCharacteristicNotFoundError,
    BleakDeviceNotFoundError,
    BleakError,
)

from radio.base import (
    AttributeRejectedError,
    NotConnectedError,
    RadioError,
    RadioTimeoutError,
    Sighting,
)
from radio.ble import profile as p
from radio.ble.bleak_central import BleakCentral, BleakGattClient, service_data_or_pattern

ADDR = "AA:BB:CC:DD:EE:FF"


def adv(service_data: dict[str, bytes], rssi: int = -60) -> AdvertisementData:
    return AdvertisementData(
        local_name="Shoal",
        manufacturer_data={},
        service_data=service_data,
        service_uuids=[],
        tx_power=None,
        rssi=rssi,
        platform_data=(),
    )


# --- scanner ----------------------------------------------------------------------------------
async def test_active_scan_filters_on_service_data() -> None:
    factory = mock.create_autospec(BleakScanner)
    central = BleakCentral(scanner_factory=factory, clock=lambda: 12.5)
    seen: list[Sighting] = []
    central.add_callback(seen.append)
    await central.start()
    args, kwargs = factory.call_args
    callback, service_uuids, mode = args
    assert service_uuids is None and mode == "active" and kwargs == {"bluez": {}}
    factory.return_value.start.assert_awaited_once()

    device = BLEDevice(ADDR, None, {})
    callback(device, adv({p.SERVICE_UUID: p.Advert(1, b"TAG123", 4).encode()}, rssi=-71))
    other = adv({"0000feaa-0000-1000-8000-00805f9b34fb": b"x"})
    callback(BLEDevice("11:22:33:44:55:66", None, {}), other)
    callback(BLEDevice("11:22:33:44:55:67", None, {}), adv({p.SERVICE_UUID: b"\x00bad"}))
    assert seen == [Sighting(ADDR, b"TAG123", 1, -71, 12.5, 4)]
    assert central.malformed == 1
    assert central.device(ADDR) is device and central.device("11:22:33:44:55:67") is None

    await central.stop()
    factory.return_value.stop.assert_awaited_once()
    await central.stop()


async def test_passive_scan_uses_or_pattern() -> None:
    factory = mock.create_autospec(BleakScanner)
    await BleakCentral(scanner_factory=factory, passive=True, adapter="hci1").start()
    args, kwargs = factory.call_args
    assert args[2] == "passive"
    (pattern,) = kwargs["bluez"]["or_patterns"]
    assert kwargs["bluez"]["adapter"] == "hci1"
    assert pattern == (0, 0x21, uuid.UUID(p.SERVICE_UUID).bytes[::-1])
    assert pattern[2].hex() == "4725d8a36292819aeb479071000031d4"  # documented bytes
    assert service_data_or_pattern(p.SERVICE_UUID) == pattern


async def test_device_cache_is_bounded() -> None:
    factory = mock.create_autospec(BleakScanner)
    central = BleakCentral(scanner_factory=factory, max_devices=3)
    await central.start()
    callback = factory.call_args.args[0]
    data = adv({p.SERVICE_UUID: p.Advert(1, b"ABCDEF").encode()})
    for i in range(5):
        callback(BLEDevice(f"00:00:00:00:00:0{i}", None, {}), data)
    assert central.device("00:00:00:00:00:01") is None
    assert central.device("00:00:00:00:00:04") is not None


# --- client -----------------------------------------------------------------------------------
def bleak_client_factory(mtu: int = 185, has_service: bool = True) -> Any:
    factory = mock.create_autospec(BleakClient)
    inst = factory.return_value
    inst.is_connected = True
    char = mock.Mock(max_write_without_response_size=mtu - 3)
    inst.services.get_characteristic.side_effect = lambda u: char if u == p.CONTROL_UUID else None
    inst.services.get_service.return_value = object() if has_service else None
    inst.read_gatt_char.return_value = bytearray(b"nodeinfo")
    return factory


async def test_connect_uses_scanned_device_and_service_filter() -> None:
    scan = mock.create_autospec(BleakScanner)
    central = BleakCentral(scanner_factory=scan)
    await central.start()
    device = BLEDevice(ADDR, None, {})
    scan.call_args.args[0](device, adv({p.SERVICE_UUID: p.Advert(1, b"ABCDEF").encode()}))
    factory = bleak_client_factory()
    client = central.client(client_factory=factory)
    await client.connect(ADDR, timeout=10.0)
    args, kwargs = factory.call_args
    assert args[0] is device and args[2] == [p.SERVICE_UUID]
    assert 0 < kwargs["timeout"] <= 10.0 and kwargs["bluez"] == {}
    assert client.is_connected and client.attempts_used == 1


async def test_connect_retries_with_exponential_backoff() -> None:
    factory = bleak_client_factory()
    factory.return_value.connect.side_effect = [BleakError("abort"), TimeoutError(), None]
    delays: list[float] = []

    async def fake_sleep(d: float) -> None:
        delays.append(d)

    client = BleakGattClient(
        client_factory=factory, attempts=3, backoff_s=1.0, rng=random.Random(1), sleep=fake_sleep
    )
    await client.connect(ADDR, timeout=30.0)
    assert client.attempts_used == 3 and factory.call_count == 3
    assert len(delays) == 2 and 0 <= delays[0] <= 1.0 and 0 <= delays[1] <= 2.0
    assert factory.return_value.disconnect.await_count == 2  # cleanup after failed attempts
    assert factory.call_args.args[0] == ADDR  # no scanner: address string


async def test_connect_gives_up() -> None:
    factory = bleak_client_factory()
    factory.return_value.connect.side_effect = BleakDeviceNotFoundError(ADDR)

    async def no_sleep(_: float) -> None:
        return None

    client = BleakGattClient(client_factory=factory, attempts=2, sleep=no_sleep)
    with pytest.raises(RadioError) as info:
        await client.connect(ADDR, timeout=5.0)
    assert not isinstance(info.value, RadioTimeoutError)
    assert isinstance(info.value.__cause__, BleakDeviceNotFoundError)
    factory.return_value.connect.side_effect = TimeoutError()
    with pytest.raises(RadioTimeoutError):
        await client.connect(ADDR, timeout=5.0)
    with pytest.raises(RadioTimeoutError):
        await client.connect(ADDR, timeout=0.0)


async def test_connect_timeout_cuts_a_hanging_attempt() -> None:
    import asyncio

    factory = bleak_client_factory()

    async def hang() -> None:
        await asyncio.sleep(10)

    factory.return_value.connect.side_effect = hang
    client = BleakGattClient(client_factory=factory, attempts=5)
    with pytest.raises(RadioTimeoutError):
        await client.connect(ADDR, timeout=0.05)
    assert client.attempts_used == 1


async def test_bluetooth_off_is_not_retried() -> None:
    factory = bleak_client_factory()
    factory.return_value.connect.side_effect = BleakBluetoothNotAvailableError(
        "off", BleakBluetoothNotAvailableReason.POWERED_OFF
    )
    client = BleakGattClient(client_factory=factory, attempts=3)
    with pytest.raises(RadioError):
        await client.connect(ADDR, timeout=5.0)
    assert factory.call_count == 1


async def test_not_a_shoal_node() -> None:
    factory = bleak_client_factory(has_service=False)
    client = BleakGattClient(client_factory=factory)
    with pytest.raises(RadioError, match="Shoal service"):
        await client.connect(ADDR, timeout=5.0)
    factory.return_value.disconnect.assert_awaited_once()
    assert not client.is_connected


async def test_gatt_operations_map_to_bleak_calls() -> None:
    factory = bleak_client_factory(mtu=185)
    inst = factory.return_value
    client = BleakGattClient(client_factory=factory)
    await client.connect(ADDR, timeout=5.0)
    assert await client.read(p.NODEINFO_UUID) == b"nodeinfo"
    inst.read_gatt_char.assert_awaited_once_with(p.NODEINFO_UUID)
    assert client.max_write_size(p.CONTROL_UUID) == 182
    await client.write(p.CONTROL_UUID, bytes(182))
    inst.write_gatt_char.assert_awaited_once_with(p.CONTROL_UUID, bytes(182), response=True)
    with pytest.raises(AttributeRejectedError):
        await client.write(p.CONTROL_UUID, bytes(183))
    with pytest.raises(AttributeRejectedError):
        client.max_write_size(p.NODEINFO_UUID)

    got: list[bytes] = []
    await client.subscribe(p.EVENTS_UUID, got.append)
    uuid_arg, callback = inst.start_notify.await_args.args
    assert uuid_arg == p.EVENTS_UUID
    callback(mock.Mock(), bytearray(b"\x80frag"))
    assert got == [b"\x80frag"] and type(got[0]) is bytes


async def test_max_write_size_capped_at_512() -> None:
    client = BleakGattClient(client_factory=bleak_client_factory(mtu=600))
    await client.connect(ADDR, timeout=5.0)
    assert client.max_write_size(p.CONTROL_UUID) == 512


async def test_error_mapping() -> None:
    factory = bleak_client_factory()
    inst = factory.return_value
    client = BleakGattClient(client_factory=factory)
    await client.connect(ADDR, timeout=5.0)
    inst.read_gatt_char.side_effect = BleakCharacteristicNotFoundError("x")
    with pytest.raises(AttributeRejectedError):
        await client.read("x")
    inst.read_gatt_char.side_effect = BleakError("Not connected")
    with pytest.raises(RadioError):
        await client.read(p.NODEINFO_UUID)
    inst.is_connected = False
    with pytest.raises(NotConnectedError):
        await client.read(p.NODEINFO_UUID)


async def test_disconnect_callbacks() -> None:
    factory = bleak_client_factory()
    inst = factory.return_value
    client = BleakGattClient(client_factory=factory)
    calls: list[bool] = []
    await client.connect(ADDR, timeout=5.0, on_disconnect=lambda: calls.append(True))
    bleak_callback = factory.call_args.args[1]
    bleak_callback(object())  # some other client: ignored
    assert calls == []
    bleak_callback(inst)  # the peer went away
    assert calls == [True]
    bleak_callback(inst)  # fires once
    assert calls == [True]

    await client.connect(ADDR, timeout=5.0, on_disconnect=lambda: calls.append(True))
    await client.disconnect()  # local disconnect: no callback
    bleak_callback(inst)
    assert calls == [True] and not client.is_connected
    inst.disconnect.assert_awaited()
    with pytest.raises(NotConnectedError):
        await client.read(p.NODEINFO_UUID)
    await client.disconnect()


def test_attempts_validation() -> None:
    with pytest.raises(ValueError):
        BleakGattClient(attempts=0)
