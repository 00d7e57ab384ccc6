"""The follow commands end to end: two agent processes, driven through the `shoal` CLI."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .agents import pair


def wait_for(pred, what: str, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached: {what}")
        time.sleep(0.1)


def test_follow_versions_fetch_version_unpublish_through_the_cli(agents, tmp_path: Path) -> None:
    a, b = agents("alpha"), agents("bravo")
    pair(a, b)
    src = tmp_path / "notes.bin"
    v1 = os.urandom(300_000)
    src.write_bytes(v1)
    pub = a.json("publish", str(src))
    rid = pub["resource_id"]
    kept = tmp_path / "kept" / "notes.bin"
    kept.parent.mkdir()
    r = b.json("follow", "notes.bin", "--to", str(kept), timeout=60)
    assert r["version"] == 1 and kept.read_bytes() == v1
    v2 = v1[:150_000] + b"!" + v1[150_000:]
    src.write_bytes(v2)
    a.json("publish", str(src), "--update", rid)
    wait_for(lambda: kept.exists() and kept.read_bytes() == v2, "the kept file follows v2")
    listing = b.cli("follow").stdout
    assert listing.splitlines()[0].split()[:2] == ["NAME", "ID"] and "notes.bin" in listing

    table = b.cli("versions", "notes.bin").stdout
    assert "VERSION" in table and "v2" in table and "v1" in table
    rows = {v["version"]: v for v in b.json("versions", rid)["versions"]}
    assert rows[1]["holders"] == ["alpha"] and rows[2]["here"]
    old = tmp_path / "old.bin"
    b.cli("fetch", rid[:12], "--version", "1", "-o", str(old))
    assert old.read_bytes() == v1
    assert b.json("status")["resources"] == 1

    res = b.cli("fetch", rid[:12], "--version", "9", check=False)
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert "shoal versions" in res.stderr
    err = json.loads(b.cli("--json", "unfollow", "nothing-here", check=False).stdout)
    assert err["error"]["kind"] == "not_found"

    gone = a.json("unpublish", rid)
    assert gone["told"] == 1
    wait_for(lambda: b.json("follow") == [], "bravo stopped following")
    wait_for(lambda: b.json("status")["resources"] == 0, "bravo dropped its copy")
    assert kept.read_bytes() == v2  # the user's file stays
    res = a.cli("unpublish", rid, check=False)
    assert res.returncode == 1 and "shoal resources" in res.stderr
