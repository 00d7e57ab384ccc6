"""Simulated BLE radio: many nodes in one process, deterministic for a given seed.

Why: the CI machine has no Bluetooth, and even with a radio the interesting failures (a lost
notification, a link drop mid-message, a small MTU) are hard to provoke on demand. ``SimAir``
implements the interfaces of :mod:`radio.base` and enforces the ATT rules our design relies on,
so a test that passes here cannot be relying on behaviour real stacks lack:

* a read returns one Read Response of at most ``MTU - 1`` bytes; a full response makes the
  central continue with Read Blob exactly like BlueZ's client, and with ``bless_offset_bug``
  the server answers every blob with the value from offset 0 (bless 0.3.0 ignores offsets), so
  a long value comes back corrupted, as it does on real BlueZ + bless;
* a write or notification longer than ``min(MTU - 3, 512)`` is rejected (on BlueZ it would turn
  into a prepared write that bless also corrupts, or be truncated);
* notifications and writes without response can be lost; links can be dropped at any time.

Time is a :class:`VirtualClock` by default (latencies cost no wall time, runs are reproducible)
or a :class:`RealClock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from radio.base import (
    ATT_MAX_VALUE,
    MIN_ATT_MTU,
    SAFE_READ_VALUE_MAX,
    Advertiser,
    AttributeRejectedError,
    DisconnectHandler,
    GattClient,
    GattServer,
    NotConnectedError,
    NotifyHandler,
    RadioError,
    RadioTimeoutError,
    Scanner,
    ServiceSpec,
    Sighting,
    WriteHandler,
)
from radio.ble.profile import ADV_DATA_BUDGET, SERVICE_UUID, ProfileError, decode_advert

__all__ = [
    "Clock",
    "LinkParams",
    "PathLossModel",
    "RealClock",
    "SimAir",
    "SimGattClient",
    "SimGattServer",
    "SimNode",
    "SimStats",
    "VirtualClock",
]

_log = logging.getLogger(__name__)


# --- clocks ------------------------------------------------------------------------------------
class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, delay: float) -> None: ...

    async def aclose(self) -> None: ...


class RealClock:
    """Wall-clock time (monotonic) and real sleeps: for soak runs and timing-sensitive demos."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, delay: float) -> None:
        await asyncio.sleep(max(0.0, delay))

    async def aclose(self) -> None:
        return None


class VirtualClock:
    """Virtual time that jumps to the next sleeper once the event loop has settled.

    A driver task lets runnable tasks make progress for ``settle_steps`` loop iterations, then
    wakes the earliest sleeper (ties in call order) and sets :meth:`now` to its deadline. The
    asyncio loop is deterministic without real I/O, so a seeded simulation replays exactly.
    """

    def __init__(self, start: float = 0.0, settle_steps: int = 32) -> None:
        self._now = start
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0
        self._settle = settle_steps
        self._driver: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None

    def now(self) -> float:
        return self._now

    async def sleep(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        if self._driver is None or self._driver.done():
            self._wake = asyncio.Event()
            self._driver = loop.create_task(self._drive(), name="virtual-clock")
        if delay <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._heap, (self._now + delay, self._seq, fut))
        self._seq += 1
        assert self._wake is not None
        self._wake.set()
        await fut

    async def _drive(self) -> None:
        assert self._wake is not None
        while True:
            for _ in range(self._settle):
                await asyncio.sleep(0)
            while self._heap and self._heap[0][2].done():
                heapq.heappop(self._heap)  # sleeper was cancelled
            if not self._heap:
                self._wake.clear()
                await self._wake.wait()
                continue
            when, _, fut = heapq.heappop(self._heap)
            self._now = max(self._now, when)
            fut.set_result(None)

    async def aclose(self) -> None:
        if self._driver is not None:
            self._driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._driver
        for _, _, fut in self._heap:
            fut.cancel()
        self._heap.clear()


# --- models ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PathLossModel:
    """Log-distance path loss with Gaussian shadowing: RSSI(d) = P1m - 10·n·log10(d) + N(0, σ).

    Defaults are typical indoor BLE numbers (-59 dBm at 1 m, exponent 2.0); a sighting below
    ``sensitivity_dbm`` is not received, and a link is possible while the mean RSSI is above it.
    """

    rssi_at_1m: float = -59.0
    exponent: float = 2.0
    sigma_db: float = 2.0
    sensitivity_dbm: float = -95.0

    def mean_rssi(self, distance_m: float) -> float:
        return self.rssi_at_1m - 10.0 * self.exponent * math.log10(max(distance_m, 0.1))

    def sample(self, distance_m: float, rng: random.Random) -> int | None:
        rssi = self.mean_rssi(distance_m) + rng.gauss(0.0, self.sigma_db)
        return None if rssi < self.sensitivity_dbm else round(rssi)

    def in_range(self, distance_m: float) -> bool:
        return self.mean_rssi(distance_m) >= self.sensitivity_dbm


@dataclass(frozen=True, slots=True)
class LinkParams:
    """Properties of one central-peripheral link.

    ``latency_s`` is one-way (a write with response or a read costs two); ``loss`` drops
    notifications and writes without response (never requests: ATT retransmits those at the
    link layer); ``disconnect_rate`` is the chance that any client operation drops the link.
    """

    mtu: int = 247
    latency_s: float = 0.0075
    jitter_s: float = 0.0
    loss: float = 0.0
    disconnect_rate: float = 0.0
    connect_latency_s: float = 0.05

    def __post_init__(self) -> None:
        if not MIN_ATT_MTU <= self.mtu <= 517:
            raise ValueError(f"ATT MTU {self.mtu} outside 23..517")
        if not (0.0 <= self.loss <= 1.0 and 0.0 <= self.disconnect_rate <= 1.0):
            raise ValueError("probabilities must be within 0..1")

    @property
    def payload(self) -> int:
        return min(self.mtu - 3, ATT_MAX_VALUE)


@dataclass
class SimStats:
    """Counters across the whole air, for assertions and soak reports."""

    sightings: int = 0
    reads: int = 0
    long_reads: int = 0
    corrupted_reads: int = 0
    writes: int = 0
    rejected_writes: int = 0
    dropped_writes: int = 0
    notifications: int = 0
    rejected_notifications: int = 0
    dropped_notifications: int = 0
    connects: int = 0
    disconnects: int = 0


# --- the air -----------------------------------------------------------------------------------
class SimAir:
    """One shared medium: create one per test or simulation run, then ``await air.aclose()``."""

    def __init__(
        self,
        seed: int = 0,
        *,
        clock: Clock | None = None,
        path_loss: PathLossModel | None = None,
        link: LinkParams | None = None,
        bless_offset_bug: bool = True,
        notify_broadcast: bool = False,
    ) -> None:
        self.rng = random.Random(seed)
        self.clock: Clock = clock if clock is not None else VirtualClock()
        self.path_loss = path_loss or PathLossModel()
        self.default_link = link or LinkParams()
        self.bless_offset_bug = bless_offset_bug
        # bless/BlueZ send a notification to *every* subscribed central; model that on demand.
        self.notify_broadcast = notify_broadcast
        self.stats = SimStats()
        self.nodes: dict[str, SimNode] = {}
        self._pair_links: dict[frozenset[str], LinkParams] = {}
        self._links: dict[tuple[str, str], _Link] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> SimAir:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def add_node(self, name: str, position: tuple[float, float] = (0.0, 0.0)) -> SimNode:
        index = len(self.nodes) + 1
        address = f"C0:5A:00:00:{index >> 8:02X}:{index & 0xFF:02X}"
        node = SimNode(self, name, address, position)
        self.nodes[address] = node
        return node

    def set_link(self, a: SimNode, b: SimNode, params: LinkParams) -> None:
        """Override link parameters for the pair (a, b), in both directions."""
        self._pair_links[frozenset((a.address, b.address))] = params

    def link_params(self, a: SimNode, b: SimNode) -> LinkParams:
        return self._pair_links.get(frozenset((a.address, b.address)), self.default_link)

    def distance(self, a: SimNode, b: SimNode) -> float:
        return math.dist(a.position, b.position)

    def drop_link(self, central: SimNode, peripheral: SimNode, reason: str = "forced") -> bool:
        """Force a disconnect; both sides get their disconnect callbacks. False if no link."""
        link = self._links.get((central.address, peripheral.address))
        if link is None:
            return False
        link.drop(reason)
        return True

    def links(self) -> list[tuple[str, str]]:
        return list(self._links)

    async def aclose(self) -> None:
        for link in list(self._links.values()):
            link.drop("air closed", notify=False)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.clock.aclose()

    # internals used by nodes
    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _delay(self, params: LinkParams) -> float:
        jitter = self.rng.uniform(0.0, params.jitter_s) if params.jitter_s else 0.0
        return params.latency_s + jitter


@dataclass(eq=False)
class SimNode:
    """A device in the air: one advertiser, one GATT server, any number of scanners/clients."""

    air: SimAir
    name: str
    address: str
    position: tuple[float, float]
    advertiser: SimAdvertiser = field(init=False)
    server: SimGattServer = field(init=False)

    def __post_init__(self) -> None:
        self.advertiser = SimAdvertiser(self)
        self.server = SimGattServer(self)

    def scanner(
        self, service_uuid: str = SERVICE_UUID, interval_s: float = 0.1, miss_rate: float = 0.0
    ) -> SimScanner:
        return SimScanner(self, service_uuid, interval_s, miss_rate)

    def client(self) -> SimGattClient:
        return SimGattClient(self)

    def move(self, position: tuple[float, float]) -> None:
        self.position = position


class SimAdvertiser(Advertiser):
    """Advertises one 128-bit Service Data AD; rejects payloads a legacy advert cannot carry."""

    def __init__(self, node: SimNode) -> None:
        self._node = node
        self.service_uuid: str | None = None
        self.service_data = b""

    async def start(self, service_uuid: str, service_data: bytes) -> None:
        if len(service_data) > ADV_DATA_BUDGET:
            raise RadioError(
                f"service data of {len(service_data)} bytes overflows a 31-byte advertisement"
            )
        self.service_uuid = service_uuid.lower()
        self.service_data = bytes(service_data)

    async def stop(self) -> None:
        self.service_uuid = None

    @property
    def is_advertising(self) -> bool:
        return self.service_uuid is not None


class SimScanner(Scanner):
    """Every ``interval_s`` hears each in-range advertiser once (minus ``miss_rate``)."""

    def __init__(self, node: SimNode, service_uuid: str, interval_s: float, miss_rate: float):
        super().__init__()
        self._node = node
        self._service_uuid = service_uuid.lower()
        self._interval = interval_s
        self._miss = miss_rate
        self._task: asyncio.Task[None] | None = None
        self.malformed = 0

    async def start(self) -> None:
        if self._task is None:
            self._task = self._node.air._spawn(self._run(), f"scan-{self._node.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        air = self._node.air
        while True:
            await air.clock.sleep(self._interval)
            for other in list(air.nodes.values()):
                adv = other.advertiser
                if other is self._node or adv.service_uuid != self._service_uuid:
                    continue
                rssi = air.path_loss.sample(air.distance(self._node, other), air.rng)
                if rssi is None or air.rng.random() < self._miss:
                    continue
                try:
                    advert = decode_advert(adv.service_data)
                except ProfileError:
                    self.malformed += 1
                    continue
                air.stats.sightings += 1
                self._publish(
                    Sighting(
                        other.address,
                        advert.node_tag,
                        advert.protocol_version,
                        rssi,
                        air.clock.now(),
                        advert.flags,
                    )
                )


# --- GATT ----------------------------------------------------------------------------------------
class _Link:
    """One connection. Each direction is a FIFO pumped with the link latency, like ATT."""

    def __init__(self, air: SimAir, central: SimNode, peripheral: SimNode, params: LinkParams):
        self.air = air
        self.central = central
        self.peripheral = peripheral
        self.params = params
        self.alive = True
        self.subscriptions: dict[str, NotifyHandler] = {}
        self.on_client_disconnect: Callable[[], None] | None = None
        self._down: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._up: asyncio.Queue[bytes] = asyncio.Queue()
        self._pumps = [
            air._spawn(self._pump_down(), f"down-{central.name}"),
            air._spawn(self._pump_up(), f"up-{central.name}"),
        ]

    @property
    def central_id(self) -> str:
        return self.central.address

    def send_notification(self, uuid: str, data: bytes) -> None:
        self._down.put_nowait((uuid, data))

    def send_command(self, data: bytes) -> None:
        self._up.put_nowait(data)

    async def round_trip(self) -> None:
        """Cost of one request/response; may drop the link (``disconnect_rate``)."""
        self._check()
        if self.params.disconnect_rate and self.air.rng.random() < self.params.disconnect_rate:
            self.drop("random link loss")
            self._check()
        await self.air.clock.sleep(self.air._delay(self.params))
        self._check()

    def _check(self) -> None:
        if not self.alive:
            raise NotConnectedError(f"link {self.central.name}->{self.peripheral.name} is down")

    async def _pump_down(self) -> None:
        while True:
            uuid, data = await self._down.get()
            await self.air.clock.sleep(self.air._delay(self.params))
            if self.params.loss and self.air.rng.random() < self.params.loss:
                self.air.stats.dropped_notifications += 1
                continue
            handler = self.subscriptions.get(uuid)
            if handler is not None and self.alive:
                try:
                    handler(data)
                except Exception:
                    _log.exception("notification handler failed")

    async def _pump_up(self) -> None:
        while True:
            data = await self._up.get()
            await self.air.clock.sleep(self.air._delay(self.params))
            if self.params.loss and self.air.rng.random() < self.params.loss:
                self.air.stats.dropped_writes += 1
                continue
            if self.alive:
                try:
                    self.peripheral.server._deliver_write(self.central_id, data)
                except Exception:  # no response to carry an error back: the write is lost
                    _log.exception("write-without-response handler failed")

    def drop(self, reason: str, notify: bool = True) -> None:
        if not self.alive:
            return
        self.alive = False
        self.air.stats.disconnects += 1
        self.air._links.pop((self.central.address, self.peripheral.address), None)
        for pump in self._pumps:
            pump.cancel()
        _log.debug("link %s->%s dropped: %s", self.central.name, self.peripheral.name, reason)
        if notify:
            self.peripheral.server._link_gone(self.central_id)
            if self.on_client_disconnect is not None:
                try:
                    self.on_client_disconnect()
                except Exception:
                    _log.exception("client disconnect callback failed")


class SimGattServer(GattServer):
    """The node's peripheral role. Values are checked against the long-read-safe size."""

    def __init__(self, node: SimNode) -> None:
        self._node = node
        self._spec: ServiceSpec | None = None
        self._values: dict[str, bytes] = {}
        self._on_write: WriteHandler | None = None
        self._on_disconnect: DisconnectHandler | None = None
        self._links: dict[str, _Link] = {}

    @property
    def spec(self) -> ServiceSpec | None:
        return self._spec

    async def start(
        self,
        spec: ServiceSpec,
        on_write: WriteHandler,
        on_disconnect: DisconnectHandler | None = None,
    ) -> None:
        self._spec = spec
        self._values = {uuid: b"" for uuid in spec.readable}
        self._on_write = on_write
        self._on_disconnect = on_disconnect

    async def stop(self) -> None:
        for link in list(self._links.values()):
            link.drop("server stopped")
        self._spec = None

    def set_value(self, char_uuid: str, value: bytes) -> None:
        if len(value) > SAFE_READ_VALUE_MAX:
            raise AttributeRejectedError(
                f"readable value of {len(value)} bytes > {SAFE_READ_VALUE_MAX} (long-read unsafe)"
            )
        self.set_value_unchecked(char_uuid, value)

    def set_value_unchecked(self, char_uuid: str, value: bytes) -> None:
        """Test hook: bypass the long-read guard (still capped at 512) to demonstrate the bug."""
        if self._spec is None or char_uuid not in self._values:
            raise AttributeRejectedError(f"{char_uuid} is not a readable characteristic here")
        if len(value) > ATT_MAX_VALUE:
            raise AttributeRejectedError("attribute values are capped at 512 bytes")
        self._values[char_uuid] = bytes(value)

    async def notify(self, central_id: str, data: bytes) -> None:
        link = self._links.get(central_id)
        if link is None or self._spec is None:
            raise NotConnectedError(f"central {central_id} is not connected")
        if len(data) > link.params.payload:
            self._node.air.stats.rejected_notifications += 1
            raise AttributeRejectedError(
                f"notification of {len(data)} bytes > {link.params.payload} (MTU {link.params.mtu})"
            )
        targets = list(self._links.values()) if self._node.air.notify_broadcast else [link]
        for target in targets:
            if self._spec.events_uuid in target.subscriptions:
                self._node.air.stats.notifications += 1
                # BlueZ truncates a broadcast notification to each central's own MTU.
                target.send_notification(
                    self._spec.events_uuid, bytes(data[: target.params.payload])
                )
        await asyncio.sleep(0)

    def max_payload(self, central_id: str) -> int:
        link = self._links.get(central_id)
        if link is None:
            raise NotConnectedError(f"central {central_id} is not connected")
        return link.params.payload

    @property
    def centrals(self) -> frozenset[str]:
        return frozenset(self._links)

    # called by links
    def _accept(self, link: _Link) -> None:
        self._links[link.central_id] = link

    def _deliver_write(self, central_id: str, data: bytes) -> None:
        if self._on_write is not None:
            self._on_write(central_id, data)

    def _link_gone(self, central_id: str) -> None:
        self._links.pop(central_id, None)
        if self._on_disconnect is not None:
            try:
                self._on_disconnect(central_id)
            except Exception:
                _log.exception("server disconnect callback failed")

    def _read(self, char_uuid: str) -> bytes:
        if char_uuid not in self._values:
            raise AttributeRejectedError(f"{char_uuid} is not readable")
        return self._values[char_uuid]


class SimGattClient(GattClient):
    """The node's central role towards one peripheral at a time."""

    def __init__(self, node: SimNode) -> None:
        self._node = node
        self._link: _Link | None = None

    @property
    def is_connected(self) -> bool:
        return self._link is not None and self._link.alive

    @property
    def mtu(self) -> int:
        return self._require().params.mtu

    async def connect(
        self,
        address: str,
        *,
        timeout: float,
        on_disconnect: Callable[[], None] | None = None,
    ) -> None:
        air = self._node.air
        if self.is_connected:
            raise RadioError("already connected")
        peer = air.nodes.get(address)
        reachable = (
            peer is not None
            and peer is not self._node
            and peer.server.spec is not None
            and air.path_loss.in_range(air.distance(self._node, peer))
            and (self._node.address, address) not in air._links
        )
        params = air.link_params(self._node, peer) if peer is not None else air.default_link
        if not reachable or params.connect_latency_s > timeout:
            await air.clock.sleep(timeout)
            raise RadioTimeoutError(f"connect to {address} timed out after {timeout}s")
        assert peer is not None
        await air.clock.sleep(params.connect_latency_s)
        if peer.server.spec is None:
            raise NotConnectedError(f"{address} stopped its GATT server during connect")
        link = _Link(air, self._node, peer, params)
        link.on_client_disconnect = on_disconnect
        air._links[(self._node.address, address)] = link
        peer.server._accept(link)
        air.stats.connects += 1
        self._link = link

    async def read(self, char_uuid: str) -> bytes:
        link = self._require()
        air = self._node.air
        await link.round_trip()
        value = link.peripheral.server._read(char_uuid)
        air.stats.reads += 1
        chunk = link.params.mtu - 1
        result = value[:chunk]
        if len(result) < chunk:
            return result
        # A full Read Response: the central continues with Read Blob (BlueZ shared/gatt-client.c
        # does this until a short response or 512 bytes).
        air.stats.long_reads += 1
        while len(result) < ATT_MAX_VALUE:
            await link.round_trip()
            offset = len(result)
            blob = value[:chunk] if air.bless_offset_bug else value[offset : offset + chunk]
            result += blob[: ATT_MAX_VALUE - offset]
            if len(blob) < chunk:
                break
        if result != value:
            air.stats.corrupted_reads += 1
        return result

    async def write(self, char_uuid: str, data: bytes, *, response: bool = True) -> None:
        link = self._require()
        air = self._node.air
        spec = link.peripheral.server.spec
        if spec is None or char_uuid != spec.control_uuid:
            raise AttributeRejectedError(f"{char_uuid} is not writable")
        if len(data) > link.params.payload:
            air.stats.rejected_writes += 1
            raise AttributeRejectedError(
                f"write of {len(data)} bytes > {link.params.payload} (MTU {link.params.mtu}); "
                "a long write would reach bless with an ignored offset"
            )
        air.stats.writes += 1
        if not response:
            link.send_command(bytes(data))
            await asyncio.sleep(0)
            return
        await link.round_trip()
        try:
            link.peripheral.server._deliver_write(link.central_id, bytes(data))
        except Exception as exc:  # the peripheral answered with an ATT error
            raise AttributeRejectedError(f"peripheral rejected the write: {exc}") from exc
        await link.round_trip()

    async def subscribe(self, char_uuid: str, handler: NotifyHandler) -> None:
        link = self._require()
        spec = link.peripheral.server.spec
        if spec is None or char_uuid != spec.events_uuid:
            raise AttributeRejectedError(f"{char_uuid} does not notify")
        await link.round_trip()  # the CCC descriptor write
        link.subscriptions[char_uuid] = handler

    def max_write_size(self, char_uuid: str) -> int:
        return self._require().params.payload

    async def disconnect(self) -> None:
        link, self._link = self._link, None
        if link is not None and link.alive:
            link.on_client_disconnect = None
            link.drop("central disconnected")

    def _require(self) -> _Link:
        if self._link is None or not self._link.alive:
            raise NotConnectedError("not connected")
        return self._link
