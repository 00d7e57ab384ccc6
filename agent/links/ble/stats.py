"""Counting wrapper around a :class:`GattClient`: what a BLE session really costs.

Why count at this level: a *round trip* on BLE is an ATT request the central must wait for
(a read, a write with response, the CCC descriptor write behind a subscription); the
latency of a control-plane exchange is dominated by how many of those happen in sequence,
not by bytes. The central wraps every client in this class, so the numbers in
``BleLink.status()`` and ``bench/ble_control.py`` are the ones the link actually paid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from radio.base import GattClient, NotifyHandler

__all__ = ["CountingGattClient", "GattCounters"]


@dataclass
class GattCounters:
    reads: int = 0
    writes_with_response: int = 0
    writes_without_response: int = 0
    subscribes: int = 0  # CCC descriptor writes (a write request on the air)
    notifications: int = 0
    bytes_written: int = 0  # central -> peripheral ATT values
    bytes_read: int = 0  # peripheral -> central: read values
    bytes_notified: int = 0  # peripheral -> central: notification values

    @property
    def round_trips(self) -> int:
        """ATT requests the central waited for: reads + writes with response + CCC writes."""
        return self.reads + self.writes_with_response + self.subscribes

    @property
    def att_ops(self) -> int:
        return (
            self.reads + self.writes_with_response + self.writes_without_response
            + self.subscribes + self.notifications
        )

    @property
    def bytes_to_peripheral(self) -> int:
        return self.bytes_written

    @property
    def bytes_to_central(self) -> int:
        return self.bytes_read + self.bytes_notified

    def snapshot(self) -> dict[str, int]:
        d = asdict(self)
        d.update(round_trips=self.round_trips, att_ops=self.att_ops,
                 bytes_to_peripheral=self.bytes_to_peripheral,
                 bytes_to_central=self.bytes_to_central)
        return d

    def add(self, other: GattCounters) -> None:
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)


class CountingGattClient(GattClient):
    """Delegates to ``inner`` and counts every ATT operation and byte."""

    def __init__(self, inner: GattClient, counters: GattCounters | None = None) -> None:
        self.inner = inner
        self.counters = counters or GattCounters()

    async def connect(
        self, address: str, *, timeout: float, on_disconnect: Callable[[], None] | None = None
    ) -> None:
        await self.inner.connect(address, timeout=timeout, on_disconnect=on_disconnect)

    async def read(self, char_uuid: str) -> bytes:
        value = await self.inner.read(char_uuid)
        self.counters.reads += 1
        self.counters.bytes_read += len(value)
        return value

    async def write(self, char_uuid: str, data: bytes, *, response: bool = True) -> None:
        await self.inner.write(char_uuid, data, response=response)
        if response:
            self.counters.writes_with_response += 1
        else:
            self.counters.writes_without_response += 1
        self.counters.bytes_written += len(data)

    async def subscribe(self, char_uuid: str, handler: NotifyHandler) -> None:
        counters = self.counters

        def counting(data: bytes) -> None:
            counters.notifications += 1
            counters.bytes_notified += len(data)
            handler(data)

        await self.inner.subscribe(char_uuid, counting)
        counters.subscribes += 1

    def max_write_size(self, char_uuid: str) -> int:
        return self.inner.max_write_size(char_uuid)

    async def disconnect(self) -> None:
        await self.inner.disconnect()

    @property
    def is_connected(self) -> bool:
        return self.inner.is_connected
