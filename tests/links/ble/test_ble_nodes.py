"""Two (or three) real Nodes in one process, talking over the simulated radio (radio.sim).

Each Node has its own data dir and a LAN listener on 127.0.0.1 with mDNS off, so BLE is the
only way they can find each other. The simulator enforces ATT sizes (MTU), and can lose
notifications and drop links; ``notify_broadcast`` models bless sending every notification
to every subscribed central.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
from ble_helpers import FAST, SimAgent, channel_pair, open_cch, sim_agents, wait_until, write_file

from agent.errors import ShoalError
from agent.links.ble.central import read_public_catalog
from agent.links.ble.channel import BleSecureChannel
from radio.ble import profile as p
from radio.sim import LinkParams, RealClock, SimAir


def make_air(mtu: int = 247, *, loss: float = 0.0, latency: float = 0.001, seed: int = 1) -> SimAir:
    return SimAir(seed, clock=RealClock(), notify_broadcast=True,
                  link=LinkParams(mtu=mtu, latency_s=latency, loss=loss, connect_latency_s=0.005))


def names(entries: list[dict]) -> set[str]:
    return {e["name"] for e in entries}


async def ble_session(a: SimAgent, b: SimAgent) -> None:
    await wait_until(lambda: a.ble_conn(b) is not None and b.ble_conn(a) is not None,
                     what=f"BLE session {a.name}<->{b.name}")


@pytest.mark.parametrize("mtu", [23, 185, 517])
async def test_full_flow_over_ble_then_tcp(tmp_path: Path, mtu: int) -> None:
    """discovery -> NodeInfo -> session -> list (public only) -> pair over BLE -> list shows
    private -> handover -> fetch over TCP."""
    async with sim_agents(make_air(mtu), "a", "b") as ag:
        a, b = ag["a"], ag["b"]
        pub = write_file(tmp_path, "pub.bin", 300_000, 1)
        priv = write_file(tmp_path, "priv.bin", 200_000, 2)
        await b.publish(pub, public=True)
        await b.publish(priv, public=False)
        slow = replace(FAST, grace=30.0)  # the larger tag would wait 30 s: one session only
        await b.start_ble(slow)
        await a.start_ble(slow)
        await ble_session(a, b)
        central, peripheral = (a, b) if a.link._my_tag() < b.link._my_tag() else (b, a)
        assert central.link.central.stats["sessions"] == 1
        assert peripheral.link.central.stats["sessions"] == 0
        assert peripheral.link.peripheral.counters.sessions_attached == 1

        # plaintext NodeInfo/slots as any central sees them: public entries only
        node_b = b.node
        probe_node = b.sim.air.add_node("probe", (0.5, 0.5))
        client = probe_node.client()
        cch = await open_cch(client, b.sim.address)
        info, entries = await read_public_catalog(client, cch)
        await client.disconnect()
        pub_id = node_b.store.find("pub.bin").resource_id
        priv_id = node_b.store.find("priv.bin").resource_id
        assert info.device_id == node_b.identity.device_id[:8]
        assert info.catalog_count == 1 and info.flags & p.FLAG_LAN
        assert info.lan_port == node_b.connections.lan_port
        assert [e.resource_prefix for e in entries] == [bytes.fromhex(pub_id)[:8]]
        assert bytes.fromhex(priv_id)[:8] not in {e.resource_prefix for e in entries}

        # the peer table: source ble with RSSI
        info_a = a.peer_info(b)
        assert info_a is not None and "ble" in info_a.sources and info_a.rssi is not None
        assert isinstance(a.ble_conn(b).channel, BleSecureChannel)

        # handover happened automatically (done by whichever side was central)
        await wait_until(lambda: a.saw("handover", ok=True) or b.saw("handover", ok=True),
                         what="handover")
        await wait_until(lambda: a.tcp_conn(b) and b.tcp_conn(a), what="TCP both ways")
        tcp = a.tcp_conn(b)
        assert tcp is not None and tcp.peer_id == node_b.identity.device_id
        assert "lan" in a.peer_info(b).sources
        assert a.node.peers.get(node_b.identity.device_id).connection is tcp

        # unpaired: only the public resource is listed
        assert names(await a.remote_resources()) == {"pub.bin"}
        ble = a.ble_conn(b)
        assert names(await ble.request("list", {})) == {"pub.bin"}

        # pair over the BLE session (numeric comparison, same code on both sides)
        assert not a.node.trust.is_trusted(node_b.identity.device_id)
        b.node.pairing.open_window(60)
        started = await a.node.pairing.start(a.link.find_connection("b"))
        pending_b = b.node.pairing.pending()
        assert [x.code for x in pending_b] == [started["code"]]
        assert b.node.pairing.session_of(pending_b[0].pairing_id) is b.ble_conn(a)  # over BLE
        await a.node.pairing.confirm(str(started["code"]))
        done = await b.node.pairing.confirm(str(started["code"]))
        assert done["complete"]
        assert a.node.trust.is_trusted(node_b.identity.device_id)
        assert b.node.trust.is_trusted(a.node.identity.device_id)
        assert names(await ble.request("list", {})) == {"pub.bin", "priv.bin"}

        # fetch over TCP (BLE refuses bulk, so success proves the LAN link carried it)
        result = await a.node.fetcher.fetch("priv.bin")
        assert result["size"] == priv.stat().st_size
        got = b"".join(a.node.store.get_chunk(c.chunk_id)
                       for c in a.node.store.find("priv.bin").manifest.chunks)
        assert got == priv.read_bytes()
        assert a.ble_conn(b).channel.refused_bulk == 0
        assert b.ble_conn(a).channel.refused_bulk == 0
        # the BLE session is kept as control plane
        assert not a.ble_conn(b).closed.is_set()
        status = json.loads(json.dumps(central.link.status()))  # JSON-clean for `shoal status`
        assert status["central"]["stats"]["handovers"] == 1
        assert status["peripheral"]["tag"] == central.link._my_tag().hex()


async def test_ble_only_control_plane_refuses_bulk(tmp_path: Path) -> None:
    """No handover: the catalog is reachable over BLE alone, but bulk never crosses BLE."""
    async with sim_agents(make_air(185), "a", "b", transfer={"stall_timeout": 1.0}) as ag:
        a, b = ag["a"], ag["b"]
        await b.publish(write_file(tmp_path, "pub.bin", 100_000), public=True)
        await b.publish(write_file(tmp_path, "priv.bin", 1000), public=False)
        await a.start_ble(handover=False)
        await b.start_ble(handover=False)
        await ble_session(a, b)
        assert names(await a.remote_resources()) == {"pub.bin"}
        info = a.peer_info(b)
        assert info.sources == {"ble"}  # no LAN session, and not claimed
        assert info.connection is a.ble_conn(b)
        assert a.tcp_conn(b) is None and b.tcp_conn(a) is None
        with pytest.raises(ShoalError, match="not sent over BLE"):
            await a.node.fetcher.fetch("pub.bin")
        refused = a.ble_conn(b).channel.refused_bulk + b.ble_conn(a).channel.refused_bulk
        assert refused >= 1
        assert not a.ble_conn(b).closed.is_set()  # refusing bulk does not cost the session
        assert names(await a.ble_conn(b).request("list", {})) == {"pub.bin"}


async def test_handover_refuses_endpoint_of_another_device(tmp_path: Path) -> None:
    """b names c's LAN endpoint: a must see the TCP session authenticate c, and refuse it."""
    async with sim_agents(make_air(), "a", "b", "c") as ag:
        a, b, c = ag["a"], ag["b"], ag["c"]
        c_endpoints = c.node.connections.lan_endpoints()
        b.node.connections.lan_endpoints = lambda: c_endpoints  # type: ignore[method-assign]
        a.node.connections.lan_endpoints = lambda: c_endpoints  # type: ignore[method-assign]
        await a.start_ble()
        await b.start_ble()
        await ble_session(a, b)
        await wait_until(lambda: a.saw("handover") or b.saw("handover"), what="handover try")
        assert not a.saw("handover", ok=True) and not b.saw("handover", ok=True)
        assert a.tcp_conn(b) is None and b.tcp_conn(a) is None
        await wait_until(lambda: not c.node.connections.live_connections(),
                         what="c's session closed")
        assert not a.ble_conn(b).closed.is_set()  # the BLE session itself stays


async def test_link_drop_reconnects_and_recognises_lan_peers(tmp_path: Path) -> None:
    air = make_air()
    async with sim_agents(air, "a", "b") as ag:
        a, b = ag["a"], ag["b"]
        await a.start_ble(handover=False)
        await b.start_ble(handover=False)
        await ble_session(a, b)
        first = a.ble_conn(b)
        assert air.drop_link(a.sim, b.sim) or air.drop_link(b.sim, a.sim)
        await wait_until(lambda: first.closed.is_set(), what="session ends with the link")
        await ble_session(a, b)  # a new session, no LAN to fall back on
        assert a.ble_conn(b) is not first
        assert await a.ble_conn(b).request("list", {}) == []

    air = make_air()
    async with sim_agents(air, "a", "b") as ag:
        a, b = ag["a"], ag["b"]
        await a.start_ble()
        await b.start_ble()
        await ble_session(a, b)
        await wait_until(lambda: a.tcp_conn(b) and b.tcp_conn(a), what="handover")
        sessions = (a.link.central.stats["sessions"] + b.link.central.stats["sessions"])
        assert air.drop_link(a.sim, b.sim) or air.drop_link(b.sim, a.sim)
        await wait_until(lambda: a.ble_conn(b) is None and b.ble_conn(a) is None)
        # tags keep being seen, resolve to a peer reached over TCP: no new BLE session
        seen = a.link.central.stats["connects"] + b.link.central.stats["connects"]
        rounds = a.link.central.stats["decisions"] + b.link.central.stats["decisions"]
        await wait_until(lambda: a.link.central.stats["decisions"]
                         + b.link.central.stats["decisions"] >= rounds + 40,
                         what="forty more connection decisions")
        assert a.link.central.stats["connects"] + b.link.central.stats["connects"] == seen
        assert a.link.central.stats["sessions"] + b.link.central.stats["sessions"] == sessions
        assert a.tcp_conn(b) is not None


@pytest.mark.parametrize("loss", [0.05, 0.15])
async def test_lossy_link_keeps_control_plane_usable(tmp_path: Path, loss: float) -> None:
    """Random notification loss: sessions die (Noise records are chained) and are rebuilt;
    every `list` eventually succeeds and neither agent nor peripheral crashes."""
    air = make_air(185, loss=loss, seed=7)
    timing = replace(FAST, handshake_timeout=1.0)  # a lost msg2 costs one timeout
    async with sim_agents(air, "a", "b") as ag:
        a, b = ag["a"], ag["b"]
        await b.publish(write_file(tmp_path, "pub.bin", 5000), public=True)
        await a.start_ble(timing, handover=False)
        await b.start_ble(timing, handover=False)

        async def listed() -> bool:
            conn = a.ble_conn(b)
            if conn is None:
                return False
            try:
                return names(await conn.request("list", {}, timeout=1.0)) == {"pub.bin"}
            except Exception:
                return False

        for _ in range(10):  # ten lists, each retried until it gets through
            deadline = time.monotonic() + 60  # hang guard only
            while not await listed():
                assert time.monotonic() < deadline, f"no list over the lossy link; {air.stats}"
                await asyncio.sleep(0.02)
        for agent in (a, b):
            assert not agent.task.done()
            assert agent.link.peripheral.counters.dispatch_errors == 0


async def test_lost_notification_ends_session_and_central_reconnects(tmp_path: Path) -> None:
    """Deterministic loss: one answer is lost, the next record cannot decrypt (its nonce is
    one ahead), the session closes with a protocol error and a fresh one is opened."""
    air = make_air(247)
    async with sim_agents(air, "a", "b") as ag:
        a, b = ag["a"], ag["b"]
        await a.start_ble(handover=False)
        await b.start_ble(handover=False)
        await ble_session(a, b)
        first = a.ble_conn(b)
        (key,) = air.links()
        link = air._links[key]
        link.params = replace(link.params, loss=1.0)  # every notification/command is lost
        # a's request or b's answer travels as a notification, whichever role a has
        with pytest.raises(TimeoutError):
            await first.request("list", {}, timeout=0.3)
        link.params = replace(link.params, loss=0.0)
        with contextlib.suppress(Exception):
            await first.request("list", {}, timeout=2.0)
        await wait_until(lambda: first.closed.is_set(), what="broken session closed")
        await ble_session(a, b)
        assert a.ble_conn(b) is not first
        assert await a.ble_conn(b).request("list", {}) == []


async def test_two_centrals_share_one_peripheral(tmp_path: Path) -> None:
    """bless notifies every central: each must filter by link id before decrypting."""
    async with sim_agents(make_air(247), "a", "b", "c") as ag:
        a, b, c = ag["a"], ag["b"], ag["c"]
        await b.publish(write_file(tmp_path, "pub.bin", 5000), public=True)
        await b.start_ble(handover=False, scan=False)  # b is only a peripheral
        await a.start_ble(handover=False, advertise=False)
        await c.start_ble(handover=False, advertise=False)
        await ble_session(a, b)
        await ble_session(c, b)
        lists = await asyncio.gather(*(x.ble_conn(b).request("list", {}) for x in (a, c)
                                       for _ in range(5)))
        assert all(names(x) == {"pub.bin"} for x in lists)
        foreign = sum(ln["foreign_messages"] for x in (a, c) for ln in x.link.central.links())
        assert foreign > 0  # each saw the other's traffic, and dropped it
        assert not a.ble_conn(b).closed.is_set() and not c.ble_conn(b).closed.is_set()


async def test_catalog_change_reaches_nodeinfo(tmp_path: Path) -> None:
    async with sim_agents(make_air(), "b") as ag:
        b = ag["b"]
        await b.start_ble()
        probe = b.sim.air.add_node("probe", (1.0, 0.0))
        client = probe.client()
        await client.connect(b.sim.address, timeout=5)

        async def count() -> int:
            return p.NodeInfo.decode(await client.read(p.NODEINFO_UUID)).catalog_count

        assert await count() == 0
        await b.publish(write_file(tmp_path, "x.bin", 100), public=False)
        assert await count() == 0  # private: never in plaintext
        # publish without the hook: the peripheral's poll must find it
        b.node.store.publish_file(write_file(tmp_path, "y.bin", 100), name="y.bin",
                                  public=True, signer=b.node.identity)
        for _ in range(200):
            if await count() == 1:
                break
            await asyncio.sleep(0.02)
        entry = p.decode_slot(await client.read(p.resource_slot_uuid(0)))
        assert entry is not None
        assert entry.resource_prefix == bytes.fromhex(b.node.store.find("y.bin").resource_id)[:8]
        assert p.decode_slot(await client.read(p.resource_slot_uuid(1))) is None


async def test_lan_loss_falls_back_to_the_kept_ble_session(tmp_path: Path) -> None:
    async with sim_agents(make_air(), "a", "b") as ag:
        a, b = ag["a"], ag["b"]
        await b.publish(write_file(tmp_path, "pub.bin", 5000), public=True)
        await a.start_ble()
        await b.start_ble()
        await ble_session(a, b)
        await wait_until(lambda: a.tcp_conn(b) and b.tcp_conn(a), what="handover")
        ble_a, ble_b = a.ble_conn(b), b.ble_conn(a)
        assert a.peer_info(b).connection is a.tcp_conn(b)
        await a.tcp_conn(b).close("LAN lost")
        await wait_until(lambda: a.tcp_conn(b) is None and b.tcp_conn(a) is None,
                         what="TCP gone on both sides")
        await wait_until(lambda: a.peer_info(b).connection is ble_a
                         and b.peer_info(a).connection is ble_b, what="BLE is primary again")
        assert a.node.connections.live_connections() == [ble_a]
        assert names(await a.remote_resources()) == {"pub.bin"}  # control plane over BLE
        summary = a.peer_info(b).summary(False)
        assert summary["connected"] and "ble" in summary["sources"]


async def test_a_ble_session_never_displaces_a_lan_session(tmp_path: Path) -> None:
    """PeerTable makes the newest session primary; a late BLE session must not take over
    from TCP (fetches use the primary) nor mark the peer as a LAN peer."""
    async with sim_agents(make_air(), "a", "b") as ag:
        a, b = ag["a"], ag["b"]
        await a.start_ble(handover=False, scan=False)
        tcp = await a.node.connections.connect(b.node.connections.lan_endpoints()[0])
        i, r = await channel_pair(b.node.identity.private_key, a.node.identity.private_key,
                                  b.node.connections.hello(), a.node.connections.hello())
        conn = a.link.host.attach(r, outgoing=False, rssi=-60)
        info = a.peer_info(b)
        assert info.connection is tcp and conn is not tcp
        assert info.sources == {"lan", "ble"}
        assert set(a.node.connections.live_connections()) == {tcp}
        await tcp.close("gone")
        await wait_until(lambda: info.connection is conn, what="reconciled to the BLE session")

        # and a BLE-only peer is not claimed as a LAN peer
        async with sim_agents(make_air(), "c") as ag2:
            c = ag2["c"]
            i2, r2 = await channel_pair(c.node.identity.private_key, a.node.identity.private_key,
                                        c.node.connections.hello(), a.node.connections.hello())
            a.link.host.attach(r2, outgoing=False, rssi=None)
            assert a.node.peers.get(c.node.identity.device_id).sources == {"ble"}
        for ch in (i, r, i2, r2):
            await ch.close()


@pytest.mark.parametrize(("mtu", "catalog"), [(247, False), (517, False), (517, True)])
async def test_handover_within_three_round_trips_after_connect(
    tmp_path: Path, mtu: int, catalog: bool
) -> None:
    """Subscribe, msg1 (-> msg2), msg3 + requests (-> answers), then TCP: 3 ATT round trips.
    With catalog_on_connect the `list` rides in the same write and lands in the peer table."""
    async with sim_agents(make_air(mtu), "a", "b") as ag:
        a, b = ag["a"], ag["b"]
        for i in range(5):
            await b.publish(write_file(tmp_path, f"r{i}.bin", 1000, i), public=i != 4)
        await b.start_ble(scan=False)
        await a.start_ble(replace(FAST, catalog_on_connect=catalog), advertise=False)
        await wait_until(lambda: a.saw("handover", ok=True) and (a.saw("catalog") or not catalog),
                         what="handover (and catalog)")
        at = {e: i["counters"] for e, i in a.events}
        assert at["endpoints"]["round_trips"] - at["connected"]["round_trips"] == 3
        assert at["endpoints"]["reads"] == 0  # NodeInfo is not needed on this path
        if catalog:
            (info,) = [i for e, i in a.events if e == "catalog"]
            assert info["entries"] == 4  # unpaired: the public ones
            held = a.peer_info(b).resources
            assert {e["name"] for e in held.values()} == {f"r{i}.bin" for i in range(4)}
        else:
            assert a.peer_info(b).resources == {}
