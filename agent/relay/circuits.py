"""The relay's pure core: which circuits exist, who may open one, where it goes, and what a
frame means. No I/O and no asyncio, so every rule is tested without sessions.

A *circuit* carries one end-to-end Noise session between an origin and a target across at
most :data:`agent.peer.wire.MAX_RELAYS` paired intermediates. Each session it crosses is a
*hop*, numbered by the side that opened it (``cid``), so a hop is ``(link, cid, opened_here)``
and the two sides of one session never collide in their numbering. A relay joins two hops;
an end (origin or target) holds one.

Why the rules are here: a relay must never become a way around trust or a way to spend
someone's memory. So: forward only between paired neighbours (configurable), refuse when
the hop budget (ttl) is spent, refuse a circuit nonce already carried (a loop), bound
circuits in total and per neighbour, close what stays idle, and judge every frame
(type, size, credit) before anything is forwarded; a bad frame ends its circuit only.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from agent.errors import ErrorKind
from agent.peer import wire

L = TypeVar("L", bound=Hashable)

_CREDIT = struct.Struct(">I")
#: Frames a relay holds queued for one circuit direction before it calls it a flood: the
#: window in full-size frames, plus credits and slack for the frame on the wire.
MAX_QUEUED_FRAMES = wire.RELAY_WINDOW // 1024
#: Bytes queued for one circuit direction before the relay calls it a flood: an honest end
#: never has more than the window (plus the frame that crossed it) in flight.
MAX_QUEUED_BYTES = wire.RELAY_WINDOW + 2 * wire.RELAY_MAX_DATA


class BadFrame(ValueError):
    """A circuit frame that breaks the rules: its circuit ends, the session stays."""


@dataclass(frozen=True)
class Frame:
    """A judged frame: ``kind`` is ``data``, ``credit`` or ``close``."""

    kind: str
    from_opener: bool
    credit: int = 0


def judge(flags: int, data: memoryview) -> Frame:
    """What a received frame is, or :class:`BadFrame`. Data: 1..RELAY_MAX_DATA bytes;
    credit: one u32 in 1..2*RELAY_WINDOW; close: empty; reserved bits: never."""
    if flags & ~(wire.RELAY_FROM_OPENER | wire.RELAY_TYPE_MASK):
        raise BadFrame(f"reserved relay flags set (0x{flags:02x})")
    opener = bool(flags & wire.RELAY_FROM_OPENER)
    kind = flags & wire.RELAY_TYPE_MASK
    n = data.nbytes
    if kind == wire.RELAY_DATA:
        if not 0 < n <= wire.RELAY_MAX_DATA:
            raise BadFrame(f"relay data frame of {n} bytes")
        return Frame("data", opener)
    if kind == wire.RELAY_CREDIT:
        if n != _CREDIT.size:
            raise BadFrame("relay credit frame of the wrong size")
        (credit,) = _CREDIT.unpack(data)
        if not 0 < credit <= 2 * wire.RELAY_WINDOW:
            raise BadFrame(f"relay credit {credit} out of range")
        return Frame("credit", opener, credit)
    if kind == wire.RELAY_CLOSE:
        if n:
            raise BadFrame("relay close frame with a payload")
        return Frame("close", opener)
    raise BadFrame(f"unknown relay frame type 0x{kind:02x}")


def credit_payload(n: int) -> bytes:
    return _CREDIT.pack(n)


@dataclass(frozen=True)
class Hop(Generic[L]):
    """One session a circuit crosses: ``link`` is the session, ``cid`` the number its
    opener gave the circuit on it, ``opened_here`` whether this device opened it."""

    link: L
    cid: int
    opened_here: bool

    def flags(self, kind: int) -> int:
        """The flags of a frame this device sends on this hop."""
        return kind | (wire.RELAY_FROM_OPENER if self.opened_here else 0)


@dataclass(eq=False)
class Circuit(Generic[L]):
    """A circuit as this device sees it: one hop (an end) or two (a relay)."""

    nonce: bytes
    inbound: Hop[L]  # toward the origin (at the origin: its only hop)
    neighbour: bytes  # the device on the inbound hop (whose per-peer budget it uses)
    outbound: Hop[L] | None = None  # toward the target (relays only)
    last_active: float = 0.0
    opening: bool = True
    end: object = None  # at an end: the service's channel object
    queued: dict[bool, list[int]] = field(default_factory=lambda: {True: [0, 0],
                                                                   False: [0, 0]})

    @property
    def is_relay(self) -> bool:
        return self.end is None

    def hops(self) -> Iterator[Hop[L]]:
        yield self.inbound
        if self.outbound is not None:
            yield self.outbound

    def other(self, hop: Hop[L]) -> Hop[L] | None:
        """The hop a frame arriving on *hop* goes out on (relays only)."""
        if hop == self.inbound:
            return self.outbound
        return self.inbound


@dataclass(frozen=True)
class Limits:
    max_circuits: int = 32
    max_per_peer: int = 8
    idle_timeout: float = 120.0
    max_relays: int = wire.MAX_RELAYS


@dataclass(frozen=True)
class Refusal:
    """Why a relay-open is refused, with the kind the opener may act on."""

    kind: ErrorKind
    reason: str


@dataclass(frozen=True)
class Forward:
    """Forward the circuit to ``next_peer`` (a live direct neighbour)."""

    next_peer: bytes


@dataclass(frozen=True)
class Terminate:
    """This device is the target: run the end-to-end handshake here."""


def route(*, me: bytes, target: bytes, ttl: int, from_peer: bytes, from_trusted: bool,
          paired_only: bool, forward: bool, direct: Callable[[bytes], bool],
          next_hop: Callable[[bytes], bytes | None] | None,
          trusted: Callable[[bytes], bool]) -> Forward | Terminate | Refusal:
    """Where a circuit asked of this device goes.

    *direct(peer)*: a live direct (non-relayed) session to *peer* exists. *next_hop*: the
    resolver (the DHT's introducer) for a target that is not a neighbour; None = direct only.
    """
    if paired_only and not from_trusted:
        return Refusal(ErrorKind.UNTRUSTED, "relay circuits are carried for paired devices only")
    if target == me:
        return Terminate()
    if not forward:
        return Refusal(ErrorKind.REFUSED, "this device does not relay")
    if ttl <= 0:
        return Refusal(ErrorKind.REFUSED, "relay hop limit reached (ttl)")
    if target == from_peer:
        return Refusal(ErrorKind.REFUSED, "relay loop: the target is the previous hop")
    nxt: bytes | None = target if direct(target) else None
    if nxt is None and next_hop is not None:
        hop = next_hop(target)
        nxt = hop if hop is not None and hop not in (me, from_peer) and direct(hop) else None
    if nxt is None:
        return Refusal(ErrorKind.UNREACHABLE, "no route to the target from this relay")
    if paired_only and not trusted(nxt):
        return Refusal(ErrorKind.UNTRUSTED, "the next hop is not paired with this relay")
    return Forward(nxt)


class CircuitTable(Generic[L]):
    """Every circuit this device holds, found by hop; bounded; idle ones named for closing."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._by_hop: dict[tuple[L, int, bool], Circuit[L]] = {}
        self._all: dict[int, Circuit[L]] = {}
        self._nonces: set[bytes] = set()
        self._per_peer: dict[bytes, int] = {}
        self._next_cid: dict[L, int] = {}
        self.refused = 0
        self.closed_bad = 0

    def __len__(self) -> int:
        return len(self._all)

    def circuits(self) -> list[Circuit[L]]:
        return list(self._all.values())

    def holds(self, circuit: Circuit[L]) -> bool:
        return id(circuit) in self._all

    def carrying(self, nonce: bytes) -> bool:
        return nonce in self._nonces

    def admit(self, neighbour: bytes, nonce: bytes, *, own: bool = False) -> Refusal | None:
        """May one more circuit from *neighbour* be held? None = yes. *own*: this device
        opens it (only the total bounds those)."""
        if nonce in self._nonces:
            return Refusal(ErrorKind.REFUSED, "relay loop: this circuit already passes here")
        if len(self._all) >= self.limits.max_circuits:
            return Refusal(ErrorKind.REFUSED, "too many relay circuits here")
        if not own and self._per_peer.get(neighbour, 0) >= self.limits.max_per_peer:
            return Refusal(ErrorKind.REFUSED, "too many relay circuits from this device")
        return None

    def new_cid(self, link: L) -> int:
        """A circuit number for a hop this device opens on *link* (unused there)."""
        cid = self._next_cid.get(link, 0)
        while True:
            cid = cid % (2**32 - 1) + 1
            if (link, cid, True) not in self._by_hop:
                self._next_cid[link] = cid
                return cid

    def add(self, circuit: Circuit[L], now: float) -> None:
        """Hold *circuit* (an end, or a relay's inbound hop until :meth:`join`)."""
        h = circuit.inbound
        key = (h.link, h.cid, h.opened_here)
        if key in self._by_hop:
            raise ValueError("circuit id already in use on this link")
        circuit.last_active = now
        self._by_hop[key] = circuit
        self._all[id(circuit)] = circuit
        self._nonces.add(circuit.nonce)
        self._per_peer[circuit.neighbour] = self._per_peer.get(circuit.neighbour, 0) + 1

    def join(self, circuit: Circuit[L], outbound: Hop[L], now: float) -> None:
        """A relay's circuit now reaches on to *outbound*."""
        circuit.outbound = outbound
        self._by_hop[(outbound.link, outbound.cid, outbound.opened_here)] = circuit
        circuit.opening = False
        circuit.last_active = now

    def has_hop(self, link: L, cid: int, opened_here: bool) -> bool:
        return (link, cid, opened_here) in self._by_hop

    def lookup(self, link: L, cid: int, from_opener: bool) -> tuple[Circuit[L], Hop[L]] | None:
        """The circuit and hop a frame received on *link* belongs to (a frame from the
        hop's opener arrives on a hop opened *there*)."""
        c = self._by_hop.get((link, cid, not from_opener))
        if c is None:
            return None
        hop = next(h for h in c.hops() if h.link == link and h.cid == cid
                   and h.opened_here == (not from_opener))
        return c, hop

    def remove(self, circuit: Circuit[L]) -> bool:
        """Forget *circuit*; False if it was already gone."""
        if self._all.pop(id(circuit), None) is None:
            return False
        for h in circuit.hops():
            if self._by_hop.get((h.link, h.cid, h.opened_here)) is circuit:
                del self._by_hop[(h.link, h.cid, h.opened_here)]
        self._nonces.discard(circuit.nonce)
        left = self._per_peer.get(circuit.neighbour, 0) - 1
        if left > 0:
            self._per_peer[circuit.neighbour] = left
        else:
            self._per_peer.pop(circuit.neighbour, None)
        return True

    def on_link(self, link: L) -> list[Circuit[L]]:
        """Circuits that cross *link* (all of them end when it does)."""
        return [c for c in self._all.values() if any(h.link == link for h in c.hops())]

    def forget_link(self, link: L) -> None:
        self._next_cid.pop(link, None)

    def idle(self, now: float) -> list[Circuit[L]]:
        """Circuits with no frame for ``idle_timeout`` (opening ones count too)."""
        limit = self.limits.idle_timeout
        return [c for c in self._all.values() if now - c.last_active > limit]

    def enqueue(self, circuit: Circuit[L], toward_target: bool, nbytes: int) -> bool:
        """Count a frame queued for forwarding; False = the sender ignores flow control
        (the circuit must end)."""
        q = circuit.queued[toward_target]
        q[0] += 1
        q[1] += nbytes
        return q[0] <= MAX_QUEUED_FRAMES and q[1] <= MAX_QUEUED_BYTES

    def dequeue(self, circuit: Circuit[L], toward_target: bool, nbytes: int) -> None:
        q = circuit.queued[toward_target]
        q[0] -= 1
        q[1] -= nbytes

    def stats(self) -> dict[str, int]:
        relays = sum(1 for c in self._all.values() if c.is_relay)
        return {"circuits": len(self._all), "forwarding": relays,
                "ends": len(self._all) - relays, "refused": self.refused,
                "closed_bad_frames": self.closed_bad}
