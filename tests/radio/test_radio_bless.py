"""bless peripheral backend without D-Bus.

The *real* bless 0.3.0 server, application, characteristic and advertisement classes run here;
only the D-Bus connection is replaced: ``BlessServerBlueZDBus.setup`` gets a bus object that
captures outgoing messages (a ``dbus_next`` ``BaseMessageBus`` with no socket) and an adapter
proxy made of AsyncMocks. Incoming BlueZ calls (ReadValue, WriteValue, StartNotify) are
dispatched through dbus-next's own method handler, so the options tap is tested against the
real dispatch path.
"""

from __future__ import annotations

from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pytest
from dbus_next import Message, MessageType, Variant
from dbus_next.constants import BusType
from dbus_next.message_bus import BaseMessageBus
from dbus_next.service import ServiceInterface

from radio.base import AttributeRejectedError, NotConnectedError, RadioError
from radio.ble import PeripheralChannel
from radio.ble import profile as p
from radio.ble.bless_peripheral import UNKNOWN_CENTRAL, BlessPeripheral, parse_options
from radio.ble.framing import Fragmenter, Reassembler

DEVICE = "/org/bluez/hci0/dev_AA_BB_CC_DD_EE_FF"
OTHER = "/org/bluez/hci0/dev_11_22_33_44_55_66"


class FakeBus(BaseMessageBus):
    """dbus-next's bus logic (export, signals, handlers) minus the socket."""

    def _setup_socket(self) -> None:
        self.sent: list[Message] = []
        self.calls: list[Message] = []

    def send(self, msg: Message) -> None:
        self.sent.append(msg)

    def disconnect(self) -> None:
        self.disconnected = True

    async def call(self, msg: Message) -> Message:
        self.calls.append(msg)
        return Message(message_type=MessageType.METHOD_RETURN, reply_serial=1)

    def value_signals(self, path: str) -> list[bytes]:
        return [
            bytes(m.body[1]["Value"].value)
            for m in self.sent
            if m.member == "PropertiesChanged" and m.path == path and "Value" in m.body[1]
        ]


@pytest.fixture
def env(mocker: Any) -> dict[str, Any]:
    from bless.backends.bluezdbus.dbus.application import BlueZGattApplication
    from bless.backends.bluezdbus.server import BlessServerBlueZDBus

    bus = FakeBus(bus_type=BusType.SYSTEM)
    adapter = MagicMock(name="adapter")
    iface = AsyncMock(name="adapter-iface")
    adapter.get_interface.return_value = iface

    async def fake_setup(self: Any) -> None:
        # mirrors BlessServerBlueZDBus.setup, minus MessageBus().connect() and get_adapter()
        bus = state["bus"]  # bless opens one bus connection per server
        self.bus = bus
        self.app = BlueZGattApplication(self.name, "org.bluez", bus)
        self.app.Read = self.read
        self.app.Write = self.write
        self.app.StartNotify = lambda x: None
        self.app.StopNotify = lambda x: None
        self.adapter = adapter

    mocker.patch.object(BlessServerBlueZDBus, "setup", fake_setup)
    factory = MagicMock(side_effect=lambda **kw: BlessServerBlueZDBus(**kw))
    state = {"bus": bus, "iface": iface, "adapter": adapter, "factory": factory}
    return state


def gatt(periph: BlessPeripheral, uuid: str) -> Any:
    return periph._server.get_characteristic(uuid).gatt


def dispatch(iface: ServiceInterface, member: str, *args: Any) -> Any:
    """Invoke a D-Bus method the way dbus-next does for an incoming call; return the reply."""
    method = next(m for m in ServiceInterface._get_methods(iface) if m.name == member)
    msg = Message(
        path=getattr(iface, "path", "/"),
        interface=iface.name,
        member=member,
        signature=method.in_signature,
        body=list(args),
        serial=1,
    )
    replies: list[Message] = []
    BaseMessageBus._make_method_handler(None, iface, method)(msg, replies.append)  # type: ignore[arg-type]
    return replies[0].body


def opts(device: str | None = DEVICE, mtu: int | None = 185) -> dict[str, Variant]:
    out: dict[str, Variant] = {"offset": Variant("q", 0)}
    if device:
        out["device"] = Variant("o", device)
    if mtu:
        out["mtu"] = Variant("q", mtu)
    return out


async def started(env: dict[str, Any], slots: int = 2, **kw: Any) -> tuple[BlessPeripheral, list]:
    writes: list[tuple[str, bytes]] = []
    gone: list[str] = []
    periph = BlessPeripheral("Shoal", server_factory=env["factory"], **kw)
    await periph.start(p.shoal_service_spec(slots), lambda c, d: writes.append((c, d)), gone.append)
    return periph, [writes, gone]


async def test_start_builds_the_service_with_bless(env: dict[str, Any]) -> None:
    periph, _ = await started(env, slots=2)
    kwargs = env["factory"].call_args.kwargs
    assert kwargs["name"] == "Shoal" and "loop" in kwargs
    app = periph._server.app
    assert [s.UUID for s in app.services] == [p.SERVICE_UUID]
    flags = {c._uuid: c._flags for c in app.services[0].characteristics}
    assert flags[p.NODEINFO_UUID] == ["read"]
    assert flags[p.resource_slot_uuid(1)] == ["read"]
    assert sorted(flags[p.CONTROL_UUID]) == ["write", "write-without-response"]
    assert flags[p.EVENTS_UUID] == ["notify"]
    env["iface"].call_register_application.assert_awaited_once_with("/", {})
    env["iface"].call_register_advertisement.assert_not_awaited()  # nothing to advertise yet
    assert periph.tapped
    assert gatt(periph, p.EVENTS_UUID)._notifying is False
    add_match = [m for m in env["bus"].calls if m.member == "AddMatch"]
    assert add_match and "org.bluez.Device1" in add_match[0].body[0]
    with pytest.raises(RadioError):
        await periph.start(p.shoal_service_spec(0), lambda *_: None)


async def test_advertisement_carries_only_service_data(env: dict[str, Any]) -> None:
    periph, _ = await started(env)
    data = p.Advert(1, b"ROTAT1").encode()
    await periph.advertiser.start(p.SERVICE_UUID, data)
    assert periph.advertiser.is_advertising
    (path, options) = env["iface"].call_register_advertisement.await_args.args
    assert options == {}
    advert = env["bus"]._path_exports[path][0]
    assert advert.ServiceUUIDs == []
    assert {k: v.value for k, v in advert.ServiceData.items()} == {p.SERVICE_UUID: data}
    assert advert.Discoverable is True
    assert "Discoverable" in {prop.name for prop in ServiceInterface._get_properties(advert)}
    env["iface"].call_set.assert_awaited()  # adapter alias = name (bless set_name)

    # rotation: unregister the old advertisement, register the new one
    await periph.advertiser.start(p.SERVICE_UUID, p.Advert(1, b"ROTAT2").encode())
    env["iface"].call_unregister_advertisement.assert_awaited_once_with(path)
    assert env["iface"].call_register_advertisement.await_count == 2
    new = env["bus"]._path_exports[env["iface"].call_register_advertisement.await_args.args[0]]
    assert new[0].ServiceData[p.SERVICE_UUID].value.endswith(b"ROTAT2")

    await periph.advertiser.stop()
    assert not periph.advertiser.is_advertising
    assert env["iface"].call_unregister_advertisement.await_count == 2
    await periph.advertiser.stop()  # idempotent
    with pytest.raises(RadioError):
        await periph.advertiser.start(p.SERVICE_UUID, bytes(11))


async def test_advert_before_start_is_published_by_start(env: dict[str, Any]) -> None:
    periph = BlessPeripheral(server_factory=env["factory"])
    await periph.advertiser.start(p.SERVICE_UUID, p.Advert(1, b"EARLY1").encode())
    assert not periph.advertiser.is_advertising
    await periph.start(p.shoal_service_spec(0), lambda *_: None)
    env["iface"].call_register_advertisement.assert_awaited_once()
    assert periph.advertiser.is_advertising


async def test_reads_go_through_bless_with_safe_sizes(env: dict[str, Any]) -> None:
    periph, _ = await started(env)
    info = p.NodeInfo(b"DEVICE01", catalog_count=3).encode()
    periph.set_value(p.NODEINFO_UUID, info)
    assert dispatch(gatt(periph, p.NODEINFO_UUID), "ReadValue", opts()) == [info]
    assert dispatch(gatt(periph, p.resource_slot_uuid(0)), "ReadValue", opts()) == [b""]
    assert periph.centrals == {DEVICE}
    with pytest.raises(AttributeRejectedError):
        periph.set_value(p.NODEINFO_UUID, bytes(22))
    with pytest.raises(AttributeRejectedError):
        periph.set_value(p.CONTROL_UUID, b"x")


async def test_write_identifies_central_and_mtu(env: dict[str, Any]) -> None:
    periph, (writes, _) = await started(env)
    control = gatt(periph, p.CONTROL_UUID)
    dispatch(control, "WriteValue", b"\x01\x02", opts(DEVICE, 185))
    dispatch(control, "WriteValue", b"\x03", opts(OTHER, 23))
    assert writes == [(DEVICE, b"\x01\x02"), (OTHER, b"\x03")]
    assert periph.max_payload(DEVICE) == 182 and periph.max_payload(OTHER) == 20
    dispatch(control, "WriteValue", b"\x04", opts(DEVICE, None))  # MTU option absent: keep
    assert periph.max_payload(DEVICE) == 182
    with pytest.raises(NotConnectedError):
        periph.max_payload("/org/bluez/hci0/dev_00")


async def test_write_without_options_is_anonymous_min_mtu(env: dict[str, Any]) -> None:
    periph, (writes, _) = await started(env)
    dispatch(gatt(periph, p.CONTROL_UUID), "WriteValue", b"\x09", {})
    assert writes == [(UNKNOWN_CENTRAL, b"\x09")]
    assert periph.max_payload(UNKNOWN_CENTRAL) == 20


async def test_notify_updates_value_and_emits_properties_changed(env: dict[str, Any]) -> None:
    periph, _ = await started(env)
    dispatch(gatt(periph, p.CONTROL_UUID), "WriteValue", b"x", opts(DEVICE, 23))
    events = gatt(periph, p.EVENTS_UUID)
    await periph.notify(DEVICE, b"\x80" + bytes(19))
    await periph.notify(DEVICE, b"\xc1abc")
    assert env["bus"].value_signals(events.path) == [b"\x80" + bytes(19), b"\xc1abc"]
    with pytest.raises(AttributeRejectedError):
        await periph.notify(DEVICE, bytes(21))
    with pytest.raises(NotConnectedError):
        await periph.notify(OTHER, b"x")


async def test_start_stop_notify_tracks_notifying(env: dict[str, Any]) -> None:
    periph, _ = await started(env)
    events = gatt(periph, p.EVENTS_UUID)
    dispatch(events, "StartNotify")
    assert events._notifying is True
    dispatch(events, "StopNotify")
    assert events._notifying is False
    notifying = [
        m.body[1]["Notifying"].value
        for m in env["bus"].sent
        if m.member == "PropertiesChanged" and m.path == events.path and "Notifying" in m.body[1]
    ]
    assert notifying == [True, False]


async def test_device_disconnect_signal(env: dict[str, Any]) -> None:
    periph, (_, gone) = await started(env)
    dispatch(gatt(periph, p.CONTROL_UUID), "WriteValue", b"x", opts(DEVICE, 185))

    def signal(path: str, connected: bool, iface: str = "org.bluez.Device1") -> Message:
        return Message(
            path=path,
            interface="org.freedesktop.DBus.Properties",
            member="PropertiesChanged",
            signature="sa{sv}as",
            body=[iface, {"Connected": Variant("b", connected)}, []],
            message_type=MessageType.SIGNAL,
        )

    (handler,) = env["bus"]._user_message_handlers
    assert handler(signal(DEVICE, True)) is None
    assert handler(signal(DEVICE, False, "org.bluez.Battery1")) is None
    assert handler(signal(OTHER, False)) is None  # never talked to us
    assert gone == [] and periph.centrals == {DEVICE}
    assert handler(signal(DEVICE, False)) is None
    assert gone == [DEVICE] and periph.centrals == frozenset()


async def test_stop_unregisters_everything(env: dict[str, Any]) -> None:
    periph, _ = await started(env)
    await periph.advertiser.start(p.SERVICE_UUID, p.Advert(1, b"ABCDEF").encode())
    await periph.stop()
    env["iface"].call_unregister_advertisement.assert_awaited_once()
    env["iface"].call_unregister_application.assert_awaited_once_with("/")
    assert env["bus"]._user_message_handlers == []
    assert env["bus"].disconnected
    assert not periph.advertiser.is_advertising
    await periph.stop()  # idempotent


async def test_add_match_error_is_tolerated(env: dict[str, Any], caplog: Any) -> None:
    async def refuse(msg: Message) -> Message:
        return Message.new_error(
            Message(serial=3, path="/", member="AddMatch"), "org.freedesktop.DBus.Error.x", "no"
        )

    env["bus"].call = refuse
    periph, _ = await started(env)
    assert env["bus"]._user_message_handlers == []
    assert "cannot watch BlueZ disconnects" in caplog.text
    await periph.stop()


async def test_stop_without_advertising(env: dict[str, Any]) -> None:
    periph, _ = await started(env)
    await periph.stop()  # bless's own stop_advertising would IndexError here
    env["iface"].call_unregister_application.assert_awaited_once()


async def test_framed_round_trip_through_bless(env: dict[str, Any]) -> None:
    """Control fragments in via WriteValue, Events fragments out as Value changes."""
    periph = BlessPeripheral(server_factory=env["factory"])
    channel = PeripheralChannel(periph)
    await periph.start(p.shoal_service_spec(0), channel.on_write, channel.on_disconnect)
    control = gatt(periph, p.CONTROL_UUID)
    request = p.encode_control(p.CatalogPageRequest(0, 8))
    for frag in Fragmenter(20).fragments(1, request):
        dispatch(control, "WriteValue", frag, opts(DEVICE, 23))
    central, message = await channel.receive()
    assert (central, message) == (DEVICE, request)
    reply = bytes(range(256)) * 2
    await channel.send(central, reply)
    frags = env["bus"].value_signals(gatt(periph, p.EVENTS_UUID).path)
    assert all(len(f) <= 20 for f in frags)
    r = Reassembler()
    assert [m for f in frags if (m := r.feed(f, 0.0))] == [reply]


async def test_start_failure_is_a_radio_error_and_retryable(env: dict[str, Any]) -> None:
    env["iface"].call_register_application.side_effect = [Exception("org.bluez.Error.Failed"), None]
    periph = BlessPeripheral(server_factory=env["factory"])
    with pytest.raises(RadioError, match="failed to start"):
        await periph.start(p.shoal_service_spec(0), lambda *_: None)
    assert env["bus"].disconnected
    env["bus"] = FakeBus(bus_type=BusType.SYSTEM)
    await periph.start(p.shoal_service_spec(0), lambda *_: None)
    env["iface"].call_register_advertisement.side_effect = Exception("too long")
    with pytest.raises(RadioError, match="advertising failed"):
        await periph.advertiser.start(p.SERVICE_UUID, p.Advert(1, b"ABCDEF").encode())


def test_parse_options_is_defensive() -> None:
    good = {"device": Variant("o", DEVICE), "mtu": Variant("q", 517)}
    assert parse_options(good) == (DEVICE, 517)
    assert parse_options({"device": "", "mtu": 5}) == (None, None)
    assert parse_options(None) == (None, None)
    assert parse_options({"mtu": "x"}) == (None, None)
