"""Three real agent processes: two paired, one not. The access log records what each serves
and fetches; the aggregate reaches the paired agent only."""

from __future__ import annotations

from pathlib import Path

import pytest
from agents import LOOPBACK_ONLY, Agent, pair, wait_until

pytestmark = pytest.mark.timeout(120)

CONFIG = LOOPBACK_ONLY + """
[usage]
flush_interval = 0.1
[predict]
share_interval = 0.5
share_k = 2
"""


def received(agent: Agent) -> list[str]:
    text = agent.log_path.read_text(errors="replace")
    return [line for line in text.splitlines() if "usage aggregate received" in line]


@pytest.fixture
def three(tmp_path: Path):
    started = []
    for name in ("alpha", "bravo", "charlie"):
        a = Agent(name, tmp_path / name)
        a.config(CONFIG)
        started.append(a.start())
    yield started
    for a in started:
        a.stop(timeout=5)


def test_aggregates_reach_the_paired_agent_only(three, tmp_path: Path) -> None:
    a, b, c = three
    pub = tmp_path / "readme.txt"
    pub.write_text("hello mesh\n" * 1000)
    a.json("publish", str(pub), "--public")
    pair(a, b)
    b.json("fetch", "readme.txt", "--from", a.address, "--no-output")
    c.json("fetch", "readme.txt", "--from", a.address, "--no-output")  # unpaired, public
    # alpha saw two distinct requesters ask for the resource: its 1-gram passes k = 2
    wait_until(lambda: received(b), 60, "bravo receives alpha's aggregate")
    assert all("peer=alpha" in line for line in received(b))
    assert received(c) == []  # charlie is not paired: nothing is sent to it
    assert not any("peer=charlie" in line for line in received(a))
    # the same, as an operator sees it
    alpha_short = a.json("id")["hex"][:16]
    seen = b.json("usage")
    assert [p["peer"] for p in seen["peers"]] == [alpha_short] and seen["peers"][0]["paired"]
    assert c.json("usage")["peers"] == [] and c.json("usage")["counters"]["received"] == 0
    served = a.json("usage")
    assert served["log"]["segments"] >= 1
    assert 1.5 < served["hottest"][0]["temperature"] <= 2  # two requests, decaying
    text = a.cli("usage").stdout
    assert "sharing:    on, k = 2" in text
    assert text.splitlines()[3].split() == ["RESOURCE", "TEMPERATURE", "MESH", "BUDGET"]
    for agent in (a, b, c):
        segs = list((agent.data_dir / "usage" / "log").glob("seg-*.log"))
        assert segs, f"{agent.name} keeps an access log"


def test_the_log_survives_sigkill_and_warms_the_temperature_again(tmp_path: Path) -> None:
    a = Agent("solo", tmp_path / "solo")
    a.config(CONFIG)
    a.start()
    try:
        f = tmp_path / "notes.txt"
        f.write_text("notes\n" * 100)
        rid = a.json("publish", str(f))["resource_id"]
        for _ in range(3):
            a.json("fetch", "notes.txt", "--no-output")  # held: three local hits
        wait_until(lambda: a.json("usage")["log"]["bytes"] > 8 + 2 * 67, 30, "flushed")
        a.kill()  # no shutdown, no final flush
        a.start()
        hot = wait_until(lambda: a.json("usage")["hottest"], 30, "temperatures warmed")
        assert hot[0]["resource"] == rid and hot[0]["temperature"] > 2.9
        assert a.json("usage")["log"]["damaged"] == 0
    finally:
        a.stop(timeout=5)
