"""The DHT service over fake sessions: a mesh of services whose requests go through the real
``dht`` wire schema and JSON, with a fake relay that reaches a device through a neighbour.

What is checked: a holder two and three hops away is found and reached through the
introducer; only paired devices enter tables, are asked or answered; an unpaired device
never receives an announcement; forged, unsigned and stale records are refused; private
resources go to paired devices only and never under their name; the fetch policy switches.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from agent.config import DhtConfig
from agent.dht.keyspace import resource_key
from agent.dht.messages import GetProviders, Providers, record_wire, wire
from agent.dht.records import EXPIRY_S, ProviderRecord, make_record
from agent.dht.service import DhtService, key_for, resource_keys
from agent.peer import wire as peer_wire
from agent.peer.connection import Refused
from agent.security.identity import Identity
from agent.security.signing import holder_keys

RID = "0123456789abcdef0123456789abcdef"
CLOCK = [1_800_000_000.0]


class Trust:
    def __init__(self) -> None:
        self.ids: set[bytes] = set()

    def is_trusted(self, device_id: bytes) -> bool:
        return device_id in self.ids

    def get(self, device_id: bytes) -> None:
        return None

    def recognise(self, device_id: bytes, public_key: bytes, signing_key: bytes | None) -> bool:
        return False


@dataclass
class Link:
    """One side of a fake session: requests go through the wire schema and JSON."""

    net: Net
    owner: bytes
    peer_id: bytes
    transport: str = "lan"
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    name: str = "peer"
    address: tuple[str, int] | None = None

    async def request(self, op: str, args: dict[str, Any], timeout: float = 10.0) -> object:
        self.net.sent.append((self.owner, self.peer_id))
        req = peer_wire.decode(peer_wire.encode_request(1, op, args))
        assert isinstance(req, peer_wire.Request)
        peer = self.net.devices[self.peer_id]
        if peer.down:
            raise ConnectionError("gone")
        conn = Link(self.net, self.peer_id, self.owner, self.transport)
        try:
            res = await peer.svc.handlers()[op](conn, req)  # type: ignore[arg-type]
        except Refused as e:
            from agent.peer.connection import RemoteError
            raise RemoteError(str(e)) from None
        return json.loads(json.dumps(res))

    async def send_event(self, op: str, args: dict[str, Any]) -> None:
        raise NotImplementedError

    async def close(self, reason: str = "") -> None:
        self.closed.set()


@dataclass
class Device:
    net: Net
    name: str
    ident: Identity
    trust: Trust
    svc: DhtService = field(init=False)
    links: dict[bytes, Link] = field(default_factory=dict)
    held: list[tuple[str, str, bool]] = field(default_factory=list)
    down: bool = False

    def live_connections(self) -> list[Link]:
        return list(self.links.values())

    @property
    def id(self) -> bytes:
        return self.ident.device_id


class Relay:
    """A fake PeerOpener: reaches *target* only through *via*, a live direct neighbour,
    and only when a chain of direct sessions really connects them."""

    def __init__(self, net: Net, dev: Device) -> None:
        self.net, self.dev = net, dev
        self.calls: list[tuple[bytes, bytes | None]] = []

    async def open(self, target: bytes, via: bytes | None = None) -> Link:
        self.calls.append((target, via))
        direct = {p for p, lk in self.dev.links.items() if lk.transport != "relay"}
        if via not in direct or not self.net.connected(via, target, {self.dev.id}):
            raise ConnectionError("no route")
        link = Link(self.net, self.dev.id, target, transport="relay")
        self.dev.links[target] = link
        far = self.net.devices[target]  # the target lists the circuit's session too
        far.links.setdefault(self.dev.id, Link(self.net, target, self.dev.id, "relay"))
        far.svc.session_opened(far.links[self.dev.id])
        self.dev.svc.session_opened(link)
        return link


class Net:
    def __init__(self) -> None:
        self.devices: dict[bytes, Device] = {}
        self.sent: list[tuple[bytes, bytes]] = []
        self.tasks: list[asyncio.Task[object]] = []

    def spawn(self, coro: Coroutine[object, None, object], name: str) -> asyncio.Task[object]:
        task = asyncio.ensure_future(coro)
        self.tasks.append(task)
        return task

    async def settle(self) -> None:
        while self.tasks:
            tasks, self.tasks = self.tasks, []
            await asyncio.gather(*tasks)

    def add(self, name: str, **cfg: Any) -> Device:
        dev = Device(self, name, Identity.generate(), Trust())
        dev.svc = DhtService(
            dev.id, DhtConfig(**({"request_timeout": 1.0} | cfg)), connections=dev,
            trust=dev.trust, signer=dev.ident, held=lambda: dev.held, spawn=self.spawn,
            opener=Relay(self, dev), clock=lambda: CLOCK[0])
        self.devices[dev.id] = dev
        return dev

    def drop_relayed(self) -> None:
        """Every relayed session ends (the relay's idle timeout)."""
        for dev in self.devices.values():
            dev.links = {p: lk for p, lk in dev.links.items() if lk.transport != "relay"}

    def connected(self, a: bytes, b: bytes, avoid: set[bytes]) -> bool:
        seen, todo = set(avoid), [a]
        while todo:
            x = todo.pop()
            if x == b:
                return True
            seen.add(x)
            todo += [p for p, lk in self.devices[x].links.items()
                     if lk.transport != "relay" and p not in seen]
        return False

    def link(self, a: Device, b: Device) -> None:
        a.links[b.id] = Link(self, a.id, b.id)
        b.links[a.id] = Link(self, b.id, a.id)
        a.svc.session_opened(a.links[b.id])
        b.svc.session_opened(b.links[a.id])


def pair_all(*devs: Device) -> None:
    for x in devs:
        for y in devs:
            if x is not y:
                x.trust.ids.add(y.id)


async def line(net: Net, n: int) -> list[Device]:
    devs = [net.add(f"d{i}") for i in range(n)]
    pair_all(*devs)
    for x, y in itertools.pairwise(devs):
        net.link(x, y)
        await net.settle()
    return devs


async def test_a_holder_three_hops_away_is_found_and_reached_through_the_introducer() -> None:
    net = Net()
    a, b, _c, d = await line(net, 4)
    d.held.append((RID, "song.ogg", True))
    d.svc.catalog_changed()
    await net.settle()
    assert d.svc.counters.announced > 0
    assert a.svc.beyond_neighbours()  # c and d are in a's table, only b is a neighbour
    assert a.svc.next_hop(b.id) == b.id and a.svc.next_hop(d.id) == b.id
    net.drop_relayed()
    found = await a.svc.reach_holders(RID)
    assert found == [d.id]
    relay = a.svc.opener
    assert isinstance(relay, Relay) and (d.id, b.id) in relay.calls
    assert a.links[d.id].transport == "relay"
    by_name = await a.svc.find_holders("song.ogg")  # public: its name is a key too
    assert [r.holder for r in by_name] == [d.id]


async def test_unpaired_device_never_enters_a_table_nor_receives_announcements() -> None:
    net = Net()
    a, b, c = await line(net, 3)
    u = net.add("stranger")
    u.trust.ids |= {a.id, b.id}  # u trusts them; they never paired with u
    b.trust.ids.add(u.id)  # b did pair with u: a learns of u from b, and drops it
    net.link(a, u)
    net.link(b, u)
    await net.settle()
    for dev in (a, c):
        dev.held.append((dev.name.ljust(32, "0").encode().hex()[:32], dev.name, False))
        dev.held.append((RID[:-2] + dev.name[-2:], f"pub-{dev.name}", True))
        dev.svc.catalog_changed()
    await net.settle()
    await a.svc._find_node(u.id)
    assert u.id not in a.svc.node.table.contacts()
    assert u.id not in c.svc.node.table.contacts()
    assert a.svc.counters.dropped_untrusted > 0
    assert len(u.svc.node.store) == 0  # not one record reached the stranger
    assert (a.id, u.id) not in net.sent and (c.id, u.id) not in net.sent
    refused = a.svc.counters.refused  # u's own lookups were refused too
    with pytest.raises(Exception, match="paired devices only"):
        await u.links[a.id].request("dht", {"m": wire(GetProviders(key_for(RID)))})
    assert a.svc.counters.refused == refused + 1


async def test_private_resources_go_to_paired_devices_only_and_never_by_name() -> None:
    net = Net()
    a, b, _c = await line(net, 3)
    a.held.append((RID, "diary.txt", False))
    a.svc.catalog_changed()
    await net.settle()
    assert set(a.svc.provided) == {resource_key(RID)}  # the ID only
    assert resource_key("diary.txt") not in b.svc.node.store.records
    assert b.svc.node.store.get(resource_key(RID), CLOCK[0])
    assert resource_keys(RID, "x", public=True)[1] == resource_key("x")


def _forged(a: Device, d: Device, how: str) -> ProviderRecord:
    key = key_for(RID)
    if how == "unsigned":
        return ProviderRecord(key, d.id, int(CLOCK[0]) + 3600, holder_keys(d.ident), b"")
    if how == "stale":  # d's own valid signature, expired a minute ago
        return make_record(key, d.id, holder_keys(d.ident), CLOCK[0] - EXPIRY_S - 60,
                           d.ident.sign)
    if how == "forged":  # a's signature and keys claiming d holds it
        rec = make_record(key, a.id, holder_keys(a.ident), CLOCK[0], a.ident.sign)
        return ProviderRecord(key, d.id, rec.expiry, rec.holder_key, rec.signature)
    assert how == "d-keys-bad-sig"
    rec = make_record(key, d.id, holder_keys(d.ident), CLOCK[0], a.ident.sign)
    return rec


@pytest.mark.parametrize("how", ["unsigned", "stale", "forged", "d-keys-bad-sig"])
async def test_forged_unsigned_and_stale_records_are_refused_on_receipt(how: str) -> None:
    net = Net()
    a, m, d = await line(net, 3)
    bad = _forged(m, d, how)

    async def lying(conn: Any, req: peer_wire.Request) -> object:
        return {"m": {"t": "providers", "providers": [record_wire(bad)], "closer": []}}

    m.svc.handlers = lambda: {"dht": lying}  # type: ignore[method-assign]
    assert await a.svc.find_holders(RID) == []
    assert a.svc.node.rejected >= 1
    # an ADD_PROVIDER of such a record is refused by the store too
    before = m.svc.node.rejected
    m.svc.handlers = DhtService.handlers.__get__(m.svc)  # type: ignore[method-assign]
    await a.links[m.id].request("dht", {"m": {"t": "add_provider", "record": record_wire(bad)}})
    assert m.svc.node.rejected == before + 1 and len(m.svc.node.store.records.get(
        key_for(RID), {})) == 0


async def test_a_wrong_kind_of_reply_counts_as_no_answer() -> None:
    net = Net()
    a, m = await line(net, 2)

    async def nodes_for_everything(conn: Any, req: peer_wire.Request) -> object:
        return {"m": wire(Providers((), ()))} if req.args["m"]["t"] == "find_node" else {}

    m.svc.handlers = lambda: {"dht": nodes_for_everything}  # type: ignore[method-assign]
    assert await a.svc._find_node(a.id) == []
    assert m.id not in a.svc.node.table.contacts()  # dropped: it did not answer


async def test_malformed_dht_messages_are_refused_by_the_schema() -> None:
    for args in ({"m": {}}, {"m": {"t": 1}}, {"m": "x"}, {"m": {"t": "ping", "a": 1, "b": 2,
                                                              "c": 3}}):
        with pytest.raises(peer_wire.WireError):
            peer_wire.decode(peer_wire.encode_request(1, "dht", args))
    net = Net()
    a, b = await line(net, 2)
    with pytest.raises(Exception, match="malformed DHT message"):
        await a.links[b.id].request("dht", {"m": {"t": "find_node", "target": "zz"}})
    with pytest.raises(Exception, match="not a DHT request"):
        await a.links[b.id].request("dht", {"m": {"t": "pong"}})


async def test_next_hop_follows_a_live_introducer_and_heals_through_another() -> None:
    net = Net()
    a, b, c, d = await line(net, 4)
    e = net.add("e")
    pair_all(a, b, c, d, e)
    net.link(a, e)
    net.link(e, d)  # a ring: a-b-c-d-e-a
    await net.settle()
    await a.svc._find_node(d.id)
    assert a.svc.next_hop(d.id) in (b.id, e.id)
    first = a.svc.next_hop(d.id)
    a.links.pop(first)  # that neighbour's session ended
    other = e.id if first == b.id else b.id
    assert a.svc.next_hop(d.id) in (other, None)
    await a.svc._find_node(d.id)  # a refresh learns the other path
    assert a.svc.next_hop(d.id) == other
    assert a.svc.next_hop(bytes(32)) is None


async def test_the_fetch_policy_switches_at_the_threshold_and_beyond_the_neighbours() -> None:
    net = Net()
    alone = net.add("alone", threshold=1)
    assert not alone.svc.lookup_first(10)  # an empty table: nothing to look up in
    a, b = await line(net, 2)
    a.svc.cfg = DhtConfig(threshold=3)
    assert not a.svc.lookup_first(3) and a.svc.lookup_first(4)
    assert not a.svc.beyond_neighbours()  # b is a neighbour: the mesh is the neighbourhood
    c = net.add("c")
    pair_all(a, b, c)
    net.link(b, c)
    await net.settle()
    assert c.id in a.svc.node.table.contacts()
    assert a.svc.beyond_neighbours()  # c is paired and reachable, not a neighbour
    a.trust.ids.discard(c.id)
    a.svc.unpaired(c.id)
    assert not a.svc.beyond_neighbours() and a.svc.next_hop(c.id) is None


async def test_records_are_republished_and_withdrawn_by_the_timers() -> None:
    net = Net()
    a, b = await line(net, 2, )
    a.held.append((RID, "x", True))
    await a.svc._sync_holdings_now()
    sent = b.svc.counters.requests_in
    CLOCK[0] += a.svc.cfg.republish + 1
    try:
        await a.svc.tick()
        assert b.svc.counters.requests_in > sent  # announced again
        assert b.svc.node.store.get(key_for(RID), CLOCK[0])
        a.held.clear()
        await a.svc._sync_holdings_now()
        assert a.svc.republisher.next_due == {}
    finally:
        CLOCK[0] -= a.svc.cfg.republish + 1


async def test_a_resource_published_during_an_announcement_is_announced_too() -> None:
    """Regression: catalog_changed during a running announcement pass was dropped, so a
    resource published meanwhile waited for the next republish (12 h) to be findable."""
    net = Net()
    a, b = await line(net, 2)
    a.held.append((RID, "first", True))
    inner = a.svc.announce
    later = ("fedcba9876543210fedcba9876543210", "second", True)

    async def announce(key: bytes, *, private: bool) -> int:
        if later not in a.held:  # published while the first announcement is on its way
            a.held.append(later)
            a.svc.catalog_changed()
        return await inner(key, private=private)

    a.svc.announce = announce  # type: ignore[method-assign]
    a.svc.catalog_changed()
    await net.settle()
    assert set(resource_keys(*later)) <= set(a.svc.provided)
    assert b.svc.node.store.get(resource_key(later[0]), CLOCK[0])
