"""The fetch and the DHT (through the HolderFinder port, a fake here): below the threshold the
neighbours are asked and the finder only when none offers and the mesh reaches beyond them;
above it the finder goes first and only the holders it found are asked; a holder it found
that offers nothing sends the fetch back to every neighbour."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_fetcher import FakeConn

from agent.config import TransferConfig
from agent.security.identity import Identity
from agent.store import ContentStore
from agent.transfer.service import FetchService, NoHolders

pytestmark = pytest.mark.timeout(60)
PUBLISHER = Identity.generate()


class Counted(FakeConn):
    def __init__(self, name: str, source: ContentStore) -> None:
        super().__init__(name, source)
        self.manifests = 0

    async def request(self, op: str, args: dict, timeout: float = 10.0):
        if op == "manifest":
            self.manifests += 1
            if not any(r.manifest.manifest_hash == args["resource"]
                       for r in self.source.resources()):
                raise LookupError("not held here")
        return await super().request(op, args, timeout)


class Conns:
    device_id = b"m" * 32

    def __init__(self, *conns: FakeConn) -> None:
        self.conns = list(conns)

    def live_connections(self) -> list[FakeConn]:
        return self.conns


class Finder:
    """A fake DHT: *reach* opens 'sessions' (adds conns) and returns their IDs."""

    def __init__(self, conns: Conns, threshold: int, beyond: bool,
                 reach: list[FakeConn]) -> None:
        self.conns, self.threshold, self.beyond, self.reach = conns, threshold, beyond, reach
        self.lookups: list[str] = []

    def lookup_first(self, neighbours: int) -> bool:
        return neighbours > self.threshold

    def beyond_neighbours(self) -> bool:
        return self.beyond

    async def reach_holders(self, resource: str) -> list[bytes]:
        self.lookups.append(resource)
        for c in self.reach:
            if c not in self.conns.conns:
                self.conns.conns.append(c)
        return [c.peer_id for c in self.reach]


@pytest.fixture
def stores(tmp_path: Path):
    made = {n: ContentStore(tmp_path / n, avg_chunk_size=16 * 1024) for n in ("h", "x", "me")}
    f = tmp_path / "data.bin"
    f.write_bytes(os.urandom(100 * 1024))
    m = made["h"].publish_file(f, name="data.bin", public=True, signer=PUBLISHER)
    yield made, m
    for s in made.values():
        s.close()


def _service(me: ContentStore, conns: Conns, finder: Finder | None) -> FetchService:
    return FetchService(me, conns, TransferConfig(), connect_timeout=1.0,  # type: ignore[arg-type]
                        default_port=1, holders=finder)


async def test_a_holder_beyond_the_neighbours_is_found_when_no_neighbour_offers(stores) -> None:
    (s, m) = stores
    x, h = Counted("x", s["x"]), Counted("h", s["h"])
    # the mesh is the neighbourhood: no lookup, and no holder
    alone = Finder(Conns(x), threshold=12, beyond=False, reach=[h])
    with pytest.raises(NoHolders):
        await _service(s["me"], alone.conns, alone).fetch(m.manifest_hash)
    assert alone.lookups == []
    conns = Conns(x)
    finder = Finder(conns, threshold=12, beyond=True, reach=[h])
    r = await _service(s["me"], conns, finder).fetch(m.manifest_hash)
    assert r["bytes_fetched"] == m.size and list(r["sources"]) == ["h"]
    assert finder.lookups == [m.manifest_hash] and x.manifests == 2


async def test_above_the_threshold_only_the_holders_found_are_asked(stores) -> None:
    (s, m) = stores
    x, h = Counted("x", s["x"]), Counted("h", s["h"])
    conns = Conns(x, h)
    finder = Finder(conns, threshold=1, beyond=False, reach=[h])
    r = await _service(s["me"], conns, finder).fetch(m.manifest_hash)
    assert r["bytes_fetched"] == m.size
    assert (finder.lookups, h.manifests, x.manifests) == ([m.manifest_hash], 1, 0)


async def test_a_found_holder_that_offers_nothing_sends_the_fetch_to_every_neighbour(
        stores) -> None:
    (s, m) = stores
    stale, x, h = Counted("stale", s["x"]), Counted("x", s["x"]), Counted("h", s["h"])
    conns = Conns(x, h, stale)
    finder = Finder(conns, threshold=1, beyond=False, reach=[stale])
    r = await _service(s["me"], conns, finder).fetch(m.manifest_hash)
    assert r["bytes_fetched"] == m.size and list(r["sources"]) == ["h"]
    assert (stale.manifests, x.manifests, h.manifests) == (1, 1, 1)


class Replaced(Counted):
    """A holder's session that ends while it is asked (a relayed one giving way to a direct
    one): the finder's next answer is the new session."""

    def __init__(self, name: str, source: ContentStore, conns: Conns,
                 successor: FakeConn) -> None:
        super().__init__(name, source)
        self.conns, self.successor = conns, successor

    async def request(self, op: str, args: dict, timeout: float = 10.0):
        if op == "manifest":
            self.manifests += 1
            self.conns.conns.remove(self)
            self.conns.conns.append(self.successor)
            raise ConnectionError("the relayed session was replaced by a direct one")
        return await super().request(op, args, timeout)


async def test_a_holder_whose_session_was_replaced_while_asked_is_asked_again(stores) -> None:
    (s, m) = stores
    x = Counted("x", s["x"])
    direct = Counted("h", s["h"])  # the same device, over its new session
    conns = Conns(x)
    relayed = Replaced("h", s["h"], conns, direct)
    finder = Finder(conns, threshold=12, beyond=True, reach=[relayed])
    r = await _service(s["me"], conns, finder).fetch(m.manifest_hash)
    assert r["bytes_fetched"] == m.size and list(r["sources"]) == ["h"]
    assert (relayed.manifests, direct.manifests) == (1, 1)


async def test_a_holder_that_lacks_the_resource_is_not_asked_twice(stores) -> None:
    (s, m) = stores
    x, lacking = Counted("x", s["x"]), Counted("y", s["x"])
    conns2 = Conns(x)
    finder2 = Finder(conns2, threshold=12, beyond=True, reach=[lacking])
    with pytest.raises(NoHolders):
        await _service(s["me"], conns2, finder2).fetch(m.manifest_hash)
    assert lacking.manifests == 1 and len(finder2.lookups) == 2
