"""Central backend on bleak 3.1: scanning for Shoal advertisements and GATT client connections.

bleak is imported lazily so ``radio.ble`` imports without D-Bus. Design notes:

* **Filtering.** A Shoal advertisement is a 128-bit Service Data AD *without* a UUID list (both
  do not fit 31 bytes, see ``profile.py``). bleak's ``service_uuids`` filter (and BlueZ's
  discovery filter) only match the UUID list, so in active mode we scan unfiltered and keep
  advertisements whose ``service_data`` has our UUID. In passive mode the same filter runs in
  BlueZ as an advertisement-monitor or-pattern on AD type 0x21 (needs BlueZ's experimental
  AdvertisementMonitor on some distributions), which also saves D-Bus traffic.
* **Connecting** retries with capped exponential backoff and full jitter inside one overall
  ``timeout``. We do not use ``bleak-retry-connector``: its value is BlueZ cache clearing and
  ESPHome-proxy slot handling, which a two-party control plane does not need; one small loop
  here keeps the dependency list short and the behaviour testable.
* **Write size** comes from ``max_write_without_response_size`` (MTU - 3 on BlueZ >= 5.62;
  bleak cannot request an MTU). Larger writes are refused locally: BlueZ would turn them into a
  prepared (long) write, and bless ignores the offset of each part.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid as uuidlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from radio.base import (
    ATT_MAX_VALUE,
    AttributeRejectedError,
    GattClient,
    NotConnectedError,
    NotifyHandler,
    RadioError,
    RadioTimeoutError,
    Scanner,
    Sighting,
)
from radio.ble.profile import SERVICE_UUID, ProfileError, decode_advert

if TYPE_CHECKING:
    from bleak.args.bluez import BlueZClientArgs, BlueZScannerArgs, OrPatternLike

__all__ = ["BleakCentral", "BleakGattClient", "service_data_or_pattern"]

_log = logging.getLogger(__name__)
_AD_SERVICE_DATA_UUID128 = 0x21


def service_data_or_pattern(service_uuid: str) -> tuple[int, int, bytes]:
    """BlueZ or-pattern matching a Service Data AD for ``service_uuid`` (UUID little-endian)."""
    return (0, _AD_SERVICE_DATA_UUID128, uuidlib.UUID(service_uuid).bytes[::-1])


class BleakCentral(Scanner):
    """Scanner for Shoal advertisements; remembers recently seen devices for connecting.

    bleak recommends connecting with the ``BLEDevice`` from a scan rather than an address string
    (an address triggers a hidden scan), so the last ``max_devices`` devices are kept.
    """

    def __init__(
        self,
        *,
        service_uuid: str = SERVICE_UUID,
        adapter: str | None = None,
        passive: bool = False,
        scanner_factory: Callable[..., Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_devices: int = 256,
    ) -> None:
        super().__init__()
        self._service_uuid = service_uuid.lower()
        self._adapter = adapter
        self._passive = passive
        self._factory = scanner_factory
        self._clock = clock
        self._max_devices = max_devices
        self._devices: OrderedDict[str, Any] = OrderedDict()
        self._scanner: Any = None
        self.malformed = 0

    async def start(self) -> None:
        if self._scanner is not None:
            return
        factory = self._factory
        if factory is None:
            from bleak import BleakScanner

            factory = BleakScanner
        bluez: BlueZScannerArgs = {}
        if self._adapter:
            bluez["adapter"] = self._adapter
        if self._passive:
            # bleak types the AD type as its AdvertisementDataType IntEnum; 0x21 is that value,
            # and this module must not import bleak before it is needed (see module notes).
            pattern = cast("OrPatternLike", service_data_or_pattern(self._service_uuid))
            bluez["or_patterns"] = [pattern]
        scanner = factory(
            self._on_advertisement,
            None,  # see module notes: a UUID filter would drop our service-data-only adverts
            "passive" if self._passive else "active",
            bluez=bluez,
        )
        await scanner.start()
        self._scanner = scanner

    async def stop(self) -> None:
        scanner, self._scanner = self._scanner, None
        if scanner is not None:
            await scanner.stop()

    def device(self, address: str) -> Any | None:
        """The last ``BLEDevice`` seen for ``address`` (or None)."""
        return self._devices.get(address)

    def client(self, **kwargs: Any) -> BleakGattClient:
        """A client that connects through devices this scanner has seen."""
        kwargs.setdefault("adapter", self._adapter)
        kwargs.setdefault("service_uuid", self._service_uuid)
        return BleakGattClient(self, **kwargs)

    def _on_advertisement(self, device: Any, adv: Any) -> None:
        data = adv.service_data.get(self._service_uuid)
        if data is None:
            return
        try:
            advert = decode_advert(bytes(data))
        except ProfileError as exc:
            self.malformed += 1
            _log.debug("malformed Shoal advert from %s: %s", device.address, exc)
            return
        self._devices[device.address] = device
        self._devices.move_to_end(device.address)
        while len(self._devices) > self._max_devices:
            self._devices.popitem(last=False)
        self._publish(
            Sighting(
                device.address,
                advert.node_tag,
                advert.protocol_version,
                int(adv.rssi),
                self._clock(),
                advert.flags,
            )
        )


def _bleak_errors() -> tuple[type[BaseException], ...]:
    from bleak.exc import BleakError

    return (BleakError, TimeoutError, EOFError, OSError)


class BleakGattClient(GattClient):
    """One connection to a Shoal peripheral through ``bleak.BleakClient``."""

    def __init__(
        self,
        central: BleakCentral | None = None,
        *,
        service_uuid: str = SERVICE_UUID,
        adapter: str | None = None,
        attempts: int = 3,
        backoff_s: float = 0.25,
        backoff_max_s: float = 4.0,
        client_factory: Callable[..., Any] | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        self._central = central
        self._service_uuid = service_uuid.lower()
        self._adapter = adapter
        self._attempts = attempts
        self._backoff = backoff_s
        self._backoff_max = backoff_max_s
        self._factory = client_factory
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._client: Any = None
        self._on_disconnect: Callable[[], None] | None = None
        self._closing = False
        self.attempts_used = 0

    @property
    def is_connected(self) -> bool:
        return self._client is not None and bool(self._client.is_connected)

    async def connect(
        self,
        address: str,
        *,
        timeout: float,
        on_disconnect: Callable[[], None] | None = None,
    ) -> None:
        if self.is_connected:
            raise RadioError("already connected")
        self._client = None  # a stale, disconnected client must not count as success below
        factory = self._factory
        if factory is None:
            from bleak import BleakClient

            factory = BleakClient
        errors = _bleak_errors()
        from bleak.exc import BleakBluetoothNotAvailableError

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        target = (self._central.device(address) if self._central else None) or address
        bluez: BlueZClientArgs = {"adapter": self._adapter} if self._adapter else {}
        last: BaseException | None = None
        self.attempts_used = 0
        for attempt in range(self._attempts):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self.attempts_used += 1
            client = factory(
                target,
                self._bleak_disconnected,
                [self._service_uuid],
                timeout=remaining,
                bluez=bluez,
            )
            try:
                async with asyncio.timeout(remaining):
                    await client.connect()
            except BleakBluetoothNotAvailableError as exc:
                raise RadioError(f"Bluetooth not available: {exc}") from exc
            except errors as exc:
                last = exc
                _log.debug("connect attempt %d to %s failed: %r", attempt + 1, address, exc)
                with contextlib.suppress(*errors):
                    await client.disconnect()
                if attempt + 1 < self._attempts:
                    await self._sleep(self._backoff_delay(attempt, deadline - loop.time()))
                continue
            self._client = client
            break
        if self._client is None:
            if last is None or isinstance(last, TimeoutError):
                msg = f"connect to {address} timed out after {timeout}s"
                raise RadioTimeoutError(msg) from last
            raise RadioError(f"connect to {address} failed: {last}") from last
        if self._client.services.get_service(self._service_uuid) is None:
            await self.disconnect()
            raise RadioError(f"{address} does not host the Shoal service")
        self._closing = False
        self._on_disconnect = on_disconnect

    def _backoff_delay(self, attempt: int, remaining: float) -> float:
        """Full jitter (AWS architecture blog): uniform in [0, min(cap, base·2^attempt)]."""
        ceiling = min(self._backoff_max, self._backoff * (2**attempt))
        return max(0.0, min(self._rng.uniform(0.0, ceiling), remaining))

    def _bleak_disconnected(self, client: Any) -> None:
        if client is not self._client or client is None:
            return
        self._client = None
        callback, self._on_disconnect = self._on_disconnect, None
        if callback is not None and not self._closing:
            try:
                callback()
            except Exception:
                _log.exception("disconnect callback failed")

    async def read(self, char_uuid: str) -> bytes:
        client = self._require()
        return bytes(await self._call(client.read_gatt_char(char_uuid)))

    async def write(self, char_uuid: str, data: bytes, *, response: bool = True) -> None:
        client = self._require()
        limit = self.max_write_size(char_uuid)
        if len(data) > limit:
            raise AttributeRejectedError(
                f"write of {len(data)} bytes > {limit}: would become a long write"
            )
        await self._call(client.write_gatt_char(char_uuid, bytes(data), response=response))

    async def subscribe(self, char_uuid: str, handler: NotifyHandler) -> None:
        client = self._require()

        def forward(_char: Any, data: bytearray) -> None:
            handler(bytes(data))

        await self._call(client.start_notify(char_uuid, forward))

    def max_write_size(self, char_uuid: str) -> int:
        client = self._require()
        char = client.services.get_characteristic(char_uuid)
        if char is None:
            raise AttributeRejectedError(f"{char_uuid} not found on the peripheral")
        return min(int(char.max_write_without_response_size), ATT_MAX_VALUE)

    async def disconnect(self) -> None:
        client = self._client
        if client is None:
            return
        self._closing = True
        self._on_disconnect = None
        try:
            await client.disconnect()
        except _bleak_errors() as exc:
            _log.debug("disconnect: %r", exc)
        finally:
            self._client = None

    def _require(self) -> Any:
        if self._client is None or not self._client.is_connected:
            raise NotConnectedError("not connected")
        return self._client

    async def _call(self, operation: Awaitable[Any]) -> Any:
        """Map bleak's exceptions onto the radio ones (keeping the cause)."""
        from bleak.exc import BleakCharacteristicNotFoundError, BleakError, BleakGATTProtocolError

        try:
            return await operation
        except (BleakCharacteristicNotFoundError, BleakGATTProtocolError) as exc:
            raise AttributeRejectedError(str(exc)) from exc
        except BleakError as exc:
            if self._client is None or not self._client.is_connected:
                raise NotConnectedError(str(exc)) from exc
            raise RadioError(str(exc)) from exc
        except (EOFError, OSError) as exc:
            raise NotConnectedError(str(exc)) from exc
