"""In-process peers for the unit tests of the peer subsystems (imported as a plain module).

A :class:`Peer` is the slice of a node those tests need: a real identity, trust store,
peer table, router and :class:`Connections` listening on 127.0.0.1 (mDNS off), plus a
:class:`PairingService` on a controllable wall clock. Everything is real and in-process;
only time is faked where a test needs to move it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from waiting import wait_until  # noqa: F401  (re-exported to the tests)

from agent.config import LanConfig
from agent.peer.connection import PeerConnection
from agent.peer.connections import Connections
from agent.peer.hello import make_hello
from agent.peer.pairing import PairingService
from agent.peer.router import Router
from agent.peer.table import PeerTable
from agent.peer.unpair import UnpairService
from agent.security.identity import Identity
from agent.security.pairing import PairingBook
from agent.security.session import Buffer, SessionError
from agent.security.trust import TrustStore

LOOPBACK_LAN = LanConfig(listen="127.0.0.1", port=0, mdns=False, connect_timeout=5.0)
GUARD = 10.0  # hang guard for asyncio.wait_for; never a timing assertion


class FakeClock:
    """A clock that moves only when told (starts at the real value so that it can be
    compared with timestamps taken by code that reads time.monotonic / time.time)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.monotonic() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Spawner:
    """The node's guarded spawn for tests: remembers what failed instead of logging it."""

    EXPECTED = (ConnectionError, OSError, TimeoutError, SessionError)

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[object]] = set()
        self.failures: list[tuple[str, BaseException]] = []

    def __call__(self, coro: Coroutine[Any, Any, object], name: str) -> asyncio.Task[object]:
        task = asyncio.get_running_loop().create_task(self._guarded(coro, name))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _guarded(self, coro: Coroutine[Any, Any, object], name: str) -> object:
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.failures.append((name, e))
        return None

    def unexpected(self) -> list[tuple[str, BaseException]]:
        return [(n, e) for n, e in self.failures if not isinstance(e, self.EXPECTED)]

    async def close(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@dataclass
class Peer:
    name: str
    identity: Identity
    data_dir: Path
    trust: TrustStore
    peers: PeerTable
    router: Router
    conns: Connections
    pairing: PairingService
    spawner: Spawner
    clock: FakeClock
    wall: FakeClock
    unpair: UnpairService
    closed: list[PeerConnection] = field(default_factory=list)

    @property
    def hex(self) -> str:
        return self.identity.device_id.hex()

    @property
    def short(self) -> str:
        return self.hex[:16]

    @property
    def address(self) -> tuple[str, int]:
        assert self.conns.lan_port is not None
        return ("127.0.0.1", self.conns.lan_port)

    async def stop(self) -> None:
        await self.conns.stop(2.0)
        await self.spawner.close()


def ordered_identities(n: int) -> list[Identity]:
    """*n* fresh identities sorted by device ID (who dials first is decided by the order)."""
    return sorted((Identity.generate() for _ in range(n)), key=lambda i: i.device_id)


def current_mesh() -> str:
    """The running test's mesh ID ($SHOAL_MESH, fresh per test: tests/conftest.py)."""
    return os.environ["SHOAL_MESH"]


def make_peer(tmp_path: Path, name: str, *, identity: Identity | None = None,
              lan: LanConfig = LOOPBACK_LAN, window_seconds: float = 60.0,
              max_pending: int = 4, wire_pairing: bool = True,
              mesh: str | None = None) -> Peer:
    data_dir = tmp_path / name
    data_dir.mkdir(parents=True, exist_ok=True)
    identity = identity or Identity.generate()
    trust = TrustStore(data_dir)
    peers = PeerTable(is_trusted=trust.is_trusted)
    router = Router()
    spawner = Spawner()
    clock = FakeClock()
    wall = FakeClock(time.time())
    conns = Connections(
        static_key=identity.private_key, device_id=identity.device_id, name=name, lan=lan,
        signing_key=identity.signing_public, mesh=mesh or current_mesh(),
        peers=peers, trust=trust,
        handler=router.handle, on_event=router.event, spawn=spawner, clock=clock)
    pairing = PairingService(PairingBook(window_seconds, max_pending), trust, name,
                             wall_clock=wall)
    unpair = UnpairService(trust, peers, conns.sessions, spawner, data_dir)
    conns.on_opened(unpair.session_opened)
    peer = Peer(name, identity, data_dir, trust, peers, router, conns, pairing, spawner,
                clock, wall, unpair)

    async def remember(conn: PeerConnection) -> None:
        peer.closed.append(conn)

    conns.on_closed(remember)
    if wire_pairing:
        conns.on_closed(pairing.connection_closed)
    router.add_requests(conns.handlers())
    router.add_requests(pairing.handlers())
    router.add_requests(unpair.handlers())
    return peer


def hello(name: str = "fake", port: int = 0, signing_key: bytes | None = None,
          mesh: str | None = None) -> bytes:
    """A peer's hello; with *signing_key* it announces the Ed25519 half of a v2 device ID.
    In the test's mesh unless *mesh* says otherwise."""
    return make_hello(name, port, signing_key, mesh or current_mesh())


class MemoryChannel:
    """One end of an in-memory authenticated channel (what a BLE link hands to
    ``attach_channel``): the fake for the costly radio, with the SecureChannel surface."""

    def __init__(self, remote_static: bytes, remote_payload: bytes, handshake_hash: bytes
                 ) -> None:
        self.remote_static = remote_static
        self.remote_payload = remote_payload
        self.handshake_hash = handshake_hash
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.other: MemoryChannel | None = None
        self.is_closed = False

    async def send(self, payload: bytes) -> None:
        if self.is_closed or self.other is None or self.other.is_closed:
            raise ConnectionError("memory channel closed")
        self.other.inbox.put_nowait(bytes(payload))

    async def send_parts(self, parts: Sequence[Buffer]) -> None:
        await self.send(b"".join(parts))

    async def recv(self) -> bytes:
        if self.is_closed:
            raise ConnectionError("memory channel closed")
        item = await self.inbox.get()
        if item is None:
            raise ConnectionError("memory channel closed by peer")
        return item

    async def close(self) -> None:
        if self.is_closed:
            return
        self.is_closed = True
        self.inbox.put_nowait(None)
        if self.other is not None:
            self.other.inbox.put_nowait(None)


def memory_pair(a: Peer, b: Peer, *, a_hello: bytes | None = None,
                b_hello: bytes | None = None) -> tuple[MemoryChannel, MemoryChannel]:
    """Channels for a session between *a* and *b*: (a's end, b's end)."""
    h = os.urandom(32)
    end_a = MemoryChannel(b.identity.public_key,
                          b_hello or hello(b.name, signing_key=b.identity.signing_public), h)
    end_b = MemoryChannel(a.identity.public_key,
                          a_hello or hello(a.name, signing_key=a.identity.signing_public), h)
    end_a.other, end_b.other = end_b, end_a
    return end_a, end_b


def closed_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
