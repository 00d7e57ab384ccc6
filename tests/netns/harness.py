"""Several Linux "hosts" on one or more Ethernet segments, built from network namespaces.

Layout (TESTBED.md §1): a bridge namespace ``shl-br-XXXX`` holding ``br0`` (multicast snooping
off, so mDNS floods like on a dumb switch) and N host namespaces ``shl-hN-XXXX``, each with
``lo`` up and one ``eth0`` veth whose peer ``pN`` is a port of ``br0``. Hosts get
``10.77.X.N/24`` with X random per run; the addresses exist only inside our namespaces, so two
runs can never disturb each other or the machine's real network.

Several segments: ``Lan(12, segments=[[1, 2, 3, 4, 5], [4, 5, 6, 7, 8, 9], [9, 10, 11, 12]])``
(host numbers count from 1, like :meth:`Lan.host`) gives each segment its own bridge namespace
(``shl-br-XXXX``, ``shl-br2-XXXX``, ...) and its own random /24 ``10.77.X_s.0/24``. A host in
several segments is multi-homed: ``eth0`` on its first segment, ``eth1`` on its second, ...,
with address ``10.77.X_s.N`` on each. IP forwarding is off in every host, and nothing installs
routes, so a host reaches only hosts that share a segment with it: a device on bridge 1 cannot
reach bridge 3 at the IP level, only through an application (a relay) on a dual-homed host.

Faults are applied inside a host's namespace, on all its interfaces or (``segment=``) on one:
:meth:`Lan.shape` (tbf on egress), :meth:`Lan.partition`/:meth:`Lan.heal` (iptables DROP),
:meth:`Lan.loss` (random DROP), :meth:`Lan.unplug`/:meth:`Lan.plug` (the interface disappears
and comes back), :meth:`Lan.kill` (signal every process running in the host: a crashed device).

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
    "ECHO_SERVER",
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
MAX_SEGMENTS = 16
_CMD_TIMEOUT = 20.0
# A TCP echo server for a host (`python -c`): prints "ready", echoes every connection until
# killed; the harness tests use it to show which hosts reach which.
ECHO_SERVER = """
import socket, threading
srv = socket.create_server(("0.0.0.0", 7000))
print("ready", flush=True)
def serve(c):
    with c:
        while data := c.recv(65536):
            c.sendall(data)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

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
    """One namespace with ``lo`` and ``eth0`` (``eth1``... when it is in several segments);
    commands run via ``ip netns exec``."""

    def __init__(self, lan: Lan, index: int, ns: str, addr: str) -> None:
        self.lan = lan
        self.index = index
        self.ns = ns
        self.addr = addr  # on eth0, the host's first segment
        self.ifname = IFNAME
        #: segment index -> (interface name, address), in the host's interface order
        self.links: dict[int, tuple[str, str]] = {}

    def __repr__(self) -> str:
        return f"Host({self.index}, {self.ns}, {self.addr})"

    @property
    def segments(self) -> list[int]:
        """The segments (indexes into :attr:`Lan.segments`) this host is plugged into."""
        return list(self.links)

    @property
    def addrs(self) -> list[str]:
        """Its address on each of its segments, ``eth0``'s first."""
        return [addr for _, addr in self.links.values()]

    def addr_on(self, segment: int) -> str:
        """Its address on *segment*; ``KeyError`` when it is not on that segment."""
        return self.links[segment][1]

    def ifname_on(self, segment: int) -> str:
        return self.links[segment][0]

    def shares_segment(self, other: Host) -> int | None:
        """The first segment both hosts are on (the one to reach *other* over), else None."""
        return next((s for s in self.links if s in other.links), None)

    def addr_for(self, other: Host) -> str:
        """Where *other* reaches this host: its address on a segment they share."""
        seg = self.shares_segment(other)
        if seg is None:
            raise HarnessError(f"hosts {self.index} and {other.index} share no segment")
        return self.addr_on(seg)

    def pids(self) -> list[int]:
        """Every process running in this host's namespace (all of them were started by us)."""
        res = _run_root(["ip", "netns", "pids", self.ns], check=False)
        return [int(p) for p in res.stdout.split() if p.isdigit()]

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


def _check_segments(n: int, segments: Sequence[Sequence[int]] | None) -> list[tuple[int, ...]]:
    """Validated segments (host numbers 1..n); default: every host on one segment."""
    if segments is None:
        return [tuple(range(1, n + 1))]
    out: list[tuple[int, ...]] = []
    if not 1 <= len(segments) <= MAX_SEGMENTS:
        raise ValueError(f"segments: 1..{MAX_SEGMENTS} lists of host numbers")
    for k, seg in enumerate(segments):
        members = tuple(seg)
        if not members:
            raise ValueError(f"segment {k} is empty")
        if len(set(members)) != len(members):
            raise ValueError(f"segment {k} lists a host twice: {members}")
        bad = [i for i in members if not isinstance(i, int) or not 1 <= i <= n]
        if bad:
            raise ValueError(f"segment {k}: no host {bad[0]!r} (hosts count from 1 to {n})")
        out.append(members)
    homeless = sorted(set(range(1, n + 1)).difference(*map(set, out)))
    if homeless:
        raise ValueError(f"hosts {homeless} are in no segment")
    return out


class Lan:
    """N hosts on one bridged segment, or on several (``segments=``, see the module doc).
    Use as a context manager (or call :meth:`close`)."""

    def __init__(self, hosts: int = 3, segments: Sequence[Sequence[int]] | None = None) -> None:
        if not 1 <= hosts <= 200:
            raise ValueError("hosts must be 1..200")
        self.n = hosts
        self.segments = _check_segments(hosts, segments)
        self.run_id = ""
        self.bridge_ns = ""  # the first segment's (the only one's, by default)
        self.subnet = ""  # the first segment's "10.77.X"
        self.bridges: list[str] = []  # one bridge namespace per segment
        self.subnets: list[str] = []  # "10.77.X" per segment
        self.hosts: list[Host] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._created: list[str] = []
        self._owner_file: Path | None = None
        self._plugged: set[tuple[int, int]] = set()  # (host, segment)
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
        nseg = len(self.segments)
        while True:
            self.run_id = secrets.token_hex(2)
            bridges = [f"{PREFIX}br{'' if k == 0 else k + 1}-{self.run_id}" for k in range(nseg)]
            names = [
                *bridges,
                *(f"{PREFIX}h{i}-{self.run_id}" for i in range(1, self.n + 1)),
            ]
            if (
                not existing.intersection(names)
                and not (OWNER_DIR / f"{self.run_id}.json").exists()
            ):
                break
        self.bridges = bridges
        self.subnets = [f"10.77.{x}" for x in secrets.SystemRandom().sample(range(256), nseg)]
        self.bridge_ns, self.subnet = self.bridges[0], self.subnets[0]
        self._write_owner(names)
        for bridge in self.bridges:
            self._add_ns(bridge)
            br = ["ip", "-n", bridge]
            _run_root([*br, "link", "add", "br0", "type", "bridge"])
            _run_root([*br, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"])
            _run_root([*br, "link", "set", "br0", "up"])
        for i in range(1, self.n + 1):
            ns = names[nseg + i - 1]
            self._add_ns(ns)
            _run_root(["ip", "-n", ns, "link", "set", "lo", "up"])
            # A multi-homed host must never join its segments at the IP level (a fresh
            # namespace starts with forwarding off; say so rather than rely on the default).
            _run_root(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=0"])
            host = Host(self, i, ns, "")
            for k, members in enumerate(self.segments):
                if i in members:
                    host.links[k] = (f"eth{len(host.links)}", f"{self.subnets[k]}.{i}")
            host.addr = next(iter(host.links.values()))[1]
            self.hosts.append(host)
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

    def _links(self, i: int, segment: int | None) -> list[tuple[int, str, str]]:
        """(segment, ifname, address) of host ``i``: all of them, or the one on *segment*."""
        h = self.host(i)
        if segment is not None and segment not in h.links:
            raise HarnessError(f"host {i} is not on segment {segment} (it is on {h.segments})")
        return [(k, ifn, addr) for k, (ifn, addr) in h.links.items() if segment in (None, k)]

    def plugged(self, i: int) -> list[str]:
        """The interfaces host ``i`` has right now."""
        return [ifn for k, ifn, _ in self._links(i, None) if (i, k) in self._plugged]

    def plug(self, i: int, segment: int | None = None) -> None:
        """(Re)create host ``i``'s interfaces (or the one on *segment*) on their bridges, with
        their addresses, up."""
        h = self.host(i)
        for k, ifname, addr in self._links(i, segment):
            if (i, k) in self._plugged:
                continue
            port, bridge = f"p{i}", self.bridges[k]
            _run_root(
                ["ip", "link", "add", ifname, "netns", h.ns, "type", "veth",
                 "peer", "name", port, "netns", bridge]
            )  # fmt: skip
            _run_root(["ip", "-n", bridge, "link", "set", port, "master", "br0"])
            _run_root(["ip", "-n", bridge, "link", "set", port, "up"])
            h.ip("addr", "add", f"{addr}/24", "brd", "+", "dev", ifname)
            h.ip("link", "set", ifname, "up")
            self._plugged.add((i, k))
            if i in self._shaping:
                self._tbf(i, ifname, *self._shaping[i])

    def unplug(self, i: int, segment: int | None = None) -> None:
        """Delete host ``i``'s interfaces (or the one on *segment*; both veth ends): they
        disappear."""
        for k, ifname, _ in self._links(i, segment):
            if (i, k) in self._plugged:
                self.host(i).ip("link", "del", ifname)
                self._plugged.discard((i, k))

    def shape(
        self, i: int, rate: str = "100mbit", burst: str = "32kbit", latency: str = "50ms"
    ) -> None:
        """tbf on host ``i``'s egress, each interface (TESTBED §1: held within a few % here)."""
        self._shaping[i] = (rate, burst, latency)
        for ifname in self.plugged(i):
            self._tbf(i, ifname, rate, burst, latency)

    def _tbf(self, i: int, ifname: str, rate: str, burst: str, latency: str) -> None:
        _run_root(
            ["ip", "netns", "exec", self.host(i).ns, "tc", "qdisc", "replace", "dev", ifname,
             "root", "tbf", "rate", rate, "burst", burst, "latency", latency]
        )  # fmt: skip

    def unshape(self, i: int) -> None:
        if self._shaping.pop(i, None) is not None:
            for ifname in self.plugged(i):
                _run_root(
                    ["ip", "netns", "exec", self.host(i).ns, "tc", "qdisc", "del", "dev",
                     ifname, "root"],
                    check=False,
                )  # fmt: skip

    def _iptables(self, i: int, op: str, rule: list[str]) -> None:
        _run_root(["ip", "netns", "exec", self.host(i).ns, "iptables", "-w", "5", op, *rule])

    def _set_rules(self, i: int, kind: str, rules: list[list[str]]) -> None:
        for rule in self._rules.pop((i, kind), []):
            self._iptables(i, "-D", rule)
        for rule in rules:
            self._iptables(i, "-I", rule)
        if rules:
            self._rules[(i, kind)] = rules

    def partition(self, i: int, segment: int | None = None) -> None:
        """Drop everything in and out of host ``i``'s interfaces, or only the one on
        *segment* (the links stay up)."""
        if (missing := tool_missing("iptables")) is not None:
            import pytest  # the harness is also used outside pytest (bench/)

            pytest.skip(f"partitions need iptables: {missing}")
        for _, ifname, _ in self._links(i, segment):
            self._set_rules(
                i,
                f"partition {ifname}",
                [["INPUT", "-i", ifname, "-j", "DROP"], ["OUTPUT", "-o", ifname, "-j", "DROP"]],
            )

    def heal(self, i: int, segment: int | None = None) -> None:
        """Undo :meth:`partition` on all of host ``i``'s interfaces, or the one on *segment*."""
        for _, ifname, _ in self._links(i, segment):
            self._set_rules(i, f"partition {ifname}", [])

    def loss(self, i: int, p: float) -> None:
        """Drop each packet in and out of host ``i`` with probability ``p`` (0 removes it)."""
        if not 0 <= p <= 1:
            raise ValueError("p must be within 0..1")
        stat = ["-m", "statistic", "--mode", "random", "--probability", f"{p:.6f}", "-j", "DROP"]
        rules: list[list[str]] = []
        if p > 0:
            for _, ifname, _ in self._links(i, None):
                rules += [["INPUT", "-i", ifname, *stat], ["OUTPUT", "-o", ifname, *stat]]
        self._set_rules(i, "loss", rules)

    def kill(self, i: int, sig: int = signal.SIGKILL) -> list[int]:
        """Send *sig* to every process running in host ``i`` (a crashed or powered-off device:
        its sessions end without a goodbye). Only our own processes can be in there. Returns
        the pids signalled."""
        pids = self.host(i).pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return pids

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

    def make(self, hosts: int = 3, segments: Sequence[Sequence[int]] | None = None) -> Lan:
        lan = Lan(hosts, segments)
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
