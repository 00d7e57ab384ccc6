"""Helpers shared by bench/transfer.py, bench/discovery.py and bench/footprint.py.

Also a small stand-alone helper (run in a network namespace by the benchmarks) for the raw TCP
reference of the bulk-transfer benchmark, plain asyncio with no crypto:

    python bench/_common.py raw-serve --dir DIR [--host H] [--port P] [--block KIB]
        prints {"port": P, "pid": PID} then serves: a client sends a file name (one line)
        and gets that file's bytes, read in --block KiB blocks, then EOF.
    python bench/_common.py raw-fetch --host H --port P --name N --out PATH
        connects, asks for N, writes what arrives to PATH; prints
        {"seconds", "bytes", "cpu_s"} (connect to EOF, and this process's CPU over that span).

Nothing here asserts on time; the benchmarks exit non-zero only when they could not measure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# One mesh ID per benchmark run, inherited by every agent it starts (``run --mesh`` and
# $SHOAL_MESH): a run never discovers or dials agents of another run, of a test suite or a
# real installation on this machine. Set SHOAL_MESH yourself to pin it.
os.environ.setdefault("SHOAL_MESH", f"bench-{secrets.token_hex(6)}")

MIB = 1024 * 1024
GIB = 1024 * MIB
MB = 1e6
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- reporting


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ""
    with contextlib.suppress(OSError):
        load = Path("/proc/loadavg").read_text().split(" ")[0]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_1min_at_start": load,
        "agent_code": code_fingerprint(),
    }


def code_fingerprint() -> dict[str, Any]:
    """Which agent code was measured: a hash of agent/ and radio/ sources and the newest
    mtime. Other engineers edit this tree while benchmarks run; a run compares it at start and
    end and warns when it changed underneath."""
    import hashlib

    h = hashlib.sha256()
    newest = 0.0
    for sub in ("agent", "radio"):
        for path in sorted((ROOT / sub).rglob("*.py")):
            with contextlib.suppress(OSError):
                h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
                newest = max(newest, path.stat().st_mtime)
    return {
        "sha256": h.hexdigest()[:16],
        "newest_mtime": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(newest)),
    }


def check_code_unchanged(before: dict[str, Any]) -> bool:
    after = code_fingerprint()
    if after["sha256"] != before["sha256"]:
        print(
            f"WARNING: agent code changed during this run ({before['sha256']} -> "
            f"{after['sha256']}, newest file {after['newest_mtime']}); re-run for clean figures"
        )
        return False
    return True


def stats(values: Sequence[float]) -> dict[str, float | int | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100)."""
    vals = sorted(values)
    if not vals:
        return None
    k = max(0, min(len(vals) - 1, round(p / 100 * (len(vals) - 1))))
    return vals[k]


def fmt_stat(s: dict[str, Any], digits: int = 1, scale: float = 1.0) -> str:
    """'median (min-max)' or '-'."""
    if not s or s.get("median") is None:
        return "-"
    m, lo, hi = (s[k] * scale for k in ("median", "min", "max"))
    return f"{m:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def print_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    rows = [list(map(str, r)) for r in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def write_json(path: Path | None, obj: Any) -> None:
    if path is not None:
        path.write_text(json.dumps(obj, indent=2, default=str) + "\n")
        print(f"JSON written to {path}")


# --------------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"no VmRSS for pid {pid}")


def drop_written(paths: Iterable[Path]) -> None:
    """Delete scratch output and flush dirty pages so the next measurement starts clean."""
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
    os.sync()


# --------------------------------------------------------------------------- test data

_WORDS = [
    "the",
    "a",
    "shoal",
    "mesh",
    "chunk",
    "node",
    "peer",
    "radio",
    "device",
    "file",
    "share",
    "local",
    "cache",
    "data",
    "sync",
    "version",
    "manifest",
    "resource",
    "public",
    "hash",
    "store",
    "edge",
    "link",
    "packet",
    "route",
    "river",
    "stone",
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
]
_LEVELS = ["INFO", "INFO", "INFO", "DEBUG", "DEBUG", "WARNING"]
_MODS = ["shoal.node", "shoal.peer", "shoal.transfer", "shoal.store", "shoal.lan"]


def text_blocks(n_mib: int, seed: int) -> Iterator[bytes]:
    """Log-like lines (100 message templates, rising timestamps, small counters): lz4 block
    compression of 256 KiB chunks gives a ratio of ~0.26, like real agent logs. Never repeats
    a block, so content-defined chunking finds no duplicate chunks."""
    rng = random.Random(seed)
    msgs = []
    for _ in range(100):
        level, mod = rng.choice(_LEVELS), rng.choice(_MODS)
        msgs.append(f"{level} {mod}: {' '.join(rng.choices(_WORDS, k=rng.randint(4, 12)))}")
    t = seed * 10_000_000
    carry = b""
    for _ in range(n_mib):
        out = [carry]
        n = len(carry)
        while n < MIB:
            t += rng.randint(1, 40)
            s = (
                f"2024-05-{1 + t // 86_400_000 % 28:02d} {t // 3_600_000 % 24:02d}:"
                f"{t // 60_000 % 60:02d}:{t // 1000 % 60:02d}.{t % 1000:03d} "
                f"{rng.choice(msgs)} n={rng.randint(0, 9)}\n"
            ).encode()
            out.append(s)
            n += len(s)
        block = b"".join(out)
        carry = block[MIB:]
        yield block[:MIB]


def random_blocks(n_mib: int, seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    for _ in range(n_mib):
        yield rng.randbytes(MIB)


def generate(path: Path, size_mib: int, kind: str, seed: int = 1) -> Path:
    """Write ``size_mib`` MiB of ``kind`` data: "text", "random" or "mixed" (first half text,
    second half random). Written in 1 MiB blocks (bounded memory)."""
    if kind == "text":
        blocks: Iterable[bytes] = text_blocks(size_mib, seed)
    elif kind == "random":
        blocks = random_blocks(size_mib, seed)
    elif kind == "mixed":
        half = size_mib // 2
        blocks = _chain(text_blocks(half, seed), random_blocks(size_mib - half, seed + 1))
    else:
        raise ValueError(f"unknown data kind {kind!r}")
    with open(path, "wb") as f:
        for b in blocks:
            f.write(b)
    return path


def _chain(*its: Iterable[bytes]) -> Iterator[bytes]:
    for it in its:
        yield from it


def lz4_ratio(path: Path, sample_mib: int = 8) -> float:
    """lz4 block ratio over 256 KiB pieces of the first ``sample_mib`` MiB (as the wire does)."""
    import lz4.block

    raw = packed = 0
    with open(path, "rb") as f:
        while raw < sample_mib * MIB:
            piece = f.read(256 * 1024)
            if not piece:
                break
            raw += len(piece)
            packed += min(len(piece), len(lz4.block.compress(piece, store_size=False)))
    return packed / raw if raw else 1.0


# --------------------------------------------------------------------------- agents


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def agent_classes() -> tuple[Any, str]:
    """(BenchAgent, LOOPBACK_ONLY): the integration-test Agent with fast, CLI-free polling."""
    from agent.control import call_simple
    from tests.integration.agents import LOOPBACK_ONLY, PY, Agent

    class BenchAgent(Agent):
        """tests/integration/agents.py's Agent, plus: launch without waiting, readiness by
        polling the control socket in-process (no CLI spawn per poll), control calls through
        ``agent.control.call_simple``, and /proc readings."""

        launched_at: float = 0.0

        @property
        def socket_path(self) -> Path:
            return self.data_dir / "control.sock"

        def launch(self, *extra: str, port: int | None = None) -> None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            cfg = self.data_dir.parent / f"{self.name}.toml"
            cfg.write_text(self.extra_config or ("" if self.netns else LOOPBACK_ONLY))
            logf = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
            prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
            listen = ["--listen", "127.0.0.1"] if self.netns is None else []
            env = {k: v for k, v in os.environ.items() if k != "SHOAL_CONTROL_SOCKET"}
            if port is not None:
                self.port = port
            self.launched_at = time.perf_counter()
            level = os.environ.get("SHOAL_BENCH_LOG", "info")  # agent log level
            self.proc = subprocess.Popen(
                [
                    *prefix,
                    PY,
                    "-m",
                    "agent.control.cli",
                    "--config",
                    str(cfg),
                    "--data-dir",
                    str(self.data_dir),
                    "--log-level",
                    level,
                    "run",
                    "--port",
                    str(self.port),
                    *listen,
                    "--name",
                    self.name,
                    "--mesh",
                    self.mesh,
                    *extra,
                ],
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=ROOT,
                env=env,
            )
            logf.close()

        def try_call(
            self, cmd: str, args: dict[str, Any] | None = None, timeout: float = 5.0
        ) -> Any:
            async def go() -> Any:
                async with asyncio.timeout(timeout):
                    return await call_simple(self.socket_path, cmd, args)

            return asyncio.run(go())

        def call(self, cmd: str, args: dict[str, Any] | None = None, timeout: float = 600.0) -> Any:
            return self.try_call(cmd, args, timeout)

        def wait_ready(self, timeout: float = 20.0, poll: float = 0.005) -> float:
            """Poll ``status`` until it answers; returns seconds since launch."""
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"agent {self.name} exited: {self.log()}")
                if self.socket_path.exists():
                    try:
                        st = self.try_call("status", timeout=2.0)
                    except Exception:
                        st = None
                    if st is not None:
                        ready = time.perf_counter() - self.launched_at
                        self.port = int(st["lan_port"] or 0)
                        return ready
                time.sleep(poll)
            raise RuntimeError(f"agent {self.name} not ready in {timeout} s: {self.log()}")

        def start(self, *extra: str, timeout: float = 20.0) -> Any:  # type: ignore[override]
            self.launch(*extra)
            self.wait_ready(timeout)
            return self

        @property
        def pid(self) -> int:
            assert self.proc is not None
            return self.proc.pid

        def cpu(self) -> float:
            return cpu_seconds(self.pid)

        def rss(self) -> int:
            return rss_bytes(self.pid)

    return BenchAgent, LOOPBACK_ONLY


def publish(agent: Any, path: Path, name: str, public: bool = True) -> dict[str, Any]:
    return agent.call("publish", {"path": str(path.resolve()), "name": name, "public": public})


# --------------------------------------------------------------------------- references


class RawServer:
    """The raw TCP reference sender (this file's ``raw-serve``), locally or in a namespace."""

    def __init__(
        self, directory: Path, host: str, host_ns: Any = None, block_kib: int = 256, port: int = 0
    ) -> None:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "raw-serve",
            "--dir",
            str(directory),
            "--host",
            host,
            "--port",
            str(port),
            "--block",
            str(block_kib),
        ]
        kw: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.DEVNULL, "text": True}
        self.host = host
        self.host_ns = host_ns
        if host_ns is not None:
            self.proc = host_ns.popen(cmd, **kw)
        else:
            self.proc = subprocess.Popen(cmd, start_new_session=True, **kw)
        assert self.proc.stdout is not None
        info = json.loads(self.proc.stdout.readline())
        self.port = int(info["port"])
        self.pid = int(info["pid"])

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def close(self) -> None:
        stop_group(self.proc)


def stop_group(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM a process group we started, SIGKILL it after 5 s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def raw_fetch(server: RawServer, name: str, out: Path, client_ns: Any = None) -> dict[str, Any]:
    """Run ``raw-fetch`` (in ``client_ns`` if given); returns its JSON plus the sender's CPU."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "raw-fetch",
        "--host",
        server.host,
        "--port",
        str(server.port),
        "--name",
        name,
        "--out",
        str(out),
    ]
    cpu0 = server.cpu()
    if client_ns is not None:
        res = client_ns.run(cmd, timeout=1800)
    else:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=True)
    out_info = json.loads(res.stdout.strip().splitlines()[-1])
    out_info["sender_cpu_s"] = server.cpu() - cpu0
    return out_info


class RsyncDaemon:
    """``rsync --daemon --no-detach`` serving one directory as module ``bench``."""

    def __init__(self, directory: Path, host: str, host_ns: Any = None) -> None:
        if shutil.which("rsync") is None:
            raise RuntimeError("rsync is not installed (apt-get install -y rsync)")
        self.tmp = Path(tempfile.mkdtemp(prefix="shoal-rsyncd-"))
        self.host = host
        self.port = free_port(host) if host_ns is None else 8730
        conf = self.tmp / "rsyncd.conf"
        conf.write_text(
            f"pid file = {self.tmp}/rsyncd.pid\nuse chroot = no\nuid = root\ngid = root\n"
            f"log file = {self.tmp}/rsyncd.log\n"
            f"[bench]\n  path = {directory}\n  read only = yes\n"
        )
        cmd = [
            "rsync",
            "--daemon",
            "--no-detach",
            f"--config={conf}",
            f"--port={self.port}",
            f"--address={host}",
        ]
        if host_ns is not None:
            self.proc = host_ns.popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            probe: Any = host_ns
        else:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
            probe = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            argv = ["rsync", f"rsync://{host}:{self.port}/"]
            r = (
                probe.run(argv, check=False, timeout=10)
                if probe is not None
                else subprocess.run(argv, capture_output=True, text=True, timeout=10)
            )
            if r.returncode == 0 and "bench" in r.stdout:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.close()
        raise RuntimeError(f"rsync daemon did not start on {host}:{self.port}")

    def fetch(self, name: str, dest_dir: Path, client_ns: Any = None) -> dict[str, Any]:
        """Pull one file with --whole-file; wall time of the client (includes its start-up)."""
        dest_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            "rsync",
            "--whole-file",
            f"rsync://{self.host}:{self.port}/bench/{name}",
            f"{dest_dir}/",
        ]
        ru0 = os.times()
        t0 = time.perf_counter()
        if client_ns is not None:
            client_ns.run(argv, timeout=1800)
        else:
            subprocess.run(argv, check=True, capture_output=True, timeout=1800)
        seconds = time.perf_counter() - t0
        ru1 = os.times()
        got = (dest_dir / name).stat().st_size
        return {
            "seconds": seconds,
            "bytes": got,
            "cpu_s": (ru1.children_user - ru0.children_user)
            + (ru1.children_system - ru0.children_system),
        }

    def close(self) -> None:
        stop_group(self.proc)
        shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------- helper mode


async def _serve(directory: Path, host: str, port: int, block: int) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            name = (await reader.readline()).decode().strip()
            path = (directory / name).resolve()
            if path.parent != directory.resolve():
                return
            with open(path, "rb", buffering=0) as f:
                while True:
                    data = f.read(block)
                    if not data:
                        break
                    writer.write(data)
                    await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handler, host, port)
    print(json.dumps({"port": server.sockets[0].getsockname()[1], "pid": os.getpid()}), flush=True)
    async with server:
        await server.serve_forever()


async def _fetch(host: str, port: int, name: str, out: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    c0 = os.times()
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    writer.write(name.encode() + b"\n")
    await writer.drain()
    total = 0
    with open(out, "wb", buffering=0) as f:
        while True:
            data = await reader.read(1 << 20)
            if not data:
                break
            f.write(data)
            total += len(data)
    seconds = time.perf_counter() - t0
    c1 = os.times()
    writer.close()
    return {
        "seconds": seconds,
        "bytes": total,
        "cpu_s": (c1.user - c0.user) + (c1.system - c0.system),
    }


def _helper(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description="raw TCP reference helper (see module doc)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("raw-serve")
    s.add_argument("--dir", type=Path, required=True)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--block", type=int, default=256, help="read/write block, KiB")
    f = sub.add_parser("raw-fetch")
    f.add_argument("--host", required=True)
    f.add_argument("--port", type=int, required=True)
    f.add_argument("--name", required=True)
    f.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    if a.cmd == "raw-serve":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(a.dir, a.host, a.port, a.block * 1024))
        return 0
    print(json.dumps(asyncio.run(_fetch(a.host, a.port, a.name, a.out))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_helper(sys.argv[1:]))
