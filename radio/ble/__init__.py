"""BLE control plane: GATT profile, sans-I/O framing, and thin framed channels over GATT.

Importing this package never imports bleak, bless or D-Bus; the real backends live in
``radio.ble.bleak_central`` and ``radio.ble.bless_peripheral`` and import their libraries lazily.

The two channel classes below are the only asyncio glue between the framing state machines and
the GATT interfaces: they turn Control writes / Events notifications into whole messages. They
add no retries or acknowledgements: a lost fragment discards its message (counted in
``stats``) and the session layer above decides whether to ask again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from radio.base import GattClient, GattServer, NotConnectedError
from radio.ble.framing import Fragmenter, Reassembler, ReassemblerStats
from radio.ble.profile import CONTROL_UUID, EVENTS_UUID

__all__ = ["CentralChannel", "PeripheralChannel"]

_log = logging.getLogger(__name__)
_CLOSED = object()


class _MessageIds:
    """u16 message ids, wrapping; only used for logs and duplicate detection above us."""

    def __init__(self) -> None:
        self._next = 0

    def take(self) -> int:
        value, self._next = self._next, (self._next + 1) & 0xFFFF
        return value


class CentralChannel:
    """Framed messages with one peripheral: send on Control (write with response), receive on
    Events (notify). Create one per connection; after a disconnect ``receive`` raises."""

    def __init__(
        self,
        client: GattClient,
        *,
        control_uuid: str = CONTROL_UUID,
        events_uuid: str = EVENTS_UUID,
        max_message_size: int = 8192,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        queue_size: int = 16,
    ) -> None:
        self._client = client
        self._control = control_uuid
        self._events = events_uuid
        self._clock = clock
        self._reassembler = Reassembler(max_message_size, timeout_s)
        self._inbox: asyncio.Queue[object] = asyncio.Queue(queue_size + 1)
        self._queue_size = queue_size
        self._ids = _MessageIds()
        self._closed = False
        self.dropped_messages = 0

    @property
    def stats(self) -> ReassemblerStats:
        return self._reassembler.stats

    async def open(self) -> None:
        """Subscribe to Events; call right after connect, before the first request."""
        await self._client.subscribe(self._events, self._on_fragment)

    async def send(self, payload: bytes) -> int:
        """Send one message; returns its message id. Raises NotConnectedError if the link drops."""
        size = self._client.max_write_size(self._control)
        message_id = self._ids.take()
        for fragment in Fragmenter(size).fragments(message_id, payload):
            await self._client.write(self._control, fragment, response=True)
        return message_id

    async def receive(self) -> bytes:
        """Next complete message from the peripheral."""
        if self._closed and self._inbox.empty():
            raise NotConnectedError("channel closed")
        item = await self._inbox.get()
        if item is _CLOSED:
            self._inbox.put_nowait(_CLOSED)  # keep later receivers failing fast too
            raise NotConnectedError("link lost")
        assert isinstance(item, bytes)
        return item

    def on_disconnect(self) -> None:
        """Pass as (or call from) the client's ``on_disconnect``."""
        self._reassembler.on_disconnect()
        if not self._closed:
            self._closed = True
            self._put(_CLOSED)

    def tick(self) -> None:
        self._reassembler.tick(self._clock())

    def _on_fragment(self, fragment: bytes) -> None:
        message = self._reassembler.feed(fragment, self._clock())
        if message is not None:
            self._put(message)

    def _put(self, item: object) -> None:
        if self._inbox.qsize() >= self._queue_size and item is not _CLOSED:
            with contextlib.suppress(asyncio.QueueEmpty):
                self._inbox.get_nowait()
            self.dropped_messages += 1
        self._inbox.put_nowait(item)


class PeripheralChannel:
    """Framed messages with every connected central of one GATT server.

    Pass :meth:`on_write` and :meth:`on_disconnect` to ``GattServer.start``. One reassembler per
    central (at most ``max_centrals``; the least recently active is evicted). Sends are
    serialised across *all* centrals because bless/BlueZ deliver a notification to every
    subscribed central: interleaving two messages would corrupt both at every receiver.
    """

    def __init__(
        self,
        server: GattServer,
        *,
        max_message_size: int = 8192,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        max_centrals: int = 8,
        queue_size: int = 64,
    ) -> None:
        self._server = server
        self._max_message_size = max_message_size
        self._timeout_s = timeout_s
        self._clock = clock
        self._max_centrals = max_centrals
        self._reassemblers: OrderedDict[str, Reassembler] = OrderedDict()
        self._inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(queue_size)
        self._send_lock = asyncio.Lock()
        self._ids = _MessageIds()
        self.totals = ReassemblerStats()
        self.dropped_messages = 0

    def stats(self, central_id: str) -> ReassemblerStats | None:
        r = self._reassemblers.get(central_id)
        return None if r is None else r.stats

    def on_write(self, central_id: str, data: bytes) -> None:
        reassembler = self._reassemblers.get(central_id)
        if reassembler is None:
            reassembler = Reassembler(self._max_message_size, self._timeout_s)
            self._reassemblers[central_id] = reassembler
            while len(self._reassemblers) > self._max_centrals:
                _, evicted = self._reassemblers.popitem(last=False)
                evicted.on_disconnect()
                self._fold(evicted)
        self._reassemblers.move_to_end(central_id)
        message = reassembler.feed(data, self._clock())
        if message is None:
            return
        if self._inbox.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._inbox.get_nowait()
            self.dropped_messages += 1
        self._inbox.put_nowait((central_id, message))

    def on_disconnect(self, central_id: str) -> None:
        reassembler = self._reassemblers.pop(central_id, None)
        if reassembler is not None:
            reassembler.on_disconnect()
            self._fold(reassembler)

    async def receive(self) -> tuple[str, bytes]:
        """Next ``(central_id, message)``."""
        return await self._inbox.get()

    async def send(self, central_id: str, payload: bytes) -> int:
        """Notify one message to ``central_id`` (see the class note on serialisation)."""
        async with self._send_lock:
            size = self._server.max_payload(central_id)
            message_id = self._ids.take()
            for fragment in Fragmenter(size).fragments(message_id, payload):
                await self._server.notify(central_id, fragment)
            return message_id

    def _fold(self, reassembler: Reassembler) -> None:
        for name, value in reassembler.stats.as_dict().items():
            setattr(self.totals, name, getattr(self.totals, name) + value)
