"""UnpairService: an unpair reaches the other device (now, or at its next session), and a
notice only ever withdraws the sender's own trust."""

from __future__ import annotations

import pytest
from peer_helpers import Peer, make_peer, wait_until

from agent.peer.connection import PeerGone
from agent.peer.unpair import MAX_ATTEMPTS, NOTICES_FILE, OwedNotices
from agent.security.identity import Identity


@pytest.fixture
async def three(tmp_path):
    peers = [make_peer(tmp_path, n) for n in ("alpha", "bravo", "charlie")]
    for p in peers:
        await p.conns.start()
    yield peers
    for p in peers:
        await p.stop()
        assert p.spawner.unexpected() == []


def _trust(x: Peer, y: Peer) -> None:
    x.trust.add(y.identity.device_id, y.identity.public_key, y.name,
                signing_key=y.identity.signing_public)


def _heard(x: Peer) -> list[bytes]:
    got: list[bytes] = []
    x.unpair.on_unpaired(got.append)
    return got


async def test_unpair_is_heard_at_once_and_removes_only_the_sender(three):
    a, b, c = three
    _trust(a, b), _trust(b, a), _trust(b, c)
    a_heard, b_heard = _heard(a), _heard(b)
    conn = await a.conns.connect(b.address)
    out = await a.unpair.unpair(a.trust.resolve("bravo"))
    assert out["notified"] is True
    assert conn.closed.is_set() and conn.close_reason == "unpaired"
    assert not a.trust.is_trusted(b.identity.device_id)
    assert [d.name for d in b.trust.list()] == ["charlie"]  # only a's own entry went
    row = b.peers.get(a.identity.device_id)
    assert row is not None and b.peers.summary(row)["unpaired_by_peer"]
    assert a_heard == [b.identity.device_id] and b_heard == [a.identity.device_id]
    assert NOTICES_FILE not in {p.name for p in a.data_dir.iterdir()} or \
        b.identity.device_id.hex() not in a.unpair.owed  # delivered: nothing owed


async def test_a_notice_from_a_device_we_do_not_trust_changes_nothing(three):
    """A stranger (or a device that was never paired) saying "unpaired" has no entry of its
    own to withdraw, and the notice names nobody else: a's trust store is unchanged."""
    a, _b, c = three
    _trust(a, _b)
    heard = _heard(a)
    conn = await c.conns.connect(a.address)
    assert await conn.request("unpaired", {}) == {"removed": False}
    assert [d.name for d in a.trust.list()] == ["bravo"]
    assert heard == []
    row = a.peers.get(c.identity.device_id)
    assert row is not None and not a.peers.summary(row)["unpaired_by_peer"]
    # naming a third party is not even well-formed: the session ends, nothing changes
    with pytest.raises(PeerGone):
        await conn.request("unpaired", {"device": _b.identity.device_id.hex()})
    assert [d.name for d in a.trust.list()] == ["bravo"]


async def test_an_offline_device_learns_it_at_its_next_session(three, tmp_path):
    a, b, _c = three
    _trust(a, b), _trust(b, a)
    out = await a.unpair.unpair(a.trust.resolve("bravo"))
    assert out["notified"] is False  # no session: owed, and remembered across a restart
    assert b.identity.device_id.hex() in OwedNotices(a.data_dir)
    assert b.trust.is_trusted(a.identity.device_id)
    await b.conns.connect(a.address)  # b comes back and dials a
    await wait_until(lambda: not b.trust.is_trusted(a.identity.device_id),
                     "b hears the notice first thing")
    await wait_until(lambda: b.identity.device_id.hex() not in a.unpair.owed, "settled")
    assert b.identity.device_id.hex() not in OwedNotices(a.data_dir)


async def test_paired_again_before_the_next_session_owes_nothing(three):
    a, b, _c = three
    _trust(a, b), _trust(b, a)
    await a.unpair.unpair(a.trust.resolve("bravo"))
    _trust(a, b)  # paired again (a new ceremony) before b ever heard of it
    await b.conns.connect(a.address)
    await wait_until(lambda: b.identity.device_id.hex() not in a.unpair.owed, "settled")
    assert b.trust.is_trusted(a.identity.device_id)  # never told: the pairing stands


def test_owed_notices_are_bounded_given_up_and_a_damaged_file_is_dropped(tmp_path):
    owed = OwedNotices(tmp_path)
    dev = Identity.generate().device_id.hex()
    owed.owe(dev)
    for _ in range(MAX_ATTEMPTS - 1):
        owed.tried(dev)
    assert dev in OwedNotices(tmp_path)
    owed.tried(dev)  # an agent that never answers (from before the notice): given up
    assert dev not in owed and dev not in OwedNotices(tmp_path)
    (tmp_path / NOTICES_FILE).write_text('{"version": 1, "owed": {"zz": 1}}')
    assert dev not in OwedNotices(tmp_path)  # logged and dropped, never an error
    (tmp_path / NOTICES_FILE).write_text("not json")
    assert OwedNotices(tmp_path)._owed == {}
