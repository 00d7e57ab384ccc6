"""ChunkServer: serving policy (trust, public, links, integrity, lz4, bandwidth) and the
zero-copy reply path, in process: a real store, a real PeerConnection, a fake channel."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest

from agent.errors import ErrorKind
from agent.peer import wire
from agent.peer.connection import PeerConnection, RawReply, Refused
from agent.security.identity import Identity
from agent.store import ContentStore, Manifest
from agent.transfer import delta
from agent.transfer.server import (
    BulkNotOnThisLink,
    ChunkServer,
    ChunkUnavailable,
    NoSuchChunk,
    NoSuchResource,
    NotShared,
)

pytestmark = pytest.mark.timeout(30)

PAIRED = b"p" * 32
STRANGER = b"s" * 32
HEADER_LEN = 1 + 4 + 1 + 32 + 4  # kind, request id, flags, chunk id, raw length
FLAGS_AT = 5
_EOF = b"<eof>"

PUBLISHER = Identity.generate()  # signs every test resource


class FakeTrust:
    def __init__(self, *trusted: bytes) -> None:
        self.trusted = set(trusted)

    def is_trusted(self, device_id: bytes) -> bool:
        return device_id in self.trusted

    def get(self, device_id: bytes) -> None:
        return None


class RecordingGate:
    """Stands in for BandwidthGate: records each permit and whether a send ran inside it."""

    def __init__(self) -> None:
        self.permits: list[tuple[str, str, int]] = []
        self.holding = False

    @contextlib.asynccontextmanager
    async def permit(self, peer: str, cls: str, nbytes: int) -> AsyncIterator[None]:
        self.permits.append((peer, cls, nbytes))
        self.holding = True
        try:
            yield
        finally:
            self.holding = False


class RecordingChannel:
    """A SecureChannel stand-in: hands queued messages to serve() and records every send
    exactly as it was given (parts stay parts)."""

    def __init__(self, gate: RecordingGate) -> None:
        self.remote_static = b"k" * 32
        self.handshake_hash = b"h" * 32
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.sent: list[list[bytes | bytearray | memoryview]] = []
        self.joined_sends = 0
        self.sent_inside_permit: list[bool] = []
        self.got_one = asyncio.Event()
        self._gate = gate

    async def send(self, payload: bytes) -> None:
        self.joined_sends += 1
        await self.send_parts([payload])

    async def send_parts(self, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        self.sent.append(list(parts))
        self.sent_inside_permit.append(self._gate.holding)
        self.got_one.set()

    async def recv(self) -> bytes:
        msg = await self.inbox.get()
        if msg is _EOF:
            raise ConnectionError("closed")
        return msg

    async def close(self) -> None:
        self.inbox.put_nowait(_EOF)


def text(n: int) -> bytes:
    line = b"2024-05-01T12:00:00Z INFO shoal.transfer chunk served peer=abc bytes=262144\n"
    return (line * (n // len(line) + 1))[:n]


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    st = ContentStore(tmp_path / "store", avg_chunk_size=16 * 1024)
    yield st
    st.close()


def publish(store: ContentStore, tmp_path: Path, name: str, data: bytes, *,
            public: bool) -> Manifest:
    f = tmp_path / name
    f.write_bytes(data)
    return store.publish_file(f, name=name, public=public, signer=PUBLISHER)


@pytest.fixture
def held(store: ContentStore, tmp_path: Path) -> tuple[Manifest, Manifest]:
    pub = publish(store, tmp_path, "public.bin", os.urandom(100 * 1024), public=True)
    priv = publish(store, tmp_path, "private.bin", os.urandom(100 * 1024), public=False)
    return pub, priv


def make_server(store: ContentStore, *, compress: bool = True,
                gate: RecordingGate | None = None,
                used: list[str] | None = None) -> tuple[ChunkServer, RecordingGate]:
    gate = gate or RecordingGate()
    server = ChunkServer(store, FakeTrust(PAIRED), gate, compress=compress,  # type: ignore[arg-type]
                         on_use=used.append if used is not None else None)
    return server, gate


def conn(peer: bytes, gate: RecordingGate | None = None, *,
         transport: str = "lan", handler=None) -> PeerConnection:
    async def refuse(c: PeerConnection, r: wire.Request) -> object:
        raise Refused("no handler")

    return PeerConnection(RecordingChannel(gate or RecordingGate()), peer_id=peer,
                          peer_key=b"k" * 32, hello={"name": "peer"}, handler=handler or refuse,
                          outgoing=False, address=("192.0.2.1", 47474), transport=transport)


def chunk_req(cid: bytes, *, req_id: int = 7, **extra: object) -> wire.Request:
    return wire.Request(req_id, "chunk", {"c": cid.hex(), **extra})


async def ask_chunk(server: ChunkServer, peer: bytes, cid: bytes, **extra: object) -> RawReply:
    reply = await server.handlers()["chunk"](conn(peer), chunk_req(cid, **extra))
    assert isinstance(reply, RawReply)
    return reply


def decode(reply: RawReply) -> wire.ChunkReply:
    msg = wire.decode(b"".join(reply.parts))
    assert isinstance(msg, wire.ChunkReply)
    return msg


# --------------------------------------------------------------------------- trust policy


async def test_a_paired_peer_sees_and_gets_everything(store, held):
    _pub, priv = held
    server, _ = make_server(store)
    h = server.handlers()
    listed = await h["list"](conn(PAIRED), wire.Request(1, "list", {}))
    assert {e["name"] for e in listed} == {"public.bin", "private.bin"}
    answer = await h["manifest"](conn(PAIRED),
                                 wire.Request(2, "manifest", {"resource": "private.bin"}))
    assert Manifest.from_bytes(answer["manifest"].encode()) == priv
    c = priv.chunks[0]
    assert bytes(decode(await ask_chunk(server, PAIRED, c.chunk_id)).data) == store.get_chunk(
        c.chunk_id)


async def test_an_unpaired_peer_sees_only_public_resources_and_their_chunks(store, held):
    pub, priv = held
    used: list[str] = []
    server, _ = make_server(store, used=used)
    h = server.handlers()
    listed = await h["list"](conn(STRANGER), wire.Request(1, "list", {}))
    assert [e["name"] for e in listed] == ["public.bin"]
    with pytest.raises(NoSuchResource, match="only public") as e:
        await h["manifest"](conn(STRANGER), wire.Request(2, "manifest",
                                                         {"resource": "private.bin"}))
    assert e.value.kind is ErrorKind.NOT_FOUND
    with pytest.raises(NotShared) as e2:
        await ask_chunk(server, STRANGER, priv.chunks[0].chunk_id)
    assert e2.value.kind is ErrorKind.UNTRUSTED
    answer = await h["manifest"](conn(STRANGER), wire.Request(3, "manifest",
                                                              {"resource": pub.manifest_hash}))
    assert Manifest.from_bytes(answer["manifest"].encode()) == pub
    assert used == [pub.resource_id]  # the refused lookup was not counted as a use
    got = decode(await ask_chunk(server, STRANGER, pub.chunks[-1].chunk_id))
    assert got.chunk_id == pub.chunks[-1].chunk_id


async def test_an_unpaired_peer_cannot_tell_unknown_from_private(store, held):
    server, _ = make_server(store)
    with pytest.raises(NotShared):
        await ask_chunk(server, STRANGER, b"\x01" * 32)
    with pytest.raises(NotShared):
        await ask_chunk(server, STRANGER, held[1].chunks[0].chunk_id)


async def test_public_set_follows_the_catalog(store, held, tmp_path):
    server, _ = make_server(store)
    later = publish(store, tmp_path, "later.bin", os.urandom(40 * 1024), public=True)
    with pytest.raises(NotShared):  # not announced yet
        await ask_chunk(server, STRANGER, later.chunks[0].chunk_id)
    server.catalog_changed()
    await ask_chunk(server, STRANGER, later.chunks[0].chunk_id)


async def test_an_unknown_chunk_is_refused_to_a_paired_peer(store, held):
    server, gate = make_server(store)
    with pytest.raises(NoSuchChunk) as e:
        await ask_chunk(server, PAIRED, b"\x02" * 32)
    assert e.value.kind is ErrorKind.NOT_FOUND
    assert gate.permits == []  # nothing was queued on the link


async def test_no_chunk_is_read_for_a_ble_session(store, held, monkeypatch):
    server, _ = make_server(store)
    reads: list[bytes] = []
    real = store.get_chunk
    monkeypatch.setattr(store, "get_chunk", lambda cid, **kw: reads.append(cid) or real(cid))
    with pytest.raises(BulkNotOnThisLink):
        await server.handlers()["chunk"](conn(PAIRED, transport="ble"),
                                         chunk_req(held[0].chunks[0].chunk_id))
    assert reads == []


# --------------------------------------------------------------------------- integrity


async def test_a_corrupt_chunk_on_disk_is_never_served(store, held):
    pub, _ = held
    cid = pub.chunks[1].chunk_id
    path, offset, length = store._packs.locate(cid)
    with open(path, "r+b") as f:  # one flipped bit in the middle of the payload
        f.seek(offset + length // 2)
        b = f.read(1)
        f.seek(offset + length // 2)
        f.write(bytes([b[0] ^ 0x10]))
    server, gate = make_server(store)
    with pytest.raises(ChunkUnavailable, match="quarantined") as e:
        await ask_chunk(server, PAIRED, cid)
    assert e.value.kind is ErrorKind.INTEGRITY
    assert not store.has_chunk(cid)  # quarantined: a fetch can get a good copy back
    with pytest.raises(NoSuchChunk):
        await ask_chunk(server, PAIRED, cid)
    assert gate.permits == []


# --------------------------------------------------------------------------- compression


async def test_compressible_chunk_goes_lz4_when_allowed_and_asked(store, tmp_path):
    m = publish(store, tmp_path, "log.txt", text(64 * 1024), public=True)
    cid = m.chunks[0].chunk_id
    raw = store.get_chunk(cid)
    server, _gate = make_server(store)
    reply = await ask_chunk(server, STRANGER, cid, z=True)
    assert reply.parts[0][FLAGS_AT] == wire.FLAG_LZ4
    assert len(reply.parts[1]) < len(raw) // 2
    assert bytes(decode(reply).data) == raw
    # default: compression asked for
    assert (await ask_chunk(server, STRANGER, cid)).parts[0][FLAGS_AT] == wire.FLAG_LZ4


@pytest.mark.parametrize(("compress", "z"), [(True, False), (False, True), (False, False)])
async def test_no_lz4_unless_both_sides_want_it(store, tmp_path, compress, z):
    m = publish(store, tmp_path, "log.txt", text(64 * 1024), public=True)
    cid = m.chunks[0].chunk_id
    server, _ = make_server(store, compress=compress)
    reply = await ask_chunk(server, STRANGER, cid, z=z)
    assert reply.parts[0][FLAGS_AT] == 0
    assert bytes(reply.parts[1]) == store.get_chunk(cid)


async def test_incompressible_chunk_is_sent_raw_even_when_asked(store, held):
    cid = held[0].chunks[0].chunk_id
    server, _ = make_server(store)
    reply = await ask_chunk(server, STRANGER, cid, z=True)
    assert reply.parts[0][FLAGS_AT] == 0
    assert bytes(reply.parts[1]) == store.get_chunk(cid)


# --------------------------------------------------------------------------- bandwidth


async def test_the_permit_is_sized_by_the_bytes_on_the_link_and_classed(store, tmp_path):
    m = publish(store, tmp_path, "log.txt", text(64 * 1024), public=True)
    server, gate = make_server(store)
    c = conn(STRANGER, gate)
    reply = await server.handlers()["chunk"](c, chunk_req(m.chunks[0].chunk_id,
                                                          cls="prefetch", z=True))
    assert gate.permits == []  # the permit is only asked for when the reply is sent
    async with reply.hold:
        pass
    wire_bytes = sum(len(p) for p in reply.parts)
    assert gate.permits == [(STRANGER.hex(), "prefetch", wire_bytes)]
    assert wire_bytes < m.chunks[0].length  # compressed size, not the raw length


# --------------------------------------------------------------------------- zero copy


async def test_chunk_reply_reaches_the_channel_as_parts_inside_the_permit(store, held,
                                                                          monkeypatch):
    """Through PeerConnection: the payload object the store returned is the object the
    channel gets (no join, no copy), in one send, while the bandwidth permit is held."""
    cid = held[0].chunks[2].chunk_id
    returned: list[bytes] = []
    real = store.get_chunk

    def spy(chunk_id: bytes, **kw: bool) -> bytes:
        data = real(chunk_id, **kw)
        returned.append(data)
        return data

    monkeypatch.setattr(store, "get_chunk", spy)
    gate = RecordingGate()
    server, _ = make_server(store, gate=gate)
    router = server.handlers()

    async def handle(c: PeerConnection, r: wire.Request) -> object:
        return await router[r.op](c, r)

    pc = conn(PAIRED, gate, handler=handle)
    ch = pc.channel
    serving = asyncio.create_task(pc.serve())
    await ch.inbox.put(wire.encode_request(41, "chunk", {"c": cid.hex(), "z": False}))
    async with asyncio.timeout(10):
        await ch.got_one.wait()
    await pc.close()
    await serving
    assert len(ch.sent) == 1 and ch.joined_sends == 0
    header, payload = ch.sent[0]
    assert payload is returned[0]
    assert len(header) == HEADER_LEN
    assert ch.sent_inside_permit == [True]
    assert gate.permits == [(PAIRED.hex(), "demand", HEADER_LEN + len(payload))]
    msg = wire.decode(b"".join(ch.sent[0]))
    assert isinstance(msg, wire.ChunkReply) and msg.id == 41 and msg.chunk_id == cid


async def test_a_refusal_reaches_the_peer_as_an_error_response(store, held):
    server, gate = make_server(store)
    router = server.handlers()

    async def handle(c: PeerConnection, r: wire.Request) -> object:
        return await router[r.op](c, r)

    pc = conn(STRANGER, gate, handler=handle)
    ch = pc.channel
    serving = asyncio.create_task(pc.serve())
    await ch.inbox.put(wire.encode_request(5, "chunk", {"c": held[1].chunks[0].chunk_id.hex()}))
    async with asyncio.timeout(10):
        await ch.got_one.wait()
    await pc.close()
    await serving
    msg = wire.decode(b"".join(ch.sent[0]))
    assert isinstance(msg, wire.Response) and not msg.ok and "not paired" in msg.result
    assert gate.permits == []


async def test_with_the_real_gate_the_send_happens_inside_a_released_permit(store, held):
    from agent.bandwidth import DEFAULT_WEIGHTS, BandwidthGate, LinkScheduler

    gate = BandwidthGate(LinkScheduler(DEFAULT_WEIGHTS))
    server = ChunkServer(store, FakeTrust(PAIRED), gate, compress=False)
    router = server.handlers()
    in_flight: list[int] = []

    class Probe(RecordingChannel):
        async def send_parts(self, parts: Sequence[bytes | bytearray | memoryview]) -> None:
            in_flight.append(gate.scheduler.in_flight(PAIRED.hex()))
            await super().send_parts(parts)

    async def handle(c: PeerConnection, r: wire.Request) -> object:
        return await router[r.op](c, r)

    pc = PeerConnection(Probe(RecordingGate()), peer_id=PAIRED, peer_key=b"k" * 32,
                        hello={"name": "peer"}, handler=handle, outgoing=False,
                        address=("192.0.2.1", 47474))
    serving = asyncio.create_task(pc.serve())
    cid = held[1].chunks[0].chunk_id
    await pc.channel.inbox.put(wire.encode_request(3, "chunk", {"c": cid.hex(),
                                                                "cls": "mirror"}))
    async with asyncio.timeout(10):
        await pc.channel.got_one.wait()
    await pc.close()
    await serving
    assert in_flight == [1]  # released to us and not yet reported sent
    assert gate.scheduler.in_flight(PAIRED.hex()) == 0  # reported once the send returned
    gate.close()


# --------------------------------------------------------------------------- memory bound


class NeverReadingChannel(RecordingChannel):
    """A peer that asks and never reads: the first send blocks (its socket buffer is full)."""

    def __init__(self, gate: RecordingGate) -> None:
        super().__init__(gate)
        self.blocked = asyncio.Event()

    async def send_parts(self, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        self.blocked.set()
        await asyncio.Event().wait()  # never drains


def spied_server(store: ContentStore, monkeypatch: pytest.MonkeyPatch) -> tuple[
        list[int], ChunkServer, RecordingGate,
        Callable[[PeerConnection, wire.Request], Awaitable[object]]]:
    """A server whose store reads are recorded (their sizes, in order), and a handler that
    routes a connection's requests to it."""
    reads: list[int] = []
    real = store.get_chunk

    def spy(chunk_id: bytes, **kw: bool) -> bytes:
        data = real(chunk_id, **kw)
        reads.append(len(data))
        return data

    monkeypatch.setattr(store, "get_chunk", spy)
    server, gate = make_server(store)
    router = server.handlers()

    async def handle(c: PeerConnection, r: wire.Request) -> object:
        return await router[r.op](c, r)

    return reads, server, gate, handle


async def test_a_peer_that_never_reads_gets_only_a_bounded_number_of_chunks_read(
        store, tmp_path, monkeypatch):
    """128 chunk requests from a peer that never reads: the server reads (and so buffers) at
    most MAX_REPLIES_IN_FLIGHT chunks for the connection, whatever the peer asks for."""
    from agent.transfer.server import MAX_REPLIES_IN_FLIGHT

    m = publish(store, tmp_path, "many.bin", os.urandom(600 * 1024), public=True)
    assert len(m.chunks) > MAX_REPLIES_IN_FLIGHT
    reads, server, gate, handle = spied_server(store, monkeypatch)

    pc = PeerConnection(NeverReadingChannel(gate), peer_id=STRANGER, peer_key=b"k" * 32,
                        hello={"name": "peer"}, handler=handle, outgoing=False,
                        address=("192.0.2.1", 47474))
    ch = pc.channel
    for i in range(128):
        cid = m.chunks[i % len(m.chunks)].chunk_id
        ch.inbox.put_nowait(wire.encode_request(i + 1, "chunk", {"c": cid.hex(), "z": False}))
    serving = asyncio.create_task(pc.serve())
    async with asyncio.timeout(10):
        await ch.blocked.wait()
        while not ch.inbox.empty():  # every request has been taken in
            await asyncio.sleep(0)
    for _ in range(50):  # let every handler run as far as it can
        await asyncio.sleep(0)
    biggest = max(c.length for c in m.chunks)
    assert len(reads) <= MAX_REPLIES_IN_FLIGHT
    assert sum(reads) <= MAX_REPLIES_IN_FLIGHT * biggest
    assert server.replies_in_flight(pc) == len(reads)
    await pc.close()
    await serving
    for _ in range(5):
        await asyncio.sleep(0)
    assert server.replies_in_flight(pc) == 0  # slots come back when the sends are cancelled


async def test_strangers_that_never_read_share_one_small_pool_and_paired_peers_still_get_served(
        store, tmp_path, monkeypatch):
    """Regression (adversarial test): each unpaired session was bounded, but 32 of them
    could still pin 32 x 4 chunks. All unpaired connections together get at most
    MAX_UNPAIRED_REPLIES_IN_FLIGHT replies read; a paired device is served regardless."""
    from agent.transfer.server import MAX_REPLIES_IN_FLIGHT, MAX_UNPAIRED_REPLIES_IN_FLIGHT

    m = publish(store, tmp_path, "many.bin", os.urandom(600 * 1024), public=True)
    reads, server, gate, handle = spied_server(store, monkeypatch)

    def conn(peer: bytes, port: int) -> PeerConnection:
        return PeerConnection(NeverReadingChannel(gate), peer_id=peer, peer_key=b"k" * 32,
                              hello={"name": "peer"}, handler=handle, outgoing=False,
                              address=("192.0.2.1", port))

    strangers = [conn(bytes([i]) * 32, 40000 + i) for i in range(8)]
    assert 8 * MAX_REPLIES_IN_FLIGHT > MAX_UNPAIRED_REPLIES_IN_FLIGHT
    for pc in strangers:
        for i in range(16):
            cid = m.chunks[i % len(m.chunks)].chunk_id
            pc.channel.inbox.put_nowait(
                wire.encode_request(i + 1, "chunk", {"c": cid.hex(), "z": False}))
    serving = [asyncio.create_task(pc.serve()) for pc in strangers]
    for _ in range(200):  # let every handler run as far as it can
        await asyncio.sleep(0)
    assert len(reads) == MAX_UNPAIRED_REPLIES_IN_FLIGHT
    assert server.unpaired_replies_in_flight() == MAX_UNPAIRED_REPLIES_IN_FLIGHT
    friend = conn(PAIRED, 47474)
    friend.channel.inbox.put_nowait(wire.encode_request(
        1, "chunk", {"c": m.chunks[0].chunk_id.hex(), "z": False}))
    serving.append(asyncio.create_task(friend.serve()))
    async with asyncio.timeout(10):
        await friend.channel.blocked.wait()  # its reply reached the send: not starved
    assert len(reads) == MAX_UNPAIRED_REPLIES_IN_FLIGHT + 1
    for pc in [*strangers, friend]:
        await pc.close()
    await asyncio.gather(*serving)
    for _ in range(5):
        await asyncio.sleep(0)
    assert server.unpaired_replies_in_flight() == 0


async def test_a_resource_with_a_quarantined_chunk_is_no_longer_listed(store, held):
    """A holder that can no longer serve a resource completely stops advertising it (its
    manifest is still answered: the other chunks can come from here)."""
    pub, _ = held
    cid = pub.chunks[1].chunk_id
    path, offset, length = store._packs.locate(cid)
    with open(path, "r+b") as f:
        f.seek(offset + length // 2)
        b = f.read(1)
        f.seek(offset + length // 2)
        f.write(bytes([b[0] ^ 0x10]))
    server, _ = make_server(store)
    h = server.handlers()
    listed = await h["list"](conn(PAIRED), wire.Request(1, "list", {}))
    assert "public.bin" in {e["name"] for e in listed}
    with pytest.raises(ChunkUnavailable):
        await ask_chunk(server, PAIRED, cid)
    listed = await h["list"](conn(PAIRED), wire.Request(2, "list", {}))
    assert {e["name"] for e in listed} == {"private.bin"}
    await h["manifest"](conn(PAIRED), wire.Request(3, "manifest", {"resource": "public.bin"}))


async def test_a_chunk_refusal_reaches_the_fetcher_with_its_kind(store, held):
    server, gate = make_server(store)
    router = server.handlers()

    async def handle(c: PeerConnection, r: wire.Request) -> object:
        return await router[r.op](c, r)

    pc = conn(PAIRED, gate, handler=handle)
    ch = pc.channel
    serving = asyncio.create_task(pc.serve())
    await ch.inbox.put(wire.encode_request(5, "chunk", {"c": "ab" * 32}))
    async with asyncio.timeout(10):
        await ch.got_one.wait()
    await pc.close()
    await serving
    msg = wire.decode(b"".join(ch.sent[0]))
    assert isinstance(msg, wire.Response) and not msg.ok
    assert msg.kind is ErrorKind.NOT_FOUND


# --------------------------------------------------------------------------- deltas


async def test_a_chunk_goes_as_a_delta_against_the_base_the_asker_holds(store, tmp_path):
    data = os.urandom(60 * 1024)
    v1 = publish(store, tmp_path, "doc.bin", data, public=True)
    v2 = publish(store, tmp_path, "doc.bin", data[:100] + b"!" + data[100:], public=True)
    new = next(c for c in v2.chunks if c.chunk_id not in {x.chunk_id for x in v1.chunks})
    base = v1.chunks[0].chunk_id
    server, _ = make_server(store)
    got = decode(await ask_chunk(server, PAIRED, new.chunk_id, b=base.hex()))
    assert got.delta and len(got.data) < 100
    rebuilt = delta.apply(store.get_chunk(base), got.data, new.length)
    assert rebuilt == store.get_chunk(new.chunk_id)
    # no base named, or a base this store lacks: the whole chunk
    assert not decode(await ask_chunk(server, PAIRED, new.chunk_id)).delta
    assert not decode(await ask_chunk(server, PAIRED, new.chunk_id, b="00" * 32)).delta


async def test_an_unpaired_asker_gets_no_delta_against_a_private_chunk(store, held, tmp_path):
    _pub, priv = held
    data = os.urandom(40 * 1024)
    v1 = publish(store, tmp_path, "open.bin", data, public=True)
    v2 = publish(store, tmp_path, "open.bin", data[:10] + b"?" + data[10:], public=True)
    new = next(c for c in v2.chunks if c.chunk_id not in {x.chunk_id for x in v1.chunks})
    server, _ = make_server(store)
    # naming a private chunk as the base must not reveal it is here (or its bytes)
    got = decode(await ask_chunk(server, STRANGER, new.chunk_id,
                                 b=priv.chunks[0].chunk_id.hex()))
    assert not got.delta and bytes(got.data) == store.get_chunk(new.chunk_id)
    # (only chunks of current public versions count as public: an older version's chunk
    # is not offered to strangers either, so it is no base for them)
    got = decode(await ask_chunk(server, STRANGER, new.chunk_id, b=v1.chunks[0].chunk_id.hex()))
    assert not got.delta
    assert decode(await ask_chunk(server, PAIRED, new.chunk_id,
                                  b=v1.chunks[0].chunk_id.hex())).delta
