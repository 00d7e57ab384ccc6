"""PairingService: numeric comparison over real authenticated sessions between two agents."""

from __future__ import annotations

import asyncio

import pytest
from peer_helpers import GUARD, make_peer, memory_pair, wait_until

from agent.errors import ErrorKind
from agent.peer.connection import PeerGone, RemoteError
from agent.peer.pairing import AlreadyPaired, PairingFailed


@pytest.fixture
async def two(tmp_path):
    a = make_peer(tmp_path, "alpha")
    b = make_peer(tmp_path, "bravo")
    await a.conns.start()
    await b.conns.start()
    yield a, b
    await a.stop()
    await b.stop()
    assert a.spawner.unexpected() == [] and b.spawner.unexpected() == []


def _other_code(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


async def test_both_confirm_then_both_trust(two):
    a, b = two
    b.pairing.open_window(60)
    assert b.pairing.window_open() and not a.pairing.window_open()
    incoming = asyncio.create_task(b.pairing.wait(None, GUARD))
    conn = await a.conns.connect(b.address)
    started = await a.pairing.start(conn)
    code = started["code"]
    assert started["peer_name"] == "bravo" and not started["incoming"]
    assert a.pairing.session_of(str(started["pairing_id"])) is conn
    seen = await incoming
    assert seen["code"] == code and seen["incoming"] and seen["peer_name"] == "alpha"
    assert [p.code for p in b.pairing.pending()] == [code]
    b_pid = str(seen["pairing_id"])
    back = b.pairing.session_of(b_pid)
    assert back is not None and back.peer_id == a.identity.device_id

    a_done = asyncio.create_task(a.pairing.wait(str(started["pairing_id"]), GUARD))
    first = await a.pairing.confirm(code[:3] + " " + code[3:])  # as typed by a person
    assert first["local_confirmed"] and not first["complete"]
    assert not a.trust.is_trusted(b.identity.device_id)
    assert not a_done.done()
    second = await b.pairing.confirm(code)
    assert second["complete"]
    assert (await a_done)["complete"]
    assert (await b.pairing.wait(b_pid, GUARD))["complete"]
    dev_a, dev_b = a.trust.get(b.identity.device_id), b.trust.get(a.identity.device_id)
    assert dev_a is not None and dev_a.name == "bravo"
    assert dev_a.public_key == b.identity.public_key.hex()
    assert dev_b is not None and dev_b.name == "alpha"
    assert a.pairing.pending() == [] and b.pairing.pending() == []
    # a second ceremony is refused locally, before the peer is asked anything
    with pytest.raises(AlreadyPaired) as e:
        await a.pairing.start(conn)
    assert e.value.kind is ErrorKind.CONFLICT
    assert b.pairing.pending() == []
    # the session ends: the service lets go of it (finished pairings hold no session)
    await conn.close("done")
    await wait_until(lambda: a.pairing.session_of(str(started["pairing_id"])) is None)
    await wait_until(lambda: b.pairing.session_of(b_pid) is None)
    assert (await a.pairing.wait(str(started["pairing_id"]), GUARD))["complete"]


async def test_pairing_works_over_any_link(two):
    """The ceremony runs over a non-TCP session too (what BLE hands to attach_channel)."""
    a, b = two
    b.pairing.open_window(60)
    end_a, end_b = memory_pair(a, b)
    conn = a.conns.attach_channel(end_a, outgoing=True, transport="ble")
    b.conns.attach_channel(end_b, outgoing=False, transport="ble")
    code = (await a.pairing.start(conn))["code"]
    assert [p.code for p in b.pairing.pending()] == [code]
    await a.pairing.confirm(code)
    assert (await b.pairing.confirm(code))["complete"]
    assert a.trust.is_trusted(b.identity.device_id) and b.trust.is_trusted(a.identity.device_id)


async def test_closed_window_refuses(two):
    a, b = two
    conn = await a.conns.connect(b.address)
    with pytest.raises(PairingFailed, match="not accepting pairing") as e:
        await a.pairing.start(conn)
    assert e.value.kind is ErrorKind.REFUSED
    assert b.pairing.pending() == [] and a.pairing.pending() == []
    # a window that has run out is closed too
    b.pairing.open_window(10)
    b.wall.advance(11)
    assert not b.pairing.window_open()
    with pytest.raises(PairingFailed, match="not accepting pairing"):
        await a.pairing.start(conn)
    assert not conn.closed.is_set()


async def test_unknown_or_malformed_code(two):
    a, b = two
    b.pairing.open_window(60)
    conn = await a.conns.connect(b.address)
    code = (await a.pairing.start(conn))["code"]
    with pytest.raises(PairingFailed, match="no pending pairing shows code"):
        await a.pairing.confirm(_other_code(code))
    for bad in ("12345", "abcdef", ""):
        with pytest.raises(ValueError, match="6 digits"):
            await a.pairing.confirm(bad)
    assert [p.code for p in a.pairing.pending()] == [code]  # still pending
    assert not a.pairing.pending()[0].local_confirmed


async def test_codes_that_differ_cancel_both_sides(two):
    """What a man in the middle produces: the two screens disagree. The side whose code
    the other does not show is refused, and neither device trusts the other."""
    a, b = two
    b.pairing.open_window(60)
    conn = await a.conns.connect(b.address)
    started = await a.pairing.start(conn)
    mine = a.pairing.pending()[0]
    mine.code = _other_code(str(started["code"]))  # the screen a's user reads from
    with pytest.raises(PairingFailed, match="did not accept"):
        await a.pairing.confirm(mine.code)
    assert mine.cancelled and "code mismatch" in mine.cancelled
    b_side = list(b.pairing.book.pending.values())
    assert len(b_side) == 1 and b_side[0].cancelled == (
        "the other device confirmed a different code")
    assert b.pairing.pending() == [] and a.pairing.pending() == []
    with pytest.raises(PairingFailed):
        await b.pairing.confirm(str(started["code"]))
    assert not a.trust.list() and not b.trust.list()


async def test_peer_confirm_without_a_pairing_on_that_session_is_refused(two):
    a, b = two
    conn = await a.conns.connect(b.address)
    with pytest.raises(RemoteError, match="no pairing in progress"):
        await conn.request("pair_confirm", {"code": "123456"})
    assert not b.trust.list()


async def test_peer_confirm_on_another_session_does_not_count(two):
    """The code binds one session: confirming it on a second session changes nothing."""
    a, b = two
    b.pairing.open_window(60)
    conn = await a.conns.connect(b.address)
    code = (await a.pairing.start(conn))["code"]
    other = await a.conns.connect(b.address, expect="ffff")
    assert other is not conn
    with pytest.raises(RemoteError, match="no pairing in progress"):
        await other.request("pair_confirm", {"code": code})
    assert not b.pairing.pending()[0].remote_confirmed


async def test_session_closing_mid_pairing_cancels_it_on_both_sides(two):
    a, b = two
    b.pairing.open_window(60)
    conn = await a.conns.connect(b.address)
    started = await a.pairing.start(conn)
    pid, code = str(started["pairing_id"]), str(started["code"])
    a_wait = asyncio.create_task(a.pairing.wait(pid, GUARD))
    b_pid = b.pairing.pending()[0].pairing_id
    b_wait = asyncio.create_task(b.pairing.wait(b_pid, GUARD))
    await asyncio.sleep(0)
    await conn.close("radio went away")
    done_a, done_b = await a_wait, await b_wait  # waiters are woken by the close
    assert not done_a["complete"] and "connection lost" in str(done_a["cancelled"])
    assert not done_b["complete"] and "connection lost" in str(done_b["cancelled"])
    assert a.pairing.pending() == [] and b.pairing.pending() == []
    with pytest.raises(PairingFailed):
        await a.pairing.confirm(code)
    assert not a.trust.list() and not b.trust.list()


async def test_confirm_notices_a_lost_session_even_before_the_close_is_reported(tmp_path):
    a = make_peer(tmp_path, "alpha", wire_pairing=False)  # nobody tells pairing of closes
    b = make_peer(tmp_path, "bravo")
    await a.conns.start()
    await b.conns.start()
    try:
        b.pairing.open_window(60)
        conn = await a.conns.connect(b.address)
        code = str((await a.pairing.start(conn))["code"])
        await conn.close("gone")
        with pytest.raises(PairingFailed, match="connection to the other device was lost"):
            await a.pairing.confirm(code)
        assert a.pairing.pending() == []
        assert not a.trust.list()
    finally:
        await a.stop()
        await b.stop()


async def test_peer_cancel(two):
    a, b = two
    b.pairing.open_window(60)
    conn = await a.conns.connect(b.address)
    await a.pairing.start(conn)
    assert await conn.request("pair_cancel", {}) == {}
    (p,) = b.pairing.book.pending.values()
    assert p.cancelled == "cancelled by the other device"
    assert b.pairing.pending() == []


async def test_too_many_pending_pairings_are_refused(tmp_path):
    a = make_peer(tmp_path, "alpha")
    b = make_peer(tmp_path, "bravo", max_pending=1)
    c = make_peer(tmp_path, "charlie")
    for p in (a, b, c):
        await p.conns.start()
    try:
        b.pairing.open_window(60)
        await a.pairing.start(await a.conns.connect(b.address))
        with pytest.raises(PairingFailed, match="too many pairing attempts"):
            await c.pairing.start(await c.conns.connect(b.address))
        assert len(b.pairing.pending()) == 1
    finally:
        for p in (a, b, c):
            await p.stop()


async def test_one_device_holds_one_incoming_pairing_the_newest(tmp_path):
    """A stranger repeating pair_request (same session or new ones) cannot fill max_pending:
    each request replaces its previous one, and another device can still ask."""
    a = make_peer(tmp_path, "alpha", max_pending=8)
    b = make_peer(tmp_path, "bravo", max_pending=2)
    c = make_peer(tmp_path, "charlie")
    for p in (a, b, c):
        await p.conns.start()
    try:
        b.pairing.open_window(60)
        conn = await a.conns.connect(b.address)
        for _ in range(5):
            await conn.request("pair_request", {"name": "alpha"})
        end_a, end_b = memory_pair(a, b)  # a second session from the same device
        a.conns.attach_channel(end_a, outgoing=True, transport="ble")
        b.conns.attach_channel(end_b, outgoing=False, transport="ble")
        ble = await wait_until(lambda: a.conns.live_connection(b.short) and next(
            (s for s in a.conns.sessions() if s.transport == "ble"), None))
        await ble.request("pair_request", {"name": "alpha"})
        (only,) = b.pairing.pending()
        assert b.pairing.session_of(only.pairing_id).transport == "ble"  # the newest
        replaced = [p for p in b.pairing.book.pending.values() if p.cancelled]
        assert len(replaced) == 5 and all(p.peer_id == a.identity.device_id
                                          for p in replaced)
        await c.pairing.start(await c.conns.connect(b.address))  # room for someone else
        assert len(b.pairing.pending()) == 2
    finally:
        for p in (a, b, c):
            await p.stop()


async def test_pending_pairings_expire_and_waiters_hear_of_it(two):
    a, b = two
    b.pairing.open_window(60)
    conn = await a.conns.connect(b.address)
    started = await a.pairing.start(conn)
    pid, code = str(started["pairing_id"]), str(started["code"])
    waiter = asyncio.create_task(a.pairing.wait(pid, GUARD))
    await asyncio.sleep(0)
    await a.pairing.expire()  # nothing is due yet
    assert not waiter.done()
    a.wall.advance(61)  # window_seconds of a's book
    await a.pairing.expire()
    # the waiter (`shoal pair` waiting for the other device) learns why, at once
    done = await waiter
    assert done["cancelled"] == "timed out waiting for confirmation"
    with pytest.raises(PairingFailed, match="no pending pairing"):
        await a.pairing.confirm(code)
    a.wall.advance(200)  # long after: the outcome is forgotten too
    await a.pairing.expire()
    with pytest.raises(PairingFailed, match="unknown pairing"):
        await a.pairing.wait(pid, GUARD)


async def test_wait_times_out_when_nothing_happens(two):
    _, b = two
    with pytest.raises(TimeoutError):
        await b.pairing.wait(None, 0.05)


async def test_peer_names_are_bounded(two):
    a, b = two
    b.pairing.open_window(60)
    conn = await a.conns.connect(b.address)
    await conn.request("pair_request", {"name": "x" * 64})
    await wait_until(lambda: b.pairing.pending())
    assert b.pairing.pending()[0].peer_name == "x" * 64
    # a longer one breaks the wire schema: the peer hangs up on a protocol violation
    with pytest.raises(PeerGone):
        await conn.request("pair_request", {"name": "x" * 65})
    await wait_until(lambda: not b.pairing.pending(), "the pairing on it ends with it")


async def test_decline_ends_it_on_both_devices_but_never_undoes_a_finished_one(two):
    a, b = two
    b.pairing.open_window(60)
    conn = await a.conns.connect(b.address)
    started = await a.pairing.start(conn)
    (theirs,) = b.pairing.pending()
    a_waits = asyncio.create_task(a.pairing.wait(str(started["pairing_id"]), GUARD))
    out = await b.pairing.decline(theirs.pairing_id)
    assert out["cancelled"] == "declined on this device" and b.pairing.pending() == []
    assert (await a_waits)["cancelled"] == "cancelled by the other device"
    assert a.pairing.pending() == []
    # a finished pairing stays finished: declining it late tells no one anything
    code = str((await a.pairing.start(conn))["code"])
    (theirs,) = b.pairing.pending()
    await a.pairing.confirm(code)
    assert (await b.pairing.confirm(code))["complete"]
    late = await b.pairing.decline(theirs.pairing_id)
    assert late["complete"] and late["cancelled"] is None
    assert a.trust.is_trusted(b.identity.device_id) and b.trust.is_trusted(a.identity.device_id)
    with pytest.raises(PairingFailed, match="no such pairing"):
        await b.pairing.decline("1-000000")
