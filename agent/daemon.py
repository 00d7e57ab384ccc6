"""What a long-running agent owes its host: one agent per data dir, and systemd's protocol.

Kept out of the node so the composition root only composes: the lock and sd_notify are
operating-system plumbing with their own failure modes and tests.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from collections.abc import Callable
from pathlib import Path

from agent.errors import ErrorKind, ShoalError


class StartupError(ShoalError):
    """The agent cannot start (a port in use, a bad listen address); one line says why,
    and what to do next. ``shoal run`` prints it as that line, never as a traceback."""

    kind = ErrorKind.UNAVAILABLE


class DataDirBusy(StartupError):
    """Another agent already runs on this data directory."""

    kind = ErrorKind.CONFLICT


def listen_failure(listen: str, port: int, err: OSError) -> StartupError:
    """Why the LAN listener could not open, in words a first-time user can act on: the
    usual case is a second agent on one machine, which wants its own port."""
    if err.errno == errno.EADDRINUSE:
        return StartupError(f"port {port} is already in use (another agent?): use --port 0 "
                            "for any free port, or --local")
    if err.errno == errno.EADDRNOTAVAIL:
        return StartupError(f"cannot listen on {listen}: not an address of this machine; "
                            "use --listen with one of its addresses, or 0.0.0.0 for all")
    if err.errno == errno.EACCES:
        return StartupError(f"cannot listen on port {port}: permission denied (ports below "
                            "1024 need privileges); use --port 0 for any free port")
    return StartupError(f"cannot listen on {listen} port {port}: {err.strerror or err}; "
                        "check lan.listen and lan.port (--listen, --port)")


def lock_data_dir(data_dir: Path) -> int:
    """One agent per data dir: two would race on the store's crash recovery."""
    fd = os.open(data_dir / "agent.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirBusy(f"another agent is already running with data dir {data_dir}: stop "
                          "it (shoal stop), or give a second agent its own --data-dir DIR "
                          "and --port 0 (or --local)") from None
    return fd


def notify_systemd(state: str) -> None:
    """sd_notify without a dependency: one datagram to $NOTIFY_SOCKET."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(state.encode(), addr)


def watchdog_interval(default: float) -> tuple[float, bool]:
    """How often the housekeeping loop must run, and whether it must ping the watchdog
    (systemd sets WATCHDOG_USEC; we ping at half the period, as sd_watchdog_enabled advises)."""
    usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
    if not usec:
        return default, False
    return min(default, usec / 2e6), True


#: The installed service (agent/service/): its unit name and where its control socket lives
#: (RuntimeDirectory=shoal), so the CLI and `shoal doctor` find it without flags.
SERVICE_UNIT = "shoal.service"
SERVICE_CONTROL_SOCKET = Path("/run/shoal/control.sock")


def status_line(peers: int, connected: int, transfers: int) -> str:
    """The service's one-line state for ``systemctl status`` (sd_notify STATUS=)."""
    return (f"serving: {connected} peer{'s' * (connected != 1)} connected, {peers} seen; "
            f"{transfers} transfer{'s' * (transfers != 1)} running")


class ServiceStatus:
    """STATUS= sent only when the line changes: every send is a datagram to PID 1."""

    def __init__(self, send: Callable[[str], None] = notify_systemd) -> None:
        self._send = send
        self._last: str | None = None

    def update(self, line: str) -> None:
        if line != self._last:
            self._last = line
            self._send(f"STATUS={line}")
