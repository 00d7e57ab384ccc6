"""What the BLE roles need from the agent, as a protocol (the node adapter is in link.py).

Why an interface: the roles are tested (and fuzzed) against a small fake host without a
whole Node, and the node-facing policy (peer table, handover, pairing) stays in one adapter.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from agent.links.ble.catalog import CatalogSnapshot
    from agent.links.ble.channel import BleSecureChannel

__all__ = ["BleHost"]


class BleHost(Protocol):
    @property
    def static_key(self) -> X25519PrivateKey: ...

    @property
    def device_id(self) -> bytes: ...

    def hello(self) -> bytes:
        """Handshake payload (the node's hello JSON)."""

    def catalog(self, slots: int) -> CatalogSnapshot:
        """Current public catalog and NodeInfo."""

    def known_peer_ids(self) -> Iterable[bytes]:
        """Device IDs whose rotating tags we should recognise (paired and met peers)."""

    def is_connected(self, peer_id: bytes) -> bool:
        """True if a live session (any transport) to this peer exists."""

    def saw_peer(self, peer_id: bytes, rssi: int) -> None:
        """A recognised advertisement: feed the peer table (RSSI for proximity)."""

    def attach(self, channel: BleSecureChannel, *, outgoing: bool, rssi: int | None) -> Any:
        """Run the peer protocol over an authenticated BLE session; returns the connection
        (``.peer_id``, ``.request()``, ``.closed``). Raises ValueError for a bad hello."""

    def remember_catalog(self, conn: Any, entries: Any) -> int:
        """Keep a peer's `list` answer (what it offers us); returns how many entries."""

    def wants_handover(self, channel: BleSecureChannel) -> bool:
        """Should the central ask this peer for its LAN endpoints?"""

    async def handover(self, conn: Any, endpoints: Any) -> bool:
        """Open the fast link to one of ``endpoints`` (the peer's `endpoints` answer) and
        verify it reaches the same device; True on success."""
