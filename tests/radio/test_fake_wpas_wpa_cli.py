"""Keep the fake wpa_supplicant honest: Debian's real ``wpa_cli`` must work against it.

wpa_cli's ``p2p_peers`` walks ``P2P_PEER FIRST`` / ``NEXT-<addr>`` until ``FAIL`` and loops
forever on anything else, so a wrong end-of-walk reply shows up here as a timeout.
Skips without the ``wpasupplicant`` package (scripts/apt-packages.txt has it).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator

import pytest

from tests.radio.fake_wpas import FakeWpaSupplicant

WPA_CLI = shutil.which("wpa_cli") or (
    "/usr/sbin/wpa_cli" if os.path.exists("/usr/sbin/wpa_cli") else None)
pytestmark = pytest.mark.skipif(WPA_CLI is None, reason="wpa_cli not installed "
                                "(apt-get install wpasupplicant)")
A, B = "02:00:00:00:0a:00", "02:00:00:00:0b:00"


@pytest.fixture
async def fake() -> AsyncIterator[FakeWpaSupplicant]:
    d = tempfile.mkdtemp(prefix="wc", dir="/tmp")
    wpas = await FakeWpaSupplicant(os.path.join(d, "wlan0")).start()
    wpas.add_peer(A, "Pi kitchen")
    wpas.add_peer(B, "laptop")
    try:
        yield wpas
    finally:
        await wpas.stop()
        shutil.rmtree(d, ignore_errors=True)


async def _cli(fake: FakeWpaSupplicant, *args: str) -> str:
    assert WPA_CLI is not None
    proc = await asyncio.create_subprocess_exec(
        WPA_CLI, "-p", os.path.dirname(fake.path), "-i", "wlan0", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
    except TimeoutError as e:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"wpa_cli {' '.join(args)} did not finish (reply semantics?)") from e
    assert proc.returncode == 0, out
    return out.decode()


async def test_wpa_cli_walks_the_peer_table_and_stops_at_fail(fake: FakeWpaSupplicant) -> None:
    assert await _cli(fake, "p2p_peers") == f"{A}\n{B}\n"
    assert fake.commands[-3:] == ["P2P_PEER FIRST", f"P2P_PEER NEXT-{A}", f"P2P_PEER NEXT-{B}"]


async def test_wpa_cli_drives_find_connect_group_add_and_remove(fake: FakeWpaSupplicant) -> None:
    assert await _cli(fake, "p2p_find") == "OK\n"
    assert (await _cli(fake, "p2p_peer", A)).startswith(f"{A}\npri_dev_type=")
    assert await _cli(fake, "p2p_connect", A, "pbc") == "OK\n"
    assert await _cli(fake, "p2p_connect", A, "pin") == "12345670"
    assert await _cli(fake, "p2p_connect", A, "12345678") == "FAIL-INVALID-PIN\n"
    assert await _cli(fake, "p2p_group_add", "persistent") == "OK\n"
    ifname = next(n for n, g in fake.groups.items() if g.role == "GO")
    assert await _cli(fake, "p2p_group_remove", ifname) == "OK\n"
    assert await _cli(fake, "p2p_group_remove", ifname) == "FAIL\n"
    assert "p2p_device_address=" in await _cli(fake, "status")
