"""A private BlueZ for tests: dbus-daemon (own config and socket) + BlueZoo with N adapters.

BlueZoo (GPL-2.0) is test-only and lives in its own virtualenv (scripts/setup-bluezoo.sh);
it is found through ``$SHOAL_BLUEZOO``, then ``PATH``, then ``.venv-bluezoo/``. Nothing here
touches the machine's system bus: every client is pointed at the private bus with
``DBUS_SYSTEM_BUS_ADDRESS``. Restart it per test: BlueZoo keeps state between connections.
Known limits (TESTBED.md §3): fixed MTU 509, no read offsets, adapters must be made
discoverable, BlueZoo's RSSI never changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DBUS_DAEMON = shutil.which("dbus-daemon")

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <limit name="max_replies_per_connection">1000000</limit>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/><allow send_type="signal"/>
    <allow send_type="method_return"/><allow send_type="error"/>
    <allow receive_type="method_call"/><allow receive_type="signal"/>
    <allow receive_type="method_return"/><allow receive_type="error"/>
  </policy>
</busconfig>
"""


def bluezoo_executable() -> str | None:
    env = os.environ.get("SHOAL_BLUEZOO")
    if env:
        return env if os.access(env, os.X_OK) else None
    local = REPO / ".venv-bluezoo" / "bin" / "bluezoo"
    return shutil.which("bluezoo") or (str(local) if os.access(local, os.X_OK) else None)


def missing() -> str | None:
    """Why the emulated tier cannot run here (None if it can)."""
    if DBUS_DAEMON is None:
        return "dbus-daemon not installed (apt: dbus)"
    if bluezoo_executable() is None:
        return "bluezoo not found: run scripts/setup-bluezoo.sh or set SHOAL_BLUEZOO"
    return None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextlib.contextmanager
def private_bluez(workdir: Path, adapters: int = 2) -> Iterator[str]:
    """Start dbus-daemon + BlueZoo with ``adapters`` adapters (hci0..); yield the bus address."""
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    assert DBUS_DAEMON is not None
    workdir.mkdir(parents=True, exist_ok=True)
    socket = workdir / "system_bus"
    config = workdir / "bus.conf"
    config.write_text(BUS_CONFIG.format(socket=socket))
    daemon = subprocess.Popen([DBUS_DAEMON, f"--config-file={config}", "--nofork"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    zoo: subprocess.Popen[bytes] | None = None
    log = (workdir / "bluezoo.log").open("wb")
    try:
        deadline = time.monotonic() + 10
        while not socket.exists():
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise RuntimeError("private dbus-daemon did not start")
            time.sleep(0.05)
        address = f"unix:path={socket}"
        args = [a for i in range(adapters) for a in ("-a", f"00:00:00:0{i + 1}:00:00")]
        zoo = subprocess.Popen(
            [str(bluezoo_executable()), "--auto-enable", "--scan-interval", "1", *args],
            env={**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": address},
            stdout=log, stderr=subprocess.STDOUT,
        )
        yield address
    finally:
        if zoo is not None:
            _stop(zoo)
        _stop(daemon)
        log.close()


async def prepare_adapters(names: list[str]) -> None:
    """Power the adapters and make them discoverable (BlueZoo only scans discoverable ones).

    Uses the bus in ``DBUS_SYSTEM_BUS_ADDRESS`` (set it first)."""
    from dbus_next import Variant
    from dbus_next.aio import MessageBus
    from dbus_next.constants import BusType

    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        for name in names:
            for _ in range(100):  # BlueZoo registers its name shortly after starting
                try:
                    intro = await bus.introspect("org.bluez", f"/org/bluez/{name}")
                    break
                except Exception:
                    await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"BlueZoo did not publish {name}")
            props = bus.get_proxy_object("org.bluez", f"/org/bluez/{name}", intro).get_interface(
                "org.freedesktop.DBus.Properties")
            await props.call_set("org.bluez.Adapter1", "Powered", Variant("b", True))
            await props.call_set("org.bluez.Adapter1", "Discoverable", Variant("b", True))
    finally:
        bus.disconnect()
