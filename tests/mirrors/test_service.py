"""The mirror service with fakes for its ports: the host's lease ledger, trust (an unpaired
device can never make us mirror or prefetch, nor tell us a mirror address), strict parsing
of peer answers, prefetch execution and hit accounting."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.config import PredictConfig, PrefetchConfig
from agent.mirrors.hosting import HostLedger, Refusal
from agent.mirrors.service import MirrorService, NotPaired, PeerFacts, parse_listing
from agent.peer import wire
from agent.usage.record import AccessRecord, Source
from agent.usage.temperature import Temperature
from tests.waiting import wait_until

R1, R2, R3 = "11" * 16, "22" * 16, "33" * 16
MB = 1024 * 1024


# ----------------------------------------------------------------- the host ledger
def test_leases_share_one_copy_and_the_last_one_out_removes_it() -> None:
    h = HostLedger(max_hosted=2, max_bytes=10 * MB, max_per_requester=2, lease=100.0)
    h.hold("b", R1, MB, 0.0, held_already=False)
    h.hold("c", R1, MB, 0.0, held_already=False)  # a second requester shares the copy
    assert len(h.hosted) == 1 and h.bytes() == MB
    assert h.release("b", R1) is None
    assert h.release("c", R1) == R1


def test_leases_expire_unless_renewed_and_user_content_is_never_removed() -> None:
    h = HostLedger(max_hosted=4, max_bytes=10 * MB, lease=100.0)
    h.hold("b", R1, MB, 0.0, held_already=False)
    h.hold("b", R2, MB, 0.0, held_already=True)  # the host's user had it already
    h.hold("b", R1, MB, 60.0, held_already=True)  # renewed
    assert h.expire(120.0) == []  # R2's lease ended, but it is the user's: not removed
    assert list(h.hosted) == [R1]
    assert h.expire(160.0) == [R1]
    h.hold("c", R3, MB, 0.0, held_already=False)
    assert h.forget_requester("c") == [R3]


def test_host_bounds_refuse_and_leave_the_ledger_unchanged() -> None:
    h = HostLedger(max_hosted=1, max_bytes=2 * MB, max_per_requester=1)
    with pytest.raises(Refusal):
        h.hold("b", R1, 3 * MB, 0.0, held_already=False)
    h.hold("b", R1, MB, 0.0, held_already=False)
    with pytest.raises(Refusal):
        h.hold("c", R2, MB, 0.0, held_already=False)  # hosts one already
    assert list(h.hosted) == [R1]
    per = HostLedger(max_hosted=4, max_bytes=9 * MB, max_per_requester=1)
    per.hold("b", R1, MB, 0.0, held_already=False)
    with pytest.raises(Refusal):
        per.hold("b", R2, MB, 0.0, held_already=False)  # one per requester
    assert list(per.hosted) == [R1]


# ----------------------------------------------------------------- fakes for the ports
@dataclass
class Rec:
    resource_id: str
    size: int


@dataclass
class FakeStore:
    recs: dict[str, Rec] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)

    def resources(self) -> list[Rec]:
        return list(self.recs.values())

    def remove_resource(self, resource_id: str) -> None:
        self.recs.pop(resource_id, None)
        self.removed.append(resource_id)

    def usage(self) -> tuple[int, int | None]:
        return sum(r.size for r in self.recs.values()), None


class Keys:
    epoch = 1

    def hash(self, requester: bytes) -> bytes:
        return requester[:16]


@dataclass
class FakeLog:
    recs: list[AccessRecord] = field(default_factory=list)

    def records(self, since: float = 0.0) -> Iterator[AccessRecord]:
        return iter([r for r in self.recs if r.time >= since])


@dataclass
class FakeUsage:
    log: FakeLog = field(default_factory=FakeLog)
    keys: Keys = field(default_factory=Keys)
    received: dict[str, Any] = field(default_factory=dict)
    temperature: Temperature = field(default_factory=lambda: Temperature(3600.0))

    def mesh_temperature(self, resource_id: str, now: float | None = None) -> float:
        return self.temperature.value(resource_id, now or 0.0)


class Trust:
    def __init__(self, paired: set[bytes]) -> None:
        self.paired = paired

    def is_trusted(self, device_id: bytes) -> bool:
        return device_id in self.paired

    def get(self, device_id: bytes) -> None:
        return None


class Link:
    def capacity_estimate(self) -> float | None:
        return None

    def queued(self, cls: str | None = None) -> int:
        return 0


class Conn:
    """A session from *owner* to the service *peer_svc* (whose device is *peer_id*)."""

    transport = "lan"
    address = ("127.0.0.1", 1)
    rtt = 0.001

    def __init__(self, peer_id: bytes, name: str, caller_id: bytes, peer_svc: MirrorService):
        self.peer_id, self.name = peer_id, name
        self._caller = caller_id
        self._svc = peer_svc
        self.closed = asyncio.Event()

    async def request(self, op: str, args: dict[str, Any], timeout: float = 10.0) -> object:
        wire.REQUEST_SCHEMAS[op]  # the op exists
        req = wire.Request(1, op, wire._check_args("request", op, args, wire.REQUEST_SCHEMAS))
        back = type("Back", (), {"peer_id": self._caller, "name": "caller"})()
        return await self._svc._on_mirror(back, req)  # type: ignore[arg-type]


class Conns:
    def __init__(self) -> None:
        self.conns: list[Conn] = []

    def live_connections(self) -> list[Conn]:
        return self.conns

    def live_connection(self, prefix: str) -> Conn | None:
        return None

    async def connect(self, address: tuple[str, int], expect: str | None = None) -> Conn:
        raise OSError("no")


@dataclass
class Device:
    id: bytes
    svc: MirrorService
    store: FakeStore
    usage: FakeUsage
    trust: Trust
    conns: Conns
    fetched: list[tuple[str, str]]
    predictions: list[tuple[str, float]]


def device(tmp: Path, name: str, sizes: dict[str, int], **cfg: Any) -> Device:
    me = name.encode() * 32
    store, usage, trust, conns = FakeStore(), FakeUsage(), Trust(set()), Conns()
    fetched: list[tuple[str, str]] = []
    preds: list[tuple[str, float]] = []
    tasks: list[asyncio.Task[object]] = []

    async def fetch(rid: str, cls: str, n: int | None) -> dict[str, object]:
        if n is not None and sizes[rid] > n:  # as FetchService(max_size=n) refuses
            raise ValueError(f"{sizes[rid]} bytes, over the {n} allowed")
        fetched.append((rid, cls))
        store.recs[rid] = Rec(rid, sizes[rid])
        return {"bytes_fetched": sizes[rid]}

    async def size(rid: str) -> tuple[int, frozenset[str]] | None:
        return (sizes[rid], frozenset()) if rid in sizes else None

    def spawn(coro: Any, name: str) -> asyncio.Task[object]:
        t: asyncio.Task[object] = asyncio.ensure_future(coro)
        tasks.append(t)
        return t

    svc = MirrorService(
        PrefetchConfig(**cfg), PredictConfig(), tmp / name, me=me, store=store,
        fetch=fetch, predict=lambda k: ("test", preds[:k]), usage=usage,
        connections=conns, trust=trust, link=Link(),  # type: ignore[arg-type]
        facts=lambda d: PeerFacts(holds=frozenset(r for r in sizes if r != R3)),
        offer_size=size, spawn=spawn, catalog_changed=lambda: None, clock=lambda: 1000.0)
    return Device(me, svc, store, usage, trust, conns, fetched, preds)


def link(a: Device, b: Device, paired: bool = True) -> None:
    """A session a -> b (and b -> a), paired on both sides or on neither."""
    a.conns.conns.append(Conn(b.id, "b", a.id, b.svc))
    b.conns.conns.append(Conn(a.id, "a", b.id, a.svc))
    if paired:
        a.trust.paired.add(b.id)
        b.trust.paired.add(a.id)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# ----------------------------------------------------------------- trust
async def test_an_unpaired_device_cannot_make_us_mirror(tmp_path: Path) -> None:
    sizes = {R1: MB}
    host, stranger = device(tmp_path, "c", sizes), device(tmp_path, "x", sizes)
    link(stranger, host, paired=False)
    with pytest.raises(NotPaired):
        await stranger.conns.conns[0].request("mirror", {"do": "hold", "r": R1, "n": MB})
    with pytest.raises(NotPaired):
        await stranger.conns.conns[0].request("mirror", {"do": "list"})
    await settle()
    assert host.svc.hosting.hosted == {} and host.fetched == []


async def test_an_unpaired_device_is_never_chosen_nor_believed_as_a_mirror(
        tmp_path: Path) -> None:
    """B is hot on R3 (held by nobody the reports know); its only peer is unpaired: no
    mirror request goes out and the fetch path is never told of a mirror. The same peer,
    paired, is chosen (the control)."""
    sizes = {R3: MB}
    b, x = device(tmp_path, "b", sizes), device(tmp_path, "x", sizes)
    link(b, x, paired=False)
    for t in range(5):
        b.usage.temperature.observe(R3, 1000.0 - t)
    await b.svc.plan_mirrors([(R3, 0.9)])
    await settle()
    assert b.svc.using == {} and x.svc.hosting.hosted == {} and b.svc.mirrors_for(R3) == []
    b.trust.paired.add(x.id)
    x.trust.paired.add(b.id)
    await b.svc.plan_mirrors([(R3, 0.9)])
    await settle()
    assert b.svc.mirrors_for(R3) == [x.id.hex()]


async def test_a_mirror_is_created_on_a_paired_host_and_forgotten_when_unpaired(
        tmp_path: Path) -> None:
    sizes = {R3: 4 * MB}  # R3: held by nobody the reports know (see the facts fake)
    b, c = device(tmp_path, "b", sizes), device(tmp_path, "c", sizes)
    link(b, c)
    for t in range(5):
        b.usage.temperature.observe(R3, 1000.0 - t)
    await b.svc.plan_mirrors([(R3, 0.9)])
    await settle()
    assert b.svc.mirrors_for(R3) == [c.id.hex()]
    assert c.fetched == [(R3, "mirror")]  # the host fetched it in the mirror class
    assert list(c.svc.hosting.hosted[R3].leases) == [b.id.hex()]
    assert (await c.svc.describe_mirrors())["mirrors"][0]["role"] == "hosting"
    row = (await b.svc.describe_mirrors())["mirrors"][0]
    assert (row["role"], row["device"], row["resource"]) == ("using", c.id.hex(), R3)
    assert row["address"] == "127.0.0.1:1"  # the requester knows where its mirror is
    b.trust.paired.discard(c.id)  # unpaired: its address is no longer believed at once
    assert b.svc.mirrors_for(R3) == []
    c.svc.unpaired(b.id)
    assert c.svc.hosting.hosted == {} and c.store.removed == [R3]


def test_peer_listings_are_parsed_strictly() -> None:
    assert parse_listing({"hosts": {R1: 0.5}, "room": True}) == ({R1: 0.5}, True)
    for bad in ({"hosts": {R1: 2.0}, "room": True}, {"hosts": {"zz": 0.1}, "room": True},
                {"hosts": {R1: True}, "room": True}, {"hosts": [], "room": True},
                {"hosts": {}, "room": 1}, {"hosts": {}, "room": True, "x": 1}, [],
                {"hosts": {f"{i:032x}": 0.1 for i in range(65)}, "room": True}):
        with pytest.raises(ValueError):
            parse_listing(bad)


# ----------------------------------------------------------------- prefetch
def _access(t: float, rid: str, me: bytes, source: Source = Source.LOCAL) -> AccessRecord:
    return AccessRecord(t, 1, me[:16], bytes.fromhex(rid), MB, True, source)


async def test_prefetch_runs_in_the_prefetch_class_and_counts_a_use(tmp_path: Path) -> None:
    sizes = {R1: MB, R2: MB}
    b = device(tmp_path, "b", sizes)
    b.predictions[:] = [(R1, 0.9), (R2, 0.02)]
    await b.svc.plan_prefetch("test", b.predictions)
    await settle()
    assert b.fetched == [(R1, "prefetch")]  # R2 is below min_score
    assert b.svc.entries[R1].state == "held"
    # someone else asking does not count; this device asking (served locally) does
    b.usage.log.recs += [_access(1001.0, R1, b"z" * 32), _access(1001.0, R1, b.id)]
    b.svc._scanned = 0.0
    b.svc._account(b.svc.entries)
    assert b.svc.entries[R1].state == "used"
    s = (await b.svc.describe_prefetch())["stats"]
    assert (s["prefetched"], s["used"], s["wasted_bytes"]) == (1, 1, 0)


async def test_an_unused_prefetched_copy_is_evicted_and_counted_as_waste(
        tmp_path: Path) -> None:
    sizes = {R1: MB, R2: MB, R3: MB}
    b = device(tmp_path, "b", sizes, device_budget=MB)
    b.store.recs[R3] = Rec(R3, MB)  # the user's own content: never the planner's
    await b.svc.plan_prefetch("test", [(R1, 0.5)])
    await settle()
    await b.svc.plan_prefetch("test", [(R2, 0.9)])
    await settle()
    assert b.store.removed == [R1] and R3 in b.store.recs
    assert (await b.svc.describe_prefetch())["stats"]["wasted_bytes"] == MB
    reloaded = device(tmp_path, "b", sizes)  # the ledger survives a restart
    assert reloaded.svc.entries[R1].state == "evicted"


async def test_an_idle_device_acts_on_no_prediction(tmp_path: Path) -> None:
    """A device with no request of its own (the cold-start predictor answers from what the
    mesh's other devices read) prefetches nothing and asks for no mirror; one request of
    its own within the active window, and it does."""
    sizes = {R1: MB}
    b = device(tmp_path, "b", sizes, active_window=60.0)
    b.predictions[:] = [(R1, 0.9)]
    b.usage.log.recs.append(_access(900.0, R3, b"z" * 32))  # served to someone else
    await b.svc.step()
    await settle()
    assert b.fetched == []
    b.usage.log.recs.append(_access(999.0, R3, b.id))  # this device's own request
    await b.svc.step()
    await settle()
    assert b.fetched == [(R1, "prefetch")]


async def test_a_hosted_copy_our_user_then_asks_for_is_kept_when_the_lease_ends(
        tmp_path: Path) -> None:
    sizes = {R3: MB}
    b, c = device(tmp_path, "b", sizes), device(tmp_path, "c", sizes)
    link(b, c)
    await b.conns.conns[0].request("mirror", {"do": "hold", "r": R3, "n": MB})
    await settle()
    assert R3 in c.store.recs
    c.usage.log.recs.append(_access(1000.0, R3, c.id))  # charlie's own user reads it
    c.svc._account({})
    await b.conns.conns[0].request("mirror", {"do": "release", "r": R3})
    assert R3 in c.store.recs and c.store.removed == []


async def test_a_requester_understating_the_size_cannot_pass_the_host_budget(
        tmp_path: Path) -> None:
    sizes = {R3: 4 * MB}
    b, c = device(tmp_path, "b", sizes), device(tmp_path, "c", sizes, host_budget=2 * MB)
    link(b, c)
    assert await b.conns.conns[0].request("mirror", {"do": "hold", "r": R3, "n": 1}) == {
        "ok": True}
    await settle()
    assert R3 not in c.store.recs and c.fetched == []  # the fetch was bounded by the budget
    assert c.svc.hosting.hosted == {}  # and the mirror ended: it is not listed any more
    assert await b.conns.conns[0].request("mirror", {"do": "list"}) == {
        "hosts": {}, "room": True}


async def test_a_hosted_mirror_follows_new_versions_every_sync_interval(tmp_path: Path) -> None:
    sizes = {R3: MB}
    b, c = device(tmp_path, "b", sizes), device(tmp_path, "c", sizes, sync_interval=60.0)
    link(b, c)
    now = [1000.0]
    c.svc._clock = lambda: now[0]
    await b.conns.conns[0].request("mirror", {"do": "hold", "r": R3, "n": MB})
    await settle()
    await c.svc.host_round()
    assert c.fetched == [(R3, "mirror")]  # synced when taken, not again before the interval
    now[0] += 61.0
    await c.svc.host_round()
    assert c.fetched == [(R3, "mirror"), (R3, "mirror")]
    assert c.svc.counters["synced"] == 2
    row = (await b.svc.describe_mirrors())["mirrors"]
    assert row == []  # b asked directly here; b's manager did not record a use


async def test_an_own_request_replans_at_once_between_rounds(tmp_path: Path) -> None:
    """The full round is an hour away; this device's request wakes the loop and the next
    predicted resource is prefetched now. Another device's request wakes nothing."""
    sizes = {R1: MB, R2: MB}
    b = device(tmp_path, "b", sizes, interval=3600.0)
    b.predictions[:] = [(R1, 0.9)]
    task = asyncio.ensure_future(b.svc.run())
    try:
        b.svc.own_access(b"z" * 32, R2, MB, 999.0)  # served to someone else
        await settle()
        assert b.fetched == []
        b.svc.own_access(b.id, R2, MB, 999.0)
        await wait_until(lambda: b.fetched == [(R1, "prefetch")])
        assert b.svc.last_own_request == 999.0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_no_prefetch_starts_while_a_demand_fetch_of_ours_is_moving(
        tmp_path: Path) -> None:
    sizes = {R1: MB}
    b = device(tmp_path, "b", sizes)
    in_flight = [1]
    b.svc._demand_active = lambda: in_flight[0]
    await b.svc.plan_prefetch("test", [(R1, 0.9)])
    await settle()
    assert b.fetched == []  # it would share the holder's link with the user's fetch
    in_flight[0] = 0
    await b.svc.plan_prefetch("test", [(R1, 0.9)])
    await settle()
    assert b.fetched == [(R1, "prefetch")]
