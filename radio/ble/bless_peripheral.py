"""Peripheral backend on bless 0.3.0 (BlueZ over D-Bus): the Shoal GATT service + advertising.

bless is imported lazily (inside methods) so the rest of ``radio.ble`` imports without D-Bus.
bless 0.3.0 shapes this module; each workaround below is small and says why:

* **Advertising.** bless advertises only the first service UUID and offers no service data.
  Our advertisement must carry a 128-bit Service Data AD and *no* UUID list (both do not fit
  31 bytes, see ``profile.py``), so we replace the application's ``start_advertising`` /
  ``stop_advertising`` with versions that register such an advertisement (plus the
  ``Discoverable`` property, so the LE flags say "general discoverable").
* **Which central wrote?** bless drops the ``options`` BlueZ passes to ReadValue/WriteValue,
  which hold the ``device`` object path and the negotiated ``mtu``. We wrap those two D-Bus
  methods *on our characteristic objects only* to record the options before bless runs. If that
  ever fails (a different dbus-next), every central is reported as :data:`UNKNOWN_CENTRAL` with
  the minimum MTU: slower but still correct for one central.
* **Notifications** are a ``Value`` property change, which BlueZ sends to *every* subscribed
  central, so :meth:`notify` cannot target one central (``PeripheralChannel`` serialises sends).
* **Notifying** is hard-wired to True in bless; we start it False and track StartNotify /
  StopNotify so BlueZ (and BlueZoo) see the real subscription state.
* **Disconnects**: bless has no callback; we watch ``org.bluez.Device1.Connected`` signals.
* **Reads** ignore the offset (bless bug), so :meth:`set_value` refuses values longer than
  :data:`radio.base.SAFE_READ_VALUE_MAX`; a long read can never be needed.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
from collections.abc import Callable
from typing import Any

from radio.base import (
    ATT_MAX_VALUE,
    MIN_ATT_MTU,
    SAFE_READ_VALUE_MAX,
    Advertiser,
    AttributeRejectedError,
    DisconnectHandler,
    GattServer,
    NotConnectedError,
    RadioError,
    ServiceSpec,
    WriteHandler,
)
from radio.ble.profile import ADV_DATA_BUDGET

__all__ = ["UNKNOWN_CENTRAL", "BlessPeripheral"]

_log = logging.getLogger(__name__)

UNKNOWN_CENTRAL = "bluez:unknown-central"
_ADV_MANAGER = "org.bluez.LEAdvertisingManager1"
_DEVICE_IFACE = "org.bluez.Device1"
_DISCONNECT_RULE = (
    "type='signal',sender='org.bluez',interface='org.freedesktop.DBus.Properties',"
    "member='PropertiesChanged',arg0='org.bluez.Device1'"
)


def _variant_value(value: Any) -> Any:
    """dbus-next hands options over as Variants; tests may pass plain values."""
    return getattr(value, "value", value)


def parse_options(options: Any) -> tuple[str | None, int | None]:
    """(device object path, negotiated ATT MTU) from BlueZ ReadValue/WriteValue options."""
    if not isinstance(options, dict):
        return None, None
    device = _variant_value(options.get("device"))
    mtu = _variant_value(options.get("mtu"))
    device = device if isinstance(device, str) and device else None
    mtu = mtu if isinstance(mtu, int) and MIN_ATT_MTU <= mtu <= 0xFFFF else None
    return device, mtu


def install_options_tap(gatt_char: Any, record: Callable[[Any], None]) -> bool:
    """Wrap ReadValue/WriteValue of one exported bless characteristic to see their options.

    dbus-next dispatches a call through the per-instance method list returned by
    ``ServiceInterface._get_methods``; we replace the two entries with copies whose ``fn``
    records the options and then calls the original. Nothing outside this object changes.
    """
    try:
        from dbus_next.service import ServiceInterface

        methods = ServiceInterface._get_methods(gatt_char)
        replaced = 0
        for index, method in enumerate(methods):
            original = method.fn
            if method.name == "ReadValue":

                def read_value(iface: Any, options: Any, _orig: Any = original) -> Any:
                    record(options)
                    return _orig(iface, options)

                fn: Callable[..., Any] = read_value
            elif method.name == "WriteValue":

                def write_value(iface: Any, value: Any, options: Any, _orig: Any = original) -> Any:
                    record(options)
                    return _orig(iface, value, options)

                fn = write_value
            else:
                continue
            wrapped = copy.copy(method)
            wrapped.fn = fn
            methods[index] = wrapped
            replaced += 1
        return replaced == 2
    except Exception:
        _log.warning("cannot wrap bless ReadValue/WriteValue; centrals will be anonymous")
        return False


@functools.cache
def _advertisement_class() -> type:
    """bless's advertisement plus ``Discoverable`` (BlueZ >= 5.50 sets the LE GD flag)."""
    from bless.backends.bluezdbus.dbus.advertisement import BlueZLEAdvertisement
    from dbus_next.constants import PropertyAccess
    from dbus_next.service import dbus_property

    class ShoalAdvertisement(BlueZLEAdvertisement):
        # dbus-next leaves its decorators unannotated (the D-Bus signature is the annotation)
        @dbus_property(access=PropertyAccess.READ)  # type: ignore[untyped-decorator]
        def Discoverable(self) -> "b":  # type: ignore[name-defined]  # noqa: F821, UP037
            return True

    return ShoalAdvertisement


class BlessPeripheral(GattServer):
    """GATT server and advertiser on one bless ``BlessServer`` (they share a BlueZ app)."""

    def __init__(
        self,
        name: str = "Shoal",
        *,
        adapter: str | None = None,
        server_factory: Callable[..., Any] | None = None,
    ) -> None:
        self._name = name
        self._adapter = adapter
        self._factory = server_factory
        self._server: Any = None
        self._spec: ServiceSpec | None = None
        self._values: dict[str, bytes] = {}
        self._on_write: WriteHandler | None = None
        self._on_disconnect: DisconnectHandler | None = None
        self._centrals: dict[str, int] = {}  # central id -> last reported ATT MTU
        self._request: tuple[str | None, int | None] = (None, None)
        self._advert: tuple[str, bytes] | None = None
        self._advertising = False
        self._events_char: Any = None
        self._advertiser_view = _AdvertiserView(self)
        self.tapped = False

    # -- GattServer ---------------------------------------------------------------------------
    async def start(
        self,
        spec: ServiceSpec,
        on_write: WriteHandler,
        on_disconnect: DisconnectHandler | None = None,
    ) -> None:
        if self._server is not None:
            raise RadioError("GATT server already started")
        factory = self._factory
        if factory is None:
            from bless import BlessServer

            factory = BlessServer
        kwargs: dict[str, Any] = {"adapter": self._adapter} if self._adapter else {}
        server = factory(name=self._name, loop=asyncio.get_running_loop(), **kwargs)
        try:
            await self._build_and_register(server, spec, on_write, on_disconnect)
        except Exception as exc:  # D-Bus/BlueZ errors, "Could not locate bluetooth adapter"...
            self._server = None
            bus = getattr(server, "bus", None)  # bless opened a D-Bus connection: close it
            if bus is not None:
                try:
                    bus.disconnect()
                except Exception:
                    _log.debug("closing the failed server's D-Bus connection failed")
            raise RadioError(f"bless peripheral failed to start: {exc!r}") from exc

    async def _build_and_register(
        self,
        server: Any,
        spec: ServiceSpec,
        on_write: WriteHandler,
        on_disconnect: DisconnectHandler | None,
    ) -> None:
        from bless import GATTAttributePermissions as Perm
        from bless import GATTCharacteristicProperties as Prop

        server.read_request_func = self._handle_read
        server.write_request_func = self._handle_write
        self._spec, self._on_write, self._on_disconnect = spec, on_write, on_disconnect
        self._values = {uuid: b"" for uuid in spec.readable}

        await server.add_new_service(spec.service_uuid)
        for uuid in spec.readable:
            await server.add_new_characteristic(
                spec.service_uuid, uuid, Prop.read, bytearray(), Perm.readable
            )
        await server.add_new_characteristic(
            spec.service_uuid,
            spec.control_uuid,
            Prop.write | Prop.write_without_response,
            None,
            Perm.writeable,
        )
        await server.add_new_characteristic(
            spec.service_uuid, spec.events_uuid, Prop.notify, None, Perm.readable
        )
        self._server = server
        self._patch_application(spec)
        await server.start()  # registers the app, then calls our start_advertising hook
        await self._watch_disconnects()

    async def stop(self) -> None:
        server = self._server
        if server is None:
            return
        try:
            server.bus.remove_message_handler(self._on_bus_message)
        except Exception:
            _log.debug("no D-Bus message handler to remove")
        try:
            await server.stop()  # calls our stop_advertising hook, which needs self._server
        finally:
            self._server = None
            self._advertising = False
            self._centrals.clear()
            try:
                server.bus.disconnect()  # bless never closes the connection it opened
            except Exception:
                _log.debug("closing bless's D-Bus connection failed")

    def set_value(self, char_uuid: str, value: bytes) -> None:
        if char_uuid not in self._values:
            raise AttributeRejectedError(f"{char_uuid} is not a readable Shoal characteristic")
        if len(value) > SAFE_READ_VALUE_MAX:
            raise AttributeRejectedError(
                f"readable value of {len(value)} bytes > {SAFE_READ_VALUE_MAX}: bless would "
                "corrupt it on a long read"
            )
        self._values[char_uuid] = bytes(value)

    async def notify(self, central_id: str, data: bytes) -> None:
        if self._server is None or self._spec is None:
            raise NotConnectedError("GATT server not started")
        if central_id not in self._centrals:
            raise NotConnectedError(f"central {central_id} is not connected")
        if len(data) > self.max_payload(central_id):
            raise AttributeRejectedError(
                f"notification of {len(data)} bytes > {self.max_payload(central_id)}"
            )
        self._events_char.value = bytearray(data)
        if not self._server.update_value(self._spec.service_uuid, self._spec.events_uuid):
            raise RadioError("bless could not update the Events value")
        await asyncio.sleep(0)  # let dbus-next write the PropertiesChanged signal out

    def max_payload(self, central_id: str) -> int:
        mtu = self._centrals.get(central_id)
        if mtu is None:
            raise NotConnectedError(f"central {central_id} is not connected")
        return min(mtu - 3, ATT_MAX_VALUE)

    @property
    def centrals(self) -> frozenset[str]:
        return frozenset(self._centrals)

    # -- Advertiser ---------------------------------------------------------------------------
    # GattServer.start and Advertiser.start share a name, so the advertiser is a view object.
    @property
    def advertiser(self) -> Advertiser:
        """The :class:`Advertiser` of this peripheral (advertising starts once start() ran)."""
        return self._advertiser_view

    @property
    def is_advertising(self) -> bool:
        return self._advertising

    async def _advertise(self, service_uuid: str, service_data: bytes) -> None:
        if len(service_data) > ADV_DATA_BUDGET:
            raise RadioError(f"service data of {len(service_data)} bytes cannot be advertised")
        self._advert = (service_uuid.lower(), bytes(service_data))
        if self._server is None:
            return  # published by start()
        try:
            if self._advertising:
                await self._app_stop_advertising(self._server.adapter)
            await self._app_start_advertising(self._server.adapter)
        except Exception as exc:  # BlueZ refused (too long, too many advertisements...)
            raise RadioError(f"advertising failed: {exc!r}") from exc

    async def _unadvertise(self) -> None:
        self._advert = None
        if self._server is not None and self._advertising:
            await self._app_stop_advertising(self._server.adapter)

    # -- bless hooks ----------------------------------------------------------------------------
    def _patch_application(self, spec: ServiceSpec) -> None:
        server = self._server
        app = server.app
        app.start_advertising = self._app_start_advertising
        app.stop_advertising = self._app_stop_advertising
        app.StartNotify = self._on_start_notify
        app.StopNotify = self._on_stop_notify
        self._events_char = server.get_characteristic(spec.events_uuid)
        self._events_char.gatt._notifying = False
        tapped = [
            install_options_tap(server.get_characteristic(uuid).gatt, self._record_options)
            for uuid in (*spec.readable, spec.control_uuid)
        ]
        self.tapped = all(tapped)

    async def _app_start_advertising(self, adapter: Any) -> None:
        if self._advert is None:
            return
        from dbus_next.signature import Variant

        app = self._server.app
        uuid, data = self._advert
        await app.set_name(adapter, self._name)
        advert = _advertisement_class()(_advert_type(), len(app.advertisements) + 1, app)
        advert._service_uuids = []  # no room next to the service data; see profile.py
        advert._service_data = {uuid: Variant("ay", data)}
        app.advertisements.append(advert)
        app.bus.export(advert.path, advert)
        await adapter.get_interface(_ADV_MANAGER).call_register_advertisement(advert.path, {})
        self._advertising = True

    async def _app_stop_advertising(self, adapter: Any) -> None:
        app = self._server.app
        if app.advertisements:
            await type(app).stop_advertising(app, adapter)
        self._advertising = False

    def _on_start_notify(self, _: Any) -> None:
        self._set_notifying(True)

    def _on_stop_notify(self, _: Any) -> None:
        self._set_notifying(False)

    def _set_notifying(self, on: bool) -> None:
        gatt = self._events_char.gatt
        gatt._notifying = on
        gatt.emit_properties_changed({"Notifying": on})

    def _record_options(self, options: Any) -> None:
        self._request = parse_options(options)

    def _take_central(self) -> str:
        device, mtu = self._request
        self._request = (None, None)
        central = device or UNKNOWN_CENTRAL
        known = self._centrals.get(central, MIN_ATT_MTU)
        self._centrals[central] = mtu if mtu is not None else known
        return central

    def _handle_read(self, characteristic: Any, **_: Any) -> bytearray:
        self._take_central()
        return bytearray(self._values.get(str(characteristic.uuid).lower(), b""))

    def _handle_write(self, characteristic: Any, value: Any, **_: Any) -> None:
        central = self._take_central()
        uuid = str(characteristic.uuid).lower()
        if self._spec is None or uuid != self._spec.control_uuid or self._on_write is None:
            _log.debug("ignoring write to %s", uuid)
            return
        self._on_write(central, bytes(value))

    async def _watch_disconnects(self) -> None:
        from dbus_next.constants import MessageType
        from dbus_next.message import Message

        bus = self._server.bus
        try:
            reply = await bus.call(
                Message(
                    destination="org.freedesktop.DBus",
                    path="/org/freedesktop/DBus",
                    interface="org.freedesktop.DBus",
                    member="AddMatch",
                    signature="s",
                    body=[_DISCONNECT_RULE],
                )
            )
            if reply is not None and reply.message_type == MessageType.ERROR:
                raise RadioError(f"AddMatch failed: {reply.error_name} {reply.body}")
            bus.add_message_handler(self._on_bus_message)
        except Exception as exc:
            _log.warning(
                "cannot watch BlueZ disconnects (%r); partial messages will time out instead", exc
            )

    def _on_bus_message(self, msg: Any) -> None:
        if msg.member != "PropertiesChanged" or not msg.body or msg.body[0] != _DEVICE_IFACE:
            return None
        changed = msg.body[1] if len(msg.body) > 1 and isinstance(msg.body[1], dict) else {}
        if "Connected" not in changed or _variant_value(changed["Connected"]) is not False:
            return None
        if self._centrals.pop(msg.path, None) is not None and self._on_disconnect is not None:
            try:
                self._on_disconnect(msg.path)
            except Exception:
                _log.exception("disconnect handler failed")
        return None


def _advert_type() -> Any:
    from bless.backends.bluezdbus.dbus.advertisement import Type

    return Type.PERIPHERAL


class _AdvertiserView(Advertiser):
    """The :class:`Advertiser` face of a :class:`BlessPeripheral`."""

    def __init__(self, peripheral: BlessPeripheral) -> None:
        self._p = peripheral

    async def start(self, service_uuid: str, service_data: bytes) -> None:
        await self._p._advertise(service_uuid, service_data)

    async def stop(self) -> None:
        await self._p._unadvertise()

    @property
    def is_advertising(self) -> bool:
        return self._p.is_advertising
