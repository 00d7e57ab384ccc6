"""The peripheral role against raw centrals on the simulator (no Node): bounds, isolation of
centrals, plaintext catalog paging, and what a central sees on the wire."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from ble_helpers import FakeHost, fake_record, open_cch, raw_session, wait_until
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.links.ble.central import read_public_catalog
from agent.links.ble.channel import BleSecureChannel, new_connection
from agent.links.ble.messages import (
    CLOSE_BUSY,
    CLOSE_TIMEOUT,
    SessionClose,
    SessionData,
    decode_session,
    encode_session,
    new_link_id,
)
from agent.links.ble.peripheral import PeripheralLimits, PeripheralRole
from agent.security.session import HandshakeError
from radio.ble import Fragmenter
from radio.ble import profile as p
from radio.sim import LinkParams, SimAir


async def start_peripheral(air: SimAir, host: FakeHost, *, slots: int = 8,
                           **limits: float) -> tuple[PeripheralRole, object]:
    node = air.add_node("periph")
    role = PeripheralRole(node.server, node.advertiser, host, slots=slots,
                          limits=PeripheralLimits(**limits))
    await role.start()
    return role, node


@pytest.mark.parametrize("mtu", [23, 185, 517])
async def test_public_catalog_of_100_entries_pages_at_every_mtu(mtu: int) -> None:
    records = [fake_record(i, public=i % 4 != 3) for i in range(133)]  # 100 public
    async with SimAir(3, link=LinkParams(mtu=mtu), notify_broadcast=True) as air:
        host = FakeHost(records)
        role, node = await start_peripheral(air, host)
        client = air.add_node("c").client()
        cch = await open_cch(client, node.address)
        info, entries = await read_public_catalog(client, cch)
        assert info.catalog_count == 100 and info.populated_slots == 8
        public = [r for r in records if r.public]
        assert [e.resource_prefix for e in entries] == [
            bytes.fromhex(r.manifest.resource_id)[:8] for r in public]
        assert [e.size for e in entries] == [r.manifest.size for r in public]
        assert air.stats.corrupted_reads == 0 and air.stats.long_reads == 0
        adv = p.decode_advert(node.advertiser.service_data)
        assert adv.node_tag == role.current_tag() and adv.flags == info.flags
        await role.stop()


async def test_sessions_are_bounded_and_busy_is_reported() -> None:
    async with SimAir(1, notify_broadcast=True) as air:
        role, node = await start_peripheral(air, FakeHost(), max_sessions=2)
        sessions = [await raw_session(air.add_node(f"c{i}").client(), node.address)
                    for i in range(2)]
        with pytest.raises(HandshakeError, match="busy"):
            await raw_session(air.add_node("c3").client(), node.address)
        assert role.counters.busy == 1
        for s in sessions:  # the admitted ones still work
            await s.channel.send(b"hi")
            assert await s.channel.recv() == b"echo:hi"
        await sessions[0].close()
        await wait_until(lambda: len(role.sessions()) == 1, what="closed session removed")
        late = await raw_session(air.add_node("c4").client(), node.address)
        await late.channel.send(b"x")
        assert await late.channel.recv() == b"echo:x"
        await role.stop()


async def test_half_open_handshake_times_out_and_frees_its_slot() -> None:
    async with SimAir(1) as air:
        role, node = await start_peripheral(air, FakeHost(), max_sessions=1,
                                            handshake_timeout=0.3)
        client = air.add_node("lazy").client()
        cch = await open_cch(client, node.address)
        conn = new_connection(X25519PrivateKey.generate(), initiator=True, hello=b"{}")
        conn.initiate()
        link_id = new_link_id()
        await cch.send(encode_session(SessionData(link_id, bytes(conn.data_to_send()))))
        msgs = [decode_session(await asyncio.wait_for(cch.receive(), 5)) for _ in range(2)]
        assert isinstance(msgs[0], SessionData)  # msg2 ... and then, never answered:
        assert msgs[1] == SessionClose(link_id, CLOSE_TIMEOUT)
        assert role.counters.handshake_failures == 1 and role.sessions() == []
        ok = await raw_session(air.add_node("ok").client(), node.address)
        await ok.channel.send(b"ping")
        assert await ok.channel.recv() == b"echo:ping"
        await role.stop()


async def test_a_central_cannot_inject_into_another_centrals_link() -> None:
    async with SimAir(1, notify_broadcast=True) as air:
        role, node = await start_peripheral(air, FakeHost())
        victim = await raw_session(air.add_node("victim").client(), node.address)
        evil_client = air.add_node("evil").client()
        evil = await open_cch(evil_client, node.address)
        # replay garbage and a close under the victim's link id
        forged = SessionData(victim.channel.link_id, b"\x00\x10" + b"x" * 16)
        await evil.send(encode_session(forged))
        await evil.send(encode_session(SessionClose(victim.channel.link_id)))
        await wait_until(lambda: role.counters.spoofed == 2, what="spoofed writes counted")
        await victim.channel.send(b"still here")
        assert await victim.channel.recv() == b"echo:still here"
        assert not victim.channel.is_closed
        await role.stop()


async def test_centrals_drop_each_others_notifications_before_decrypting() -> None:
    async with SimAir(1, link=LinkParams(mtu=64), notify_broadcast=True) as air:
        role, node = await start_peripheral(air, FakeHost())
        s1 = await raw_session(air.add_node("one").client(), node.address)
        s2 = await raw_session(air.add_node("two").client(), node.address)

        async def chat(s: object, tag: bytes) -> list[bytes]:
            got = []
            for i in range(10):
                await s.channel.send(tag + bytes([i]) * 100)
                got.append(await s.channel.recv())
            return got

        r1, r2 = await asyncio.gather(chat(s1, b"a"), chat(s2, b"b"))
        assert r1 == [b"echo:a" + bytes([i]) * 100 for i in range(10)]
        assert r2 == [b"echo:b" + bytes([i]) * 100 for i in range(10)]
        assert s1.foreign > 0 and s2.foreign > 0
        await role.stop()


async def test_bad_control_messages_get_errors_and_oversize_is_discarded() -> None:
    async with SimAir(1, link=LinkParams(mtu=247)) as air:
        role, node = await start_peripheral(air, FakeHost([fake_record(1)]))
        client = air.add_node("c").client()
        cch = await open_cch(client, node.address)
        await cch.send(b"\x01\x00")  # truncated CatalogPageRequest
        assert p.decode_control(await cch.receive()) == p.ControlError(p.ERR_BAD_REQUEST)
        await cch.send(p.encode_control(p.ControlError(3)))  # not a request
        assert p.decode_control(await cch.receive()) == p.ControlError(p.ERR_UNSUPPORTED)
        await cch.send(b"\x40" + b"\x00" * 3)  # short session message: silently counted
        # a framed message above the reassembly cap is discarded by the framing layer
        for frag in Fragmenter(client.max_write_size(p.CONTROL_UUID)).fragments(1, b"\x40" * 5000):
            await client.write(p.CONTROL_UUID, frag)
        page = p.CatalogPageRequest(0, 64)
        await cch.send(p.encode_control(page))
        reply = p.decode_control(await cch.receive())
        assert isinstance(reply, p.CatalogPage) and reply.total == 1
        assert role.counters.malformed >= 2 and role.counters.dispatch_errors == 0
        with contextlib.suppress(Exception):
            await client.disconnect()
        await role.stop()


async def test_busy_close_is_addressed_to_the_right_link() -> None:
    async with SimAir(1) as air:
        role, node = await start_peripheral(air, FakeHost(), max_sessions=0)
        client = air.add_node("c").client()
        cch = await open_cch(client, node.address)
        link_id = new_link_id()
        channel = BleSecureChannel(new_connection(X25519PrivateKey.generate(), initiator=True,
                                                  hello=b"{}"), cch.send, link_id=link_id,
                                   peer=node.address)
        task = asyncio.ensure_future(channel.handshake(5))
        reply = decode_session(await asyncio.wait_for(cch.receive(), 5))
        assert reply == SessionClose(link_id, CLOSE_BUSY)
        channel.peer_closed(reply.text)
        with pytest.raises(HandshakeError):
            await task
        await role.stop()
