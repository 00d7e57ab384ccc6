"""The relay service: multi-hop reach through paired intermediates, over live sessions.

``open(target, via)`` gives a :class:`~agent.ports.PeerLink` to a device this one has no
link to. It asks *via* (a live direct neighbour; else the injected ``next_hop`` resolver's
answer) to open a circuit toward *target* (request ``relay-open``); each relay forwards it
to the target if it has a direct session to it, else to ``next_hop(target)``, spending one
unit of ttl (at most :data:`~agent.peer.wire.MAX_RELAYS` relays). Inside the circuit the two
ends run a full Noise XX session (agent/relay/channel.py) with their own identity keys and
hello, and the result joins ``Connections`` as transport ``relay``: fetch, follow, authority
and every other service use it like any session, and the target applies *its own* trust to
the origin it authenticated, exactly as for a direct session.

A relay sees circuit frames only (ciphertext, credit, close). It forwards them in order per
circuit direction, through the bandwidth gate in the ``relay`` class (counted and shared
with this device's own traffic), passing the received views on (no copy here: the session
layer's encryption is the one copy). Every rule on who may open what, and what a frame may
be, is the pure core's (agent/relay/circuits.py); this module only does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from agent.errors import ErrorKind, ShoalError
from agent.log import kv
from agent.peer import wire
from agent.peer.connection import PeerConnection, PeerGone, Refused, RemoteError
from agent.relay.channel import RelayChannel, new_connection
from agent.relay.circuits import (
    BadFrame,
    Circuit,
    CircuitTable,
    Forward,
    Hop,
    Limits,
    Refusal,
    judge,
    route,
)
from agent.security.identity import short_device_id
from agent.security.session import Buffer, SessionError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from agent.bandwidth import BandwidthGate
    from agent.config import RelayConfig
    from agent.ports import Clock, Spawner, TrustView

log = logging.getLogger("shoal.relay")

#: The only transport a circuit hop runs over: relayed data is bulk (BLE carries none),
#: and a circuit inside a relayed session would nest Noise a third time.
HOP_TRANSPORT = "lan"
TRANSPORT = "relay"
TRAFFIC_CLASS = "relay"

NextHop = Callable[[bytes], "bytes | None"]


class RelayRefused(Refused):
    """A relay (or the target) refused the circuit: limits, hop budget, loop."""

    kind = ErrorKind.REFUSED


class RelayUntrusted(Refused):
    """The circuit would cross a device that is not paired with its neighbour."""

    kind = ErrorKind.UNTRUSTED


class NoRoute(Refused):
    """No live neighbour leads toward the target."""

    kind = ErrorKind.UNREACHABLE


class RelayFailed(ShoalError):
    """The circuit opened but the end-to-end session did not (or reached someone else)."""

    kind = ErrorKind.UNREACHABLE


def _refusal(kind: ErrorKind | None, message: str) -> Refused:
    if kind == ErrorKind.UNTRUSTED:
        return RelayUntrusted(message)
    if kind == ErrorKind.UNREACHABLE:
        return NoRoute(message)
    return RelayRefused(message)


class RelayConnections(Protocol):
    """What the relay needs of ``peer.connections.Connections``."""

    def sessions(self) -> list[PeerConnection]: ...

    def live_connections(self) -> Sequence[PeerConnection]: ...

    def attach_channel(self, channel: Any, *, outgoing: bool, transport: str,
                       rssi: int | None = None) -> PeerConnection: ...

    def hello(self) -> bytes: ...


class RelayService:
    """Opens circuits for this device, ends circuits aimed at it, forwards for neighbours."""

    def __init__(self, cfg: RelayConfig, *, me: bytes, static_key: X25519PrivateKey,
                 connections: RelayConnections, trust: TrustView, gate: BandwidthGate,
                 spawn: Spawner, next_hop: NextHop | None = None,
                 clock: Clock = time.monotonic) -> None:
        self.cfg = cfg
        self._me = me
        self._key = static_key
        self._connections = connections
        self._trust = trust
        self._gate = gate
        self._spawn = spawn
        self._next_hop = next_hop
        self._route_stats: Callable[[], dict[str, object]] | None = None
        self._clock = clock
        self.table: CircuitTable[PeerConnection] = CircuitTable(Limits(
            cfg.max_circuits, cfg.max_per_peer, cfg.idle_timeout, cfg.max_relays))
        self._queues: dict[tuple[int, bool], deque[tuple[Hop[PeerConnection], int,
                                                         memoryview]]] = {}
        self._opening: dict[bytes, asyncio.Lock] = {}
        self.forwarded_bytes = 0
        self.opened = 0
        self.accepted = 0

    # ----------------------------------------------------------------- wiring
    def handlers(self) -> dict[str, Any]:
        return {"relay-open": self._on_open}

    def set_next_hop(self, next_hop: NextHop | None,
                     routes: Callable[[], dict[str, object]] | None = None) -> None:
        """The resolver for targets that are not neighbours (the route table, then the
        DHT's introducers); *routes* reports the route table in :meth:`stats`."""
        self._next_hop = next_hop
        if routes is not None:
            self._route_stats = routes

    async def connection_closed(self, conn: PeerConnection) -> None:
        """A session ended: every circuit crossing it ends, promptly, on both sides."""
        for c in self.table.on_link(conn):
            self._kill(c, f"relay link to {conn.name} lost", dead=conn)
        self.table.forget_link(conn)

    def unpaired(self, peer_id: bytes) -> None:
        """A neighbour is no longer paired: the circuits it takes part in as a neighbour
        end now (a relayed session that merely ends there is the target's trust to judge,
        session by session, like a direct one)."""
        if not self.cfg.paired_only:
            return
        for c in self.table.circuits():
            if c.is_relay and any(h.link.peer_id == peer_id for h in c.hops()):
                self._kill(c, "a neighbour was unpaired")

    def session_opened(self, conn: PeerConnection) -> None:
        """A direct LAN session supersedes a relayed one to the same device."""
        if conn.transport != HOP_TRANSPORT:
            return
        for s in self._connections.sessions():
            if s.transport == TRANSPORT and s.peer_id == conn.peer_id:
                self._spawn(s.close("a direct session replaced the relayed one"), "relay-close")

    async def run(self) -> None:
        """Close idle circuits (a relayed session's heartbeats keep a used one active)."""
        interval = max(0.5, min(5.0, self.cfg.idle_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            self.tick()

    def tick(self) -> None:
        for c in self.table.idle(self._clock()):
            self._kill(c, "idle")

    def stats(self) -> dict[str, object]:
        released = self._gate.scheduler.released_bytes.get(TRAFFIC_CLASS, 0)
        return {**self.table.stats(), "forwarded_bytes": self.forwarded_bytes,
                "relay_class_bytes": released, "opened": self.opened,
                "accepted": self.accepted, "forward": self.cfg.forward,
                "paired_only": self.cfg.paired_only,
                "routes": self._route_stats() if self._route_stats is not None else None}

    # ----------------------------------------------------------------- the origin
    async def open(self, target: bytes, via: bytes | None = None, *,
                   max_relays: int | None = None) -> PeerConnection:
        """A live session to *target*: an existing one, else a relayed one through *via*
        (a live direct neighbour), else through ``next_hop(target)``. Raises NoRoute,
        RelayRefused, RelayUntrusted (a relay's refusal, as its kind) or RelayFailed."""
        if target == self._me:
            raise RelayFailed("a device cannot open a relayed session to itself")
        lock = self._opening.setdefault(target, asyncio.Lock())
        try:
            async with lock:
                live = self._live(target)
                if live is not None:
                    return live
                return await self._open(target, via, max_relays or self.cfg.max_relays)
        finally:
            if not lock.locked():
                self._opening.pop(target, None)

    def _live(self, target: bytes) -> PeerConnection | None:
        for c in self._connections.live_connections():
            if c.peer_id == target and not c.closed.is_set():
                return c
        return None

    def _direct(self, peer: bytes) -> PeerConnection | None:
        for c in self._connections.sessions():
            if c.peer_id == peer and c.transport == HOP_TRANSPORT and not c.closed.is_set():
                return c
        return None

    async def _open(self, target: bytes, via: bytes | None, ttl: int) -> PeerConnection:
        name = short_device_id(target)
        first = via if via is not None else (
            self._next_hop(target) if self._next_hop is not None else None)
        if first is None:
            raise NoRoute(f"{name} is not a neighbour and no relay was given or found")
        link = self._direct(first)
        if link is None:
            raise NoRoute(f"no live direct session to the relay {short_device_id(first)}")
        nonce = os.urandom(16)
        refusal = self.table.admit(self._me, nonce, own=True)
        if refusal is not None:
            raise _refusal(refusal.kind, refusal.reason)
        hop = Hop(link, self.table.new_cid(link), True)
        c: Circuit[PeerConnection] = Circuit(nonce, hop, self._me)
        channel = self._end(c, initiator=True, peer=name)
        self.table.add(c, self._clock())
        try:
            await link.request("relay-open", {"t": target.hex(), "ttl": ttl, "cid": hop.cid,
                                              "n": nonce.hex()},
                               timeout=self.cfg.open_timeout + 1.0)
        except RemoteError as e:
            self._kill(c, "refused", tell=False)
            raise _refusal(e.remote_kind, f"relay via {link.name} refused: {e}") from None
        except (PeerGone, ConnectionError, TimeoutError) as e:
            self._kill(c, "relay-open failed")
            raise NoRoute(f"relay via {link.name} failed: {e}") from None
        c.opening = False
        try:
            await channel.handshake(self.cfg.open_timeout)
            session = self._connections.attach_channel(channel, outgoing=True,
                                                       transport=TRANSPORT)
        except (SessionError, ValueError) as e:
            await channel.close()
            raise RelayFailed(f"relayed session to {name} failed: {e}") from None
        if session.peer_id != target:  # a relay cannot fake the target: Noise proves who
            await session.close("a relayed session reached another device")
            raise RelayFailed(f"the circuit toward {name} reached another device")
        self.opened += 1
        log.info("relayed session open", extra=kv(peer=session.name, via=link.name))
        return session

    # ----------------------------------------------------------------- relays and targets
    async def _on_open(self, conn: PeerConnection, req: wire.Request) -> object:
        args = req.args
        target, ttl, cid = bytes.fromhex(args["t"]), args["ttl"], args["cid"]
        nonce = bytes.fromhex(args["n"])
        if conn.transport != HOP_TRANSPORT:
            raise RelayRefused(f"relay circuits run over {HOP_TRANSPORT} sessions only")
        if self.table.has_hop(conn, cid, False):
            raise RelayRefused("circuit id already in use")
        if self.table.carrying(nonce):  # before the ttl: a loop is named as one
            self.table.refused += 1
            raise RelayRefused("relay loop: this circuit already passes here")
        decision = route(
            me=self._me, target=target, ttl=ttl, from_peer=conn.peer_id,
            from_trusted=self._trust.is_trusted(conn.peer_id),
            paired_only=self.cfg.paired_only, forward=self.cfg.forward,
            direct=lambda p: self._direct(p) is not None, next_hop=self._next_hop,
            trusted=self._trust.is_trusted)
        if isinstance(decision, Refusal):
            self.table.refused += 1
            raise _refusal(decision.kind, decision.reason)
        refusal = self.table.admit(conn.peer_id, nonce)
        if refusal is not None:
            self.table.refused += 1
            raise _refusal(refusal.kind, refusal.reason)
        c: Circuit[PeerConnection] = Circuit(nonce, Hop(conn, cid, False), conn.peer_id)
        if not isinstance(decision, Forward):  # this device is the target
            channel = self._end(c, initiator=False, peer=conn.name)
            c.opening = False
            self.table.add(c, self._clock())
            self._spawn(self._accept(channel), "relay-accept")
            return {}
        nxt = self._direct(decision.next_peer)
        assert nxt is not None  # route() checked, and nothing awaited since
        self.table.add(c, self._clock())
        out = Hop(nxt, self.table.new_cid(nxt), True)
        try:
            await nxt.request("relay-open", {"t": args["t"], "ttl": ttl - 1, "cid": out.cid,
                                             "n": args["n"]}, timeout=self.cfg.open_timeout)
        except RemoteError as e:
            self._kill(c, "refused further on", tell=False)
            raise _refusal(e.remote_kind, f"{nxt.name}: {e}") from None
        except (PeerGone, ConnectionError, TimeoutError) as e:
            self._kill(c, "next hop failed", tell=False)
            raise NoRoute(f"next hop {nxt.name} failed: {e}") from None
        if not self.table.holds(c) or conn.closed.is_set() or nxt.closed.is_set():
            self._kill(c, "a hop closed while opening", tell=False)
            self._spawn(self._send_close(out), "relay-close")
            raise NoRoute("a hop closed while the circuit was opening")
        self.table.join(c, out, self._clock())
        log.debug("relaying", extra=kv(src=conn.name, dst=nxt.name, cid=cid))
        return {}

    async def _accept(self, channel: RelayChannel) -> None:
        """The target's side: the handshake, then the session joins Connections."""
        try:
            await channel.handshake(self.cfg.open_timeout)
            session = self._connections.attach_channel(channel, outgoing=False,
                                                       transport=TRANSPORT)
        except (SessionError, ValueError) as e:
            log.info("relayed session refused", extra=kv(reason=e))
            await channel.close()
            return
        if session.peer_id == self._me:
            await session.close("a relayed session to itself")
            return
        self.accepted += 1
        log.info("relayed session accepted", extra=kv(peer=session.name))

    def _end(self, c: Circuit[PeerConnection], *, initiator: bool, peer: str) -> RelayChannel:
        hop = c.inbound

        async def transmit(kind: int, parts: Sequence[Buffer]) -> None:
            c.last_active = self._clock()
            await hop.link.send_raw((wire.encode_relay_header(hop.cid, hop.flags(kind)),
                                     *parts))

        def closed(channel: RelayChannel, reason: str, tell: bool) -> None:
            self._kill(c, reason, tell=tell)

        conn = new_connection(self._key, initiator=initiator,
                              hello=self._connections.hello())
        channel = RelayChannel(conn, transmit, peer=peer, on_closed=closed)
        c.end = channel
        return channel

    # ----------------------------------------------------------------- frames
    def on_frame(self, conn: PeerConnection, frame: wire.RelayFrame) -> None:
        """A circuit frame from *conn* (the router's frame sink; synchronous)."""
        found = self.table.lookup(conn, frame.cid, bool(frame.flags & wire.RELAY_FROM_OPENER))
        if found is None:
            return  # a circuit that just closed: late frames are dropped
        c, hop = found
        try:
            f = judge(frame.flags, frame.data)
            if c.opening and f.kind != "close":  # (an origin that gave up may close it)
                raise BadFrame("a frame before the circuit opened")
        except BadFrame as e:
            self.table.closed_bad += 1
            log.info("relay frame refused", extra=kv(peer=conn.name, reason=e))
            self._kill(c, f"bad frame: {e}", error=True)
            return
        c.last_active = self._clock()
        end = c.end
        if isinstance(end, RelayChannel):
            if f.kind == "data":
                end.feed(frame.data)
            elif f.kind == "credit":
                end.credit(f.credit)
            else:
                self.table.remove(c)
                end.peer_closed("closed by the far end")
            return
        if f.kind == "close":
            self._kill(c, "closed by an end", dead=conn)
            return
        out = c.other(hop)
        assert out is not None  # (not opening: checked above)
        toward_target = hop == c.inbound
        if not self.table.enqueue(c, toward_target, frame.data.nbytes):
            self.table.closed_bad += 1
            self._kill(c, "a sender ignores flow control", error=True)
            return
        key = (id(c), toward_target)
        q = self._queues.get(key)
        if q is None:
            q = self._queues[key] = deque()
            self._spawn(self._pump(c, key), "relay-pump")
        q.append((out, out.flags(frame.flags & wire.RELAY_TYPE_MASK), frame.data))

    async def _pump(self, c: Circuit[PeerConnection], key: tuple[int, bool]) -> None:
        """Forward one circuit direction's frames in order, each through the gate."""
        q = self._queues[key]
        try:
            while q:
                out, flags, data = q[0]
                n = data.nbytes
                header = wire.encode_relay_header(out.cid, flags)
                try:
                    async with self._gate.permit(out.link.peer_id.hex(), TRAFFIC_CLASS,
                                                 n + len(header)):
                        await out.link.send_raw((header, data))
                except (ConnectionError, OSError):
                    self._kill(c, "next hop lost")
                    return
                finally:
                    self.table.dequeue(c, key[1], n)
                if not q:  # killed while sending: the queue was dropped
                    return
                q.popleft()
                self.forwarded_bytes += n
        finally:
            if self._queues.get(key) is q:
                del self._queues[key]

    def _kill(self, c: Circuit[PeerConnection], reason: str, *, tell: bool = True,
              dead: PeerConnection | None = None, error: bool = False) -> None:
        """End *c*: forget it, drop its queues, tell the hops still up, end its channel."""
        if not self.table.remove(c):
            return
        for toward in (True, False):
            q = self._queues.pop((id(c), toward), None)
            if q is not None:
                q.clear()
        if tell:
            for h in c.hops():
                if h.link is not dead and not h.link.closed.is_set():
                    self._spawn(self._send_close(h), "relay-close")
        if isinstance(c.end, RelayChannel):
            c.end.peer_closed(reason, error=error)
        log.debug("relay circuit closed", extra=kv(reason=reason))

    async def _send_close(self, hop: Hop[PeerConnection]) -> None:
        header = wire.encode_relay_header(hop.cid, hop.flags(wire.RELAY_CLOSE))
        with contextlib.suppress(ConnectionError, OSError):
            await hop.link.send_raw((header,))
