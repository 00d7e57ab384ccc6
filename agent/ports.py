"""Ports: the small typed interfaces through which subsystems reach each other.

Why ports: a service (authority, pairing, BLE, fetch, and the coming prefetch, mirror and DHT
services) that held a reference to the node could call anything on it, so every change to the
node rippled through every service and no service could be tested without a whole agent.
Each service instead receives exactly the capabilities it needs, as structural
``Protocol``s; the node (the composition root) passes the real objects, tests pass fakes.
Nothing here imports a subsystem: the types below describe shapes, not implementations.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Protocol, TypeAlias

__all__ = [
    "AccessRecorder",
    "Clock",
    "ConnectionsPort",
    "HolderFinder",
    "HolderStatsPort",
    "JSONValue",
    "PeerLink",
    "PeerOpener",
    "ResourceSync",
    "Spawner",
    "StoreView",
    "TrustView",
]

Clock = Callable[[], float]
"""Monotonic seconds. Pure policies take one so simulations can drive time (and skew it)."""

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"
"""A value that went through (or will go through) ``json``: validated by the receiver."""


class Spawner(Protocol):
    """Runs a background coroutine owned by the node's TaskGroup; a failure is logged, never
    fatal (a send to a vanished peer must not take the agent down)."""

    def __call__(self, coro: Coroutine[object, None, object], name: str
                 ) -> asyncio.Task[object]: ...


class PeerLink(Protocol):
    """One live, authenticated session with a peer, whatever link carries it."""

    @property
    def peer_id(self) -> bytes: ...

    @property
    def name(self) -> str: ...

    @property
    def transport(self) -> str: ...

    @property
    def closed(self) -> asyncio.Event: ...

    @property
    def address(self) -> tuple[str, int] | None: ...

    async def request(self, op: str, args: dict[str, JSONValue],
                      timeout: float = 10.0) -> object:
        """The peer's answer: decoded JSON, or a binary reply (a chunk); the caller checks."""
        ...

    async def send_event(self, op: str, args: dict[str, JSONValue]) -> None: ...

    async def close(self, reason: str = "closed locally") -> None: ...


class ConnectionsPort(Protocol):
    """The live sessions: find one, list them, open one."""

    def live_connection(self, peer_hex_prefix: str) -> PeerLink | None: ...

    def live_connections(self) -> Sequence[PeerLink]: ...

    async def connect(self, address: tuple[str, int], expect: str | None = None) -> PeerLink: ...


class TrustedDeviceView(Protocol):
    @property
    def device_id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str: ...


class TrustView(Protocol):
    """View of the paired devices (read-only but for the v1 -> v2 ID upgrade)."""

    def is_trusted(self, device_id: bytes) -> bool: ...

    def get(self, device_id: bytes) -> TrustedDeviceView | None: ...

    def recognise(self, device_id: bytes, public_key: bytes,
                  signing_key: bytes | None) -> bool: ...


class ResourceView(Protocol):
    @property
    def resource_id(self) -> str: ...

    @property
    def name(self) -> str: ...


class StoreView(Protocol):
    """What a policy may read of the content store: which resources are held here."""

    def resources(self) -> Sequence[ResourceView]: ...


class HolderStatsPort(Protocol):
    """How busy this device's uplink is (authority reports it as load and bitrate)."""

    def capacity_estimate(self) -> float | None: ...

    def queued(self, cls: str | None = None) -> int: ...


class AccessRecorder(Protocol):
    """Where the fetch and serve paths report each request they handle (the access log).

    Called on the request path: an implementation only buffers (no I/O, no await).
    *requester* is the asking device's ID (our own for a local request); *source* is
    ``"local"`` (our store), ``"mirror"`` or the serving peer's short ID (16 hex digits).
    """

    def record_access(self, requester: bytes, resource_id: str, size: int, *, hit: bool,
                      source: str) -> None: ...


class ResourceSync(Protocol):
    """Keep a held resource current: fetch its newest believable version by delta (only the
    chunks not held move, changed chunks as deltas against the held version's), on the
    ``mirror`` bandwidth class unless told otherwise. Provided by the follow service
    (agent/transfer/follow/service.py ``FollowService.sync_to_latest``); mirrors use it too.

    The answer describes the resource as held afterwards (``resource_id``, ``version``,
    ``size``...) plus ``updated`` (a newer version came), ``bytes_fetched``, ``deltas`` and
    ``why`` (what was checked). Raises the store's NotFound if the resource is not held.
    """

    async def sync_to_latest(self, resource_id: str, *,
                             traffic_class: str = "mirror") -> dict[str, object]: ...


class PeerOpener(Protocol):
    """Opens (or reuses) an authenticated session to a device that may be several hops away,
    through *via*, a device with a live direct session (None: direct only). The relay
    service (agent/relay, ``RelayService.open``) provides it; the session it returns is
    end-to-end authenticated with *target* and listed by ``live_connections`` like any other.
    Raises (ConnectionError, TimeoutError, a ShoalError) when the target cannot be reached."""

    async def open(self, target: bytes, via: bytes | None = None) -> PeerLink: ...


class HolderFinder(Protocol):
    """Where a fetch finds holders beyond its neighbours (the DHT service,
    agent/dht/service.py). The policy lives with the finder; the fetch only asks it."""

    def lookup_first(self, neighbours: int) -> bool:
        """Look holders up before asking every one of *neighbours* live sessions (the
        neighbourhood exceeds the measured threshold)."""
        ...

    def beyond_neighbours(self) -> bool:
        """The mesh is larger than the direct neighbourhood: when no neighbour offers a
        resource, a lookup may still find a holder."""
        ...

    async def reach_holders(self, resource: str) -> list[bytes]:
        """Find holders of *resource* (a name or resource ID) and open sessions to them;
        the IDs of those now reachable through ``live_connections`` (possibly none)."""
        ...
