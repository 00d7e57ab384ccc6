"""Real agents: delegated signers, and `fetch NAME` of a held resource that has a newer
version at a paired holder (it used to return the stale local copy with a blank source)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .agents import pair, wait_until


def _connected(x, name: str) -> bool:
    return any(p["name"] == name and p["reachable"] for p in x.json("peers"))


def test_delegates_version_is_accepted_by_an_agent_that_only_knows_the_publisher(
        agents, tmp_path: Path) -> None:
    a, b, c = agents("alpha"), agents("beta"), agents("gamma")
    pair(a, b)
    pair(a, c)  # c never pairs with b: it knows only the publisher
    v1 = tmp_path / "release.bin"
    v1.write_bytes(os.urandom(300_000))
    rid = a.json("publish", str(v1), "--public")["resource_id"]
    b.json("fetch", rid, "--from", a.address, "--no-output")
    # b may not make a version before a delegates
    res = b.cli("publish", str(v1), "--update", rid, check=False)
    assert res.returncode == 1 and "not delegated" in res.stderr
    wait_until(lambda: _connected(a, "beta"), 20, "a session a -> b")
    d = a.json("delegate", rid, "beta", "--days", "7")
    assert d["delivered"], d
    v2 = tmp_path / "release-2.bin"
    v2.write_bytes(os.urandom(300_000))
    up = b.json("publish", str(v2), "--update", rid)
    assert (up["version"], up["resource_id"], up["publisher"]) == (2, rid, a.json("id")["hex"])
    a.stop()
    out = tmp_path / "got.bin"
    r = c.json("fetch", rid, "--from", b.address, "-o", str(out))
    assert r["version"] == 2 and r["rejected"] == {}
    assert out.read_bytes() == v2.read_bytes()
    listed = c.json("resources")["remote"]
    assert any(e["resource_id"] == rid and e["version"] == 2 and e["delegated"]
               for e in listed)


def test_delegation_printed_for_transfer_is_accepted_by_the_delegate(
        agents, tmp_path: Path) -> None:
    a, b = agents("alpha"), agents("beta")
    pair(a, b)
    f = tmp_path / "f.bin"
    f.write_bytes(os.urandom(50_000))
    rid = a.json("publish", str(f))["resource_id"]
    b.json("fetch", rid, "--from", a.address, "--no-output")
    b.stop()  # not connected: the delegation is printed, not delivered
    d = a.json("delegate", "f.bin", "beta")
    assert not d["delivered"]
    b.start()
    text = tmp_path / "dlg.json"
    text.write_text(json.dumps(d["delegation"]))
    kept = b.json("delegate", "--accept", str(text))
    assert kept["resource_id"] == rid
    f.write_bytes(os.urandom(50_000))
    assert b.json("publish", str(f), "--update", "f.bin")["version"] == 2
    # a forged one (changed after signing) is refused with one line
    bad = d["delegation"] | {"delegation": d["delegation"]["delegation"].replace(
        '"serial":', '"serial":1')}
    text.write_text(json.dumps(bad))
    res = b.cli("delegate", "--accept", str(text), check=False)
    assert res.returncode == 1 and res.stderr.count("\n") == 1


def test_fetch_name_gets_the_newer_version_a_paired_holder_has(agents, tmp_path: Path) -> None:
    """Regression: b held v1 and a paired a offered v2; `fetch NAME` wrote v1, source ''."""
    a, b = agents("alpha"), agents("beta")
    pair(a, b)
    f = tmp_path / "notes.bin"
    f.write_bytes(os.urandom(400_000))
    a.json("publish", str(f))
    b.json("fetch", "notes.bin", "--from", a.address, "--no-output")
    f.write_bytes(f.read_bytes()[:200_000] + os.urandom(50_000))  # v2 shares a prefix
    assert a.json("publish", str(f))["version"] == 2
    wait_until(lambda: _connected(b, "alpha"), 20, "a session b -> a")
    out = tmp_path / "out.bin"
    r = b.json("fetch", "notes.bin", "-o", str(out))
    assert r["version"] == 2 and not r.get("already_held")
    assert out.read_bytes() == f.read_bytes()
    assert "v2" in r["why"] and r["bytes_fetched"] < 400_000  # only the missing chunks
    again = b.json("fetch", "notes.bin", "--no-output")
    assert again["already_held"] and again["why"].startswith("local v2, the newest ")
    a.stop()
    wait_until(lambda: not _connected(b, "alpha"), 30, "b to see a gone")
    alone = b.json("fetch", "notes.bin", "-o", str(tmp_path / "alone.bin"))
    assert alone["version"] == 2
    # known newest moments ago ([transfer] fresh_for): served without asking again
    assert alone["why"].startswith("local v2, the newest ")
