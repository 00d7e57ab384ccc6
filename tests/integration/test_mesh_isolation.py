"""Two meshes of real agents on one loopback: each auto-dials only its own mesh.

This is what keeps test runs hermetic (every test's agents are in a fresh mesh, see
tests/conftest.py) and two meshes on one LAN apart: the other mesh's mDNS records do arrive
(checked in the agents' debug logs) but never lead to a dial, and an explicit pair/connect
across meshes is refused with one line naming both meshes.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .agents import Agent, wait_until


@pytest.fixture
def meshes(tmp_path: Path) -> Iterator[Any]:
    started: list[Agent] = []

    def make(mesh: str, *names: str) -> list[Agent]:
        group = []
        for name in names:
            a = Agent(name, tmp_path / name, mesh=mesh)
            started.append(a)
            group.append(a.start())
        return group

    yield make
    for a in started:
        a.stop(timeout=5)


def _connected(a: Agent) -> set[str]:
    return {p["name"] for p in a.json("peers") if p["reachable"]}


def test_two_meshes_on_one_machine_only_dial_their_own(meshes: Any) -> None:
    red, blue = f"red-{secrets.token_hex(4)}", f"blue-{secrets.token_hex(4)}"
    r1, r2 = meshes(red, "r1", "r2")
    b1, b2 = meshes(blue, "b1", "b2")
    assert r1.json("status")["mesh"] == red and b1.json("status")["mesh"] == blue
    # within a mesh, mDNS discovery dials as usual
    wait_until(lambda: _connected(r1) == {"r2"}, 30, "r1 connected to r2")
    wait_until(lambda: _connected(b1) == {"b2"}, 30, "b1 connected to b2")
    # the other mesh's advertisements reached every agent and were dropped before dialling
    for agent, other in ((r1, blue), (r2, blue), (b1, red), (b2, red)):
        wait_until(lambda a=agent, m=other: f"mesh {m!r}" in a.log_path.read_text(), 30,
                   f"{agent.name} ignores mesh {other}")
    for agent, own in ((r1, {"r2"}), (r2, {"r1"}), (b1, {"b2"}), (b2, {"b1"})):
        assert {p["name"] for p in agent.json("peers")} == own
        assert agent.json("status")["connected"] == 1

    # asked explicitly to pair across meshes: refused, one line naming both meshes
    b1.cli("pair", "--open")
    res = r1.cli("pair", b1.address, "--no-wait", check=False)
    assert res.returncode != 0
    line = res.stderr.strip()
    assert len(line.splitlines()) == 1, line
    assert repr(red) in line and repr(blue) in line, line
    wait_until(lambda: "session refused" in b1.log_path.read_text(), 30, "b1 refuses r1")
    assert b1.json("pair", "--pending") == []
    assert _connected(r1) == {"r2"} and _connected(b1) == {"b2"}
