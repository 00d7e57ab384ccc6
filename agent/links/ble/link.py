"""BleLink: the node's BLE control plane (peripheral + central roles over injectable radios).

The node creates ``BleLink(BleAgent(...), cfg.ble)`` and awaits ``start()`` / ``stop()``. With no
``backends`` argument the real ones are built (bless peripheral + bleak central on
``cfg.adapter``); tests and the benchmark pass simulated ones (:func:`sim_backends`).

Session policy after a handover: the BLE session is **kept**. Why: it is the control plane
that survives a LAN failure (pairing, `list`, liveness through GATT disconnects), it costs
an idle connection slot and no traffic, and it never carries bulk: the LAN session stays the
peer's primary connection, and chunk replies are refused on BLE. When the BLE link drops
while the LAN session lives, no new BLE session is opened (the tag is recognised); when
both are gone, the next sighting opens a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.config import BleConfig
from agent.errors import ErrorKind, ShoalError
from agent.links.ble.catalog import CatalogSnapshot, build_snapshot
from agent.links.ble.central import CentralLimits, CentralRole, Observer
from agent.links.ble.channel import BleSecureChannel
from agent.links.ble.peripheral import PeripheralLimits, PeripheralRole
from agent.links.ble.tag import TAG_EPOCH_SECONDS, TagResolver
from agent.log import kv
from agent.peer.connection import PeerConnection
from agent.peer.connections import Connections, Unreachable
from agent.peer.hello import parse_hello
from agent.peer.table import PeerTable
from agent.security.identity import Identity, format_device_id
from agent.security.trust import TrustStore
from agent.store import ContentStore
from radio.base import Advertiser, GattClient, GattServer, Scanner

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

__all__ = ["AgentHost", "BleAgent", "BleBackends", "BleLink", "BleTiming", "bluez_backends",
           "sim_backends"]

log = logging.getLogger("shoal.ble")
MAX_ENDPOINTS = 4
MAX_REMEMBERED = 10_000  # catalog entries kept per peer


@dataclass
class BleBackends:
    """The radios a BleLink drives; ``None`` disables that role."""

    server: GattServer | None = None
    advertiser: Advertiser | None = None
    scanner: Scanner | None = None
    client_factory: Callable[[], GattClient] | None = None


@dataclass(frozen=True)
class BleTiming:
    """Timeouts and intervals (tests shorten them; defaults suit real radios)."""

    handshake_timeout: float = 10.0
    request_timeout: float = 10.0
    evaluate_interval: float = 1.0
    grace: float = 3.0
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    housekeeping_interval: float = 1.0
    tag_period: float = TAG_EPOCH_SECONDS
    catalog_on_connect: bool = False  # see CentralLimits


def bluez_backends(cfg: BleConfig, name: str = "Shoal") -> BleBackends:
    """bless (peripheral) and bleak (central) on ``cfg.adapter`` (imports them lazily)."""
    from radio.ble.bleak_central import BleakCentral
    from radio.ble.bless_peripheral import BlessPeripheral

    out = BleBackends()
    if cfg.advertise:
        periph = BlessPeripheral(name, adapter=cfg.adapter)
        out.server, out.advertiser = periph, periph.advertiser
    if cfg.scan:
        central = BleakCentral(adapter=cfg.adapter)
        out.scanner, out.client_factory = central, central.client
    return out


def sim_backends(sim_node: Any, *, scan_interval: float = 0.1) -> BleBackends:
    """Backends of one :class:`radio.sim.SimNode`."""
    return BleBackends(sim_node.server, sim_node.advertiser,
                       sim_node.scanner(interval_s=scan_interval), sim_node.client)


def parse_endpoints(answer: Any) -> list[tuple[str, int]]:
    """Validate a peer's `endpoints` answer: IP literals only (no DNS), at most 4."""
    out: list[tuple[str, int]] = []
    lan = answer.get("lan") if isinstance(answer, dict) else None
    if not isinstance(lan, list):
        return out
    for item in lan[:MAX_ENDPOINTS]:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], int) and not isinstance(item[1], bool)
                and 0 < item[1] < 65536):
            continue
        try:
            addr = ipaddress.ip_address(item[0])
        except ValueError:
            continue
        if addr.is_multicast or addr.is_unspecified:
            continue
        out.append((str(addr), item[1]))
    return out


@dataclass
class BleAgent:
    """The parts of the agent the BLE link works with (built by the node; tests build their
    own). Ports, not the node: the link never reaches past these."""

    identity: Identity
    store: ContentStore
    trust: TrustStore
    peers: PeerTable
    connections: Connections
    lan_enabled: bool


class BleNotFound(ShoalError):
    """No (or more than one) live BLE session matches what the user named."""

    kind = ErrorKind.NOT_FOUND


class AgentHost:
    """:class:`agent.links.ble.host.BleHost` over the agent's ports."""

    def __init__(self, agent: BleAgent, cfg: BleConfig,
                 on_attached: Callable[[PeerConnection], None] | None = None) -> None:
        self.agent = agent
        self.cfg = cfg
        self.on_attached = on_attached

    @property
    def static_key(self) -> X25519PrivateKey:
        return self.agent.identity.private_key

    @property
    def device_id(self) -> bytes:
        return self.agent.identity.device_id

    def hello(self) -> bytes:
        return self.agent.connections.hello()

    def catalog(self, slots: int) -> CatalogSnapshot:
        a = self.agent
        port = a.connections.lan_port if a.lan_enabled else None
        return build_snapshot(a.store.resources(), device_id=self.device_id,
                              lan_port=port, slots=slots)

    def known_peer_ids(self) -> Iterable[bytes]:
        ids = [bytes.fromhex(d.device_id) for d in self.agent.trust.list()]
        ids.extend(p.peer_id for p in self.agent.peers.all())
        return ids

    def is_connected(self, peer_id: bytes) -> bool:
        return any(c.peer_id == peer_id for c in self.agent.connections.live_connections())

    def saw_peer(self, peer_id: bytes, rssi: int) -> None:
        name = None
        if self.agent.peers.get(peer_id) is None:
            trusted = self.agent.trust.get(peer_id)
            name = trusted.name if trusted is not None else None
        self.agent.peers.upsert(peer_id, source="ble", name=name, rssi=rssi)

    def attach(self, channel: BleSecureChannel, *, outgoing: bool,
               rssi: int | None) -> PeerConnection:
        """Run the peer protocol over the BLE session; the peer table keeps a live LAN session
        primary (a BLE session must not displace a TCP one: fetches use the primary)."""
        conn = self.agent.connections.attach_channel(channel, outgoing=outgoing,
                                                     transport="ble", rssi=rssi)
        if self.on_attached is not None:
            self.on_attached(conn)
        return conn

    def remember_catalog(self, conn: PeerConnection, entries: object) -> int:
        """Keep a peer's `list` answer in the peer table (what it offers us, bounded)."""
        info = self.agent.peers.get(conn.peer_id)
        if info is None or not isinstance(entries, list):
            return 0
        info.resources = {
            e["resource_id"]: e for e in entries[:MAX_REMEMBERED]
            if isinstance(e, dict) and isinstance(e.get("resource_id"), str)
        }
        return len(info.resources)

    def wants_handover(self, channel: BleSecureChannel) -> bool:
        if not (self.cfg.handover and self.agent.lan_enabled):
            return False
        try:
            port = parse_hello(channel.remote_payload).get("port")
        except ValueError:
            return False
        return isinstance(port, int) and port > 0

    async def handover(self, conn: PeerConnection, endpoints: object) -> bool:
        """Connect to the peer's LAN endpoint and insist it is the same device."""
        connections = self.agent.connections
        for address in parse_endpoints(endpoints):
            other = next((c for c in connections.live_connections() if c.address == address),
                         None)
            if other is not None and other.peer_id != conn.peer_id:
                log.warning("BLE peer names another device's endpoint", extra=kv(
                    peer=conn.name, addr=address, holder=other.name))
                continue
            try:
                tcp = await connections.connect(address)
            except Unreachable as e:
                log.info("handover endpoint unreachable", extra=kv(addr=address, reason=e))
                continue
            if tcp.peer_id != conn.peer_id:
                log.warning("handover refused: LAN endpoint is another device", extra=kv(
                    peer=conn.name, addr=address, got=format_device_id(tcp.peer_id)[:9]))
                await tcp.close("identity does not match the BLE session")
                continue
            self.agent.peers.upsert(conn.peer_id, source="ble")
            log.info("handed over to LAN", extra=kv(peer=conn.name, addr=address))
            return True
        return False


class BleLink:
    """Both BLE roles of one node, plus the BLE entry points for the control commands."""

    def __init__(
        self,
        agent: BleAgent,
        cfg: BleConfig,
        backends: BleBackends | None = None,
        *,
        timing: BleTiming | None = None,
        observer: Observer | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.agent = agent
        self.cfg = cfg
        self._backends = backends
        self.timing = timing or BleTiming()
        self._observer = observer
        self._wall = wall_clock
        self.host = AgentHost(agent, cfg, on_attached=self._remember)
        self.resolver = TagResolver(self.host.known_peer_ids, clock=wall_clock,
                                    period=self.timing.tag_period)
        self.peripheral: PeripheralRole | None = None
        self.central: CentralRole | None = None
        self.ble_conns: set[PeerConnection] = set()
        self._reconciler: asyncio.Task[None] | None = None

    async def start(self) -> None:
        t = self.timing
        b = self._backends or bluez_backends(self.cfg)
        try:
            if self.cfg.advertise and b.server is not None:
                self.peripheral = PeripheralRole(
                    b.server, b.advertiser, self.host, slots=self.cfg.resource_slots,
                    limits=PeripheralLimits(handshake_timeout=t.handshake_timeout,
                                            housekeeping_interval=t.housekeeping_interval,
                                            tag_period=t.tag_period),
                    wall_clock=self._wall, on_attached=self._on_peripheral_session,
                )
                await self.peripheral.start()
            if self.cfg.scan and b.scanner is not None and b.client_factory is not None:
                self.central = CentralRole(
                    b.scanner, b.client_factory, self.host, self.resolver,
                    my_tag=self._my_tag, handover=self.cfg.handover, observer=self._observer,
                    limits=CentralLimits(
                        connect_timeout=self.cfg.connect_timeout,
                        handshake_timeout=t.handshake_timeout, request_timeout=t.request_timeout,
                        evaluate_interval=t.evaluate_interval, grace=t.grace,
                        backoff_base=t.backoff_base, backoff_max=t.backoff_max,
                        forget_after=t.tag_period, catalog_on_connect=t.catalog_on_connect),
                )
                await self.central.start()
            self._reconciler = asyncio.get_running_loop().create_task(
                self._reconcile_loop(), name="shoal-ble:reconcile")
        except BaseException:
            await self.stop()
            raise
        tag = self._my_tag()
        log.info("BLE started", extra=kv(
            adapter=self.cfg.adapter, advertise=self.peripheral is not None,
            scan=self.central is not None, tag=tag.hex() if tag is not None else None))

    async def stop(self) -> None:
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler
            self._reconciler = None
        central, self.central = self.central, None
        peripheral, self.peripheral = self.peripheral, None
        if central is not None:
            with contextlib.suppress(Exception):
                await central.stop()
        if peripheral is not None:
            with contextlib.suppress(Exception):
                await peripheral.stop()

    # ------------------------------------------------------------------ hooks
    def catalog_changed(self) -> None:
        """Call after publish/remove: refresh NodeInfo and slots now (they are also polled)."""
        if self.peripheral is not None and self.peripheral.running:
            self.peripheral.refresh()

    def _my_tag(self) -> bytes | None:
        return self.peripheral.current_tag() if self.peripheral is not None else None

    def _remember(self, conn: PeerConnection) -> None:
        self.ble_conns.add(conn)

    def _on_peripheral_session(self, conn: PeerConnection) -> None:
        self.resolver.learn(conn.peer_id)
        if self.central is not None:
            rssi = self.central.rssi_of(conn.peer_id)
            if rssi is not None:
                self.agent.peers.upsert(conn.peer_id, source="ble", rssi=rssi)

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.timing.housekeeping_interval)
            try:
                self.reconcile()
            except Exception:
                log.exception("BLE peer-table reconcile failed")

    def reconcile(self) -> None:
        """A peer whose primary (LAN) session ended but whose BLE session lives is reachable
        over BLE: make that session its connection again (the control plane falls back)."""
        for conn in self.connections():
            info = self.agent.peers.get(conn.peer_id)
            if info is None:
                continue
            current = info.connection
            if current is None or current.closed.is_set():
                info.connection = conn
                info.reachable = True

    # ------------------------------------------------------------------ sessions & pairing
    def connections(self) -> list[PeerConnection]:
        """Live peer connections that run over BLE (both roles)."""
        self.ble_conns = {c for c in self.ble_conns if not c.closed.is_set()}
        return sorted(self.ble_conns, key=lambda c: c.name)

    def find_connection(self, target: str) -> PeerConnection:
        """A live BLE session by peer name, display ID prefix or hex ID prefix."""
        t = target.strip()
        conns = self.connections()
        matches = [c for c in conns if c.name == t]
        if not matches and len(t) >= 4:
            up, low = t.upper(), t.lower()
            matches = [c for c in conns if c.peer_id.hex().startswith(low)
                       or format_device_id(c.peer_id).startswith(up)]
        if not matches:
            raise BleNotFound(f"no BLE session with {target!r} (see: shoal peers)")
        if len({c.peer_id for c in matches}) > 1:
            raise BleNotFound(f"{target!r} matches several BLE peers; use its ID")
        return matches[0]

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"adapter": self.cfg.adapter}
        if self.peripheral is not None:
            snap = self.peripheral.snapshot
            out["peripheral"] = {
                "tag": self.peripheral.current_tag().hex(),
                "public_entries": len(snap.entries) if snap else 0,
                "generation": f"{snap.generation:08x}" if snap else None,
                "sessions": self.peripheral.sessions(),
                "counters": dict(vars(self.peripheral.counters)),
            }
        if self.central is not None:
            out["central"] = {
                "links": self.central.links(), "sightings": self.central.sightings(),
                "stats": dict(self.central.stats), "gatt": self.central.totals.snapshot(),
            }
        return out
