"""Real agents (in-process Nodes on loopback) using the DHT.

A line a - b - c - d of paired agents: d holds a resource, a is two devices away from it.
a finds d through the DHT and fetches from it; the session to d is opened through the
introducer b by an opener that stands in for agent/relay (not merged yet): it dials d
directly but registers the session on a's side as a relayed one, and refuses unless the
first hop it is given is a live neighbour. An unpaired agent connected to the line never
enters a table and never receives a record. A star shows the threshold switch.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.control.errors import ControlError
from agent.control.listings import dht_find_text, dht_text
from agent.node import Node
from agent.peer import wire
from agent.peer.connection import PeerConnection
from agent.security.session import open_channel
from tests.integration import inprocess
from tests.integration.inprocess import connect, pair
from tests.waiting import wait_until


@contextlib.asynccontextmanager
async def nodes(*names: str, threshold: int = 12) -> AsyncIterator[dict[str, Node]]:
    every = {"prefetch": {"enabled": False},
             "dht": {"threshold": threshold, "request_timeout": 3.0}}
    async with inprocess.nodes(*names, every=every, prefix="dht-") as n:
        yield n


class StandInRelay:
    """A PeerOpener until agent/relay lands: the first hop must be a live neighbour; the
    session is a direct Noise session to the target, listed here as transport "relay"."""

    def __init__(self, me: Node, everyone: dict[str, Node]) -> None:
        self.me = me
        self.ports = {n.identity.device_id: n.connections.lan_port for n in everyone.values()}
        self.calls: list[tuple[bytes, bytes | None]] = []

    async def open(self, target: bytes, via: bytes | None = None) -> PeerConnection:
        self.calls.append((target, via))
        live = self.me.connections.live_connections()
        for c in live:
            if c.peer_id == target:
                return c
        if via not in {c.peer_id for c in live if c.transport != "relay"}:
            raise ConnectionError("the first hop is not a live neighbour")
        port = self.ports.get(target)
        if port is None:
            raise ConnectionError("unknown device")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        channel = await open_channel(reader, writer, self.me.identity.private_key,
                                     initiator=True, local_payload=self.me.connections.hello())
        return self.me.connections.attach_channel(channel, outgoing=True, transport="relay")


def count_manifest_requests(node: Node) -> list[bytes]:
    """Who asked *node* for a manifest (wraps its handler)."""
    asked: list[bytes] = []
    inner = node.router._requests["manifest"]

    async def counting(conn: PeerConnection, req: wire.Request) -> object:
        asked.append(conn.peer_id)
        return await inner(conn, req)

    node.router._requests["manifest"] = counting
    return asked


async def keep_only(node: Node, neighbour: Node) -> None:
    """The relay's idle timeout: every session of *node* but the one with its neighbour ends
    (the stand-in's sessions are direct TCP underneath, so the far side lists them as LAN)."""
    keep = neighbour.identity.device_id
    for c in node.connections.sessions():
        if c.peer_id != keep:
            await c.close("idle")
    await wait_until(lambda: [c.peer_id for c in node.connections.live_connections()] == [keep],
                     "only the neighbour's session is left")


async def test_a_holder_two_devices_away_is_found_through_the_dht(tmp_path: Path) -> None:
    async with nodes("a", "b", "c", "d", "stranger") as n:
        a, b, c, d, u = n["a"], n["b"], n["c"], n["d"], n["stranger"]
        pair(a, b, c, d)
        relays = {}
        for x in (a, b, c, d):
            assert x.dht is not None
            relays[x.cfg.node.name] = StandInRelay(x, n)
            x.dht.use_opener(relays[x.cfg.node.name])
        await connect(a, b)
        await connect(b, c)
        await connect(c, d)
        for x in (a, d):  # the stranger trusts them; they never paired with it
            u.trust.add(x.identity.device_id, x.identity.public_key, x.cfg.node.name,
                        signing_key=x.identity.signing_public)
        await connect(u, a)  # connected at both ends of the line
        await connect(u, d)
        path = tmp_path / "film.bin"
        path.write_bytes(os.urandom(200_000))
        m = d.store.publish_file(path, public=True, signer=d.identity)
        d.catalog_changed()
        assert a.dht is not None and d.dht is not None and u.dht is not None
        ids = {x.identity.device_id for x in (b, c, d)}
        await wait_until(lambda: d.dht.counters.announced > 0
                         and set(a.dht.node.table.contacts()) == ids,
                         "d announced and a's table holds the whole line")
        await keep_only(a, b)
        assert a.dht.beyond_neighbours()
        asked_b = count_manifest_requests(b)
        out = await a.fetcher.fetch(m.resource_id)
        assert out["bytes_fetched"] == m.size and "d" in out["sources"]  # type: ignore[operator]
        assert a.dht.counters.lookups_found == 1
        assert (d.identity.device_id, b.identity.device_id) in relays["a"].calls
        assert asked_b == [a.identity.device_id]  # the neighbour was asked first, and lacked it
        assert a.store.find(m.resource_id).manifest.manifest_hash == m.manifest_hash
        # the unpaired agent: never in a table, never given a record, its requests refused
        uid = u.identity.device_id
        for x in (a, b, c, d):
            assert x.dht is not None and uid not in x.dht.node.table.contacts()
        assert len(u.dht.node.store) == 0
        assert a.dht.counters.refused + d.dht.counters.refused > 0
        # `shoal dht --find` and `shoal dht`, through the control commands
        found = await a.commands.table()["dht-find"]({"resource": m.resource_id}, None)
        assert [h["id"] for h in found["holders"]] == [d.identity.hex_id]
        assert "FIRST HOP" in dht_find_text(found)
        # --network: records a stores are ignored, the answer has to come from the others
        far = await a.commands.table()["dht-find"]({"resource": m.resource_id,
                                                     "network": True}, None)
        assert [h["id"] for h in far["holders"]] == [d.identity.hex_id]
        assert far["requests"] >= 1
        with pytest.raises(ControlError):
            await a.commands.table()["dht-find"]({"resource": m.resource_id,
                                                  "network": "yes"}, None)
        state = await a.commands.table()["dht"]({}, None)
        assert state["contacts"] == 3 and state["lookups_found"] == 3
        assert "3 paired contacts" in dht_text(state)


async def test_above_the_threshold_the_dht_is_asked_before_every_neighbour() -> None:
    async with nodes("hub", "h", "x", "y", threshold=2) as n:
        hub, h, x, y = n["hub"], n["h"], n["x"], n["y"]
        pair(hub, h, x, y)
        for other in (h, x, y):
            await connect(hub, other)
        path = Path(tempfile.mkdtemp(prefix="dht-res-")) / "r.bin"
        try:
            path.write_bytes(os.urandom(50_000))
            m = h.store.publish_file(path, public=True, signer=h.identity)
        finally:
            shutil.rmtree(path.parent, ignore_errors=True)
        h.catalog_changed()
        assert h.dht is not None and hub.dht is not None
        await wait_until(lambda: h.dht.counters.announced > 0 and len(hub.dht.node.table) == 3,
                         "h announced; the hub knows its three neighbours")
        asked = {name: count_manifest_requests(n[name]) for name in ("h", "x", "y")}
        out = await hub.fetcher.fetch(m.resource_id)
        assert out["bytes_fetched"] == m.size
        assert hub.dht.counters.lookups == 1
        assert asked == {"h": [hub.identity.device_id], "x": [], "y": []}  # only the holder
