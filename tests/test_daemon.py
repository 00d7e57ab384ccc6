"""Host plumbing: one agent per data dir, sd_notify and the systemd watchdog."""

from __future__ import annotations

import os
import socket

import pytest

from agent.daemon import DataDirBusy, lock_data_dir, notify_systemd, watchdog_interval
from agent.errors import ErrorKind


def test_one_agent_per_data_dir(tmp_path):
    fd = lock_data_dir(tmp_path)
    try:
        assert (tmp_path / "agent.lock").exists()
        with pytest.raises(DataDirBusy, match="already running") as e:
            lock_data_dir(tmp_path)  # flock: a second open file is refused, same process too
        assert e.value.kind is ErrorKind.CONFLICT
        other = tmp_path / "other"
        other.mkdir()
        os.close(lock_data_dir(other))  # another data dir is independent
    finally:
        os.close(fd)
    os.close(lock_data_dir(tmp_path))  # released with its holder


def test_a_refused_lock_leaks_no_descriptor(tmp_path):
    fd = lock_data_dir(tmp_path)
    try:
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(5):
            with pytest.raises(DataDirBusy):
                lock_data_dir(tmp_path)
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        os.close(fd)


def _listener(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(5)  # a hang guard only
    return s


def test_notify_sends_one_datagram(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    with _listener(path) as s:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        notify_systemd("READY=1\nSTATUS=running")
        assert s.recv(4096) == b"READY=1\nSTATUS=running"


def test_notify_abstract_socket(monkeypatch):
    name = f"shoal-test-{os.getpid()}-{os.urandom(4).hex()}"
    with _listener("\0" + name) as s:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        notify_systemd("WATCHDOG=1")
        assert s.recv(4096) == b"WATCHDOG=1"


def test_notify_without_systemd_is_a_no_op(tmp_path, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notify_systemd("READY=1")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    notify_systemd("READY=1")  # a vanished systemd must not take the agent down


@pytest.mark.parametrize(("usec", "expected"), [
    (None, (1.0, False)), ("", (1.0, False)), ("0", (1.0, False)),
    ("10000000", (1.0, True)),  # 10 s watchdog: ping every 1 s (the default) is enough
    ("600000", (0.3, True)),  # 0.6 s watchdog: ping at half the period
])
def test_watchdog_interval(monkeypatch, usec, expected):
    if usec is None:
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    interval, ping = watchdog_interval(1.0)
    assert ping is expected[1]
    assert interval == pytest.approx(expected[0])


def test_listen_failures_say_what_to_do():
    import errno

    from agent.daemon import StartupError, listen_failure

    busy = listen_failure("0.0.0.0", 47474, OSError(errno.EADDRINUSE, "address in use"))
    assert str(busy) == ("port 47474 is already in use (another agent?): use --port 0 for any "
                         "free port, or --local")
    assert isinstance(busy, StartupError)
    absent = listen_failure("10.9.9.9", 0, OSError(errno.EADDRNOTAVAIL, "cannot assign"))
    assert "10.9.9.9" in str(absent) and "not an address of this machine" in str(absent)
    denied = listen_failure("0.0.0.0", 80, OSError(errno.EACCES, "permission denied"))
    assert "port 80" in str(denied) and "--port 0" in str(denied)
    other = listen_failure("::1", 5, OSError(errno.EAFNOSUPPORT, "not supported"))
    assert "not supported" in str(other) and "\n" not in str(other)


def test_a_busy_data_dir_is_a_startup_error(tmp_path):
    from agent.daemon import StartupError

    fd = lock_data_dir(tmp_path)
    try:
        with pytest.raises(StartupError, match=r"--data-dir DIR and --port 0 \(or --local\)"):
            lock_data_dir(tmp_path)
    finally:
        os.close(fd)


def test_status_is_sent_only_when_it_changes():
    from agent.daemon import ServiceStatus, status_line

    sent: list[str] = []
    s = ServiceStatus(sent.append)
    for line in (status_line(3, 1, 0), status_line(3, 1, 0), status_line(3, 2, 1)):
        s.update(line)
    assert sent == ["STATUS=serving: 1 peer connected, 3 seen; 0 transfers running",
                    "STATUS=serving: 2 peers connected, 3 seen; 1 transfer running"]


async def test_node_notifies_ready_once_serving_then_pings_the_watchdog(tmp_path, monkeypatch):
    """READY=1 (with a STATUS line) only after the control socket answers; WATCHDOG=1 from
    the event loop at half the watchdog period; STATUS once, not with every ping."""
    import asyncio

    from agent.config import config_from_dict
    from agent.control import call_simple
    from agent.node import Node

    path = str(tmp_path / "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s
    cfg = config_from_dict({
        "node": {"name": "svc", "data_dir": str(tmp_path / "d"),
                 "control_socket": str(tmp_path / "c.sock")},
        "lan": {"listen": "127.0.0.1", "port": 0, "mdns": False},
        "ble": {"enabled": False}, "authority": {"enabled": False}})
    node = Node(cfg)
    task = asyncio.ensure_future(node.run())
    loop = asyncio.get_running_loop()
    messages: list[bytes] = []
    try:
        first = await asyncio.wait_for(loop.sock_recv(listener, 4096), 10)
        # READY came after the control socket was up: it answers now
        assert (await call_simple(cfg.node.control_socket_path, "status"))["name"] == "svc"
        while sum(m == b"WATCHDOG=1" for m in messages) < 3:
            messages.append(await asyncio.wait_for(loop.sock_recv(listener, 4096), 10))
    finally:
        node.stop()
        await asyncio.wait_for(task, 15)
        listener.close()
    assert first.startswith(b"READY=1\nSTATUS=serving: 0 peers connected, 0 seen; ")
    status = [m for m in messages if m.startswith(b"STATUS=")]
    assert len(status) == 1, messages  # sent once, unchanged afterwards
