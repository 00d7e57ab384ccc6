"""Connections: real Noise sessions between in-process agents on 127.0.0.1 (mDNS off)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging

import pytest
from peer_helpers import (
    GUARD,
    LOOPBACK_LAN,
    closed_port,
    hello,
    make_peer,
    memory_pair,
    ordered_identities,
    wait_until,
)

from agent.errors import ErrorKind
from agent.peer.connection import RemoteError
from agent.peer.connections import DIAL_GRACE, HandshakeFailed, MeshMismatch, Unreachable
from agent.peer.hello import make_hello, mesh_of, parse_hello
from agent.security.identity import Identity
from agent.security.session import SessionError, open_channel
from radio.lan import LanPeerGone, LanPeerSeen
from radio.mesh import DEFAULT_MESH


@pytest.fixture
async def two(tmp_path):
    """Two running agents; a's device ID sorts before b's (so a is the one that dials)."""
    ia, ib = ordered_identities(2)
    a = make_peer(tmp_path, "alpha", identity=ia)
    b = make_peer(tmp_path, "bravo", identity=ib)
    await a.conns.start()
    await b.conns.start()
    yield a, b
    await a.stop()
    await b.stop()
    assert a.spawner.unexpected() == [] and b.spawner.unexpected() == []


async def _fake_server(handler):
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


# ----------------------------------------------------------------- sessions
async def test_connect_authenticates_both_sides_and_fills_the_tables(two):
    a, b = two
    conn = await a.conns.connect(b.address)
    assert conn.peer_id == b.identity.device_id
    assert conn.peer_key == b.identity.public_key
    assert conn.name == "bravo" and conn.outgoing and conn.transport == "lan"
    back = await wait_until(lambda: b.conns.live_connection(a.short), "b sees a's session")
    assert back.peer_id == a.identity.device_id and not back.outgoing
    # the accepting side records where a listens (its hello's port), not the ephemeral port
    assert back.address == a.address
    assert conn.handshake_hash == back.handshake_hash
    info = a.peers.get(b.identity.device_id)
    assert info is not None and info.connection is conn and info.reachable
    assert b.address in info.addresses and "lan" in info.sources
    assert a.conns.count() == 1 and a.conns.sessions() == [conn]
    assert a.conns.live_connections() == [conn]
    # the session's own requests: ping and endpoints
    assert await conn.ping() >= 0
    assert await conn.request("endpoints", {}) == {"lan": [list(b.address)]}


async def test_connect_reuses_a_live_session(two):
    a, b = two
    conn = await a.conns.connect(b.address)
    assert await a.conns.connect(b.address) is conn
    assert await a.conns.connect(b.address, expect=b.short) is conn
    assert a.conns.count() == 1


async def test_expect_never_reuses_a_session_with_another_device(two):
    """An address may have changed hands: a session with another device is not reused, and
    the fresh session shows who really answers there (the caller checks)."""
    a, b = two
    first = await a.conns.connect(b.address)
    someone_else = Identity.generate().device_id.hex()[:16]
    conn = await a.conns.connect(b.address, expect=someone_else)
    assert conn is not first
    assert conn.peer_id == b.identity.device_id
    assert not conn.peer_id.hex().startswith(someone_else)


async def test_refused_address_is_unreachable_not_a_handshake_failure(two):
    a, _ = two
    with pytest.raises(Unreachable) as e:
        await a.conns.connect(("127.0.0.1", closed_port()))
    assert not isinstance(e.value, HandshakeFailed)
    assert e.value.kind is ErrorKind.UNREACHABLE
    assert a.conns.count() == 0


@pytest.mark.parametrize("behaviour", ["close", "garbage"])
async def test_a_non_shoal_server_is_a_handshake_failure(two, behaviour):
    a, _ = two

    async def handler(reader, writer):
        if behaviour == "garbage":
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 4)
            await writer.drain()
        writer.close()

    server, port = await _fake_server(handler)
    async with server:
        with pytest.raises(HandshakeFailed) as e:
            await asyncio.wait_for(a.conns.connect(("127.0.0.1", port)), GUARD)
    assert e.value.kind is ErrorKind.UNREACHABLE
    assert a.conns.count() == 0 and a.peers.all() == []


async def test_a_silent_server_is_a_handshake_failure_after_the_timeout(tmp_path):
    a = make_peer(tmp_path, "alpha", lan=dataclasses.replace(LOOPBACK_LAN, connect_timeout=0.1))
    await a.conns.start()
    hold: list[asyncio.StreamWriter] = []

    async def handler(reader, writer):
        hold.append(writer)  # accept and say nothing

    server, port = await _fake_server(handler)
    try:
        async with server:
            with pytest.raises(HandshakeFailed, match="timed out"):
                await asyncio.wait_for(a.conns.connect(("127.0.0.1", port)), GUARD)
    finally:
        for w in hold:
            w.close()
        await a.stop()


@pytest.mark.parametrize("bad_hello", [
    b"not json",
    b"\xff\xfe",
    json.dumps({"v": 1, "name": "x", "port": 1, "evil": True}).encode(),
    json.dumps({"v": 0, "name": "x"}).encode(),
    json.dumps({"v": 1, "name": "x", "port": 70000}).encode(),
    json.dumps({"v": 1, "name": ""}).encode(),
    json.dumps([1, 2]).encode(),
])
async def test_a_malformed_hello_from_the_server_fails_the_handshake(two, bad_hello):
    a, _ = two
    impostor = Identity.generate()
    channels = []

    async def handler(reader, writer):
        ch = await open_channel(reader, writer, impostor.private_key, initiator=False,
                                local_payload=bad_hello)
        channels.append(ch)

    server, port = await _fake_server(handler)
    async with server:
        with pytest.raises(HandshakeFailed, match="handshake"):
            await asyncio.wait_for(a.conns.connect(("127.0.0.1", port)), GUARD)
    for ch in channels:
        await ch.close()
    assert a.conns.count() == 0
    assert a.peers.get(impostor.device_id) is None


async def test_incoming_garbage_and_bad_hellos_are_dropped_and_the_listener_keeps_working(two):
    a, b = two
    # 1. not Noise at all
    reader, writer = await asyncio.open_connection(*a.address)
    writer.write(b"\x00\x05hello" * 20)
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), GUARD) == b""  # a hung up
    writer.close()
    # 2. a valid handshake carrying a malformed hello
    reader, writer = await asyncio.open_connection(*a.address)
    ch = await open_channel(reader, writer, Identity.generate().private_key, initiator=True,
                            local_payload=b'{"v": 1, "name": "x", "extra": 1}')
    with pytest.raises((SessionError, ConnectionError)):
        await asyncio.wait_for(ch.recv(), GUARD)
    await ch.close()
    assert a.conns.count() == 0 and a.peers.all() == []
    # a real peer is still welcome
    conn = await b.conns.connect(a.address)
    assert conn.peer_id == a.identity.device_id
    assert await conn.ping() >= 0


async def test_unknown_request_is_refused_and_the_session_survives(two):
    a, b = two
    conn = await a.conns.connect(b.address)
    with pytest.raises(RemoteError, match="not supported"):
        await conn.request("list", {})  # a valid op nobody registered on b
    assert not conn.closed.is_set()
    assert await conn.ping() >= 0


# ----------------------------------------------------------------- closing
async def test_close_peer_ends_every_session_and_listeners_hear_of_it(two):
    a, b = two
    first = await a.conns.connect(b.address)
    second = await a.conns.connect(b.address, expect="ffff")  # a twin, on purpose
    assert len(a.conns.sessions()) == 2
    assert len(a.conns.live_connections()) == 1  # one per peer
    await a.conns.close_peer(b.identity.device_id, "unpaired")
    assert first.closed.is_set() and second.closed.is_set()
    assert first.close_reason == "unpaired"
    await wait_until(lambda: a.conns.count() == 0 and len(a.closed) == 2, "a's listeners")
    await wait_until(lambda: b.conns.count() == 0 and len(b.closed) == 2, "b notices")
    assert a.conns.live_connection(b.short) is None
    info = a.peers.get(b.identity.device_id)
    assert info is not None and info.connection is None


async def test_stop_says_goodbye_to_every_peer(two):
    a, b = two
    conn = await a.conns.connect(b.address)
    back = await wait_until(lambda: b.conns.live_connection(a.short))
    await a.conns.stop(2.0)
    assert conn.closed.is_set() and conn.close_reason == "agent shutting down"
    await asyncio.wait_for(back.closed.wait(), GUARD)
    assert back.close_reason == "closed by peer"
    with pytest.raises(Unreachable):  # no longer listening
        await b.conns.connect(a.address)


# ----------------------------------------------------------------- non-TCP links
async def test_attach_channel_runs_the_protocol_over_any_link(two):
    a, b = two
    end_a, end_b = memory_pair(a, b)
    conn = a.conns.attach_channel(end_a, outgoing=True, transport="ble", rssi=-61)
    back = b.conns.attach_channel(end_b, outgoing=False, transport="ble")
    assert conn.peer_id == b.identity.device_id and conn.transport == "ble"
    assert conn.address is None
    info = a.peers.get(b.identity.device_id)
    assert info is not None and info.rssi == -61 and "ble" in info.sources
    assert await conn.ping() >= 0
    assert await back.request("endpoints", {}) == {"lan": [list(a.address)]}


@pytest.mark.parametrize("lan_first", [True, False])
async def test_live_connections_prefer_lan_over_ble(two, lan_first):
    a, b = two
    end_a, _end_b = memory_pair(a, b)
    if lan_first:
        lan = await a.conns.connect(b.address)
        ble = a.conns.attach_channel(end_a, outgoing=True, transport="ble")
    else:
        ble = a.conns.attach_channel(end_a, outgoing=True, transport="ble")
        lan = await a.conns.connect(b.address)
    assert set(a.conns.sessions()) == {lan, ble}
    assert a.conns.live_connections() == [lan]
    # the LAN session goes: the BLE one is what is left
    await lan.close("test")
    await wait_until(lambda: a.conns.count() == 1)
    assert a.conns.live_connections() == [ble]
    assert a.conns.live_connection(b.short) is ble


async def test_a_session_outliving_the_primary_becomes_the_primary(two):
    """Twin sessions (both sides dialled at once): when the primary one ends, the other is
    promoted, so it is heartbeated and the peer shows as connected (was: offline, never
    checked, never redialled; found by tests/netns/test_dht_mesh.py after a healed
    partition)."""
    a, b = two
    first = await a.conns.connect(b.address)
    end_a, _end_b = memory_pair(a, b)
    twin = a.conns.attach_channel(end_a, outgoing=True, transport="lan")
    info = a.peers.get(b.identity.device_id)
    assert info is not None and info.connection is twin
    await twin.close("test")
    await wait_until(lambda: info.connection is not twin, "the twin's end to be handled")
    assert info.connection is first and info.connected and info.reachable
    assert a.peers.summary(info)["connected"]
    assert a.conns.live_connections() == [first]


async def test_attach_channel_rejects_a_malformed_hello(two):
    a, b = two
    end_a, _ = memory_pair(a, b, b_hello=b'{"v": 1, "name": "x", "port": -1}')
    with pytest.raises(ValueError, match="port"):
        a.conns.attach_channel(end_a, outgoing=True, transport="ble")
    assert a.conns.count() == 0 and a.peers.get(b.identity.device_id) is None


# ----------------------------------------------------------------- where to reach us
async def test_lan_endpoints(tmp_path):
    a = make_peer(tmp_path, "alpha")
    assert a.conns.lan_endpoints() == []  # not listening yet
    await a.conns.start()
    try:
        assert a.conns.lan_endpoints() == [a.address]
    finally:
        await a.stop()
    anywhere = make_peer(tmp_path, "any", lan=dataclasses.replace(
        LOOPBACK_LAN, listen="0.0.0.0", interfaces=("lo",), include_loopback=True))
    anywhere.conns.lan_port = 4242  # never bound: only the interface choice is under test
    assert ("127.0.0.1", 4242) in anywhere.conns.lan_endpoints()


async def test_lan_disabled_does_not_listen(tmp_path):
    a = make_peer(tmp_path, "alpha", lan=dataclasses.replace(LOOPBACK_LAN, enabled=False))
    await a.conns.start()
    assert a.conns.lan_port is None and a.conns.lan_endpoints() == []
    expected = json.loads(hello("alpha", signing_key=a.identity.signing_public))
    assert json.loads(a.conns.hello()) | {"agent": "?"} == expected | {"agent": "?"}
    await a.stop()


# ----------------------------------------------------------------- liveness
async def test_check_heartbeats_then_drops_a_silent_peer(two):
    a, b = two
    conn = await a.conns.connect(b.address)
    info = a.peers.get(b.identity.device_id)
    assert info is not None
    a.conns.check()
    await wait_until(lambda: info.rtt is not None, "heartbeat answered")
    assert info.reachable and not conn.closed.is_set()
    # nothing heard for longer than peer_timeout (the clock moves, the peer stays quiet)
    a.clock.advance(LOOPBACK_LAN.peer_timeout + 1)
    a.conns.check()
    assert not info.reachable
    await asyncio.wait_for(conn.closed.wait(), GUARD)
    assert conn.close_reason == "heartbeat timeout"
    await wait_until(lambda: b.conns.count() == 0, "b notices the close")
    a.conns.check()
    assert not info.reachable and info.connection is None


# ----------------------------------------------------------------- mDNS dialling
def _seen(peer_short: str, port: int, name: str = "someone") -> LanPeerSeen:
    return LanPeerSeen(short_id=peer_short, name=name, addresses=["127.0.0.1"], port=port,
                       version=1)


async def test_mdns_sighting_dials_once_and_the_other_side_does_not_dial_back(two):
    a, b = two
    # b (the larger ID) sees a first: it leaves the dialling to a for DIAL_GRACE
    await b.conns._on_lan_event(_seen(a.short, a.address[1], "alpha"))
    assert a.short not in b.conns._dialing and b.conns.count() == 0
    # a sees b and dials at once
    await a.conns._on_lan_event(_seen(b.short, b.address[1], "bravo"))
    conn = await wait_until(lambda: a.conns.live_connection(b.short), "a dials b")
    info = a.peers.get(b.identity.device_id)
    assert info is not None and "mdns" in info.sources and info.name == "bravo"
    await wait_until(lambda: b.conns.live_connection(a.short), "b accepts")
    # b's grace is over: a session exists, so b does not open a twin
    b.clock.advance(DIAL_GRACE + 0.01)
    b.conns._maybe_dial(a.short)
    assert a.short not in b.conns._dialing
    assert a.conns.count() == 1 and b.conns.count() == 1
    # a sees b again: the live session is enough
    a.conns._maybe_dial(b.short)
    assert b.short not in a.conns._dialing
    assert a.conns.live_connection(b.short) is conn


async def test_a_relayed_session_does_not_stop_the_direct_dial(two):
    """Found by tests/netns/test_dht_mesh.py: neighbours the DHT reached over the relay
    before mDNS found them kept talking through relays and never opened their LAN session."""
    a, b = two
    end_a, end_b = memory_pair(a, b)
    relayed = a.conns.attach_channel(end_a, outgoing=True, transport="relay")
    b.conns.attach_channel(end_b, outgoing=False, transport="relay")
    row = a.peers.summary(a.peers.get(b.identity.device_id))  # type: ignore[arg-type]
    assert row["connected"] and row["transport"] == "relay"
    await a.conns._on_lan_event(_seen(b.short, b.address[1], "bravo"))
    lan = await wait_until(
        lambda: next((c for c in a.conns.sessions() if c.transport == "lan"), None),
        "a dials b over the LAN")
    assert lan.outgoing and lan.peer_id == b.identity.device_id
    assert a.conns.live_connections() == [lan]  # the direct session is the one used
    row = a.peers.summary(a.peers.get(b.identity.device_id))  # type: ignore[arg-type]
    assert row["transport"] == "lan" and sorted(row["sources"]) == ["lan", "mdns", "relay"]
    assert relayed in a.conns.sessions()
    # a LAN session is live now: a sighting does not dial again
    a.conns._maybe_dial(b.short)
    assert b.short not in a.conns._dialing


async def test_larger_id_dials_after_the_grace_if_the_other_side_does_not(two):
    a, b = two
    await b.conns._on_lan_event(_seen(a.short, a.address[1], "alpha"))
    assert b.conns.count() == 0 and a.short not in b.conns._dialing
    b.clock.advance(DIAL_GRACE + 0.01)
    b.conns._maybe_dial(a.short)
    conn = await wait_until(lambda: b.conns.live_connection(a.short), "b dials a")
    assert conn.outgoing and conn.peer_id == a.identity.device_id


async def test_failed_dials_back_off_and_fresh_news_retries_at_once(two):
    a, _ = two
    ghost = "f" * 16  # sorts after a: a dials without a grace
    await a.conns._on_lan_event(_seen(ghost, closed_port()))
    await wait_until(lambda: ghost in a.conns._dial_state and ghost not in a.conns._dialing,
                     "first dial fails")
    fails, next_try = a.conns._dial_state[ghost]
    first_backoff = next_try - a.clock()
    assert fails == 1 and first_backoff > 0
    a.conns._maybe_dial(ghost)  # too early
    assert ghost not in a.conns._dialing
    a.clock.advance(first_backoff)
    a.conns._maybe_dial(ghost)
    assert ghost in a.conns._dialing
    await wait_until(lambda: ghost not in a.conns._dialing and
                     a.conns._dial_state[ghost][0] == 2, "second dial fails")
    assert a.conns._dial_state[ghost][1] - a.clock() > first_backoff  # grows
    # a fresh mDNS record: retry now, whatever the backoff said
    await a.conns._on_lan_event(_seen(ghost, closed_port()))
    assert ghost in a.conns._dialing
    await wait_until(lambda: ghost not in a.conns._dialing)
    # the record is withdrawn: no more dialling
    await a.conns._on_lan_event(LanPeerGone(ghost))
    a.clock.advance(60)
    a.conns._maybe_dial(ghost)
    a.conns.check()
    assert ghost not in a.conns._dialing
    assert a.conns.count() == 0


async def test_stale_mdns_record_keeps_the_real_device_and_forgets_the_record(two):
    """mDNS says device X is at b's address, but b answers: the session is kept (b is a
    valid device), it is never taken for X, and the stale record is dropped."""
    a, b = two
    ghost = "f" * 16
    await a.conns._on_lan_event(_seen(ghost, b.address[1], "ghost"))
    await wait_until(lambda: ghost not in a.conns._dialing and a.conns.count() == 1)
    assert a.conns.live_connection(ghost) is None
    assert a.conns.live_connection(b.short) is not None
    assert ghost not in a.conns._lan_seen and ghost not in a.conns._dial_state
    info = a.peers.get(b.identity.device_id)
    assert info is not None and info.name == "bravo"  # not renamed after the stale record


async def test_no_dialling_once_stopped(two):
    a, b = two
    await a.conns.stop(1.0)
    await a.conns._on_lan_event(_seen(b.short, b.address[1]))
    assert b.short not in a.conns._dialing and a.conns.count() == 0


async def test_events_from_a_peer_reach_the_router(two):
    a, b = two
    got: list[tuple[str, dict]] = []
    b.router.add_events(("cluster",), lambda conn, op, args: got.append((op, args)))
    conn = await a.conns.connect(b.address)
    await conn.send_event("cluster", {"c": "ab" * 16, "n": 1, "l": ""})
    await wait_until(lambda: got, "event delivered")
    assert got == [("cluster", {"c": "ab" * 16, "n": 1, "l": ""})]


# ----------------------------------------------------------------- meshes
def test_hello_carries_the_mesh_only_when_not_the_default():
    plain = json.loads(make_hello("n", 1, None, DEFAULT_MESH))
    assert "mesh" not in plain and mesh_of(parse_hello(json.dumps(plain).encode())) == DEFAULT_MESH
    blue = parse_hello(make_hello("n", 1, None, "blue"))
    assert blue["mesh"] == "blue" and mesh_of(blue) == "blue"
    assert mesh_of(parse_hello(make_hello("n", 1, None, "m" * 32))) == "m" * 32


@pytest.mark.parametrize("bad", ["", "m" * 33, "two words", "café", 7, None, ["x"], True])
def test_hello_with_a_bad_mesh_is_malformed(bad):
    raw = json.dumps({"v": 1, "name": "x", "mesh": bad}).encode()
    with pytest.raises(ValueError, match="mesh"):
        parse_hello(raw)


async def test_connect_to_another_mesh_is_refused_on_both_sides(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="shoal.connections")
    ia, ib = ordered_identities(2)
    a = make_peer(tmp_path, "alpha", identity=ia, mesh="mesh-a")
    b = make_peer(tmp_path, "bravo", identity=ib, mesh="mesh-b")
    await a.conns.start()
    await b.conns.start()
    try:
        with pytest.raises(MeshMismatch) as exc:
            await asyncio.wait_for(a.conns.connect(b.address), GUARD)
        err = exc.value
        assert isinstance(err, Unreachable) and isinstance(err, ValueError)
        assert err.kind is ErrorKind.REFUSED
        assert (err.theirs, err.ours) == ("mesh-b", "mesh-a")
        msg = str(err)
        assert "'mesh-b'" in msg and "'mesh-a'" in msg and "\n" not in msg
        await wait_until(lambda: "session refused" in caplog.text, "b logs the refusal",
                         timeout=GUARD)
        assert "mesh-a" in caplog.text
        for p in (a, b):
            assert p.conns.count() == 0 and p.peers.all() == [] and p.trust.list() == []
        # an agent of the default mesh (or one from before mesh IDs) is another mesh too
        c = make_peer(tmp_path, "charlie", mesh=DEFAULT_MESH)
        await c.conns.start()
        try:
            with pytest.raises(MeshMismatch, match="'shoal'"):
                await asyncio.wait_for(c.conns.connect(a.address), GUARD)
        finally:
            await c.stop()
    finally:
        await a.stop()
        await b.stop()


async def test_attach_channel_refuses_another_mesh(two):
    a, b = two
    end_a, _ = memory_pair(a, b, b_hello=hello("bravo", signing_key=b.identity.signing_public,
                                               mesh="elsewhere"))
    with pytest.raises(MeshMismatch, match="'elsewhere'"):
        a.conns.attach_channel(end_a, outgoing=True, transport="ble")
    assert a.conns.count() == 0 and a.peers.get(b.identity.device_id) is None
    # same mesh: attached
    end_a, _ = memory_pair(a, b)
    assert a.conns.attach_channel(end_a, outgoing=True, transport="ble").name == "bravo"


# ----------------------------------------------------------------- unpaired sessions
async def test_unpaired_sessions_are_capped_oldest_first_and_paired_ones_are_kept(tmp_path):
    """Throwaway identities cost a stranger nothing: beyond the cap the least recently
    heard-from unpaired session is closed; a paired device's session is never counted."""
    from peer_helpers import MemoryChannel

    a = make_peer(tmp_path, "alpha")
    a.conns.max_untrusted_sessions = 2
    friend = Identity.generate()
    a.trust.add(friend.device_id, friend.public_key, "friend",
                signing_key=friend.signing_public)

    def attach(ident: Identity, name: str) -> object:
        ch = MemoryChannel(ident.public_key, hello(name, signing_key=ident.signing_public),
                           b"h" * 32)
        return a.conns.attach_channel(ch, outgoing=False, transport="lan")

    paired = attach(friend, "friend")
    strangers = [attach(Identity.generate(), f"s{i}") for i in range(2)]
    strangers[0].last_seen -= 10  # heard from longest ago
    strangers[1].last_seen -= 5
    strangers.append(attach(Identity.generate(), "s2"))
    await wait_until(lambda: strangers[0].closed.is_set(), "oldest stranger closed")
    assert "too many unpaired" in strangers[0].close_reason
    assert not strangers[1].closed.is_set() and not strangers[2].closed.is_set()
    assert not paired.closed.is_set()
    fourth = attach(Identity.generate(), "s3")
    await wait_until(lambda: strangers[1].closed.is_set(), "next oldest stranger closed")
    assert not strangers[2].closed.is_set() and not fourth.closed.is_set()
    assert not paired.closed.is_set()
    await a.stop()


async def test_dialling_your_own_address_keeps_no_session(tmp_path):
    """Your own address typed by mistake: one clear error, and this agent never appears
    among its own peers (on the dialling side or the accepting side)."""
    from agent.peer.connections import SelfConnection

    a = make_peer(tmp_path, "alpha")
    await a.conns.start()
    try:
        with pytest.raises(SelfConnection, match=r"127\.0\.0\.1:\d+ is this agent") as e:
            await a.conns.connect(a.address)
        assert e.value.kind is ErrorKind.INVALID
        await wait_until(lambda: a.conns.count() == 0, "the accepted end closes too")
        assert a.peers.all() == [] and a.conns.sessions() == []
    finally:
        await a.stop()
    assert a.spawner.unexpected() == []
