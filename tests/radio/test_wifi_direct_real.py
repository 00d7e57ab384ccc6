"""radio.wifi_direct against the REAL wpa_supplicant, on loopback, without any radio.

wpa_supplicant runs with the ``wired`` driver on ``lo``: a real control socket with real
reply semantics and real permissions, but no P2P (the driver has none). That is exactly the
"wpa_supplicant lacks P2P" case, and with it the "permission denied" (a user outside the
socket's group) and "socket gone" (the process stops) cases run against the real thing.
The P2P operations themselves need mac80211_hwsim (hardware-tests/vlab); here they are
covered by the fake (test_wifi_direct.py), whose replies these tests keep honest.

Skips when the ``wpasupplicant`` package is not installed (scripts/apt-packages.txt has it).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from radio.wifi_direct import (
    EventStream,
    P2pUnsupportedError,
    WifiDirect,
    WpaControl,
    WpaGone,
    WpaMonitor,
    WpaSocketMissingError,
)
from radio.wpa_parse import ControlEvent, parse_kv_lines
from tests.waiting import wait_until

WPA = shutil.which("wpa_supplicant") or (
    "/usr/sbin/wpa_supplicant" if os.path.exists("/usr/sbin/wpa_supplicant") else None)
pytestmark = pytest.mark.skipif(WPA is None, reason="wpa_supplicant not installed "
                                "(apt-get install wpasupplicant)")
ROOT = Path(__file__).resolve().parents[2]


class RealWpas:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="wr", dir="/tmp")
        self.ctl = os.path.join(self.dir, "ctl")
        conf = os.path.join(self.dir, "w.conf")
        Path(conf).write_text(f"ctrl_interface={self.ctl}\n")
        assert WPA is not None
        self.proc = subprocess.Popen([WPA, "-i", "lo", "-D", "wired", "-c", conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.path = os.path.join(self.ctl, "lo")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)


async def _until_gone(stream: EventStream) -> list[ControlEvent]:
    """Read events (the real one sends a few on the way out) until the stream ends."""
    seen = [event async for event in stream]
    return seen  # pragma: no cover - the stream ends by raising WpaGone


@pytest.fixture
def real() -> Iterator[RealWpas]:
    wpas = RealWpas()
    try:
        for _ in range(500):
            if os.path.exists(wpas.path) or wpas.proc.poll() is not None:
                break
            subprocess.run(["sleep", "0.02"], check=False)
        if not os.path.exists(wpas.path):
            pytest.skip("wpa_supplicant could not start on lo with the wired driver")
        yield wpas
    finally:
        wpas.stop(signal.SIGKILL)
        shutil.rmtree(wpas.dir, ignore_errors=True)


async def test_real_supplicant_without_p2p_is_reported_with_the_fix(real: RealWpas) -> None:
    ctrl = WpaControl(real.path, timeout=5)
    try:
        assert await ctrl.request("PING") == "PONG\n"
        status = parse_kv_lines(await ctrl.request("STATUS"))
        assert "wpa_state" in status and "p2p_device_address" not in status
        assert (await ctrl.request("P2P_FIND")).strip() == "FAIL"  # as the fake's "disabled"
        assert (await ctrl.request("P2P_PEER FIRST")).strip() == "FAIL"
    finally:
        ctrl.close()
    with pytest.raises(P2pUnsupportedError, match="CONFIG_P2P=y"):
        await WifiDirect(real.path, timeout=5).open()


async def test_real_orderly_exit_ends_the_event_stream(real: RealWpas) -> None:
    monitor = WpaMonitor(real.path, timeout=5, ping_interval=0)
    await monitor.start()
    try:
        stream = monitor.stream()
        real.stop(signal.SIGTERM)  # it sends CTRL-EVENT-TERMINATING to monitors
        with pytest.raises(WpaGone, match="terminating"):
            await asyncio.wait_for(_until_gone(stream), 10)
    finally:
        await monitor.close()


async def test_real_killed_supplicant_is_noticed(real: RealWpas) -> None:
    ctrl = WpaControl(real.path, timeout=5)
    monitor = WpaMonitor(real.path, timeout=1, ping_interval=0.05)
    await monitor.start()
    try:
        stream = monitor.stream()
        assert await ctrl.request("PING") == "PONG\n"
        real.stop(signal.SIGKILL)  # no goodbye
        with pytest.raises(WpaGone):
            await ctrl.request("PING")
        with pytest.raises(WpaGone):
            await asyncio.wait_for(_until_gone(stream), 10)
    finally:
        await monitor.close()
        ctrl.close()
    with pytest.raises(WpaSocketMissingError, match=r"not running|no wpa_supplicant"):
        await WifiDirect(real.path, timeout=1).open()


def _python_for_nobody() -> str | None:
    """A Python >= 3.11 that user 'nobody' may run (the venv's may sit under /root)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate) and os.stat(candidate).st_mode & 0o001:
            probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info >= "
                                    "(3, 11))"], capture_output=True, text=True, check=False)
            if probe.stdout.strip() == "True":
                return candidate
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the client as another user")
async def test_real_socket_refuses_a_user_outside_its_group(real: RealWpas) -> None:
    python = _python_for_nobody()
    if python is None:
        pytest.skip("no Python >= 3.11 that user 'nobody' can run")
    await wait_until(lambda: os.path.exists(real.path), "socket")
    code = (
        "import asyncio, sys\n"
        "from radio.wifi_direct import WifiDirect, WpaPermissionError\n"
        "async def main():\n"
        f"    try: await WifiDirect({real.path!r}, timeout=2).open()\n"
        "    except WpaPermissionError as e: print('PERM', e); return\n"
        "    print('NO ERROR')\n"
        "asyncio.run(main())\n")
    # the ctrl dir is root-only (0750/0770 root:root): 'nobody' cannot reach the socket
    proc = await asyncio.create_subprocess_exec(
        python, "-c", code, cwd="/", env={"PYTHONPATH": str(ROOT), "HOME": "/tmp"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        user=65534, group=65534, extra_groups=[])
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert text.startswith("PERM") and "GROUP=netdev" in text, text
