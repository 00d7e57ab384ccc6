"""PeerConnection against a peer that stops reading: no future or task is left failed with
nobody to see it (asyncio would log "... exception was never retrieved" at GC)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence
from typing import Any

import pytest
from peer_helpers import GUARD

from agent.peer import wire
from agent.peer.connection import PeerConnection, PeerGone
from agent.security.session import Buffer

pytestmark = pytest.mark.timeout(30)


class StuckChannel:
    """A channel to a peer that never reads: every send blocks until the channel closes,
    then fails like a reset socket."""

    def __init__(self) -> None:
        self.remote_static = b"k" * 32
        self.handshake_hash = b"h" * 32
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._closed = asyncio.Event()
        self.blocked = 0

    async def send_parts(self, parts: Sequence[Buffer]) -> None:
        self.blocked += 1
        await self._closed.wait()
        raise ConnectionResetError("reset by peer")

    async def recv(self) -> bytes:
        msg = await self.inbox.get()
        if msg is None:
            raise ConnectionError("closed")
        return msg

    async def close(self) -> None:
        self._closed.set()
        self.inbox.put_nowait(None)


def make_conn(channel: StuckChannel, handler: Any = None) -> PeerConnection:
    async def echo(c: PeerConnection, r: wire.Request) -> object:
        return {}

    return PeerConnection(channel, peer_id=b"p" * 32, peer_key=b"k" * 32,
                          hello={"name": "stuck"}, handler=handler or echo, outgoing=True)


@pytest.fixture
async def unretrieved() -> Any:
    """What the loop's exception handler hears of (unretrieved future/task exceptions)."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    old = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
    yield seen
    loop.set_exception_handler(old)


async def test_requests_blocked_on_a_peer_that_stops_reading_leave_nothing_unretrieved(
        unretrieved):
    ch = StuckChannel()
    conn = make_conn(ch)
    serving = asyncio.create_task(conn.serve())
    calls = [asyncio.create_task(conn.request("ping", {"t": 1.0}, timeout=GUARD))
             for _ in range(3)]
    while ch.blocked < 1:  # the first send is stuck; the others wait for the send lock
        await asyncio.sleep(0)
    await conn.close("heartbeat timeout")
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, PeerGone) for r in results)
    await serving
    del calls, results
    gc.collect()
    await asyncio.sleep(0)
    assert unretrieved == []


async def test_a_request_stuck_in_its_send_times_out():
    """The timeout covers the send: the caller hears back though the send never returns."""
    ch = StuckChannel()
    conn = make_conn(ch)
    serving = asyncio.create_task(conn.serve())
    async with asyncio.timeout(GUARD):  # hang guard only
        with pytest.raises(TimeoutError, match="did not answer"):
            await conn.request("ping", {"t": 1.0}, timeout=0.01)
    await conn.close()
    await serving


async def test_a_reply_too_large_to_send_is_answered_with_an_error(unretrieved):
    sent: list[bytes] = []

    class Recording(StuckChannel):
        async def send_parts(self, parts: Sequence[Buffer]) -> None:
            sent.append(b"".join(bytes(p) for p in parts))

    async def huge(c: PeerConnection, r: wire.Request) -> object:
        return "x" * (wire.MAX_JSON + 1)

    ch = Recording()
    conn = make_conn(ch, huge)
    serving = asyncio.create_task(conn.serve())
    ch.inbox.put_nowait(wire.encode_request(9, "list", {}))
    async with asyncio.timeout(GUARD):
        while not sent:
            await asyncio.sleep(0)
    msg = wire.decode(sent[0])
    assert isinstance(msg, wire.Response) and msg.id == 9 and not msg.ok
    await conn.close()
    await serving
    gc.collect()
    await asyncio.sleep(0)
    assert unretrieved == []
