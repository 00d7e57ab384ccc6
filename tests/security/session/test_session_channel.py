"""asyncio SecureChannel over real loopback TCP sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct

import pytest
from session_helpers import key, pub

from agent.security.session import (
    ConnectionClosedError,
    DecryptError,
    HandshakeError,
    SecureChannel,
    SecureConnection,
    SessionError,
    open_channel,
)

pytestmark = pytest.mark.timeout(30)


@contextlib.asynccontextmanager
async def tcp_server(handler):
    """Serve ``handler(reader, writer)`` on 127.0.0.1:<ephemeral>; yield the port."""
    tasks: set[asyncio.Task] = set()

    async def on_client(reader, writer):
        tasks.add(asyncio.current_task())
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


@contextlib.asynccontextmanager
async def channel_pair(**kwargs):
    """(client channel, server channel) over real TCP."""
    server_side: asyncio.Future[SecureChannel] = asyncio.get_running_loop().create_future()
    hold = asyncio.Event()

    async def handler(reader, writer):
        try:
            ch = await open_channel(
                reader, writer, key("server"), initiator=False, local_payload=b"srv", **kwargs
            )
        except BaseException as exc:
            server_side.set_exception(exc)
            raise
        server_side.set_result(ch)
        await hold.wait()

    async with tcp_server(handler) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = await open_channel(
            reader, writer, key("client"), initiator=True, local_payload=b"cli", **kwargs
        )
        server = await server_side
        try:
            yield client, server
        finally:
            hold.set()
            await client.close()
            await server.close()


async def test_handshake_over_tcp():
    async with channel_pair() as (client, server):
        assert client.remote_static == pub(key("server"))
        assert server.remote_static == pub(key("client"))
        assert client.remote_payload == b"srv" and server.remote_payload == b"cli"
        assert client.handshake_hash == server.handshake_hash
        assert client.peername[0] == "127.0.0.1" and server.peername[0] == "127.0.0.1"
        assert client.peername[1] != server.peername[1]  # server port vs client's ephemeral port


async def test_bidirectional_messages_concurrently():
    async with channel_pair() as (client, server):
        n = 200
        sizes = [0, 1, 1000, 70_000, 5] * (n // 5)

        async def send_all(ch, tag):
            for k, size in enumerate(sizes):
                await ch.send(bytes([tag, k % 256]) + b"\xab" * size)

        async def recv_all(ch, tag):
            for k, size in enumerate(sizes):
                msg = await ch.recv()
                assert msg == bytes([tag, k % 256]) + b"\xab" * size

        await asyncio.gather(
            send_all(client, 1), send_all(server, 2), recv_all(server, 1), recv_all(client, 2)
        )


async def test_large_message_over_tcp():
    async with channel_pair() as (client, server):
        big = os.urandom(3 * 1024 * 1024)
        send = asyncio.create_task(client.send(big))
        assert await server.recv() == big
        await send
        await server.send(memoryview(big)[:12345])
        assert await client.recv() == big[:12345]


async def test_close_gives_connection_closed_error_to_the_peer():
    async with channel_pair() as (client, server):
        await client.send(b"last words")
        await client.close()
        assert await server.recv() == b"last words"
        with pytest.raises(ConnectionClosedError):
            await server.recv()
        with pytest.raises(ConnectionClosedError):  # stays closed
            await server.recv()
        with pytest.raises(ConnectionClosedError):
            await client.send(b"after close")


async def test_handshake_timeout_against_a_silent_server():
    async def silent(reader, writer):
        await asyncio.sleep(60)

    async with tcp_server(silent) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(HandshakeError, match=r"handshake timed out after 0\.2 s"):
            await open_channel(reader, writer, key("c"), initiator=True, handshake_timeout=0.2)
        assert loop.time() - start < 5
        assert writer.is_closing()


async def test_handshake_timeout_against_a_silent_client():
    result: asyncio.Future = asyncio.get_running_loop().create_future()

    async def handler(reader, writer):
        try:
            await open_channel(reader, writer, key("s"), initiator=False, handshake_timeout=0.2)
        except BaseException as exc:
            result.set_result(exc)

    async with tcp_server(handler) as port:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        exc = await asyncio.wait_for(result, 5)
        writer.close()
    assert isinstance(exc, HandshakeError) and "timed out after 0.2 s" in str(exc)


async def test_peer_closing_during_handshake_is_a_handshake_error():
    async def hang_up(reader, writer):
        await reader.readexactly(34)  # message 1, then close

    async with tcp_server(hang_up) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with pytest.raises(HandshakeError, match="closed"):
            await open_channel(reader, writer, key("c"), initiator=True, handshake_timeout=5)


async def test_tampered_record_over_tcp_raises_and_aborts():
    """A raw peer completes the handshake with the sans-I/O core, then sends a forged record."""
    result: asyncio.Future = asyncio.get_running_loop().create_future()

    async def handler(reader, writer):
        try:
            ch = await open_channel(reader, writer, key("s"), initiator=False)
            await ch.recv()
        except BaseException as exc:
            result.set_result((exc, writer.is_closing()))

    async with tcp_server(handler) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conn = SecureConnection(key("c"), initiator=True)
        conn.initiate()
        writer.write(conn.data_to_send())
        while conn.next_event() is None:
            conn.receive_data(await reader.read(4096))
        conn.send_message(b"genuine")
        record = bytearray(conn.data_to_send())
        record[-3] ^= 0x80
        writer.write(record)
        await writer.drain()
        exc, closing = await asyncio.wait_for(result, 5)
        writer.close()
    assert isinstance(exc, DecryptError) and closing


async def test_garbage_instead_of_handshake_is_a_session_error():
    async def garbage(reader, writer):
        await reader.readexactly(34)
        writer.write(struct.pack(">H", 100) + os.urandom(100))
        await writer.drain()
        await asyncio.sleep(5)

    async with tcp_server(garbage) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with pytest.raises(SessionError):
            await open_channel(reader, writer, key("c"), initiator=True, handshake_timeout=5)


async def test_context_manager_closes():
    async with channel_pair() as (client, server):
        async with client:
            await client.send(b"x")
        assert await server.recv() == b"x"
        with pytest.raises(ConnectionClosedError):
            await server.recv()


async def test_close_does_not_hang_on_a_stalled_peer():
    async with channel_pair() as (client, _server):  # the server never reads
        chunk = os.urandom(1024 * 1024)

        async def flood():
            while True:
                await client.send(chunk)

        flooder = asyncio.create_task(flood())
        loop = asyncio.get_running_loop()
        # wait until backpressure holds the sender (kernel and transport buffers are full)
        for _ in range(200):
            before = client._writer.transport.get_write_buffer_size()
            await asyncio.sleep(0.02)
            if before and client._writer.transport.get_write_buffer_size() == before:
                break
        assert not flooder.done()
        start = loop.time()
        await client.close(timeout=0.3)
        assert loop.time() - start < 3
        assert client._writer.transport.is_closing()
        flooder.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, SessionError):
            await flooder


async def test_send_parts_over_tcp_arrives_as_one_message():
    async with channel_pair() as (client, server):
        head, body = b"\x03header", os.urandom(300_000)
        send = asyncio.create_task(client.send_parts([head, memoryview(body), b""]))
        assert await server.recv() == head + body
        await send
        await client.send(b"next")
        assert await server.recv() == b"next"
