"""A transfer interrupted by SIGKILL at random points, 20 times, always ends byte-identical.

Either side is killed at a seeded random moment; the killed agent restarts on the same data
dir and the fetch is run again until it completes. The source is rate-limited by config so a
transfer lasts long enough to be interrupted.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import time

import pytest

from .agents import LOOPBACK_ONLY, PY, pair

ROUNDS = 20
LIMITED = LOOPBACK_ONLY + '[bandwidth]\nper_peer_limit = "400Mbit"\n'


@pytest.mark.slow
@pytest.mark.timeout(900)  # hang guard only: 20 kill/restart rounds are slow on a loaded box
def test_sigkill_at_random_points_always_ends_identical(agents, tmp_path):
    rng = random.Random(2026)
    src_agent = agents("src", start=False)
    src_agent.config(LIMITED)
    src_agent.start()
    dst = agents("dst")
    pair(src_agent, dst)
    data = tmp_path / "data.bin"
    data.write_bytes(rng.randbytes(12 * 1024 * 1024) + b"compressible line\n" * 400_000)
    want = hashlib.sha256(data.read_bytes()).hexdigest()
    src_agent.json("publish", str(data))
    interrupted = 0
    for rnd in range(ROUNDS):
        out = tmp_path / f"out{rnd}.bin"
        dst.cli("--json", "status")  # both up
        proc = subprocess.Popen(
            [PY, "-m", "agent", "--data-dir", str(dst.data_dir), "--json", "fetch",
             "data.bin", "-o", str(out), "--force"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.05, 0.6))
        victim = src_agent if rng.random() < 0.5 else dst
        victim.kill()
        time.sleep(rng.uniform(0.0, 0.3))
        victim.start()  # a killed source comes back; the running fetch picks it up again
        proc.communicate(timeout=90)
        interrupted += proc.returncode != 0 or victim is src_agent
        for _attempt in range(5):  # peers reconnect on their own; retry the fetch until done
            res = dst.cli("--json", "fetch", "data.bin", "-o", str(out), "--force",
                          check=False, timeout=120)
            if res.returncode == 0:
                break
            time.sleep(0.5)
        assert res.returncode == 0, res.stderr
        assert hashlib.sha256(out.read_bytes()).hexdigest() == want, f"round {rnd} differs"
        # start the next round from scratch on the fetching side
        dst.stop()
        for p in (dst.data_dir / "store").glob("*"):
            if p.is_dir():
                subprocess.run(["rm", "-rf", str(p)], check=True)
        dst.start()
    assert interrupted >= ROUNDS // 2, f"only {interrupted}/{ROUNDS} rounds were interrupted"
