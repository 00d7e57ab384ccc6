"""Run real agent processes (separate data dirs, loopback) and drive them through the CLI."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PY = sys.executable
# Tests never advertise on the machine's real interfaces: mDNS runs on loopback only.
LOOPBACK_LAN = '[lan]\ninterfaces = ["lo"]\ninclude_loopback = true\n'
# ... and the dashboard on any free port: test agents never hold the default one a real agent
# uses (tests of the dashboard start from LOOPBACK_LAN and write their own [dashboard])
LOOPBACK_ONLY = LOOPBACK_LAN + '[dashboard]\nport = 0\n'
_PROCESS_MESH = f"t-{secrets.token_hex(6)}"


def current_mesh() -> str:
    """The mesh ID for agents started now: $SHOAL_MESH (tests/conftest.py sets a fresh one for
    every test; bench scripts one per run), else one random mesh for this process. Agents of
    other tests, another copy of the suite or a real agent on this machine are never seen."""
    return os.environ.get("SHOAL_MESH") or _PROCESS_MESH


@dataclass
class Agent:
    name: str
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    log_path: Path = field(init=False)
    extra_config: str = ""
    netns: str | None = None  # run inside this network namespace (control socket still works)
    host_addr: str = "127.0.0.1"
    mesh: str = field(default_factory=current_mesh)  # passed as `run --mesh`

    def __post_init__(self) -> None:
        self.log_path = self.data_dir.parent / f"{self.name}.log"

    def cli(self, *args: str, check: bool = True, timeout: float = 60,
            input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [PY, "-m", "agent", "--data-dir", str(self.data_dir), *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             input=input.decode() if input else None)
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({res.returncode}): {res.stderr}"
                                 f"\n--- agent log ---\n{self.log()}")
        return res

    def json(self, *args: str, **kw: Any) -> Any:
        return json.loads(self.cli("--json", *args, **kw).stdout)

    def config(self, text: str) -> None:
        """TOML for this agent, replacing the default test config. Outside a namespace keep
        mDNS on loopback (start from LOOPBACK_ONLY): tests never advertise on real networks."""
        self.extra_config = text

    def start(self, *extra: str, timeout: float = 15.0) -> Agent:
        self.launch(*extra)
        return self.wait_ready(timeout)

    def launch(self, *extra: str) -> None:
        """Start the agent process without waiting for it (see :meth:`wait_ready`)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.data_dir.parent / f"{self.name}.toml"
        cfg.write_text(self.extra_config or ("" if self.netns else LOOPBACK_ONLY))
        logf = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        listen = ["--listen", "127.0.0.1"] if self.netns is None else []
        self.proc = subprocess.Popen(
            [*prefix, PY, "-m", "agent", "--config", str(cfg), "--data-dir", str(self.data_dir),
             "--log-level", "debug", "run", "--port", str(self.port), *listen,
             "--name", self.name, "--mesh", self.mesh, *extra],
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_ready(self, timeout: float = 15.0) -> Agent:
        """Wait until the launched agent answers ``status``; learns its LAN port."""
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent {self.name} exited: {self.log()}")
            res = self.cli("--json", "status", check=False)
            if res.returncode == 0:
                self.port = json.loads(res.stdout)["lan_port"]
                return self
            time.sleep(0.05)
        raise AssertionError(f"agent {self.name} not ready in {timeout} s: {self.log()}")

    @property
    def address(self) -> str:
        return f"{self.host_addr}:{self.port}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait()
            return None
        finally:
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None


def wait_until(pred: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll *pred* until it returns something truthy and return that. A guard against
    hanging, not a timing assertion: the timeout is generous and only ends a stuck test."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def pair(a: Agent, b: Agent) -> str:
    """Scripted numeric-comparison pairing, reading the code off both 'screens'."""
    b.cli("pair", "--open")
    started = a.json("pair", b.address, "--no-wait")
    code = started["code"]
    pending_b = b.json("pair", "--pending")
    assert [p["code"] for p in pending_b] == [code], "both devices must show the same code"
    a.cli("pair", "--code", code, "--no-wait")
    done = b.json("pair", "--code", code, "--timeout", "20")
    assert done["complete"]
    return code


class _NoPeers:
    """Connections and trust for a usage service that shares with nobody."""

    def live_connections(self) -> list[object]:
        return []

    def is_trusted(self, device_id: bytes) -> bool:
        return False


def seed_access_log(data_dir: Path, names: Sequence[str], n: int, *,
                    requester: bytes = bytes(32), hit: bool = False,
                    source: str = "00" * 8) -> None:
    """*n* earlier requests cycling through *names* in an agent's own access log (written
    by the real log code, one a second, ending now), before the agent starts."""
    from agent.config import PredictConfig, UsageConfig
    from agent.usage.service import UsageService

    t = [time.time() - n]

    def clock() -> float:
        t[0] += 1.0
        return t[0]

    svc = UsageService(data_dir / "usage", UsageConfig(), PredictConfig(share_k=1),
                       connections=_NoPeers(), trust=_NoPeers(),  # type: ignore[arg-type]
                       clock=clock)
    for i in range(n):
        svc.record_access(requester, names[i % len(names)], 1000, hit=hit, source=source)
    svc.tick()
    svc.close()
