"""Connections: every authenticated session this agent has, however it was opened.

Like syncthing's ``lib/connections``, one subsystem owns the TCP listener, outgoing dials
(with backoff), sessions handed in by other links (BLE via :meth:`attach_channel`), the
live-connection table, liveness (heartbeats: mDNS records linger for minutes, so peers prove
they are alive), and the mDNS-driven dialler that avoids opening two sessions when both
sides see each other at once. Services find sessions through the ``ConnectionsPort`` shape
(:mod:`agent.ports`); what a session *means* (requests, events) is the router's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from agent import WIRE_VERSION
from agent.config import LanConfig
from agent.errors import ErrorKind, ShoalError
from agent.log import kv
from agent.peer import wire
from agent.peer.connection import EventHandler, Handler, PeerConnection, PeerGone, RemoteError
from agent.peer.hello import make_hello, mesh_of, parse_hello, peer_device_id, signing_key_of
from agent.peer.table import PeerTable
from agent.ports import Clock, Spawner, TrustView
from agent.security.identity import format_device_id
from agent.security.session import Buffer, SessionError, open_channel
from radio.lan import LanDiscovery, LanPeerGone, LanPeerSeen, select_interfaces
from radio.mesh import DEFAULT_MESH, check_mesh

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

log = logging.getLogger("shoal.connections")

DIAL_GRACE = 0.3  # s the larger ID waits for the smaller one to dial (avoids twin sessions)
DIAL_BACKOFF_MAX = 10.0
STREAM_LIMIT = 1 << 20
#: Sessions with unpaired devices kept at once; beyond it the least recently heard-from one
#: is closed. A handshake costs a stranger nothing (throwaway keys), and each session may
#: hold served chunks and handler tasks, so their number must not be the stranger's choice.
MAX_UNTRUSTED_SESSIONS = 32

ClosedListener = Callable[[PeerConnection], Awaitable[None]]
OpenedListener = Callable[[PeerConnection], None]


class Channel(Protocol):
    """An authenticated, encrypted message channel from any link (TCP's SecureChannel, BLE's
    BleSecureChannel): what the peer protocol needs of it."""

    @property
    def remote_static(self) -> bytes: ...

    @property
    def remote_payload(self) -> bytes: ...

    @property
    def handshake_hash(self) -> bytes: ...

    async def send(self, payload: bytes) -> None: ...

    async def send_parts(self, parts: Sequence[Buffer]) -> None: ...

    async def recv(self) -> bytes: ...

    async def close(self) -> None: ...


class Unreachable(ShoalError):
    """No session could be opened to an address (refused, timed out, no handshake).

    A session to the wrong device is not this error: callers that expect one device compare
    the authenticated ``peer_id`` (mDNS dials and BLE handover do)."""

    kind = ErrorKind.UNREACHABLE


class HandshakeFailed(Unreachable):
    """The address answered, but the authenticated handshake did not complete."""


class SelfConnection(Unreachable):
    """The address leads back to this very agent (its own address, typed by mistake): no
    session is kept, so the agent never lists itself among its peers."""

    kind = ErrorKind.INVALID


class MeshMismatch(HandshakeFailed, ValueError):
    """The peer authenticated, but belongs to another mesh: no session is kept.

    Also a ValueError, like a malformed hello: both are hellos this agent does not accept
    (``attach_channel`` callers catch ValueError). One line naming both meshes."""

    kind = ErrorKind.REFUSED

    def __init__(self, where: str, theirs: str, ours: str) -> None:
        self.theirs, self.ours = theirs, ours
        super().__init__(f"{where} is in mesh {theirs!r}, this agent is in mesh {ours!r}: "
                         f"agents only connect within one mesh (node.mesh)")


class Connections:
    """Owns sessions; the node starts and stops it, services use it through a port."""

    def __init__(
        self,
        *,
        static_key: X25519PrivateKey,
        device_id: bytes,
        name: str,
        lan: LanConfig,
        peers: PeerTable,
        trust: TrustView,
        handler: Handler,
        on_event: EventHandler,
        spawn: Spawner,
        clock: Clock = time.monotonic,
        signing_key: bytes | None = None,
        mesh: str = DEFAULT_MESH,
    ) -> None:
        self._key = static_key
        self.mesh = check_mesh(mesh)
        self._signing_key = signing_key  # our Ed25519 public key, announced in the hello
        self.device_id = device_id
        self.short_id = device_id.hex()[:16]
        self.name = name
        self.cfg = lan
        self.peers = peers
        self._trust = trust
        self._handler = handler
        self._on_event = on_event
        self._spawn = spawn
        self._clock = clock
        self.lan_port: int | None = None
        self._server: asyncio.AbstractServer | None = None
        self.discovery: LanDiscovery | None = None
        self._conns: set[PeerConnection] = set()
        self._closed_listeners: list[ClosedListener] = []
        self._opened_listeners: list[OpenedListener] = []
        self._lan_seen: dict[str, tuple[LanPeerSeen, float]] = {}  # short id -> (event, first)
        self._dial_state: dict[str, tuple[int, float]] = {}  # short id -> (failures, next try)
        self._dialing: set[str] = set()
        self._running = False
        self.max_untrusted_sessions = MAX_UNTRUSTED_SESSIONS

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Listen on TCP and start mDNS (as configured); raises OSError if the port is taken."""
        self._running = True
        if not self.cfg.enabled:
            return
        self._server = await asyncio.start_server(
            self._on_tcp, self.cfg.listen, self.cfg.port, reuse_address=True, limit=STREAM_LIMIT)
        self.lan_port = self._server.sockets[0].getsockname()[1]
        if self.cfg.mdns:
            await self._start_discovery()

    async def stop(self, timeout: float) -> None:
        """Stop accepting, withdraw from mDNS, say goodbye to every peer within *timeout*."""
        self._running = False
        if self._server is not None:
            self._server.close()
        if self.discovery is not None:
            with contextlib.suppress(Exception):
                await self.discovery.stop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(c.close("agent shutting down") for c in list(self._conns)),
                                     return_exceptions=True)

    def on_closed(self, listener: ClosedListener) -> None:
        """Call *listener* after any session ends (pairing cancels what it was carrying)."""
        self._closed_listeners.append(listener)

    def on_opened(self, listener: OpenedListener) -> None:
        """Call *listener* (synchronously) for every new authenticated session, before any
        of its messages is read (unpairing tells a peer it is no longer trusted)."""
        self._opened_listeners.append(listener)

    def hello(self) -> bytes:
        return make_hello(self.name, self.lan_port, self._signing_key, self.mesh)

    def _check_mesh(self, hello: dict[str, object], where: str) -> None:
        """Refuse a peer of another mesh (its hello is authenticated with the session)."""
        theirs = mesh_of(hello)
        if theirs != self.mesh:
            raise MeshMismatch(where, theirs, self.mesh)

    def handlers(self) -> dict[str, Handler]:
        """Peer requests about the session itself: liveness and where to reach us."""
        return {"ping": self._on_ping, "endpoints": self._on_endpoints}

    async def _on_ping(self, conn: PeerConnection, req: wire.Request) -> object:
        return {"t": time.time()}

    async def _on_endpoints(self, conn: PeerConnection, req: wire.Request) -> object:
        return {"lan": [[a, p] for a, p in self.lan_endpoints()]}

    # ----------------------------------------------------------------- the live table
    def count(self) -> int:
        return len(self._conns)

    def live_connection(self, peer_hex_prefix: str) -> PeerConnection | None:
        for c in self._conns:
            if c.peer_id.hex().startswith(peer_hex_prefix) and not c.closed.is_set():
                return c
        return None

    def sessions(self) -> list[PeerConnection]:
        """Every session still open, several per peer possible (BLE and LAN side by side)."""
        return [c for c in self._conns if not c.closed.is_set()]

    def live_connections(self) -> list[PeerConnection]:
        """One live session per peer: the peer table's primary one (LAN over BLE), else any."""
        best: dict[bytes, PeerConnection] = {}
        for info in self.peers.all():
            c = info.connection
            if c is not None and not c.closed.is_set():
                best[c.peer_id] = c
        for c in self._conns:
            if not c.closed.is_set():
                best.setdefault(c.peer_id, c)
        return list(best.values())

    async def close_peer(self, peer_id: bytes, reason: str) -> None:
        for c in list(self._conns):
            if c.peer_id == peer_id:
                await c.close(reason)

    def lan_endpoints(self) -> list[tuple[str, int]]:
        """Where peers can reach our TCP listener: the handover target for BLE peers."""
        if self.lan_port is None:
            return []
        listen = self.cfg.listen
        if listen not in ("0.0.0.0", "::", ""):
            return [(listen, self.lan_port)]
        if self.discovery is not None:
            return [(i.address, self.lan_port) for i in self.discovery.interfaces]
        chosen = select_interfaces(self.cfg.interfaces, include_loopback=self.cfg.include_loopback)
        return [(i.address, self.lan_port) for i in chosen]

    # ----------------------------------------------------------------- opening sessions
    async def connect(self, address: tuple[str, int], expect: str | None = None
                      ) -> PeerConnection:
        """Open (or reuse) an authenticated session to the agent at *address*.

        *expect* (a device ID hex prefix) restricts reuse to a session with that device: an
        address may have changed hands since a stale mDNS record was cached.
        """
        for c in self._conns:
            if c.address == address and not c.closed.is_set() and (
                    expect is None or c.peer_id.hex().startswith(expect)):
                return c
        timeout = self.cfg.connect_timeout
        where = f"{address[0]}:{address[1]}"
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(address[0], address[1], limit=STREAM_LIMIT), timeout)
        except TimeoutError:
            raise Unreachable(f"cannot reach {where}: timed out") from None
        except OSError as e:
            raise Unreachable(f"cannot reach {where}: {e.strerror or e}") from e
        try:
            channel = await open_channel(reader, writer, self._key, initiator=True,
                                         local_payload=self.hello(), handshake_timeout=timeout)
            hello = parse_hello(channel.remote_payload)
        except (SessionError, ValueError, ConnectionError, TimeoutError) as e:
            writer.close()
            raise HandshakeFailed(f"secure handshake with {where} failed: {e}") from e
        try:
            self._check_mesh(hello, f"the agent at {where}")
        except MeshMismatch:
            await channel.close()
            raise
        if self._is_self(channel, hello):
            await channel.close()
            raise SelfConnection(f"{where} is this agent")
        conn = self._register(channel, hello, outgoing=True, address=address)
        self._spawn(self._serve(conn), "conn")
        return conn

    def attach_channel(self, channel: Channel, *, outgoing: bool, transport: str,
                       rssi: int | None = None) -> PeerConnection:
        """Run the peer protocol over an authenticated channel from any link (e.g. BLE).

        *channel* has the SecureChannel surface. Raises ValueError for a malformed hello and
        :class:`MeshMismatch` (a ValueError) for a peer of another mesh; the caller closes.
        """
        hello = parse_hello(channel.remote_payload)
        self._check_mesh(hello, f"the {transport} peer {hello.get('name', '?')!r}")
        conn = self._register(channel, hello, outgoing=outgoing, address=None,
                              transport=transport)
        self.peers.upsert(conn.peer_id, source=transport, name=conn.name, rssi=rssi)
        self._spawn(self._serve(conn), f"{transport}-conn")
        return conn

    def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._running:
            writer.close()
            return
        self._spawn(self._accept(reader, writer), "accept")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            channel = await open_channel(
                reader, writer, self._key, initiator=False, local_payload=self.hello(),
                handshake_timeout=self.cfg.connect_timeout)
            hello = parse_hello(channel.remote_payload)
        except (SessionError, ValueError, ConnectionError, TimeoutError) as e:
            log.info("handshake failed", extra=kv(addr=peer, reason=e))
            writer.close()
            return
        try:
            self._check_mesh(hello, f"the agent at {peer[0]}:{peer[1]}" if peer else "a peer")
        except MeshMismatch as e:
            log.info("session refused", extra=kv(addr=peer, reason=e))
            await channel.close()
            return
        if self._is_self(channel, hello):  # we dialled ourselves: the dialler says so
            await channel.close()
            return
        port = hello.get("port")
        address = (peer[0], int(port) if isinstance(port, int) and port else int(peer[1])) \
            if peer else None
        conn = self._register(channel, hello, outgoing=False, address=address)
        await self._serve(conn)

    def _is_self(self, channel: Channel, hello: dict[str, object]) -> bool:
        return peer_device_id(channel.remote_static, hello) == self.device_id

    def _register(self, channel: Channel, hello: dict[str, object], *, outgoing: bool,
                  address: tuple[str, int] | None, transport: str = "lan") -> PeerConnection:
        peer_key = channel.remote_static
        peer_id = peer_device_id(peer_key, hello)
        # a device paired under its v1 ID moves to its v2 ID (same X25519 key, proved)
        self._trust.recognise(peer_id, peer_key, signing_key_of(hello))
        conn = PeerConnection(
            channel, peer_id=peer_id, peer_key=peer_key, hello=hello,
            handler=self._handler, on_event=self._on_event, outgoing=outgoing,
            address=address, transport=transport)
        self._conns.add(conn)
        info = self.peers.attach(conn)
        if address is not None:
            info.addresses[address] = self._clock()
        log.info("session established", extra=kv(
            peer=conn.name, id=format_device_id(conn.peer_id)[:9], addr=address,
            direction="out" if outgoing else "in",
            trusted=self._trust.is_trusted(conn.peer_id)))
        self._limit_untrusted(conn)
        for listener in self._opened_listeners:
            listener(conn)
        return conn

    def _limit_untrusted(self, newest: PeerConnection) -> None:
        """Close the least recently heard-from unpaired sessions beyond the cap."""
        strangers = [c for c in self._conns if not c.closed.is_set()
                     and not self._trust.is_trusted(c.peer_id)]
        excess = len(strangers) - self.max_untrusted_sessions
        older = sorted((c for c in strangers if c is not newest), key=lambda c: c.last_seen)
        for c in older[:max(0, excess)]:
            log.info("closing unpaired session", extra=kv(peer=c.name, reason="too many"))
            self._spawn(c.close("too many unpaired sessions"), "close")

    async def _serve(self, conn: PeerConnection) -> None:
        try:
            await conn.serve()
        finally:
            self._conns.discard(conn)
            self.peers.detach(conn)
            rest = [c for c in self._conns
                    if c.peer_id == conn.peer_id and not c.closed.is_set()]
            if rest:
                # Still connected (a twin from simultaneous dials, BLE, a relay): the best
                # remaining session becomes the primary, so it is heartbeated and shown. Else
                # a twin outliving its primary was never checked, the peer showed as offline
                # and no redial replaced it (seen after a partition healed).
                self.peers.attach(min(rest, key=lambda c: c.transport != "lan"))
            for listener in self._closed_listeners:
                await listener(conn)
            log.info("session closed", extra=kv(peer=conn.name, reason=conn.close_reason))

    # ----------------------------------------------------------------- liveness
    def check(self) -> None:
        """Heartbeat live sessions, mark silent peers unreachable, redial known ones."""
        now = self._clock()
        timeout = self.cfg.peer_timeout
        for info in self.peers.all():
            conn = info.connection
            if conn is None or conn.closed.is_set():
                info.reachable = False
                continue
            if now - conn.last_seen > timeout:
                info.reachable = False
                log.info("peer unreachable", extra=kv(peer=info.name))
                self._spawn(conn.close("heartbeat timeout"), "close")
                continue
            info.reachable = True
            self._spawn(self._heartbeat(conn), "heartbeat")
        for short_id in list(self._lan_seen):
            self._maybe_dial(short_id)

    async def _heartbeat(self, conn: PeerConnection) -> None:
        with contextlib.suppress(PeerGone, ConnectionError, TimeoutError, RemoteError):
            rtt = await conn.ping(timeout=self.cfg.peer_timeout)
            info = self.peers.get(conn.peer_id)
            if info is not None:
                info.rtt = rtt

    # ----------------------------------------------------------------- mDNS dialling
    async def _start_discovery(self) -> None:
        assert self.lan_port is not None
        try:
            self.discovery = LanDiscovery(
                self.name, self.short_id, self.lan_port, WIRE_VERSION,
                interfaces=self.cfg.interfaces, include_loopback=self.cfg.include_loopback,
                mesh=self.mesh, on_event=self._on_lan_event)
            await self.discovery.start()
        except (OSError, ValueError) as e:  # no usable interface must not stop the agent
            log.warning("mDNS discovery unavailable", extra=kv(reason=e))
            self.discovery = None

    async def _on_lan_event(self, event: LanPeerSeen | LanPeerGone) -> None:
        if isinstance(event, LanPeerGone):
            self._lan_seen.pop(event.short_id, None)
            return
        first = self._lan_seen.get(event.short_id, (event, self._clock()))[1]
        self._lan_seen[event.short_id] = (event, first)
        log.debug("mdns peer seen", extra=kv(peer=event.name, addrs=event.addresses,
                                             port=event.port))
        self._dial_state.pop(event.short_id, None)  # fresh news: retry at once
        self._maybe_dial(event.short_id)

    def _maybe_dial(self, short_id: str) -> None:
        """Open a session to a peer found by mDNS, once, with backoff on failure.

        Both sides see each other at about the same time; the one with the smaller ID dials
        first and the other waits a moment, so usually only one session is opened.
        """
        if not self._running or short_id in self._dialing:
            return
        # A relayed session (agent/relay) never stands in for a direct one: a neighbour the
        # mesh reached through others before mDNS found it is dialled all the same (else
        # its traffic keeps crossing relays while a LAN link is there).
        if any(c.peer_id.hex().startswith(short_id) and c.transport != "relay"
               for c in self.sessions()):
            return
        entry = self._lan_seen.get(short_id)
        if entry is None:
            return
        now = self._clock()
        fails, next_try = self._dial_state.get(short_id, (0, 0.0))
        if now < next_try:
            return
        if self.short_id > short_id and now - entry[1] < DIAL_GRACE and fails == 0:
            # the other side dials first; look again once the grace is over
            asyncio.get_running_loop().call_later(
                DIAL_GRACE - (now - entry[1]) + 0.01, self._maybe_dial, short_id)
            return
        self._dialing.add(short_id)
        self._spawn(self._dial(short_id, entry[0]), "dial")

    async def _dial(self, short_id: str, seen: LanPeerSeen) -> None:
        try:
            for addr in seen.addresses:
                try:
                    conn = await self.connect((addr, seen.port), expect=short_id)
                except Unreachable as e:
                    log.debug("dial failed", extra=kv(peer=seen.name, addr=addr, reason=e))
                    continue
                if not conn.peer_id.hex().startswith(short_id):
                    # a stale record: another (valid) device answers there now; keep its
                    # session and forget the record until mDNS announces it again
                    log.info("stale mDNS record", extra=kv(
                        advertised=short_id, actual=conn.peer_id.hex()[:16], addr=addr))
                    self._lan_seen.pop(short_id, None)
                    return
                self.peers.upsert(conn.peer_id, source="mdns", name=seen.name)
                self._dial_state.pop(short_id, None)
                return
            fails = self._dial_state.get(short_id, (0, 0.0))[0] + 1
            self._dial_state[short_id] = (
                fails, self._clock() + min(DIAL_BACKOFF_MAX, 0.5 * 2**fails))
        finally:
            self._dialing.discard(short_id)
