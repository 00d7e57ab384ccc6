"""Several Linux "hosts" on one Ethernet segment, built from network namespaces.

Layout (TESTBED.md §1): a bridge namespace ``shl-br-XXXX`` holding ``br0`` (multicast snooping
off, so mDNS floods like on a dumb switch) and N host namespaces ``shl-hN-XXXX``, each with
``lo`` up and one ``eth0`` veth whose peer ``pN`` is a port of ``br0``. Hosts get
``10.77.X.N/24`` with X random per run; the addresses exist only inside our namespaces, so two
runs can never disturb each other or the machine's real network.

Faults are applied inside a host's namespace: :meth:`Lan.shape` (tbf on egress),
:meth:`Lan.partition`/:meth:`Lan.heal` (iptables DROP on eth0), :meth:`Lan.loss` (random DROP),
:meth:`Lan.unplug`/:meth:`Lan.plug` (the interface disappears and comes back).

Cleanup is the point of this module: every command runs in its own process group; on close we
kill those groups, then every pid still inside our namespaces (only our children can be there),
then delete the namespaces, also after a failed set-up. Each run records its pid in
``/run/shl-netns/XXXX.json`` before creating anything; a later run deletes the namespaces
listed in files whose owner process is dead (and only those), so a SIGKILLed test run does not
leak namespaces. Namespaces without such a file are never touched.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = [
    "HarnessError",
    "Host",
    "JsonProc",
    "Lan",
    "LanPool",
    "netns_available",
    "spawn_jsonl",
    "sweep_stale",
    "tool_missing",
]

PREFIX = "shl-"
OWNER_DIR = Path("/run/shl-netns")
IFNAME = "eth0"
_CMD_TIMEOUT = 20.0
_PROBE_RE = re.compile(rf"{PREFIX}probe-([0-9]+)-[0-9a-f]{{4}}")


class HarnessError(RuntimeError):
    """A set-up or fault-injection command failed; the message has the command and stderr."""


def _run_root(
    args: Sequence[str], *, check: bool = True, timeout: float = _CMD_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run an ``ip``/``tc``/``iptables`` command (in the namespace the args select)."""
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise HarnessError(f"{' '.join(args)} -> {proc.returncode}: {proc.stderr.strip()}")
    return proc


@functools.cache
def netns_available() -> str | None:
    """``None`` when namespaces work here, else the reason (for ``pytest.skip``)."""
    if os.geteuid() != 0:
        return "network namespace tests need root"
    if shutil.which("ip") is None:
        return "network namespace tests need `ip` (iproute2)"
    probe = f"{PREFIX}probe-{os.getpid()}-{secrets.token_hex(2)}"
    try:
        res = _run_root(["ip", "netns", "add", probe], check=False)
        if res.returncode != 0:
            return f"cannot create a network namespace: {res.stderr.strip()}"
        res = _run_root(
            ["ip", "-n", probe, "link", "add", "eth0", "type", "veth", "peer", "name", "p0"],
            check=False,
        )
        if res.returncode != 0:
            return f"cannot create veth pairs: {res.stderr.strip()}"
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot create a network namespace: {exc}"
    finally:
        _run_root(["ip", "netns", "del", probe], check=False)
    return None


def tool_missing(name: str) -> str | None:
    """Reason to skip when a fault-injection tool (``tc``, ``iptables``) is absent."""
    return None if shutil.which(name) else f"`{name}` is not installed"


def _proc_start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: tells a live owner from a recycled pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _existing_namespaces() -> set[str]:
    res = _run_root(["ip", "netns", "list"], check=False)
    return {line.split()[0] for line in res.stdout.splitlines() if line.strip()}


def sweep_stale() -> list[str]:
    """Delete namespaces recorded by harness runs whose process is gone; returns their names."""
    removed: list[str] = []
    if not OWNER_DIR.is_dir():
        return removed
    existing = _existing_namespaces()
    for owner_file in OWNER_DIR.glob("*.json"):
        try:
            owner = json.loads(owner_file.read_text())
            pid, start, names = int(owner["pid"]), str(owner["start"]), list(owner["namespaces"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written right now, or not ours to judge
        if pid == os.getpid() or _proc_start_time(pid) == start:
            continue  # owner alive
        suffix = owner_file.stem
        for name in names:
            if name in existing and name.startswith(PREFIX) and name.endswith(f"-{suffix}"):
                _run_root(["ip", "netns", "del", name], check=False)
                removed.append(name)
        with contextlib.suppress(OSError):
            owner_file.unlink()
    for name in existing:  # availability probes carry their pid in the name
        m = _PROBE_RE.fullmatch(name)
        if m and int(m[1]) != os.getpid() and not Path(f"/proc/{m[1]}").exists():
            _run_root(["ip", "netns", "del", name], check=False)
            removed.append(name)
    return removed


def _kill_group(proc: subprocess.Popen[Any], grace: float = 1.0) -> None:
    """SIGTERM then SIGKILL a process group whose leader we have not reaped yet."""
    if proc.poll() is not None:
        return  # reaped: its pgid may be recycled; leftovers are caught by the netns pid sweep
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)


class Host:
    """One namespace with ``lo`` and ``eth0``; commands run via ``ip netns exec``."""

    def __init__(self, lan: Lan, index: int, ns: str, addr: str) -> None:
        self.lan = lan
        self.index = index
        self.ns = ns
        self.addr = addr
        self.ifname = IFNAME

    def __repr__(self) -> str:
        return f"Host({self.index}, {self.ns}, {self.addr})"

    def _argv(self, cmd: Sequence[str]) -> list[str]:
        if isinstance(cmd, str):
            raise TypeError("pass the command as a list of arguments")
        return ["ip", "netns", "exec", self.ns, *cmd]

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``cmd`` in this host, in its own process group; killed on :meth:`Lan.close`."""
        kwargs["start_new_session"] = True
        proc = subprocess.Popen(self._argv(cmd), **kwargs)
        self.lan._procs.append(proc)
        return proc

    def run(
        self,
        cmd: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 30.0,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` to completion (text output captured); kills its group on timeout."""
        proc = self.popen(
            cmd,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(env) if env is not None else None,
        )
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc, grace=0.5)
            raise
        res = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        if check and proc.returncode != 0:
            raise HarnessError(f"[{self.ns}] {' '.join(cmd)} -> {proc.returncode}: {err.strip()}")
        return res

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run_root(["ip", "-n", self.ns, *args], check=check)


class Lan:
    """N hosts on one bridged segment. Use as a context manager (or call :meth:`close`)."""

    def __init__(self, hosts: int = 3) -> None:
        if not 1 <= hosts <= 200:
            raise ValueError("hosts must be 1..200")
        self.n = hosts
        self.run_id = ""
        self.bridge_ns = ""
        self.subnet = ""
        self.hosts: list[Host] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._created: list[str] = []
        self._owner_file: Path | None = None
        self._plugged: set[int] = set()
        self._shaping: dict[int, tuple[str, str, str]] = {}
        self._rules: dict[tuple[int, str], list[list[str]]] = {}
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Lan:
        try:
            self.setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def setup(self) -> None:
        reason = netns_available()
        if reason is not None:
            raise HarnessError(reason)
        sweep_stale()
        existing = _existing_namespaces()
        while True:
            self.run_id = secrets.token_hex(2)
            names = [
                f"{PREFIX}br-{self.run_id}",
                *(f"{PREFIX}h{i}-{self.run_id}" for i in range(1, self.n + 1)),
            ]
            if (
                not existing.intersection(names)
                and not (OWNER_DIR / f"{self.run_id}.json").exists()
            ):
                break
        self.bridge_ns = names[0]
        self.subnet = f"10.77.{secrets.randbelow(256)}"
        self._write_owner(names)
        self._add_ns(self.bridge_ns)
        br = ["ip", "-n", self.bridge_ns]
        _run_root([*br, "link", "add", "br0", "type", "bridge"])
        _run_root([*br, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"])
        _run_root([*br, "link", "set", "br0", "up"])
        for i in range(1, self.n + 1):
            ns = names[i]
            self._add_ns(ns)
            _run_root(["ip", "-n", ns, "link", "set", "lo", "up"])
            self.hosts.append(Host(self, i, ns, f"{self.subnet}.{i}"))
            self.plug(i)

    def _write_owner(self, names: list[str]) -> None:
        OWNER_DIR.mkdir(mode=0o700, exist_ok=True)
        path = OWNER_DIR / f"{self.run_id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {"pid": os.getpid(), "start": _proc_start_time(os.getpid()), "namespaces": names}
            )
        )
        tmp.replace(path)
        self._owner_file = path

    def _add_ns(self, name: str) -> None:
        _run_root(["ip", "netns", "add", name])
        self._created.append(name)

    def close(self) -> None:
        """Kill everything started in our namespaces and delete them; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for proc in self._procs:
            _kill_group(proc)
        for ns in self._created:
            res = _run_root(["ip", "netns", "pids", ns], check=False)
            for pid in res.stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(2)
        for ns in reversed(self._created):
            _run_root(["ip", "netns", "del", ns], check=False)
        if self._owner_file is not None:
            with contextlib.suppress(OSError):
                self._owner_file.unlink()

    # ------------------------------------------------------------------ access

    def host(self, i: int) -> Host:
        """Host ``i``, counted from 1 like the addresses."""
        if not 1 <= i <= len(self.hosts):
            raise IndexError(f"no host {i} (1..{len(self.hosts)})")
        return self.hosts[i - 1]

    @property
    def namespaces(self) -> list[str]:
        return list(self._created)

    # ------------------------------------------------------------------ links

    def plug(self, i: int) -> None:
        """(Re)create host ``i``'s ``eth0`` on the bridge, with its address, up."""
        if i in self._plugged:
            return
        h, port = self.host(i), f"p{i}"
        _run_root(
            [
                "ip",
                "link",
                "add",
                IFNAME,
                "netns",
                h.ns,
                "type",
                "veth",
                "peer",
                "name",
                port,
                "netns",
                self.bridge_ns,
            ]
        )
        _run_root(["ip", "-n", self.bridge_ns, "link", "set", port, "master", "br0"])
        _run_root(["ip", "-n", self.bridge_ns, "link", "set", port, "up"])
        h.ip("addr", "add", f"{h.addr}/24", "brd", "+", "dev", IFNAME)
        h.ip("link", "set", IFNAME, "up")
        self._plugged.add(i)
        if i in self._shaping:
            self.shape(i, *self._shaping[i])

    def unplug(self, i: int) -> None:
        """Delete host ``i``'s ``eth0`` (both veth ends): the interface disappears."""
        if i not in self._plugged:
            return
        self.host(i).ip("link", "del", IFNAME)
        self._plugged.discard(i)

    def shape(
        self, i: int, rate: str = "100mbit", burst: str = "32kbit", latency: str = "50ms"
    ) -> None:
        """tbf on host ``i``'s egress (TESTBED §1: held within a few % here)."""
        self._shaping[i] = (rate, burst, latency)
        if i in self._plugged:
            _run_root(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.host(i).ns,
                    "tc",
                    "qdisc",
                    "replace",
                    "dev",
                    IFNAME,
                    "root",
                    "tbf",
                    "rate",
                    rate,
                    "burst",
                    burst,
                    "latency",
                    latency,
                ]
            )

    def unshape(self, i: int) -> None:
        if self._shaping.pop(i, None) is not None and i in self._plugged:
            _run_root(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.host(i).ns,
                    "tc",
                    "qdisc",
                    "del",
                    "dev",
                    IFNAME,
                    "root",
                ],
                check=False,
            )

    def _iptables(self, i: int, op: str, rule: list[str]) -> None:
        _run_root(["ip", "netns", "exec", self.host(i).ns, "iptables", "-w", "5", op, *rule])

    def _set_rules(self, i: int, kind: str, rules: list[list[str]]) -> None:
        for rule in self._rules.pop((i, kind), []):
            self._iptables(i, "-D", rule)
        for rule in rules:
            self._iptables(i, "-I", rule)
        if rules:
            self._rules[(i, kind)] = rules

    def partition(self, i: int) -> None:
        """Drop everything in and out of host ``i``'s eth0 (the link stays up)."""
        if (missing := tool_missing("iptables")) is not None:
            import pytest  # the harness is also used outside pytest (bench/)

            pytest.skip(f"partitions need iptables: {missing}")
        self._set_rules(
            i,
            "partition",
            [["INPUT", "-i", IFNAME, "-j", "DROP"], ["OUTPUT", "-o", IFNAME, "-j", "DROP"]],
        )

    def heal(self, i: int) -> None:
        self._set_rules(i, "partition", [])

    def loss(self, i: int, p: float) -> None:
        """Drop each packet in and out of host ``i`` with probability ``p`` (0 removes it)."""
        if not 0 <= p <= 1:
            raise ValueError("p must be within 0..1")
        stat = ["-m", "statistic", "--mode", "random", "--probability", f"{p:.6f}", "-j", "DROP"]
        self._set_rules(
            i,
            "loss",
            [["INPUT", "-i", IFNAME, *stat], ["OUTPUT", "-o", IFNAME, *stat]] if p > 0 else [],
        )

    # ------------------------------------------------------------------ helpers for tests

    def wait_until(self, predicate: Any, timeout: float = 5.0, interval: float = 0.05) -> bool:
        """Poll ``predicate()`` until true or ``timeout``; returns the last result."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)


class LanPool:
    """Builds :class:`Lan` objects with ``make(n)`` and closes them all on exit (fixtures)."""

    def __init__(self) -> None:
        self.lans: list[Lan] = []

    def make(self, hosts: int = 3) -> Lan:
        lan = Lan(hosts)
        self.lans.append(lan)
        return lan.__enter__()

    def __enter__(self) -> LanPool:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        for lan in self.lans:
            lan.close()


class JsonProc:
    """A child that prints one JSON object per line; lines are collected by a reader thread.

    ``send(line)`` writes a command line to its stdin; ``wait_for(pred)`` returns the first
    collected object (old or new) for which ``pred`` is true, or raises ``TimeoutError`` with
    the child's output so far.
    """

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self.stderr_tail: list[str] = []
        self._cond = threading.Condition()
        self._threads = [
            threading.Thread(target=self._read_out, daemon=True),
            threading.Thread(target=self._read_err, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                obj = {"raw": line.rstrip("\n")}
            with self._cond:
                self.lines.append(obj)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_tail = [*self.stderr_tail[-40:], line.rstrip("\n")]

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_for(self, pred: Any, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for obj in self.lines[seen:]:
                    if pred(obj):
                        return obj
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (
                    self.proc.poll() is not None
                    and seen == len(self.lines)
                    and not self._threads[0].is_alive()
                ):
                    raise TimeoutError(
                        f"no matching line within {timeout} s; rc={self.proc.poll()} "
                        f"stdout={self.lines[-20:]} stderr={self.stderr_tail[-20:]}"
                    )
                self._cond.wait(min(left, 0.2))

    def close(self, timeout: float = 5.0) -> int | None:
        """Close stdin (the child's cue to exit) and wait; killed by the Lan if it lingers."""
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        return self.proc.poll()


def spawn_jsonl(host: Host, cmd: Sequence[str], env: Mapping[str, str] | None = None) -> JsonProc:
    """Start ``cmd`` in ``host`` with pipes for a :class:`JsonProc`."""
    proc = host.popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        env=dict(env) if env is not None else None,
    )
    return JsonProc(proc)
