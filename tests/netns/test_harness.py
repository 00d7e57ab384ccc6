"""The namespace harness itself: reachability, partitions, shaping, loss, hot-plug, cleanup."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from harness import ECHO_SERVER, OWNER_DIR, Lan, spawn_jsonl, sweep_stale, tool_missing

pytestmark = pytest.mark.netns

PY = sys.executable
DRIVER = str(Path(__file__).resolve().parents[1] / "radio_lan" / "lan_driver.py")

ECHO_CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], 7000), timeout=float(sys.argv[2])) as s:
    s.settimeout(float(sys.argv[2]))
    s.sendall(b"hello shoal")
    assert s.recv(100) == b"hello shoal"
print("ok")
"""

# Bulk receiver: prints "ready", then the bytes received and seconds from first to last byte.
SINK = """
import json, socket, time
srv = socket.create_server(("0.0.0.0", 7001))
print("ready", flush=True)
c, _ = srv.accept()
n, first = 0, None
while data := c.recv(1 << 16):
    first = first or time.monotonic()
    n += len(data)
print(json.dumps({"bytes": n, "seconds": time.monotonic() - first}), flush=True)
"""

SOURCE = """
import socket, sys
buf = bytes(64 * 1024)
with socket.create_connection((sys.argv[1], 7001), timeout=10) as s:
    for _ in range(int(sys.argv[2]) // len(buf)):
        s.sendall(buf)
"""


def start_echo(lan: Lan, i: int) -> None:
    proc = lan.host(i).popen([PY, "-c", ECHO_SERVER], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"


def echo(lan: Lan, src: int, dst: int, timeout: float = 2.0, *, why: list[str] | None = None
         ) -> bool:
    """True when *src* gets its bytes echoed by *dst*; *why* collects the client's error."""
    res = lan.host(src).run(
        [PY, "-c", ECHO_CLIENT, lan.host(dst).addr, str(timeout)], check=False, timeout=timeout + 10
    )
    if why is not None:
        why.append(res.stderr)
    return res.returncode == 0 and res.stdout.strip() == "ok"


def test_three_hosts_reach_each_other(lan: Lan) -> None:
    assert len({h.addr for h in lan.hosts}) == 3
    assert all(h.addr.startswith("10.77.") for h in lan.hosts)
    for i in (1, 2, 3):
        start_echo(lan, i)
    for src in (1, 2, 3):
        for dst in (1, 2, 3):
            if src != dst:
                assert echo(lan, src, dst), f"host {src} cannot reach host {dst}"


@pytest.mark.skipif(tool_missing("iptables") is not None, reason="`iptables` is not installed")
def test_partition_and_heal(lan: Lan) -> None:
    start_echo(lan, 2)
    assert echo(lan, 1, 2)
    lan.partition(2)
    why: list[str] = []
    assert not echo(lan, 1, 2, timeout=1.0, why=why)
    # dropped packets time out; a refusal (RST) would mean the partition rejects, not drops
    assert "timed out" in why[0] and "refused" not in why[0], why[0]
    assert not echo(lan, 3, 2, timeout=1.0)
    lan.heal(2)
    assert echo(lan, 1, 2)
    assert echo(lan, 3, 2)


@pytest.mark.skipif(tool_missing("tc") is not None, reason="`tc` is not installed")
def test_tbf_shaping_limits_bulk_rate(lan: Lan) -> None:
    rate_mbit, size = 20, 8 * 1024 * 1024
    lan.shape(1, f"{rate_mbit}mbit")
    sink = lan.host(2).popen([PY, "-c", SINK], stdout=subprocess.PIPE, text=True)
    assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
    lan.host(1).run([PY, "-c", SOURCE, lan.host(2).addr, str(size)], timeout=60)
    result = json.loads(sink.stdout.readline())
    assert result["bytes"] == size
    mbit = result["bytes"] * 8 / result["seconds"] / 1e6
    print(f"tbf {rate_mbit} mbit: measured {mbit:.1f} Mbit/s over {result['seconds']:.2f} s")
    # Loose on purpose (CI is noisy): the shaping is in force, and it is not absurdly slow.
    assert mbit < 2 * rate_mbit
    assert mbit > rate_mbit / 4


@pytest.mark.skipif(tool_missing("iptables") is not None, reason="`iptables` is not installed")
def test_random_loss(lan_factory) -> None:
    lan = lan_factory(2)
    recv = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 7002))
s.settimeout(1.5); print("ready", flush=True); n = 0
try:
    while True:
        s.recv(100); n += 1
except TimeoutError:
    print(n)
"""
    send = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(400):
    try:
        s.sendto(b"x", (sys.argv[1], 7002))
    except PermissionError:  # dropped by the OUTPUT rule
        pass
    time.sleep(0.001)
"""
    lan.loss(1, 0.5)
    rx = lan.host(2).popen([PY, "-c", recv], stdout=subprocess.PIPE, text=True)
    assert rx.stdout is not None and rx.stdout.readline().strip() == "ready"
    lan.host(1).run([PY, "-c", send, lan.host(2).addr])
    received = int(rx.stdout.readline())
    assert 80 < received < 320, received  # ~200 expected (OUTPUT rule only)
    lan.loss(1, 0)


def test_unplug_and_plug(lan: Lan) -> None:
    start_echo(lan, 2)
    lan.unplug(1)
    assert "eth0" not in lan.host(1).run(["ip", "-br", "link"]).stdout
    assert not echo(lan, 1, 2, timeout=1.0)
    lan.plug(1)
    assert lan.wait_until(lambda: echo(lan, 1, 2), timeout=5)


def test_multicast_discovery_across_bridge(lan: Lan) -> None:
    ids = [secrets.token_hex(8) for _ in range(2)]
    procs = [
        spawn_jsonl(lan.host(i + 1), [PY, DRIVER, "--name", f"host {i + 1}", "--id", ids[i]])
        for i in range(2)
    ]
    for i, proc in enumerate(procs):
        seen = proc.wait_for(lambda o, i=i: o["kind"] == "seen" and o["short_id"] == ids[1 - i])
        assert seen["addresses"] == [lan.host(2 - i).addr]
        assert seen["interface"] == "eth0"
    for proc in procs:
        assert proc.close() == 0


def test_close_kills_processes_and_deletes_namespaces(lan_factory) -> None:
    lan = lan_factory(2)
    names = lan.namespaces
    # A child that forks a grandchild in a new session: only the namespace pid sweep finds it.
    proc = lan.host(1).popen(
        [
            PY,
            "-c",
            "import os, subprocess, sys, time\n"
            "p = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
            "print(p.pid, flush=True); time.sleep(300)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    grandchild = int(proc.stdout.readline())
    owner = OWNER_DIR / f"{lan.run_id}.json"
    assert owner.exists()
    lan.close()
    assert proc.poll() is not None
    assert lan.wait_until(lambda: not Path(f"/proc/{grandchild}").exists(), timeout=3)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(name in listed for name in names)
    assert not owner.exists()


def test_sweep_only_removes_namespaces_of_dead_owners(lan_factory) -> None:
    lan_factory(1)  # skips without root/netns
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale, foreign = secrets.token_hex(2), secrets.token_hex(2)
    stale_ns, foreign_ns = f"shl-h1-{stale}", f"shl-h1-{foreign}"
    subprocess.run(["ip", "netns", "add", stale_ns], check=True)
    subprocess.run(["ip", "netns", "add", foreign_ns], check=True)
    try:
        (OWNER_DIR / f"{stale}.json").write_text(
            json.dumps({"pid": dead.pid, "start": "1", "namespaces": [stale_ns]})
        )
        # A live owner (us, under another run id) is left alone too.
        live = secrets.token_hex(2)
        live_ns = f"shl-h1-{live}"
        subprocess.run(["ip", "netns", "add", live_ns], check=True)
        from harness import _proc_start_time

        (OWNER_DIR / f"{live}.json").write_text(
            json.dumps(
                {
                    "pid": os.getppid(),
                    "start": _proc_start_time(os.getppid()),
                    "namespaces": [live_ns],
                }
            )
        )
        removed = sweep_stale()
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert stale_ns in removed and stale_ns not in listed
        assert foreign_ns in listed  # no owner file: not ours, never touched
        assert live_ns in listed
    finally:
        for name in (stale_ns, foreign_ns, f"shl-h1-{live}"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        for f in (OWNER_DIR / f"{stale}.json", OWNER_DIR / f"{live}.json"):
            f.unlink(missing_ok=True)


def test_netns_available_gives_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    import harness

    harness.netns_available.cache_clear()
    try:
        monkeypatch.setattr(harness.os, "geteuid", lambda: 1000)
        assert harness.netns_available() == "network namespace tests need root"
        harness.netns_available.cache_clear()
        monkeypatch.setattr(harness.os, "geteuid", lambda: 0)
        monkeypatch.setattr(harness.shutil, "which", lambda name: None)
        assert "`ip`" in (harness.netns_available() or "")
    finally:
        monkeypatch.undo()
        harness.netns_available.cache_clear()
