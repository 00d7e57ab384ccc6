"""Five agents in network namespaces: SIGKILL the Raft leader, SIGKILL the authority of a hot
resource, partition 2 of 5 and heal; the live agents always end up agreeing on one map."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.integration.agents import Agent, pair, wait_until  # noqa: E402

pytestmark = [pytest.mark.netns, pytest.mark.slow]



def _views(agents: list[Agent]) -> list[dict]:
    return [a.json("authority") for a in agents]


def _agreed(agents: list[Agent], rid: str | None = None) -> dict | None:
    """The common view if every agent has the same cluster, leader and assignments."""
    views = _views(agents)
    keys = {(v["cluster"], v["leader"],
             tuple((r["resource_id"], r["holder"], r["term"], r["epoch"])
                   for r in v["assignments"])) for v in views}
    if len(keys) != 1:
        return None
    view = views[0]
    if rid is not None:
        rows = [r for r in view["assignments"] if r["resource_id"] == rid]
        if not rows or rows[0]["holder"] == "-":
            return None
    return view


def _holder(view: dict, rid: str) -> str:
    return next(r["holder"] for r in view["assignments"] if r["resource_id"] == rid)


@pytest.fixture
def five(lan_factory, tmp_path):
    lan = lan_factory(5)
    agents = []
    for i in range(1, 6):
        h = lan.host(i)
        a = Agent(f"h{i}", tmp_path / f"h{i}", netns=h.ns, host_addr=h.addr, port=47474)
        agents.append(a.start())
    try:
        for i, a in enumerate(agents):
            for b in agents[i + 1:]:
                pair(a, b)
        wait_until(lambda: (v := _agreed(agents)) and len(v["voters"]) == 5, 60,
              "one cluster of 5 voters")
        yield lan, agents
    finally:
        for a in agents:
            a.stop(timeout=5)


def test_failover_partition_heal(five, tmp_path):
    lan, agents = five
    hot = tmp_path / "hot.bin"
    hot.write_bytes(os.urandom(1024 * 1024))
    rid = agents[0].json("publish", str(hot))["resource_id"]
    agents[1].json("fetch", "hot.bin", "--no-output")
    agents[2].json("fetch", "hot.bin", "--no-output")
    view = wait_until(lambda: _agreed(agents, rid), 20, "an authority for the hot resource")

    # 1. SIGKILL the Raft leader
    leader = next(a for a in agents if a.name == view["leader"])
    leader.kill()
    live = [a for a in agents if a is not leader]
    view = wait_until(lambda: (v := _agreed(live, rid)) and v["leader"] != leader.name and v, 20,
                 "a new leader everyone agrees on")
    out = tmp_path / "after-leader.bin"
    live[0].json("fetch", "hot.bin", "-o", str(out), "--force")
    assert out.read_bytes() == hot.read_bytes()

    # 2. SIGKILL the authority of the hot resource (if it is still alive)
    auth_name = _holder(view, rid)
    victim = next((a for a in live if a.name == auth_name), None)
    if victim is not None:
        victim.kill()
        live = [a for a in live if a is not victim]
        view = wait_until(lambda: (v := _agreed(live, rid)) and _holder(v, rid) != auth_name and v,
                     20, "a new authority for the hot resource")
    holders_alive = {a.name for a in live}
    assert _holder(view, rid) in holders_alive
    for a in live:
        a.json("fetch", "hot.bin", "--no-output")

    # 3. restart the dead ones, partition 2 of 5, heal, all agree again
    for a in agents:
        if a not in live:
            a.start()
    wait_until(lambda: _agreed(agents, rid), 40, "all five to agree again after restarts")
    minority = [3, 4]
    for i in minority:
        lan.partition(i + 1)
    majority = [a for i, a in enumerate(agents) if i not in minority]
    wait_until(lambda: _agreed(majority, rid), 20, "the majority to keep one view")
    for i in minority:
        lan.heal(i + 1)
    final = wait_until(lambda: _agreed(agents, rid), 40, "all five to agree after the heal")
    assert _holder(final, rid) in {a.name for a in agents}
