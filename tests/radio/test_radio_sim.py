"""The simulated radio end to end: advertise, scan, connect, read, page the catalog through
framed Control/Events messages, with loss and forced disconnects."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

import pytest

from radio.base import (
    AttributeRejectedError,
    NotConnectedError,
    RadioError,
    RadioTimeoutError,
    Sighting,
)
from radio.ble import CentralChannel, PeripheralChannel
from radio.ble import profile as p
from radio.sim import LinkParams, PathLossModel, RealClock, SimAir, SimNode, VirtualClock

T = TypeVar("T")
MTUS = [23, 185, 247, 517]
CATALOG = [
    p.ResourceEntry(i.to_bytes(8, "big"), 1000 * i + 1, i % 7, i % 256, 100, 0, 3)
    for i in range(50)
]


async def with_timeout(air: SimAir, aw: Awaitable[T], seconds: float) -> T:
    """``asyncio.wait_for`` in *simulated* seconds."""
    task = asyncio.ensure_future(aw)
    timer = asyncio.ensure_future(air.clock.sleep(seconds))
    done, _ = await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        timer.cancel()
        return task.result()
    task.cancel()
    raise TimeoutError


async def make_peripheral(air: SimAir, node: SimNode, slots: int = 4) -> PeripheralChannel:
    channel = PeripheralChannel(node.server, clock=air.clock.now)
    await node.server.start(p.shoal_service_spec(slots), channel.on_write, channel.on_disconnect)
    node.server.set_value(
        p.NODEINFO_UUID,
        p.NodeInfo(b"DEVICE01", p.FLAG_CATALOG_PAGING, len(CATALOG), 3, 0, slots).encode(),
    )
    for i in range(slots):
        node.server.set_value(p.resource_slot_uuid(i), CATALOG[i].encode())
    await node.advertiser.start(p.SERVICE_UUID, p.Advert(1, b"TAG001").encode())
    return channel


async def serve(channel: PeripheralChannel) -> None:
    """Minimal peripheral application: answers catalog page requests."""
    while True:
        central, raw = await channel.receive()
        try:
            request = p.decode_control(raw)
        except p.ProfileError:
            reply: p.ControlMessage = p.ControlError(p.ERR_BAD_REQUEST)
        else:
            assert isinstance(request, p.CatalogPageRequest)
            reply = p.serve_page(request, CATALOG, 3)
        with contextlib.suppress(NotConnectedError, AttributeRejectedError):
            await channel.send(central, p.encode_control(reply))


async def page_catalog(
    air: SimAir, ch: CentralChannel, per_page: int = 16, retry_after: float = 2.0
) -> list[p.ResourceEntry]:
    entries: list[p.ResourceEntry] = []
    start, total = 0, None
    while total is None or start < total:
        await ch.send(p.encode_control(p.CatalogPageRequest(start, per_page)))
        try:
            page = p.decode_control(await with_timeout(air, ch.receive(), retry_after))
        except TimeoutError:
            continue  # a fragment was lost: the request is idempotent, ask again
        assert isinstance(page, p.CatalogPage)
        assert page.start == start
        entries.extend(page.entries)
        start, total = start + len(page.entries), page.total
    return entries


async def first_sighting(air: SimAir, node: SimNode) -> Sighting:
    scanner = node.scanner()
    await scanner.start()
    try:
        async for s in scanner.sightings():
            return s
    finally:
        await scanner.stop()
    raise AssertionError("unreachable")


# --- advertising and scanning -----------------------------------------------------------------
async def test_scan_sees_advert_with_rssi_by_distance() -> None:
    async with SimAir(seed=3, path_loss=PathLossModel(sigma_db=0.0)) as air:
        me = air.add_node("me")
        near = air.add_node("near", (1.0, 0.0))
        far = air.add_node("far", (30.0, 0.0))
        away = air.add_node("away", (10_000.0, 0.0))
        for n, tag in ((near, b"NEAR01"), (far, b"FAR001"), (away, b"AWAY01")):
            await n.advertiser.start(p.SERVICE_UUID, p.Advert(1, tag, 1).encode())
        seen: dict[bytes, Sighting] = {}
        scanner = me.scanner()
        remove = scanner.add_callback(lambda s: seen.setdefault(s.node_tag, s))
        await scanner.start()
        await air.clock.sleep(1.0)
        await scanner.stop()
        remove()
        assert set(seen) == {b"NEAR01", b"FAR001"}
        assert seen[b"NEAR01"].rssi == -59 and seen[b"FAR001"].rssi < -80
        assert seen[b"NEAR01"].address == near.address
        assert seen[b"NEAR01"].protocol_version == 1 and seen[b"NEAR01"].flags == 1


async def test_tag_rotation_and_stop() -> None:
    async with SimAir(seed=1) as air:
        me, peer = air.add_node("me"), air.add_node("peer", (2.0, 0.0))
        await peer.advertiser.start(p.SERVICE_UUID, p.Advert(1, b"EPOCH1").encode())
        tags: list[bytes] = []
        scanner = me.scanner(interval_s=0.5)
        scanner.add_callback(lambda s: tags.append(s.node_tag))
        await scanner.start()
        await air.clock.sleep(1.2)
        await peer.advertiser.start(p.SERVICE_UUID, p.Advert(1, b"EPOCH2").encode())
        await air.clock.sleep(1.0)
        await peer.advertiser.stop()
        count = len(tags)
        await air.clock.sleep(1.0)
        await scanner.stop()
        assert tags[0] == b"EPOCH1" and tags[-1] == b"EPOCH2"
        assert len(tags) == count and not peer.advertiser.is_advertising


async def test_advert_budget_and_malformed_service_data() -> None:
    async with SimAir() as air:
        me, peer = air.add_node("me"), air.add_node("peer")
        with pytest.raises(RadioError):
            await peer.advertiser.start(p.SERVICE_UUID, bytes(11))
        await peer.advertiser.start(p.SERVICE_UUID, b"\x00garbage")
        scanner = me.scanner()
        await scanner.start()
        await air.clock.sleep(0.5)
        await scanner.stop()
        assert scanner.malformed > 0 and air.stats.sightings == 0


async def test_slow_consumer_loses_oldest_sightings() -> None:
    async with SimAir() as air:
        me, peer = air.add_node("me"), air.add_node("peer")
        await peer.advertiser.start(p.SERVICE_UUID, p.Advert(1, b"ABCDEF").encode())
        scanner = me.scanner(interval_s=0.01)
        it = scanner.sightings(maxsize=4).__aiter__()
        first = asyncio.ensure_future(it.__anext__())
        await scanner.start()
        await first
        await air.clock.sleep(1.0)
        assert scanner.dropped > 50
        later = await it.__anext__()
        assert later.timestamp > 0.9
        await scanner.stop()
        await it.aclose()  # type: ignore[attr-defined]


async def test_same_seed_same_run_and_different_seed_differs() -> None:
    async def run(seed: int) -> list[tuple[int, float]]:
        async with SimAir(seed=seed) as air:
            me, peer = air.add_node("me"), air.add_node("peer", (5.0, 0.0))
            await peer.advertiser.start(p.SERVICE_UUID, p.Advert(1, b"ABCDEF").encode())
            out: list[tuple[int, float]] = []
            scanner = me.scanner(miss_rate=0.3)
            scanner.add_callback(lambda s: out.append((s.rssi, s.timestamp)))
            await scanner.start()
            await air.clock.sleep(3.0)
            await scanner.stop()
            return out

    assert await run(7) == await run(7)
    assert await run(7) != await run(8)


# --- GATT rules -------------------------------------------------------------------------------
@pytest.mark.parametrize("mtu", MTUS)
async def test_connect_read_nodeinfo_and_slots_without_long_reads(mtu: int) -> None:
    async with SimAir(seed=mtu, link=LinkParams(mtu=mtu)) as air:
        central, peri = air.add_node("c"), air.add_node("p", (3.0, 0.0))
        await make_peripheral(air, peri)
        sighting = await first_sighting(air, central)
        client = central.client()
        await client.connect(sighting.address, timeout=5.0)
        info = p.NodeInfo.decode(await client.read(p.NODEINFO_UUID))
        assert info.catalog_count == 50 and info.populated_slots == 4
        slots = [p.decode_slot(await client.read(p.resource_slot_uuid(i))) for i in range(4)]
        assert slots == CATALOG[:4]
        assert client.max_write_size(p.CONTROL_UUID) == min(mtu - 3, 512)
        assert peri.server.max_payload(central.address) == min(mtu - 3, 512)
        assert peri.server.centrals == {central.address}
        assert air.stats.long_reads == 0 and air.stats.corrupted_reads == 0
        await client.disconnect()
        assert not client.is_connected and peri.server.centrals == frozenset()


async def test_bless_offset_bug_is_modelled() -> None:
    """A full-size Read Response triggers Read Blob; bless answers from offset 0 each time."""
    value = bytes(range(22))
    async with SimAir(link=LinkParams(mtu=23)) as air:
        c, per = air.add_node("c"), air.add_node("p")
        await per.server.start(p.shoal_service_spec(1), lambda *_: None)
        with pytest.raises(AttributeRejectedError):
            per.server.set_value(p.NODEINFO_UUID, value)  # the guard
        per.server.set_value_unchecked(p.NODEINFO_UUID, value)
        client = c.client()
        await client.connect(per.address, timeout=1.0)
        got = await client.read(p.NODEINFO_UUID)
        assert len(got) == 512 and got[:22] == value and got != value
        assert air.stats.long_reads == 1 and air.stats.corrupted_reads == 1
        per.server.set_value_unchecked(p.NODEINFO_UUID, value[:21])
        assert await client.read(p.NODEINFO_UUID) == value[:21]
        assert air.stats.long_reads == 1


async def test_long_read_is_correct_on_a_fixed_server() -> None:
    value = bytes(range(200))
    async with SimAir(link=LinkParams(mtu=23), bless_offset_bug=False) as air:
        c, per = air.add_node("c"), air.add_node("p")
        await per.server.start(p.shoal_service_spec(1), lambda *_: None)
        per.server.set_value_unchecked(p.NODEINFO_UUID, value)
        client = c.client()
        await client.connect(per.address, timeout=1.0)
        assert await client.read(p.NODEINFO_UUID) == value
        assert air.stats.long_reads == 1 and air.stats.corrupted_reads == 0
        with pytest.raises(AttributeRejectedError):
            per.server.set_value_unchecked(p.NODEINFO_UUID, bytes(513))


@pytest.mark.parametrize("mtu", MTUS)
async def test_writes_and_notifications_capped_at_mtu_minus_3(mtu: int) -> None:
    got: list[bytes] = []
    async with SimAir(link=LinkParams(mtu=mtu)) as air:
        c, per = air.add_node("c"), air.add_node("p")
        await per.server.start(p.shoal_service_spec(0), lambda _cid, data: got.append(data))
        client = c.client()
        await client.connect(per.address, timeout=1.0)
        limit = min(mtu - 3, 512)
        await client.write(p.CONTROL_UUID, bytes(limit))
        with pytest.raises(AttributeRejectedError):
            await client.write(p.CONTROL_UUID, bytes(limit + 1))
        with pytest.raises(AttributeRejectedError):
            await client.write(p.NODEINFO_UUID, b"x")
        with pytest.raises(AttributeRejectedError):
            await client.read(p.CONTROL_UUID)
        notes: list[bytes] = []
        await client.subscribe(p.EVENTS_UUID, notes.append)
        await per.server.notify(c.address, bytes(limit))
        with pytest.raises(AttributeRejectedError):
            await per.server.notify(c.address, bytes(limit + 1))
        await air.clock.sleep(0.1)
        assert got == [bytes(limit)] and notes == [bytes(limit)]
        assert air.stats.rejected_writes == 1 and air.stats.rejected_notifications == 1


async def test_connect_failures() -> None:
    async with SimAir() as air:
        c = air.add_node("c")
        far = air.add_node("far", (10_000.0, 0.0))
        idle = air.add_node("idle")
        await far.server.start(p.shoal_service_spec(0), lambda *_: None)
        client = c.client()
        for address in ("00:00:00:00:00:00", far.address, idle.address):
            t0 = air.clock.now()
            with pytest.raises(RadioTimeoutError):
                await client.connect(address, timeout=2.5)
            assert air.clock.now() - t0 == pytest.approx(2.5)
        with pytest.raises(NotConnectedError):
            await client.read(p.NODEINFO_UUID)
        with pytest.raises(NotConnectedError):
            client.max_write_size(p.CONTROL_UUID)


# --- framed Control/Events --------------------------------------------------------------------
@pytest.mark.parametrize("mtu", MTUS)
async def test_catalog_paging_round_trip(mtu: int) -> None:
    async with SimAir(seed=11, link=LinkParams(mtu=mtu)) as air:
        c, per = air.add_node("c"), air.add_node("p", (2.0, 0.0))
        pch = await make_peripheral(air, per)
        server_task = asyncio.ensure_future(serve(pch))
        client = c.client()
        ch = CentralChannel(client, clock=air.clock.now)
        await client.connect(per.address, timeout=2.0, on_disconnect=ch.on_disconnect)
        await ch.open()
        assert await page_catalog(air, ch) == CATALOG
        assert ch.stats.discarded == 0 and air.stats.long_reads == 0
        server_task.cancel()


async def test_paging_survives_notification_loss() -> None:
    async with SimAir(seed=5, link=LinkParams(mtu=23, loss=0.03)) as air:
        c, per = air.add_node("c"), air.add_node("p")
        pch = await make_peripheral(air, per)
        server_task = asyncio.ensure_future(serve(pch))
        client = c.client()
        ch = CentralChannel(client, clock=air.clock.now, timeout_s=1.0)
        await client.connect(per.address, timeout=2.0, on_disconnect=ch.on_disconnect)
        await ch.open()
        assert await page_catalog(air, ch, per_page=8) == CATALOG
        assert air.stats.dropped_notifications > 0
        assert ch.stats.sequence_gap + ch.stats.unexpected_begin + ch.stats.timeout > 0
        server_task.cancel()


async def test_disconnect_mid_notification_message() -> None:
    async with SimAir(link=LinkParams(mtu=23)) as air:
        c, per = air.add_node("c"), air.add_node("p")
        pch = await make_peripheral(air, per)
        client = c.client()
        lost = asyncio.Event()

        def gone() -> None:
            ch.on_disconnect()
            lost.set()

        ch = CentralChannel(client, clock=air.clock.now)
        await client.connect(per.address, timeout=2.0, on_disconnect=gone)
        counter = {"n": 0}

        def drop_after_three(fragment: bytes) -> None:
            ch._on_fragment(fragment)
            counter["n"] += 1
            if counter["n"] == 3:
                air.drop_link(c, per)

        await client.subscribe(p.EVENTS_UUID, drop_after_three)
        await pch.send(c.address, bytes(500))  # notifications are queued, like BlueZ does
        await lost.wait()
        assert ch.stats.disconnect == 1
        with pytest.raises(NotConnectedError):
            await ch.receive()
        with pytest.raises(NotConnectedError):
            await ch.receive()  # keeps failing fast
        assert per.server.centrals == frozenset()


async def test_disconnect_mid_control_message() -> None:
    async with SimAir(link=LinkParams(mtu=23)) as air:
        c, per = air.add_node("c"), air.add_node("p")
        pch = PeripheralChannel(per.server, clock=air.clock.now)
        writes = {"n": 0}

        def on_write(cid: str, data: bytes) -> None:
            pch.on_write(cid, data)
            writes["n"] += 1
            if writes["n"] == 4:
                air.drop_link(c, per)

        await per.server.start(p.shoal_service_spec(0), on_write, pch.on_disconnect)
        client = c.client()
        called: list[bool] = []
        await client.connect(per.address, timeout=2.0, on_disconnect=lambda: called.append(True))
        with pytest.raises(NotConnectedError):
            await CentralChannel(client, clock=air.clock.now).send(bytes(300))
        assert called == [True]
        assert pch.totals.disconnect == 1 and pch.stats(c.address) is None


async def test_random_link_loss_fires_both_callbacks() -> None:
    async with SimAir(seed=2, link=LinkParams(disconnect_rate=0.2)) as air:
        c, per = air.add_node("c"), air.add_node("p")
        server_gone: list[str] = []
        await per.server.start(p.shoal_service_spec(1), lambda *_: None, server_gone.append)
        client_gone: list[bool] = []
        client = c.client()
        await client.connect(
            per.address, timeout=1.0, on_disconnect=lambda: client_gone.append(True)
        )
        with pytest.raises(NotConnectedError):
            for _ in range(200):
                await client.read(p.NODEINFO_UUID)
        assert client_gone == [True] and server_gone == [c.address]
        await client.connect(per.address, timeout=1.0)  # reconnect works
        assert client.is_connected


async def test_broadcast_notifications_like_bless() -> None:
    """bless notifies every subscriber; the channel's send lock keeps messages whole."""
    async with SimAir(link=LinkParams(mtu=23), notify_broadcast=True) as air:
        per = air.add_node("p")
        a, b = air.add_node("a"), air.add_node("b")
        pch = await make_peripheral(air, per)
        chans = []
        for node in (a, b):
            client = node.client()
            ch = CentralChannel(client, clock=air.clock.now)
            await client.connect(per.address, timeout=1.0, on_disconnect=ch.on_disconnect)
            await ch.open()
            chans.append(ch)
        await asyncio.gather(pch.send(a.address, b"A" * 100), pch.send(b.address, b"B" * 100))
        for ch in chans:
            got = {await with_timeout(air, ch.receive(), 5.0) for _ in range(2)}
            assert got == {b"A" * 100, b"B" * 100}
            assert ch.stats.discarded == 0


async def test_server_stop_disconnects_everyone() -> None:
    async with SimAir() as air:
        per, c = air.add_node("p"), air.add_node("c")
        await make_peripheral(air, per)
        client = c.client()
        gone: list[bool] = []
        await client.connect(per.address, timeout=1.0, on_disconnect=lambda: gone.append(True))
        await per.server.stop()
        assert gone == [True] and not client.is_connected
        with pytest.raises(NotConnectedError):
            await per.server.notify(c.address, b"x")


async def test_real_clock_smoke() -> None:
    async with SimAir(clock=RealClock(), link=LinkParams(latency_s=0.001)) as air:
        c, per = air.add_node("c"), air.add_node("p")
        pch = await make_peripheral(air, per)
        task = asyncio.ensure_future(serve(pch))
        client = c.client()
        ch = CentralChannel(client, clock=air.clock.now)
        await client.connect(per.address, timeout=1.0)
        await ch.open()
        await ch.send(p.encode_control(p.CatalogPageRequest(0, 3)))
        page = p.decode_control(await asyncio.wait_for(ch.receive(), 5.0))
        assert isinstance(page, p.CatalogPage) and page.entries == tuple(CATALOG[:3])
        task.cancel()


async def test_virtual_clock_orders_sleepers() -> None:
    clock = VirtualClock()
    order: list[str] = []

    async def sleeper(name: str, delay: float) -> None:
        await clock.sleep(delay)
        order.append(f"{name}@{clock.now():g}")

    await asyncio.gather(sleeper("b", 2.0), sleeper("a", 1.0), sleeper("c", 2.0))
    assert order == ["a@1", "b@2", "c@2"]
    await clock.aclose()


def test_link_params_validation() -> None:
    with pytest.raises(ValueError):
        LinkParams(mtu=22)
    with pytest.raises(ValueError):
        LinkParams(mtu=518)
    with pytest.raises(ValueError):
        LinkParams(loss=1.5)
    assert LinkParams(mtu=517).payload == 512
