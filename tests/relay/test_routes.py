"""The route table (pure) and its adverts between real agents."""

from __future__ import annotations

import itertools

import pytest

from agent.relay.adverts import parse_advert
from agent.relay.routes import RouteTable
from tests.relay.relay_helpers import nodes, pair
from tests.waiting import wait_until


def dev(i: int) -> bytes:
    return bytes([i]) * 32


def converge(links: dict[int, set[int]], max_relays: int = 3) -> dict[int, RouteTable]:
    """Run the distance-vector exchange over an undirected graph until nothing changes."""
    tables = {i: RouteTable(dev(i), max_relays=max_relays) for i in links}
    for i, ns in links.items():
        for j in ns:
            tables[i].neighbour_up(dev(j))
    for _ in range(20):
        changed = False
        for i, ns in links.items():
            for j in ns:
                changed |= tables[j].advert(dev(i), tables[i].export(dev(j)))
        if not changed:
            return tables
    raise AssertionError("no convergence")


# the twelve-agent mesh: bridges {1..5}, {4..9}, {9..12}; 4, 5 and 9 dual-homed
SEGMENTS = [range(1, 6), range(4, 10), range(9, 13)]


def twelve(dead: set[int] = frozenset()) -> dict[int, set[int]]:  # type: ignore[assignment]
    links: dict[int, set[int]] = {i: set() for i in range(1, 13) if i not in dead}
    for seg in SEGMENTS:
        for a, b in itertools.permutations([i for i in seg if i not in dead], 2):
            links[a].add(b)
    return links


def path(tables: dict[int, RouteTable], src: int, dst: int) -> list[int]:
    out, at = [src], src
    while at != dst:
        nxt = tables[at].next_hop(dev(dst))
        assert nxt is not None, f"{at} has no route to {dst}"
        at = nxt[0]  # dev(i) is the byte i, 32 times
        out.append(at)
        assert len(out) <= 6
    return out


def test_the_shortest_path_across_three_bridges() -> None:
    tables = converge(twelve())
    p = path(tables, 1, 12)
    assert len(p) == 4 and p[1] in (4, 5) and p[2] == 9  # two relays, never a detour
    assert tables[1].route(dev(12)) == (dev(p[1]), 3)


def test_a_killed_intermediate_is_routed_around() -> None:
    full = converge(twelve())
    assert full[1].next_hop(dev(12)) == dev(4)  # ties go to the lowest ID
    healed = converge(twelve(dead={4}))
    assert path(healed, 1, 12) == [1, 5, 9, 12]
    gone = converge(twelve(dead={4, 5}))
    assert gone[1].next_hop(dev(12)) is None  # no path: nothing invented


def test_nothing_beyond_the_circuit_limit_is_advertised() -> None:
    line = {i: {j for j in (i - 1, i + 1) if 1 <= j <= 7} for i in range(1, 8)}
    tables = converge(line, max_relays=3)
    assert tables[1].route(dev(5)) == (dev(2), 4)  # 3 relays: the limit
    assert tables[1].route(dev(6)) is None
    assert tables[1].route(dev(7)) is None


def test_routes_through_a_lost_neighbour_go_at_once() -> None:
    t = RouteTable(dev(0))
    t.neighbour_up(dev(1))
    assert t.advert(dev(1), [(dev(2), 1), (dev(3), 2)])
    assert t.route(dev(3)) == (dev(1), 3)
    assert t.neighbour_down(dev(1))
    assert t.route(dev(3)) is None and t.size() == 0


def test_adverts_are_bounded_and_checked() -> None:
    t = RouteTable(dev(0), max_entries=3)
    assert not t.advert(dev(1), [(dev(2), 1)])  # not a neighbour: ignored
    t.neighbour_up(dev(1))
    t.advert(dev(1), [(dev(0), 1), (dev(1), 1), (dev(9), 0), (dev(8), 4)]
             + [(dev(i), 2) for i in range(10, 20)])
    assert t.size() == 4  # the neighbour and three entries; self, itself, 0 and 4 hops dropped
    assert dev(8) not in t.snapshot() and dev(0) not in t.snapshot()
    # split horizon: a neighbour is never told routes that go through it
    t.neighbour_up(dev(2))
    assert all(target != dev(2) for target, _ in t.export(dev(2)))
    assert dev(10) not in {target for target, _ in t.export(dev(1))}


@pytest.mark.parametrize("rows", [
    "x", [["00" * 32]], [["zz" * 32, 1]], [["00" * 32, True]], [["00" * 32, 17]],
    [["00" * 31, 1]], [["00" * 32, 1, 2]], [["00" * 32, 1]] * 5,
])
def test_malformed_adverts_are_refused(rows: object) -> None:
    assert parse_advert({"r": rows}, limit=4) is None
    assert parse_advert({"r": [["ab" * 32, 2]]}, limit=4) == [(bytes.fromhex("ab" * 32), 2)]


async def test_agents_learn_a_short_path_and_open_a_circuit_without_naming_a_relay() -> None:
    """a - b - c - d on loopback (paired, no DHT): a opens a session to d with no relay
    named; the route adverts chose b, and b chose c."""
    async with nodes("a", "b", "c", "d") as n:
        a, b, c, d = n["a"], n["b"], n["c"], n["d"]
        for x, y in itertools.combinations((a, b, c, d), 2):
            pair(x, y)
        for x, y in ((a, b), (b, c), (c, d)):
            await x.connections.connect(("127.0.0.1", y.connections.lan_port))
        await wait_until(lambda: a.routes.table.route(d.identity.device_id)
                         == (b.identity.device_id, 3), "a's route to d", timeout=30)
        session = await a.relay.open(d.identity.device_id)
        assert session.peer_id == d.identity.device_id and session.transport == "relay"
        assert b.relay.stats()["forwarded_bytes"] > 0 and c.relay.stats()["forwarded_bytes"] > 0
        routes = a.relay.stats()["routes"]
        assert isinstance(routes, dict) and routes["reachable"] == 3
        # c goes: b's routes to d go with it, and a learns that
        await c.connections.close_peer(d.identity.device_id, "test")
        await wait_until(lambda: a.routes.table.route(d.identity.device_id) is None,
                         "the route to d withdrawn", timeout=30)
