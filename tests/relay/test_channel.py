"""The end-to-end session inside a circuit, over an in-memory hop (no relay, no sockets):
framing by whole records, flow control, and how it ends."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.peer import wire
from agent.relay.channel import (
    RelayChannel,
    RelayChannelClosed,
    RelayCircuitError,
    new_connection,
    pieces,
    whole_records,
)
from agent.relay.circuits import judge
from agent.security.session import Buffer


class Pipe:
    """Two channels joined by frames, recording every frame and whether anyone blocks."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, int, bytes]] = []
        self.credits = True
        self.closed: list[tuple[str, str, bool]] = []
        self.a = self._make("a", initiator=True)
        self.b = self._make("b", initiator=False)

    def _make(self, name: str, initiator: bool) -> RelayChannel:
        async def transmit(kind: int, parts: Sequence[Buffer]) -> None:
            data = b"".join(bytes(p) for p in parts)
            self.frames.append((name, kind, data))
            other = self.b if name == "a" else self.a
            f = judge(kind, memoryview(data))
            if f.kind == "data":
                other.feed(memoryview(data))
            elif self.credits:
                other.credit(f.credit)

        def closed(ch: RelayChannel, reason: str, tell: bool) -> None:
            self.closed.append((name, reason, tell))

        conn = new_connection(X25519PrivateKey.generate(), initiator=initiator,
                              hello=b'{"name":"' + name.encode() + b'"}')
        return RelayChannel(conn, transmit, peer=name, on_closed=closed)

    async def open(self) -> None:
        await asyncio.gather(self.a.handshake(5), self.b.handshake(5))


async def test_messages_cross_in_whole_record_frames() -> None:
    p = Pipe()
    await p.open()
    assert p.a.handshake_hash == p.b.handshake_hash and p.a.remote_payload == b'{"name":"b"}'
    big = os.urandom(3 * 1024 * 1024)
    await p.a.send_parts((b"hdr", memoryview(big)))
    assert await p.b.recv() == b"hdr" + big
    data = [f for f in p.frames if f[1] == wire.RELAY_DATA]
    assert all(0 < len(d) <= wire.RELAY_MAX_DATA and whole_records(memoryview(d))
               for _, _, d in data)
    assert any(f[1] == wire.RELAY_CREDIT for f in p.frames)  # b gave credit back
    assert not any(big[i:i + 64] in d for _, _, d in data for i in (0, 1 << 20))


async def test_a_sender_stops_at_the_window_until_credit_comes() -> None:
    p = Pipe()
    await p.open()
    p.credits = False  # b's credit is lost on the way
    p.frames.clear()
    send = asyncio.ensure_future(p.a.send(os.urandom(2 * wire.RELAY_WINDOW)))
    await asyncio.sleep(0.05)
    sent = sum(len(d) for _, k, d in p.frames if k == wire.RELAY_DATA)
    assert not send.done()
    assert wire.RELAY_WINDOW <= sent < wire.RELAY_WINDOW + wire.RELAY_MAX_DATA
    p.credits = True
    p.a.credit(sent)
    await asyncio.wait_for(send, 5)
    assert len(await p.b.recv()) == 2 * wire.RELAY_WINDOW
    await p.a.close()
    assert p.closed == [("a", "closed locally", True)]


async def test_garbage_or_partial_records_end_the_circuit_with_an_error() -> None:
    p = Pipe()
    await p.open()
    p.b.feed(memoryview(b"\x00\x10" + os.urandom(16)))  # a whole record, not authentic
    with pytest.raises(RelayCircuitError):
        await p.b.recv()
    q = Pipe()
    await q.open()
    q.b.feed(memoryview(b"\x40\x00" + os.urandom(100)))  # claims more than the frame has
    assert q.b.closed.is_set() and q.closed[-1][2] is True  # the far end is told
    with pytest.raises(RelayCircuitError):
        await q.b.send(b"x")


async def test_a_peer_close_ends_reads_cleanly() -> None:
    p = Pipe()
    await p.open()
    await p.a.send(b"last")
    p.b.peer_closed("closed by the far end")
    assert await p.b.recv() == b"last"  # what arrived before the close is still read
    with pytest.raises(RelayChannelClosed):
        await p.b.recv()
    assert p.closed == [("b", "closed by the far end", False)]


def test_pieces_pack_whole_records() -> None:
    recs = [b"\x00\x05hello", bytes([0xFF, 0xE2]) + bytes(65506), b"\x00\x01x"]
    out = bytearray(b"".join(recs))
    got = [bytes(v) for v in pieces(out)]
    assert b"".join(got) == bytes(out)
    assert all(len(g) <= wire.RELAY_MAX_DATA and whole_records(memoryview(g)) for g in got)
    assert len(got) == 2
