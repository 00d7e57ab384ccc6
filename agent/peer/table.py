"""The peer table: one row per device, whichever radio found it.

Why one table: BLE sightings, mDNS records and live sessions all describe the same device;
merging them by device ID lets fetch, authority and prefetch ask one question ("who is near
and reachable?") without caring how the device was found.

Lifecycle: every sighting (a discovery record, a session opening, traffic on it, its end)
moves the row's *last seen*, kept on the monotonic clock because pruning compares it with
"now" and must not jump with NTP; the wall-clock time is derived only for display. A row of
an unpaired device with no session that has not been seen for ``stale_after`` (default
:data:`STALE_AFTER`, ``[lan] forget_after``) is forgotten; a paired device stays, shown
offline with when it was last seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.security.identity import format_device_id, short_device_id

if TYPE_CHECKING:
    from agent.peer.connection import PeerConnection


@dataclass
class PeerInfo:
    peer_id: bytes
    name: str = "?"
    addresses: dict[tuple[str, int], float] = field(default_factory=dict)  # addr -> last seen
    sources: set[str] = field(default_factory=set)  # "mdns", "lan", "ble", "manual"
    connection: PeerConnection | None = None
    last_seen: float = 0.0  # monotonic
    reachable: bool = False
    rssi: int | None = None
    rtt: float | None = None
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    unpaired_by_peer: bool = False  # it told us it no longer trusts us (agent/peer/unpair.py)

    @property
    def connected(self) -> bool:
        return self.connection is not None and not self.connection.closed.is_set()

    def seen_at(self) -> float:
        """When (monotonic) the device was last seen: a live session counts as now-ish (its
        last message), so a connected peer never looks stale."""
        if self.connected:
            assert self.connection is not None
            return max(self.last_seen, self.connection.last_seen)
        return self.last_seen

    def summary(self, trusted: bool, now: float | None = None,
                wall: float | None = None) -> dict[str, Any]:
        """The row for the ``peers`` reply. ``last_seen_s``: seconds since the device was
        last seen (monotonic); ``last_seen_at``: the same moment as Unix time, for display
        only (None: not seen since this agent started)."""
        now = time.monotonic() if now is None else now
        wall = time.time() if wall is None else wall
        seen = self.seen_at()
        ago = max(0.0, now - seen) if seen else None
        live = self.connection if self.connected else None
        return {
            "peer_id": self.peer_id.hex(),
            "display_id": format_device_id(self.peer_id),
            "short_id": short_device_id(self.peer_id),
            "name": self.name,
            "addresses": [f"{h}:{p}" for (h, p) in self.addresses],
            "sources": sorted(self.sources),
            "connected": self.connected,
            # how the session in use runs: "lan" (direct TCP), "ble" or "relay" (through
            # paired devices); None when not connected
            "transport": live.transport if live is not None else None,
            "reachable": self.reachable,
            "trusted": trusted,
            "unpaired_by_peer": self.unpaired_by_peer and not trusted,
            "last_seen_s": round(ago, 1) if ago is not None else None,
            "last_seen_at": round(wall - ago) if ago is not None else None,
            "rtt_ms": round(self.rtt * 1000, 2) if self.rtt is not None else None,
            "rssi": self.rssi,
        }


#: Rows kept before the least recently seen unpaired, disconnected one is dropped. Device IDs
#: cost nothing to make (one handshake, one BLE advert each), so the table must not grow with
#: what strangers announce; paired and connected devices are never dropped for room.
MAX_PEERS = 256
#: An unpaired, disconnected device not seen for this long (seconds) is forgotten by
#: :meth:`PeerTable.prune` (``[lan] forget_after``).
STALE_AFTER = 600.0


class PeerTable:
    """Merged view of every peer seen by any radio, bounded (see :data:`MAX_PEERS`)."""

    def __init__(self, *, is_trusted: Callable[[bytes], bool] | None = None,
                 max_peers: int = MAX_PEERS, stale_after: float = STALE_AFTER,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._peers: dict[bytes, PeerInfo] = {}
        self._is_trusted = is_trusted or (lambda _peer_id: False)
        self.max_peers = max_peers
        self.stale_after = stale_after
        self._clock = clock

    def get(self, peer_id: bytes) -> PeerInfo | None:
        return self._peers.get(peer_id)

    def __len__(self) -> int:
        return len(self._peers)

    def _evictable(self, info: PeerInfo) -> bool:
        """Unpaired and without a live session: only such rows are dropped."""
        return not info.connected and not self._is_trusted(info.peer_id)

    def _make_room(self) -> None:
        """Drop least recently seen evictable rows until a new one fits (if any can go)."""
        excess = len(self._peers) + 1 - self.max_peers
        if excess <= 0:
            return
        victims = sorted((p for p in self._peers.values() if self._evictable(p)),
                         key=lambda p: p.last_seen)
        for info in victims[:excess]:
            del self._peers[info.peer_id]

    def prune(self) -> int:
        """Forget unpaired, disconnected devices not seen for ``stale_after``; returns how
        many. Called from housekeeping so stale sightings do not pile up for ever."""
        cutoff = self._clock() - self.stale_after
        stale = [p.peer_id for p in self._peers.values()
                 if self._evictable(p) and p.seen_at() < cutoff]
        for peer_id in stale:
            del self._peers[peer_id]
        return len(stale)

    def upsert(self, peer_id: bytes, *, source: str, name: str | None = None,
               address: tuple[str, int] | None = None, rssi: int | None = None) -> PeerInfo:
        info = self._peers.get(peer_id)
        if info is None:
            self._make_room()
            info = self._peers[peer_id] = PeerInfo(peer_id)
        info.sources.add(source)
        if name:
            info.name = name
        now = self._clock()
        if address is not None:
            info.addresses[address] = now
        if rssi is not None:
            info.rssi = rssi
        info.last_seen = now
        return info

    def attach(self, conn: PeerConnection) -> PeerInfo:
        """Record a new session; it becomes the peer's primary connection unless it is a
        control-plane-only link (BLE) and a live LAN session already exists."""
        info = self.upsert(conn.peer_id, source=conn.transport, name=conn.name)
        current = info.connection
        keep = (current is not None and not current.closed.is_set()
                and current.transport == "lan" and conn.transport != "lan")
        if not keep:
            info.connection = conn
        info.reachable = True
        return info

    def detach(self, conn: PeerConnection) -> None:
        """A session ended: the device was seen until now (its row ages from here)."""
        info = self._peers.get(conn.peer_id)
        if info is None:
            return
        info.last_seen = max(info.last_seen, self._clock())
        if info.connection is conn:
            info.connection = None

    def summary(self, info: PeerInfo) -> dict[str, Any]:
        """:meth:`PeerInfo.summary` on this table's clock and trust."""
        return info.summary(self._is_trusted(info.peer_id), self._clock())

    def unpaired_by_peer(self, peer_id: bytes) -> None:
        """The device told us (over its own session) that it no longer trusts us."""
        info = self._peers.get(peer_id)
        if info is not None:
            info.unpaired_by_peer = True  # shown only while we do not trust it either

    def all(self) -> list[PeerInfo]:
        return sorted(self._peers.values(), key=lambda p: p.name)

    def reachable(self) -> list[PeerInfo]:
        return [p for p in self._peers.values() if p.reachable]

    def remove_address(self, peer_id: bytes, address: tuple[str, int]) -> None:
        info = self._peers.get(peer_id)
        if info is not None:
            info.addresses.pop(address, None)
