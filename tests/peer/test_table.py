"""PeerTable: bounded against throwaway identities; paired and connected devices stay."""

from __future__ import annotations

import asyncio

from peer_helpers import FakeClock

from agent.peer.table import PeerTable


class _Conn:
    """Just what the table reads of a session."""

    def __init__(self, peer_id: bytes, transport: str = "lan") -> None:
        self.peer_id = peer_id
        self.name = "live"
        self.transport = transport
        self.closed = asyncio.Event()
        self.last_seen = 0.0


def pid(i: int) -> bytes:
    return i.to_bytes(32, "big")


def test_throwaway_identities_do_not_grow_the_table_past_its_bound():
    clock = FakeClock(1000.0)
    paired = {pid(0)}
    table = PeerTable(is_trusted=paired.__contains__, max_peers=10, clock=clock)
    table.upsert(pid(0), source="lan", name="friend")
    live = _Conn(pid(1))
    table.attach(live)  # type: ignore[arg-type]
    for i in range(2, 302):  # 300 handshakes from fresh identities
        clock.advance(1)
        table.upsert(pid(i), source="lan", name=f"t{i}")
    assert len(table) == 10
    assert table.get(pid(0)) is not None  # paired: never evicted, though seen first
    assert table.get(pid(1)) is not None  # connected: never evicted
    kept = {p.peer_id for p in table.all()} - {pid(0), pid(1)}
    assert kept == {pid(i) for i in range(294, 302)}  # the most recently seen strangers


def test_prune_forgets_stale_strangers_only():
    clock = FakeClock(1000.0)
    paired = {pid(0)}
    table = PeerTable(is_trusted=paired.__contains__, stale_after=60.0, clock=clock)
    for i in range(4):
        table.upsert(pid(i), source="mdns")
    live = _Conn(pid(1))
    table.attach(live)  # type: ignore[arg-type]
    clock.advance(30)
    table.upsert(pid(3), source="ble")  # seen again: fresh
    clock.advance(31)
    assert table.prune() == 1
    assert {p.peer_id for p in table.all()} == {pid(0), pid(1), pid(3)}
    live.closed.set()
    table.detach(live)  # type: ignore[arg-type]
    clock.advance(60)
    assert table.prune() == 1  # pid 3 went stale; pid 1 was seen until its session ended
    clock.advance(1)
    assert table.prune() == 1
    assert {p.peer_id for p in table.all()} == {pid(0)}


def test_last_seen_and_offline_paired_rows():
    """Regression: a row's age ignored its session (a stranger connected for an hour was
    "last seen" when it connected, and pruned a moment after it left); the default kept
    strangers for an hour. Now: seen until the session ends, pruned after 10 min, and a
    paired device stays listed offline with how long ago it was seen."""
    clock = FakeClock(5000.0)
    paired = {pid(0)}
    table = PeerTable(is_trusted=paired.__contains__, clock=clock)
    assert table.stale_after == 600.0
    friend, stranger = _Conn(pid(0)), _Conn(pid(1))
    for c in (friend, stranger):
        table.attach(c)  # type: ignore[arg-type]
    clock.advance(3000)  # an hour-long session (traffic moves conn.last_seen)
    friend.last_seen = stranger.last_seen = clock.now
    for c in (friend, stranger):
        c.closed.set()
        table.detach(c)  # type: ignore[arg-type]
    clock.advance(599)
    assert table.prune() == 0
    row = table.summary(table.get(pid(0)))  # type: ignore[arg-type]
    assert row["connected"] is False and row["trusted"] and row["last_seen_s"] == 599.0
    assert isinstance(row["last_seen_at"], int)  # wall clock: display only
    clock.advance(2)
    assert table.prune() == 1
    assert [p.peer_id for p in table.all()] == [pid(0)]  # paired: listed, offline
    assert table.summary(table.get(pid(0)))["last_seen_s"] == 601.0  # type: ignore[arg-type]
