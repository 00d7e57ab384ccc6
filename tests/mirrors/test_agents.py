"""Three real agents on loopback: alpha publishes, bravo reads them in a sequence it has
read before (its access log holds the earlier rounds), charlie is a paired bystander.

* bravo's agent prefetches the next resource of the sequence onto bravo, so bravo's next
  fetch is served locally (the access log records the hit, ``shoal prefetch`` counts the
  prefetched copy as used);
* the large resource does not fit bravo's prefetch budget; it is predicted, hot and held
  by one origin only, so the manager creates a mirror on charlie, and bravo's fetch of it
  tries charlie first and takes bytes from it (``shoal mirrors`` on both sides).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from agents import LOOPBACK_ONLY, Agent, pair, seed_access_log, wait_until

pytestmark = pytest.mark.timeout(240)

CONFIG = LOOPBACK_ONLY + """
[usage]
flush_interval = 0.1
[predict]
share_k = 1
share_interval = 0.5
model_interval = 0.5
train = false
[prefetch]
interval = 0.5
device_budget = "1MiB"
reserve = 0
mirror_temperature = 1.0
"""


def test_prefetch_onto_the_reader_and_a_mirror_on_charlie(tmp_path: Path) -> None:
    a = Agent("alpha", tmp_path / "alpha")
    b = Agent("bravo", tmp_path / "bravo")
    c = Agent("charlie", tmp_path / "charlie")
    for x in (a, b, c):
        x.config(CONFIG)
    names = ["one", "two", "three", "big", "four"]
    files = {}
    for n in names:
        files[n] = tmp_path / f"{n}.bin"
        files[n].write_bytes(os.urandom(3 * 1024 * 1024 if n == "big" else 64 * 1024))
    try:
        a.start()
        ids = {n: a.json("publish", str(files[n]), "--name", n)["resource_id"] for n in names}
        seed_access_log(b.data_dir, [ids[n] for n in names], 8 * len(names))  # 8 rounds
        b.start()
        c.start()
        pair(a, b)
        pair(a, c)
        pair(b, c)
        wait_until(lambda: len(b.json("peers")) >= 2 and all(
            p["connected"] for p in b.json("peers")), 60, "bravo connected to both")

        # the next round: "one" by demand, then "two" was prefetched meanwhile
        b.json("fetch", "one", "--no-output")
        wait_until(lambda: b.json("prefetch")["stats"]["prefetched"] >= 1, 90,
                   "a prefetch onto bravo")
        wait_until(lambda: any(r["name"] == "two"
                               for r in b.json("resources", "--local")["local"]), 60,
                   "'two' held on bravo")
        got = b.json("fetch", "two", "--no-output")
        assert got.get("already_held") is True  # served locally, no transfer
        stats = wait_until(lambda: (s := b.json("prefetch")["stats"])["used"] >= 1 and s, 60,
                           "the prefetched copy counted as used (access log: local hit)")
        assert stats["local_hits"] >= 1 and stats["wasted_bytes"] == 0

        # "big" cannot be prefetched (1 MiB budget): charlie mirrors it for bravo
        def mirrored() -> object:
            rows = b.json("mirrors")["mirrors"]
            return [m for m in rows if m["resource"] == ids["big"] and m["role"] == "using"]

        rows = wait_until(mirrored, 90, "a mirror of 'big' for bravo")
        assert rows[0]["name"] == "charlie"
        wait_until(lambda: any(m["resource"] == ids["big"] and m["role"] == "hosting"
                               for m in c.json("mirrors")["mirrors"]), 30,
                   "charlie hosts it")
        wait_until(lambda: any(r["resource_id"] == ids["big"]
                               for r in c.json("resources", "--local")["local"]), 60,
                   "charlie holds 'big'")
        table = b.cli("mirrors").stdout.splitlines()
        assert table[0].split()[:3] == ["RESOURCE", "ROLE", "MIRROR"]
        assert any(line.startswith(ids["big"]) and "charlie" in line for line in table)
        got = b.json("fetch", "big", "--no-output")
        assert got["why"].startswith("mirror charlie first")
        assert got["sources"]["charlie"]["bytes"] > 0
        # held here now: bravo no longer needs the mirror, and charlie drops its copy
        wait_until(lambda: not mirrored(), 30, "bravo drops the mirror it no longer needs")
        wait_until(lambda: not any(r["resource_id"] == ids["big"]
                                   for r in c.json("resources", "--local")["local"]), 30,
                   "charlie removes the mirror copy")
        assert "NEXT" in b.cli("prefetch").stdout
    finally:
        for x in (a, b, c):
            x.stop()
