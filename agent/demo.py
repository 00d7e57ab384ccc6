"""`shoal demo`: a three-agent mesh on this machine, start to finish, in under a minute.

Why real processes: the demo shows what a user gets: separate data dirs, real sessions over
loopback TCP, mDNS on loopback, pairing by code, multi-source fetches. Everything it starts
lives in a temporary directory that is removed at the end, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.control import ControlError, call_simple

CONFIG = '[lan]\nport = 0\nlisten = "127.0.0.1"\ninterfaces = ["lo"]\ninclude_loopback = true\n'
NAMES = ("ant", "bee", "cod")


def _say(text: str) -> None:
    print(text, flush=True)


def _sample_file(path: Path, mib: int, seed: int = 7) -> None:
    """Half text-like, half random: what a mesh of devices typically carries."""
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(2000)]
    with open(path, "wb") as f:
        text_bytes = mib * 1024 * 1024 // 2
        written = 0
        while written < text_bytes:
            line = b" ".join(rng.choice(words) for _ in range(12)) + b"\n"
            f.write(line)
            written += len(line)
        f.write(os.urandom(mib * 1024 * 1024 - written))


class DemoAgent:
    def __init__(self, root: Path, name: str, mesh: str) -> None:
        self.name = name
        self.mesh = mesh
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.config = root / f"{name}.toml"
        self.config.write_text(CONFIG)
        self.sock = self.dir / "control.sock"
        self.log = root / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "--config", str(self.config), "--data-dir",
                 str(self.dir), "run", "--name", self.name, "--mesh", self.mesh],
                stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
            )

    async def ready(self, timeout: float = 15.0) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(ControlError, OSError):
                status = await call_simple(self.sock, "status")
                self.port = status["lan_port"]
                return time.monotonic() - t0
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start within {timeout} s")

    async def cmd(self, command: str, /, **args: Any) -> Any:
        return await call_simple(self.sock, command, args)

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


async def _pair(a: DemoAgent, b: DemoAgent) -> str:
    await b.cmd("pair_open", seconds=30)
    started = await a.cmd("pair_start", address=f"127.0.0.1:{b.port}")
    pending = await b.cmd("pair_pending")
    assert [p["code"] for p in pending] == [started["code"]], "codes differ: not pairing"
    await a.cmd("pair_confirm", code=started["code"])
    await b.cmd("pair_confirm", code=started["code"])
    done = await b.cmd("pair_wait", pairing_id=pending[0]["pairing_id"], timeout=10)
    if not done["complete"]:
        raise RuntimeError(f"pairing {a.name}-{b.name} failed: {done['cancelled']}")
    code: str = started["code"]
    return code


async def _wait_peers(agent: DemoAgent, n: int, timeout: float = 10.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        peers = await agent.cmd("peers")
        if sum(1 for p in peers if p["reachable"]) >= n:
            return time.monotonic() - t0
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{agent.name} did not see {n} peers within {timeout} s")


def _rate(nbytes: int, seconds: float) -> str:
    return f"{nbytes / max(seconds, 1e-9) / 1e6:,.0f} MB/s"


async def run_demo(size_mib: int = 32, keep: bool = False) -> int:
    root = Path(tempfile.mkdtemp(prefix="shoal-demo-"))
    mesh = f"demo-{secrets.token_hex(6)}"  # a demo never meets other agents on this machine
    agents = [DemoAgent(root, n, mesh) for n in NAMES]
    try:
        _say(f"Starting three agents ({', '.join(NAMES)}) in {root} ...")
        t0 = time.monotonic()
        for a in agents:
            a.start()
        for a in agents:
            await a.ready()
        _say(f"  all ready in {time.monotonic() - t0:.2f} s")
        seen = max([await _wait_peers(a, 2) for a in agents])
        _say(f"  every agent sees the other two over mDNS (loopback) within {seen:.2f} s")
        ant, bee, cod = agents
        for x, y in ((ant, bee), (ant, cod), (bee, cod)):
            code = await _pair(x, y)
            _say(f"  paired {x.name} <-> {y.name} (both showed {code[:3]} {code[3:]})")
        sample = root / "sample.bin"
        _sample_file(sample, size_mib)
        digest = hashlib.sha256(sample.read_bytes()).hexdigest()
        t = time.monotonic()
        pub = await ant.cmd("publish", path=str(sample), name="field-survey.bin")
        _say(f"{ant.name} published {pub['name']}: {size_mib} MiB in {pub['chunks']} chunks "
             f"({_rate(pub['size'], time.monotonic() - t)} chunk+hash+store)")
        r1 = await bee.cmd("fetch", resource="field-survey.bin")
        _say(f"{bee.name} fetched it from {', '.join(r1['sources'])} in {r1['seconds']:.2f} s "
             f"({_rate(r1['size'], r1['seconds'])}, encrypted, every chunk hash-checked)")
        r2 = await cod.cmd("fetch", resource="field-survey.bin")
        shares = ", ".join(f"{n} {v['chunks']} chunks" for n, v in r2["sources"].items())
        _say(f"{cod.name} fetched it from several holders at once ({shares}) in "
             f"{r2['seconds']:.2f} s ({_rate(r2['size'], r2['seconds'])})")
        ok = all([
            (await x.cmd("resources"))["local"][0]["manifest"] == pub["manifest"]
            for x in (bee, cod)
        ])
        _say(f"Manifests identical on all three agents: {'yes' if ok else 'NO'}; "
             f"sha256 {digest[:16]}...")
        return 0 if ok else 1
    finally:
        for a in agents:
            a.stop()
        if keep:
            _say(f"(kept {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)
        _say("Stopped the agents and cleaned up.")
