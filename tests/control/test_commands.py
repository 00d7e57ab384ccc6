"""The control command table over real services (connections, pairing, trust, store) on
loopback; only the fetch service and the BLE link are fakes."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from peer_helpers import GUARD, Peer, closed_port, make_peer, wait_until

from agent.config import Config, NodeConfig
from agent.control import ControlError, call_simple
from agent.control.commands import (
    MAX_WAIT,
    CommandContext,
    Commands,
    _seconds,
    pairing_addresses,
)
from agent.control.server import ControlServer
from agent.errors import ErrorKind
from agent.peer.connection import PeerConnection
from agent.peer.connections import SelfConnection, Unreachable
from agent.peer.pairing import AlreadyPaired, PairingFailed
from agent.security.trust import TrustError
from agent.store import ContentStore, StoreError


class FakeReply:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.chunks: list[bytes] = []

    async def event(self, **fields: Any) -> None:
        self.events.append(fields)

    async def data(self, chunk: bytes) -> None:
        self.chunks.append(bytes(chunk))


@dataclass
class FakeFetcher:
    result: dict[str, object] | Exception = field(default_factory=dict)
    calls: list[tuple[str, str | None]] = field(default_factory=list)

    store: ContentStore | None = None  # where an export reads from, as the real one does

    async def fetch(self, resource: str, *, source: str | None = None,
                    traffic_class: str = "demand", progress: Any = None,
                    export: Any = None) -> dict[str, object]:
        self.calls.append((resource, source))
        if progress is not None:
            await progress({"stage": "manifest", "resource": resource})
        if isinstance(self.result, Exception):
            raise self.result
        if export is not None and self.store is not None:
            m = self.store.find(str(self.result["resource_id"])).manifest
            await export.start(m)
            for c in m.chunks:
                await export.data(self.store.get_chunk(c.chunk_id))
        return self.result

    def trusted_publisher(self, publisher_hex: str) -> bool:
        return True


@dataclass
class FakeBle:
    conn: PeerConnection | None = None
    asked: list[str] = field(default_factory=list)

    def status(self) -> dict[str, object]:
        return {"adapter": "sim0", "connected": 1}

    def find_connection(self, target: str) -> PeerConnection:
        self.asked.append(target)
        if self.conn is None:
            raise LookupError(f"no BLE device {target!r} nearby")
        return self.conn


@dataclass
class FakeAuthority:
    asked: list[str | None] = field(default_factory=list)

    def describe(self, resource: str | None = None) -> dict[str, object]:
        self.asked.append(resource)
        return {"leader": None, "resource": resource}


@dataclass
class Agent:
    peer: Peer
    store: ContentStore
    fetcher: FakeFetcher
    commands: Commands
    stopped: asyncio.Event
    changed: list[int]

    async def run(self, cmd: str, reply: FakeReply | None = None, **args: Any) -> Any:
        return await self.commands.table()[cmd](args, reply or FakeReply())


def make_agent(tmp_path: Path, name: str) -> Agent:
    peer = make_peer(tmp_path, name)
    store = ContentStore(peer.data_dir / "store", avg_chunk_size=16 * 1024)
    fetcher = FakeFetcher(store=store)
    stopped = asyncio.Event()
    changed: list[int] = []
    ctx = CommandContext(
        cfg=Config(node=NodeConfig(name=name, data_dir=peer.data_dir)),
        identity=peer.identity, started=time.monotonic(), store=store, trust=peer.trust,
        peers=peer.peers, connections=peer.conns, pairing=peer.pairing,
        fetcher=fetcher,  # type: ignore[arg-type]  # the fake has FetchService's surface
        catalog_changed=lambda: changed.append(1), stop=stopped.set, unpairing=peer.unpair)
    return Agent(peer, store, fetcher, Commands(ctx), stopped, changed)


@pytest.fixture
async def two(tmp_path):
    a, b = make_agent(tmp_path, "alpha"), make_agent(tmp_path, "bravo")
    await a.peer.conns.start()
    await b.peer.conns.start()
    yield a, b
    for x in (a, b):
        await x.peer.stop()
        x.store.close()
        assert x.peer.spawner.unexpected() == []


def _addr(x: Agent) -> str:
    host, port = x.peer.address
    return f"{host}:{port}"


# ----------------------------------------------------------------- durations
@pytest.mark.parametrize("bad", ["inf", "-inf", "nan", "NaN", -1, 0, "0", 1e9, "1e9",
                                 MAX_WAIT + 1, "soon", [], {}, float("inf"), float("nan"),
                                 True, False])
def test_seconds_must_be_finite_positive_and_bounded(bad):
    with pytest.raises(ControlError) as e:
        _seconds(bad, 10.0, "timeout")
    assert "timeout" in str(e.value) and e.value.error_kind is ErrorKind.INVALID


@pytest.mark.parametrize(("value", "expected"), [
    (None, 10.0), ("", 10.0), (30, 30.0), ("2.5", 2.5), (MAX_WAIT, MAX_WAIT), (0.001, 0.001)])
def test_seconds_accepts_sane_values(value, expected):
    assert _seconds(value, 10.0, "timeout") == expected


# ----------------------------------------------------------------- simple commands
def test_the_table_serves_every_command(tmp_path):
    a = make_agent(tmp_path, "alpha")
    try:
        assert set(a.commands.table()) == {
            "id", "status", "peers", "publish", "resources", "fetch", "pair_start",
            "pair_open", "pair_close", "pair_decline", "pair_confirm", "pair_pending",
            "pair_wait", "unpair", "dashboard",
            "trust_list", "connect", "stop", "authority", "usage", "model", "delegate",
            "delegation_accept", "watching", "unwatch", "prefetch", "mirrors", "versions",
            "follow", "unfollow", "follow_list", "unpublish", "dht", "dht-find", "relay"}
    finally:
        a.store.close()


async def test_id_and_status(two):
    a, b = two
    ident = await a.run("id")
    assert ident == {"display_id": a.peer.identity.display_id, "hex": a.peer.hex,
                     "name": "alpha"}
    await a.run("connect", address=_addr(b))
    st = await a.run("status")
    assert st["name"] == "alpha" and st["lan_port"] == a.peer.address[1]
    assert st["connected"] == 1 and st["peers"] == 1 and st["paired"] == 0
    assert st["resources"] == 0 and st["ble"] is None and not st["pairing_window_open"]
    assert st["data_dir"] == str(a.peer.data_dir)
    await a.run("pair_open", seconds=30)
    assert (await a.run("status"))["pairing_window_open"]
    a.commands.ctx.ble = FakeBle()
    assert (await a.run("status"))["ble"] == {"adapter": "sim0", "connected": 1}


async def test_stop_asks_the_node_to_stop(two):
    a, _ = two
    assert await a.run("stop") == {"stopping": True}
    await asyncio.wait_for(a.stopped.wait(), GUARD)


async def test_authority(two):
    a, _ = two
    with pytest.raises(ControlError, match="authority is disabled") as e:
        await a.run("authority")
    assert e.value.error_kind is ErrorKind.INVALID
    fake = FakeAuthority()
    a.commands.ctx.authority = fake
    assert await a.run("authority", resource="photos") == {"leader": None, "resource": "photos"}
    await a.run("authority")
    assert fake.asked == ["photos", None]


# ----------------------------------------------------------------- publish / resources
async def test_publish_validates_the_path(two, tmp_path):
    a, _ = two
    with pytest.raises(ControlError, match="absolute path"):
        await a.run("publish", path="relative/file.txt")
    with pytest.raises(ControlError, match="absolute path"):
        await a.run("publish")
    with pytest.raises(ControlError, match="not a readable regular file"):
        await a.run("publish", path=str(tmp_path / "missing.bin"))
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ControlError, match="not a readable regular file"):
        await a.run("publish", path=str(tmp_path / "fifo"))
    (tmp_path / "empty").mkdir()  # a directory is a folder: one with no files is refused
    with pytest.raises(StoreError, match="holds no regular files"):
        await a.run("publish", path=str(tmp_path / "empty"))
    assert a.store.resources() == [] and a.changed == []


async def test_publish_a_directory_is_one_folder_resource(two, tmp_path):
    a, _ = two
    (tmp_path / "site" / "css").mkdir(parents=True)
    (tmp_path / "site" / "index.html").write_text("<h1>hi</h1>")
    (tmp_path / "site" / "css" / "a.css").write_text("h1 {}")
    os.symlink("/etc", tmp_path / "site" / "etc")
    entry = await a.run("publish", path=str(tmp_path / "site"))
    assert entry["name"] == "site" and entry["files"] == 2 and entry["version"] == 1
    assert entry["skipped"] == ["etc (symbolic link, not followed)"]
    listed = (await a.run("resources", local_only=True))["local"]
    assert [(x["name"], x["files"]) for x in listed] == [("site", 2)]


async def test_publish_then_list(two, tmp_path):
    a, _ = two
    f = tmp_path / "notes.txt"
    f.write_bytes(b"shoal " * 10_000)
    entry = await a.run("publish", path=str(f), name="notes", public=True)
    assert entry["name"] == "notes" and entry["size"] == f.stat().st_size and entry["public"]
    assert entry["publisher"] == a.peer.hex
    assert a.changed == [1]
    listed = await a.run("resources", local_only=True)
    assert listed == {"local": [entry], "remote": []}
    assert (await a.run("status"))["resources"] == 1


async def test_resources_asks_every_live_peer_and_skips_those_that_fail(two, tmp_path):
    a, b = two
    from agent.security.identity import Identity
    from agent.store import ContentStore
    from agent.transfer.listing import listing_entry

    src = tmp_path / "maps"
    src.write_bytes(b"map data" * 100)
    with ContentStore(tmp_path / "pubstore") as st:  # a genuinely signed entry
        m = st.publish_file(src, signer=Identity.generate(), public=True)
        offered = listing_entry(st.find(m.resource_id))
    unsigned = {"resource_id": "ab" * 16, "name": "maps"}  # a bare claim: dropped

    async def on_list(conn, req):
        return [offered, unsigned, "not an entry", 7]

    b.peer.router.add_requests({"list": on_list})
    c = make_agent(tmp_path, "charlie")  # answers no "list": refused, skipped
    await c.peer.conns.start()
    try:
        await a.peer.conns.connect(b.peer.address)
        await a.peer.conns.connect(c.peer.address)
        out = await a.run("resources")
        assert [(e["holder"], e["resource_id"], e["name"]) for e in out["remote"]] == [
            ("bravo", m.resource_id, "maps")]
        assert out["local"] == [] and "seal" not in out["remote"][0]
    finally:
        await c.peer.stop()
        c.store.close()


# ----------------------------------------------------------------- fetch
async def test_fetch_needs_a_resource(two):
    a, _ = two
    with pytest.raises(ControlError, match="needs a resource"):
        await a.run("fetch")
    assert a.fetcher.calls == []


async def test_fetch_reports_progress_and_passes_the_source(two):
    a, _ = two
    a.fetcher.result = {"resource_id": "cd" * 16, "already_held": False}
    reply = FakeReply()
    out = await a.run("fetch", reply, resource="maps", source="10.0.0.2:47474")
    assert out == a.fetcher.result
    assert a.fetcher.calls == [("maps", "10.0.0.2:47474")]
    assert reply.events == [{"stage": "manifest", "resource": "maps"}]
    assert reply.chunks == []


async def test_fetch_stream_exports_the_bytes(two, tmp_path):
    a, _ = two
    f = tmp_path / "blob.bin"
    f.write_bytes(os.urandom(100_000))
    entry = await a.run("publish", path=str(f))
    a.fetcher.result = {"resource_id": entry["resource_id"]}
    reply = FakeReply()
    await a.run("fetch", reply, resource="blob.bin", stream=True)
    assert reply.events[-1] == {"stage": "export", "name": "blob.bin", "size": 100_000}
    assert len(reply.chunks) == entry["chunks"] > 1
    assert b"".join(reply.chunks) == f.read_bytes()


async def test_fetch_failures_pass_through_typed(two):
    a, _ = two
    a.fetcher.result = Unreachable("cannot reach 10.0.0.2:47474: timed out")
    with pytest.raises(Unreachable):
        await a.run("fetch", resource="maps")


# ----------------------------------------------------------------- connect
async def test_connect(two):
    a, b = two
    out = await a.run("connect", address=_addr(b))
    assert out["name"] == "bravo" and out["display_id"] == b.peer.identity.display_id
    assert out["trusted"] is False and isinstance(out["rtt_ms"], float)
    with pytest.raises(Unreachable):
        await a.run("connect", address=f"127.0.0.1:{closed_port()}")
    for bad in ("", "host:0", "host:99999", "host:port", "host:-1"):
        with pytest.raises(ValueError, match="not a peer address"):
            await a.run("connect", address=bad)


# ----------------------------------------------------------------- pairing
async def test_pair_open_validates_seconds(two):
    a, _ = two
    for bad in ("inf", "nan", -1, 1e9, "0"):
        with pytest.raises(ControlError, match="seconds"):
            await a.run("pair_open", seconds=bad)
        assert not a.peer.pairing.window_open()
    out = await a.run("pair_open", seconds="30")
    assert out["seconds"] == 30.0 and out["open_until"] == pytest.approx(a.peer.wall() + 30)
    default = await a.run("pair_open")
    assert default["seconds"] == Config().pairing.window_seconds


async def test_pair_wait_validates_and_times_out(two):
    a, _ = two
    for bad in ("inf", "nan", -1, 1e9):
        with pytest.raises(ControlError, match="timeout"):
            await a.run("pair_wait", timeout=bad)
    with pytest.raises(ControlError, match="no pairing happened within"):
        await a.run("pair_wait", timeout=0.05)


async def test_pairing_through_the_commands_of_both_devices(two):
    a, b = two
    await b.run("pair_open", seconds=60)
    started = await a.run("pair_start", address=_addr(b))
    code = started["code"]
    (pending,) = await b.run("pair_pending")
    assert pending["code"] == code and pending["code_display"] == f"{code[:3]} {code[3:]}"
    waiting = asyncio.create_task(a.run("pair_wait", pairing_id=started["pairing_id"],
                                        timeout=GUARD))
    assert not (await a.run("pair_confirm", code=code))["complete"]
    assert (await b.run("pair_confirm", code=code))["complete"]
    assert (await waiting)["complete"]
    assert [d["name"] for d in await a.run("trust_list")] == ["bravo"]
    assert [d["name"] for d in await b.run("trust_list")] == ["alpha"]
    peers = await a.run("peers")
    assert [(p["name"], p["trusted"], p["connected"]) for p in peers] == [("bravo", True, True)]
    with pytest.raises(AlreadyPaired):
        await a.run("pair_start", address=_addr(b))


async def test_pair_close_shuts_the_window_and_cancels_unconfirmed_incoming(two):
    a, b = two
    await b.run("pair_open", seconds=60)
    started = await a.run("pair_start", address=_addr(b))
    assert await b.run("pair_close") == {"was_open": True, "cancelled": 1}
    assert not b.peer.pairing.window_open() and await b.run("pair_pending") == []
    assert not (await b.run("status"))["pairing_window_open"]
    done = await a.run("pair_wait", pairing_id=started["pairing_id"], timeout=GUARD)
    assert done["cancelled"] == "cancelled by the other device"  # told, not left waiting
    with pytest.raises(PairingFailed, match="not accepting pairing"):
        await a.run("pair_start", address=_addr(b))
    assert await b.run("pair_close") == {"was_open": False, "cancelled": 0}


async def test_pair_confirm_without_a_pending_pairing(two):
    a, _ = two
    with pytest.raises(PairingFailed, match="no pending pairing"):
        await a.run("pair_confirm", code="123 456")
    with pytest.raises(ValueError, match="6 digits"):
        await a.run("pair_confirm")


async def test_pair_start_over_ble(two):
    a, b = two
    with pytest.raises(ControlError, match="BLE is not running"):
        await a.run("pair_start", address="ble:bravo")
    await b.run("pair_open", seconds=60)
    conn = await a.peer.conns.connect(b.peer.address)  # stands in for the BLE session
    a.commands.ctx.ble = FakeBle(conn)
    started = await a.run("pair_start", address="ble:BRAV-O123")
    assert a.commands.ctx.ble.asked == ["BRAV-O123"]
    assert a.peer.pairing.session_of(started["pairing_id"]) is conn
    a.commands.ctx.ble = FakeBle(None)
    with pytest.raises(LookupError):
        await a.run("pair_start", address="ble:nobody")


async def test_a_waiting_pair_shows_the_request_that_arrives_after_it(two, tmp_path):
    """What `shoal pair` (waiting) does: pair_open, then pair_wait(after=...). An older
    request still pending from another device is not the one the user is waiting for."""
    a, b = two
    c = make_agent(tmp_path, "charlie")
    await c.peer.conns.start()
    try:
        await b.run("pair_open", seconds=60)
        older = await c.run("pair_start", address=_addr(b))  # pending before we wait
        opened = await b.run("pair_open", seconds=60)
        waiting = asyncio.create_task(b.run("pair_wait", timeout=GUARD,
                                            after=opened["after"]))
        for _ in range(20):  # let it run: it must keep waiting, nothing newer arrived
            await asyncio.sleep(0)
        assert not waiting.done()
        started = await a.run("pair_start", address=_addr(b))
        shown = await waiting
        assert shown["peer_name"] == "alpha" and shown["code"] == started["code"]
        assert shown["code"] != older["code"]
        # with --code the waiter picks the request showing that code
        assert (await b.run("pair_wait", timeout=GUARD, code=older["code"]))["peer_name"] \
            == "charlie"
        for bad in (-1, "3", 2.5, True):
            with pytest.raises(ControlError, match="sequence number"):
                await b.run("pair_wait", timeout=1, after=bad)
        with pytest.raises(ControlError, match="6 digits"):
            await b.run("pair_wait", timeout=1, code="12")
    finally:
        await c.peer.stop()
        c.store.close()


async def test_declined_and_expired_pairings_leave_pending_on_both_devices(two):
    a, b = two
    await b.run("pair_open", seconds=60)
    started = await a.run("pair_start", address=_addr(b))
    (incoming,) = await b.run("pair_pending")
    a_waits = asyncio.create_task(a.run("pair_wait", pairing_id=started["pairing_id"],
                                        timeout=GUARD))
    out = await b.run("pair_decline", pairing_id=incoming["pairing_id"])
    assert out["cancelled"] == "declined on this device"
    assert await b.run("pair_pending") == []
    assert (await a_waits)["cancelled"] == "cancelled by the other device"  # told at once
    assert await a.run("pair_pending") == []
    with pytest.raises(PairingFailed, match="no pending pairing"):
        await b.run("pair_confirm", code=started["code"])
    for bad in (None, "", 7, "x" * 65):
        with pytest.raises(ControlError, match="pairing_id"):
            await b.run("pair_decline", pairing_id=bad)
    with pytest.raises(PairingFailed, match="no such pairing"):
        await b.run("pair_decline", pairing_id="99-abcdef")
    # an expired pairing is gone from the list as soon as it expires, on both devices
    await b.run("pair_open", seconds=60)
    await a.run("pair_start", address=_addr(b))
    assert len(await a.run("pair_pending")) == 1 and len(await b.run("pair_pending")) == 1
    a.peer.wall.advance(61)
    b.peer.wall.advance(61)
    assert await a.run("pair_pending") == [] and await b.run("pair_pending") == []


async def test_pair_open_says_where_to_pair_with_this_agent(two):
    a, _ = two
    opened = await a.run("pair_open", seconds=30)
    assert opened["addresses"] == [_addr(a)]  # its real listen address and port
    a.commands.ctx.ble = FakeBle()
    opened = await a.run("pair_open", seconds=30)
    assert opened["addresses"] == [_addr(a), f"ble:{a.peer.identity.short_id}"]


def test_pairing_addresses():
    eps = [("127.0.0.1", 5), ("10.0.0.2", 5), ("192.168.1.9", 5)]
    assert pairing_addresses("0.0.0.0", 5, eps) == ["10.0.0.2:5", "192.168.1.9:5"]
    assert pairing_addresses("0.0.0.0", 5, [("127.0.0.1", 5)]) == ["127.0.0.1:5"]
    assert pairing_addresses("0.0.0.0", 5, []) == ["127.0.0.1:5"]  # all there is
    assert pairing_addresses("127.0.0.1", 47474, eps) == ["127.0.0.1:47474"]
    assert pairing_addresses("192.168.1.9", 5, eps) == ["192.168.1.9:5"]
    assert pairing_addresses("::", 5, eps) == ["[::1]:5"]
    assert pairing_addresses("::1", 5, []) == ["[::1]:5"]
    assert pairing_addresses("0.0.0.0", None, eps) == []  # no LAN listener


async def test_pairing_with_yourself_is_one_clear_error_and_lists_no_self(two):
    a, _ = two
    await a.run("pair_open", seconds=60)
    with pytest.raises(ControlError, match="that is this agent") as e:
        await a.run("pair_start", address=_addr(a))
    assert "\n" not in str(e.value) and e.value.error_kind is ErrorKind.INVALID
    await wait_until(lambda: a.peer.conns.count() == 0, "both ends of the loop closed")
    assert await a.run("peers") == [] and await a.run("pair_pending") == []
    assert (await a.run("status"))["peers"] == 0
    with pytest.raises(SelfConnection, match="is this agent"):
        await a.run("connect", address=_addr(a))
    assert await a.run("peers") == []


# ----------------------------------------------------------------- unpair
async def test_unpair_forgets_the_device_and_closes_its_sessions(two):
    a, b = two
    a.peer.trust.add(b.peer.identity.device_id, b.peer.identity.public_key, "bravo",
                    signing_key=b.peer.identity.signing_public)
    conn = await a.peer.conns.connect(b.peer.address)
    twin = await a.peer.conns.connect(b.peer.address, expect="ffff")
    out = await a.run("unpair", device="bravo")
    assert out == {"name": "bravo", "display_id": b.peer.identity.display_id, "notified": True}
    assert not a.peer.trust.is_trusted(b.peer.identity.device_id)
    assert conn.closed.is_set() and twin.closed.is_set()
    assert conn.close_reason == "unpaired"
    await wait_until(lambda: b.peer.conns.count() == 0, "b sees the sessions end")
    assert await a.run("trust_list") == []
    with pytest.raises(TrustError, match="no paired device matches") as e:
        await a.run("unpair", device="bravo")
    assert e.value.kind is ErrorKind.NOT_FOUND


async def test_unpair_tells_the_other_side_which_agrees_afterwards(two):
    a, b = two
    for x, y in ((a, b), (b, a)):
        x.peer.trust.add(y.peer.identity.device_id, y.peer.identity.public_key, y.peer.name,
                         signing_key=y.peer.identity.signing_public)
    await a.peer.conns.connect(b.peer.address)
    assert (await a.run("unpair", device="bravo"))["notified"] is True
    for x in (a, b):
        assert await x.run("trust_list") == [] and (await x.run("status"))["paired"] == 0
    (row,) = await b.run("peers")
    assert row["name"] == "alpha" and not row["trusted"] and row["unpaired_by_peer"]
    assert isinstance(row["last_seen_s"], float) and isinstance(row["last_seen_at"], int)


async def test_peers_lists_paired_devices_never_seen_as_offline(two):
    """Regression: a paired device not seen since the agent started was missing from
    `peers` (only the discovery table was listed)."""
    a, b = two
    a.peer.trust.add(b.peer.identity.device_id, b.peer.identity.public_key, "bravo",
                     signing_key=b.peer.identity.signing_public)
    (row,) = await a.run("peers")
    assert (row["name"], row["trusted"], row["connected"], row["last_seen_s"]) == \
        ("bravo", True, False, None)
    assert row["short_id"] == b.peer.identity.display_id[:9]
    await a.peer.conns.connect(b.peer.address)
    (row,) = await a.run("peers")  # seen now: one row, from the table
    assert row["connected"] and row["last_seen_s"] is not None


async def test_unpair_by_display_id_prefix(two):
    a, b = two
    a.peer.trust.add(b.peer.identity.device_id, b.peer.identity.public_key, "bravo",
                    signing_key=b.peer.identity.signing_public)
    out = await a.run("unpair", device=b.peer.identity.display_id[:9])
    assert out["name"] == "bravo" and a.peer.trust.list() == []


# ----------------------------------------------------------------- kinds over the socket
async def test_error_kinds_reach_the_cli(two, tmp_path):
    """The served table: each failure arrives as one line with the kind a program acts on."""
    a, b = two
    sock = tmp_path / "ctl.sock"
    server = ControlServer(sock, a.commands.table())
    await server.start()
    try:
        async def kind(cmd: str, **args: Any) -> ErrorKind:
            with pytest.raises(ControlError) as e:
                await call_simple(sock, cmd, args)
            assert "\n" not in str(e.value)
            return e.value.error_kind

        assert await kind("publish", path="x") is ErrorKind.INVALID
        assert await kind("pair_open", seconds="inf") is ErrorKind.INVALID
        assert await kind("connect", address="nope:99999") is ErrorKind.INVALID
        assert await kind("connect", address=f"127.0.0.1:{closed_port()}") \
            is ErrorKind.UNREACHABLE
        assert await kind("unpair", device="nobody") is ErrorKind.NOT_FOUND
        assert await kind("pair_confirm", code="123456") is ErrorKind.REFUSED
        assert await kind("pair_start", address=_addr(b)) is ErrorKind.REFUSED  # window shut
        a.peer.trust.add(b.peer.identity.device_id, b.peer.identity.public_key, "bravo",
                    signing_key=b.peer.identity.signing_public)
        assert await kind("pair_start", address=_addr(b)) is ErrorKind.CONFLICT
        assert await kind("authority") is ErrorKind.INVALID
        status = await call_simple(sock, "status")
        assert status["paired"] == 1 and status["connected"] == 1
    finally:
        await server.close()
