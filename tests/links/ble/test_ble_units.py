"""Pure pieces: session messages, rotating tags, the plaintext catalog, endpoint validation,
and the BLE channel's rules (corking, no bulk, bounded input) on an in-memory wire."""

from __future__ import annotations

import asyncio
import json

import pytest
from ble_helpers import fake_record, wait_until
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from agent.links.ble.catalog import build_snapshot
from agent.links.ble.channel import (
    BULK_REFUSAL,
    BleChannelClosed,
    BleSecureChannel,
    new_connection,
)
from agent.links.ble.link import parse_endpoints
from agent.links.ble.messages import (
    MAX_STREAM_CHUNK,
    SessionClose,
    SessionData,
    SessionMessageError,
    decode_session,
    encode_session,
    new_link_id,
)
from agent.links.ble.tag import TagResolver, node_tag, tag_epoch
from agent.peer import wire
from agent.security.session import FrameTooLarge, HandshakeError
from radio.ble import profile as p


# ------------------------------------------------------------------ session messages
@given(st.integers(1, 2**32 - 1), st.binary(min_size=1, max_size=MAX_STREAM_CHUNK))
def test_session_data_round_trips(link_id: int, data: bytes) -> None:
    raw = encode_session(SessionData(link_id, data))
    assert raw[0] == 0x40 and raw[0] >= p.SESSION_TYPES_START
    assert decode_session(raw) == SessionData(link_id, data)


@given(st.binary(max_size=40))
def test_decode_session_rejects_or_parses_any_bytes(raw: bytes) -> None:
    try:
        msg = decode_session(raw)
    except SessionMessageError:
        return
    assert encode_session(msg) == raw


def test_session_message_bounds() -> None:
    assert decode_session(encode_session(SessionClose(7, 1))) == SessionClose(7, 1)
    for bad in (b"", b"\x40\x01\x00\x00\x00", b"\x40\x00\x00\x00\x00x", b"\x41\x01\x00\x00\x00",
                b"\x42\x01\x00\x00\x00x", b"\x40\x01\x00\x00\x00" + b"x" * (MAX_STREAM_CHUNK + 1)):
        with pytest.raises(SessionMessageError):
            decode_session(bad)
    with pytest.raises(SessionMessageError):
        encode_session(SessionData(0, b"x"))
    assert all(0 < new_link_id() < 2**32 for _ in range(100))


# ------------------------------------------------------------------ rotating tags
def test_tags_rotate_per_epoch_and_resolve_only_for_known_devices() -> None:
    dev, other = bytes(range(32)), bytes(32)
    assert len(node_tag(dev, 5)) == 6 and node_tag(dev, 5) != node_tag(dev, 6)
    assert node_tag(dev, 5) != node_tag(other, 5)
    now = [900.0 * 100 + 10]
    resolver = TagResolver(lambda: [dev], clock=lambda: now[0])
    epoch = tag_epoch(now[0])
    assert resolver.current_tag(dev) == node_tag(dev, epoch)
    for e in (epoch - 1, epoch, epoch + 1):  # a peer's clock may be one epoch off
        assert resolver.resolve(node_tag(dev, e)) == dev
    assert resolver.resolve(node_tag(dev, epoch + 2)) is None
    assert resolver.resolve(node_tag(other, epoch)) is None
    resolver.learn(other)
    assert resolver.resolve(node_tag(other, epoch)) == other
    now[0] += 900 * 3  # three epochs later the old tag means nothing
    assert resolver.resolve(node_tag(dev, epoch)) is None


# ------------------------------------------------------------------ plaintext catalog
def test_snapshot_exposes_public_entries_only_and_tracks_changes() -> None:
    dev = bytes(range(32))
    recs = [fake_record(1), fake_record(2, public=False), fake_record(3)]
    snap = build_snapshot(recs, device_id=dev, lan_port=4747, slots=1)
    assert [e.resource_prefix for e in snap.entries] == [
        bytes.fromhex(recs[0].manifest.resource_id)[:8],
        bytes.fromhex(recs[2].manifest.resource_id)[:8]]
    info = snap.nodeinfo
    assert info == p.NodeInfo.decode(info.encode())
    assert (info.catalog_count, info.populated_slots, info.lan_port) == (2, 1, 4747)
    assert info.flags == p.FLAG_LAN | p.FLAG_CATALOG_PAGING and info.device_id == dev[:8]
    assert all(e.generation == snap.generation & 0xFFFF for e in snap.entries)
    same = build_snapshot(list(recs), device_id=dev, lan_port=4747, slots=1)
    assert same.key == snap.key and same.generation == snap.generation  # stable
    recs[1].public = True
    flipped = build_snapshot(recs, device_id=dev, lan_port=4747, slots=1)
    assert flipped.generation != snap.generation and len(flipped.entries) == 3
    no_lan = build_snapshot(recs, device_id=dev, lan_port=None, slots=1)
    assert not no_lan.flags & p.FLAG_LAN and no_lan.key != flipped.key


def test_endpoints_are_validated() -> None:
    good = {"lan": [["127.0.0.1", 47474], ["::1", 1]]}
    assert parse_endpoints(good) == [("127.0.0.1", 47474), ("::1", 1)]
    bad = {"lan": [["evil.example", 80], ["127.0.0.1", 0], ["127.0.0.1", True], ["0.0.0.0", 5],
                   ["224.0.0.1", 5], [1, 2], "x", ["127.0.0.1", 70000]]}
    assert parse_endpoints(bad) == []
    assert parse_endpoints({"lan": [["10.0.0.1", i] for i in range(1, 10)]}) == [
        ("10.0.0.1", i) for i in range(1, 5)]
    assert parse_endpoints(None) == [] and parse_endpoints({"lan": "x"}) == []


# ------------------------------------------------------------------ the channel
class Wire:
    """Two channels joined back to back; records every transmitted session message."""

    def __init__(self) -> None:
        self.sent: dict[str, list[bytes]] = {"i": [], "r": []}
        link = new_link_id()
        self.i = BleSecureChannel(new_connection(X25519PrivateKey.generate(), initiator=True,
                                                 hello=b'{"v":1}'),
                                  self._tx("i"), link_id=link, peer="r")
        self.r = BleSecureChannel(new_connection(X25519PrivateKey.generate(), initiator=False,
                                                 hello=b'{"v":2}'),
                                  self._tx("r"), link_id=link, peer="i")

    def _tx(self, side: str):
        async def transmit(raw: bytes) -> None:
            self.sent[side].append(raw)
            msg = decode_session(raw)
            target = self.r if side == "i" else self.i
            if isinstance(msg, SessionData):
                target.feed(msg.data)
            else:
                target.peer_closed(msg.text)
        return transmit

    async def handshake(self, uncork: bool = True) -> None:
        responder = asyncio.ensure_future(self.r.handshake(5))
        await self.i.handshake(5)
        if uncork:
            await self.i.uncork()
            await responder
        else:
            self.pending = responder


async def test_msg3_is_corked_and_leaves_with_the_first_request() -> None:
    w = Wire()
    await w.handshake(uncork=False)
    assert w.i.remote_payload == b'{"v":2}'
    assert len(w.sent["i"]) == 1 and not w.r.handshake_hash  # msg3 still held back
    await w.i.send(b"first request")
    await w.i.send(b"second")
    assert len(w.sent["i"]) == 1
    await w.i.uncork()
    assert len(w.sent["i"]) == 2  # msg3 + both requests in ONE message (one GATT write)
    await w.pending
    assert w.r.handshake_hash == w.i.handshake_hash and w.r.remote_payload == b'{"v":1}'
    assert [await w.r.recv(), await w.r.recv()] == [b"first request", b"second"]
    await w.r.send(b"answer")
    assert await w.i.recv() == b"answer"


async def test_bulk_is_refused_on_both_sides() -> None:
    w = Wire()
    await w.handshake()
    # requester side: manifest/chunk requests are answered locally, nothing is transmitted
    before = len(w.sent["i"])
    await w.i.send(wire.encode_request(9, "chunk", {"c": "ab" * 32}))
    await w.i.send(wire.encode_request(10, "manifest", {"resource": "x"}))
    assert len(w.sent["i"]) == before
    for req_id in (9, 10):
        reply = wire.decode(await w.i.recv())
        assert reply == wire.Response(req_id, False, BULK_REFUSAL)
    # responder side: a chunk reply (from a peer that asked anyway) becomes an error
    header, data = wire.encode_chunk(77, b"\x01" * 32, b"x" * 100_000, compress=False)
    await w.r.send(header + bytes(data))
    assert wire.decode(await w.i.recv()) == wire.Response(77, False, BULK_REFUSAL)
    huge = {"id": 5, "ok": True, "result": "y" * (wire.MAX_JSON + 10)}  # past the wire cap
    await w.r.send(bytes([wire.KIND_RESPONSE]) + json.dumps(huge).encode())
    assert wire.decode(await w.i.recv()).ok is False
    with pytest.raises(FrameTooLarge):
        await w.i.send(b"\x01" + json.dumps({"x": "z" * (wire.MAX_JSON + 10)}).encode())
    await w.i.send(wire.encode_request(11, "list", {}))  # the session survived all of it
    assert wire.decode(await w.r.recv()).op == "list"
    assert w.i.refused_bulk == 2 and w.r.refused_bulk == 2


async def test_flooding_peer_loses_its_session_and_close_reaches_recv() -> None:
    w = Wire()
    await w.handshake()
    for i in range(64):
        await w.i.send(b"m%d" % i)
    assert not w.r.is_closed
    await w.i.send(b"one too many")  # nobody reads on r: 65 pending messages
    assert w.r.is_closed and "floods" in w.r.close_reason
    await wait_until(lambda: w.i.is_closed, what="told by SessionClose")
    with pytest.raises(BleChannelClosed):
        await w.i.recv()
    with pytest.raises(ConnectionError):  # PeerConnection treats it as EOF
        await w.i.send(b"late")


async def test_tampered_record_ends_the_session() -> None:
    w = Wire()
    await w.handshake()
    w.r.feed(b"\x00\x20" + b"\x00" * 32)  # a forged record cannot authenticate
    assert w.r.is_closed and "session error" in w.r.close_reason
    await wait_until(lambda: w.i.is_closed, what="told by SessionClose")


async def test_handshake_timeout_is_a_handshake_error() -> None:
    async def void(raw: bytes) -> None:
        return None

    ch = BleSecureChannel(new_connection(X25519PrivateKey.generate(), initiator=True,
                                         hello=b"{}"), void, link_id=1, peer="x")
    with pytest.raises(HandshakeError, match="timed out"):
        await ch.handshake(0.05)
    assert ch.is_closed
