"""Dynamic authority with real agents on loopback: one cluster forms from paired devices,
every agent reads the same map, fetch prefers the authority and survives its death."""

from __future__ import annotations

import os

import pytest

from .agents import Agent, pair, wait_until


def _auth(a: Agent, resource: str | None = None) -> dict:
    return a.json("authority", *([resource] if resource else []))


def _one_cluster(agents: list[Agent], voters: int) -> bool:
    views = [_auth(a) for a in agents]
    return (len({v["cluster"] for v in views}) == 1
            and all(len(v["voters"]) == voters for v in views)
            and len({v["leader"] for v in views}) == 1)


def _holder_everywhere(agents: list[Agent], rid: str) -> str | None:
    holders = set()
    for a in agents:
        rows = [r for r in _auth(a)["assignments"] if r["resource_id"] == rid]
        holders.add((rows[0]["holder"], rows[0]["term"], rows[0]["epoch"]) if rows else None)
    if len(holders) == 1 and None not in holders:
        holder = next(iter(holders))[0]
        return None if holder == "-" else holder  # "-": revoked, a new one is on its way
    return None


@pytest.fixture
def trio(agents):
    a, b, c = agents("ant"), agents("bee"), agents("cod")
    for x, y in ((a, b), (a, c), (b, c)):
        pair(x, y)
    wait_until(lambda: _one_cluster([a, b, c], 3), 30, "one cluster with 3 voters")
    return a, b, c


def test_cluster_forms_and_every_agent_reads_the_same_map(trio, tmp_path):
    a, b, c = trio
    src = tmp_path / "hot.bin"
    src.write_bytes(os.urandom(2 * 1024 * 1024))
    rid = a.json("publish", str(src))["resource_id"]
    holder = wait_until(lambda: _holder_everywhere([a, b, c], rid), 15, "an authority for hot.bin")
    assert holder == "ant"  # the only holder
    r = b.json("fetch", "hot.bin", "--no-output")
    assert r["why"].startswith("authority ant"), r["why"]
    view = _auth(c, "hot.bin")
    assert [x["holder"] for x in view["assignments"]] == ["ant"]
    assert view["assignments"][0]["scores"]  # reputation scores are shown


def test_authority_moves_when_it_dies_and_fetch_falls_back(trio, tmp_path):
    a, b, c = trio
    src = tmp_path / "hot.bin"
    src.write_bytes(os.urandom(2 * 1024 * 1024))
    rid = a.json("publish", str(src))["resource_id"]
    b.json("fetch", "hot.bin", "--no-output")  # now two holders
    first = wait_until(lambda: _holder_everywhere([a, b, c], rid), 15, "an authority")
    victim = {"ant": a, "bee": b}[first]
    survivor = b if victim is a else a
    victim.kill()
    live = [survivor, c]
    new = wait_until(lambda: (h := _holder_everywhere(live, rid)) not in (None, first) and h, 15,
                "authority to move off the dead holder")
    assert new == survivor.name
    out = tmp_path / "out.bin"
    r = c.json("fetch", "hot.bin", "-o", str(out))
    assert out.read_bytes() == src.read_bytes()
    assert r["why"].startswith(f"authority {survivor.name}"), r["why"]
