"""Radio interfaces: the only BLE surface the rest of Shoal may depend on.

Modelled on bleak's backend pattern: one small abstract API, several backends (bless/bleak on
BlueZ, the in-process simulator in :mod:`radio.sim`). Everything is async and typed; callbacks
are plain synchronous callables because BlueZ calls our write handler while it holds the ATT
response, so handlers must only queue work, never await.

Identifiers are opaque strings: ``address`` is whatever the backend needs to connect (a BLE
address on BlueZ), ``central_id`` is whatever the server backend can tell centrals apart by
(a BlueZ device object path with bless). Callers must not parse them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

__all__ = [
    "ATT_MAX_VALUE",
    "MIN_ATT_MTU",
    "SAFE_READ_VALUE_MAX",
    "Advertiser",
    "AttributeRejectedError",
    "DisconnectHandler",
    "GattClient",
    "GattServer",
    "NotConnectedError",
    "NotifyHandler",
    "RadioError",
    "RadioTimeoutError",
    "Scanner",
    "ServiceSpec",
    "Sighting",
    "SightingCallback",
    "WriteHandler",
]

_log = logging.getLogger(__name__)

MIN_ATT_MTU = 23
ATT_MAX_VALUE = 512
# A readable value must come back in ONE Read Response at the minimum MTU. A response of
# exactly MTU - 1 bytes already makes BlueZ (and other centrals) continue with Read Blob at
# offset MTU - 1; bless ignores that offset and returns the value again, so the central ends up
# with the prefix repeated up to 512 bytes. Hence strictly less than MTU - 1: 21 bytes.
SAFE_READ_VALUE_MAX = MIN_ATT_MTU - 2


class RadioError(Exception):
    """A radio operation failed; the message says which and why."""


class RadioTimeoutError(RadioError, TimeoutError):
    """An operation (usually connect) did not finish in time."""


class NotConnectedError(RadioError):
    """The link is down (never connected, disconnected locally or by the peer)."""


class AttributeRejectedError(RadioError):
    """The peer or the local stack refused an attribute operation (size, unknown UUID...)."""


@dataclass(frozen=True, slots=True)
class Sighting:
    """One received Shoal advertisement. ``timestamp`` is monotonic seconds (backend clock)."""

    address: str
    node_tag: bytes
    protocol_version: int
    rssi: int
    timestamp: float
    flags: int = 0


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """Layout of the one GATT service a node hosts (built by ``radio.ble.profile``)."""

    service_uuid: str
    readable: tuple[str, ...]
    control_uuid: str
    events_uuid: str

    def __post_init__(self) -> None:
        uuids = [self.service_uuid, *self.readable, self.control_uuid, self.events_uuid]
        if any(u != u.lower() for u in uuids):
            raise ValueError("ServiceSpec UUIDs must be lower-case strings")
        if len(set(uuids)) != len(uuids):
            raise ValueError("ServiceSpec UUIDs must be distinct")


SightingCallback = Callable[[Sighting], None]
WriteHandler = Callable[[str, bytes], None]  # (central_id, data)
DisconnectHandler = Callable[[str], None]  # (central_id)
NotifyHandler = Callable[[bytes], None]


class Advertiser(ABC):
    """Broadcasts the service UUID with a few bytes of service data."""

    @abstractmethod
    async def start(self, service_uuid: str, service_data: bytes) -> None:
        """Start advertising, or replace the current advertisement (to rotate the node tag)."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop advertising; a no-op when not advertising."""

    @property
    @abstractmethod
    def is_advertising(self) -> bool: ...


class Scanner(ABC):
    """Reports Shoal advertisements as :class:`Sighting` to callbacks and async iterators.

    Backends implement ``start``/``stop`` and call :meth:`_publish`; fan-out lives here so every
    backend bounds its queues the same way (a slow consumer loses the *oldest* sightings, which
    are the least useful, and :attr:`dropped` counts them).

    Attach consumers *before* ``start()``: BlueZ reports a device once and then only when its
    data or RSSI changes, so a consumer that arrives late may not hear a quiet device again.
    ``sightings()`` registers its queue on the first ``__anext__``, not when called.
    """

    def __init__(self) -> None:
        self._callbacks: list[SightingCallback] = []
        self._queues: set[asyncio.Queue[Sighting]] = set()
        self.dropped = 0

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    def add_callback(self, callback: SightingCallback) -> Callable[[], None]:
        """Register ``callback``; returns a function that unregisters it."""
        self._callbacks.append(callback)
        return lambda: self._remove_callback(callback)

    async def sightings(self, maxsize: int = 256) -> AsyncIterator[Sighting]:
        """Yield sightings as they arrive (bounded buffer of ``maxsize``) until cancelled."""
        queue: asyncio.Queue[Sighting] = asyncio.Queue(maxsize)
        self._queues.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)

    def _publish(self, sighting: Sighting) -> None:
        for callback in list(self._callbacks):
            try:
                callback(sighting)
            except Exception:  # a broken consumer must not stop the scanner
                _log.exception("sighting callback failed")
        for queue in self._queues:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(sighting)

    def _remove_callback(self, callback: SightingCallback) -> None:
        with contextlib.suppress(ValueError):
            self._callbacks.remove(callback)


class GattServer(ABC):
    """Hosts the Shoal service as a peripheral.

    Readable characteristics serve values set with :meth:`set_value` (each at most
    :data:`SAFE_READ_VALUE_MAX` bytes). Control writes arrive through ``on_write`` and Events go
    out with :meth:`notify`, one ATT payload (:meth:`max_payload`) at a time.
    """

    @abstractmethod
    async def start(
        self,
        spec: ServiceSpec,
        on_write: WriteHandler,
        on_disconnect: DisconnectHandler | None = None,
    ) -> None:
        """Register the service. ``on_write`` must not block; it runs inside the ATT exchange."""

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    def set_value(self, char_uuid: str, value: bytes) -> None:
        """Set a readable value; raises :class:`AttributeRejectedError` if it is too long."""

    @abstractmethod
    async def notify(self, central_id: str, data: bytes) -> None:
        """Send one Events notification of at most ``max_payload(central_id)`` bytes."""

    @abstractmethod
    def max_payload(self, central_id: str) -> int:
        """Largest notification/write value for this central: ``min(MTU - 3, 512)``."""

    @property
    @abstractmethod
    def centrals(self) -> frozenset[str]:
        """Centrals currently known to be connected (best effort on some backends)."""


class GattClient(ABC):
    """Connects to one peripheral as a central."""

    @abstractmethod
    async def connect(
        self,
        address: str,
        *,
        timeout: float,
        on_disconnect: Callable[[], None] | None = None,
    ) -> None:
        """Connect and resolve the Shoal service, or raise :class:`RadioError` subclasses."""

    @abstractmethod
    async def read(self, char_uuid: str) -> bytes: ...

    @abstractmethod
    async def write(self, char_uuid: str, data: bytes, *, response: bool = True) -> None:
        """Write ``data`` (at most :meth:`max_write_size` bytes) to a characteristic."""

    @abstractmethod
    async def subscribe(self, char_uuid: str, handler: NotifyHandler) -> None: ...

    @abstractmethod
    def max_write_size(self, char_uuid: str) -> int:
        """Largest value one write can carry: ``min(MTU - 3, 512)`` as the stack reports it."""

    @abstractmethod
    async def disconnect(self) -> None:
        """Disconnect; a no-op when already disconnected. Does not call ``on_disconnect``."""

    @property
    @abstractmethod
    def is_connected(self) -> bool: ...
