"""Hardware-in-loop: two real agents on two real BlueZ adapters meet over BLE only, pair,
hand over to TCP and fetch.

Run on a board (or a laptop) with two adapters, e.g. a Pi's built-in radio plus a USB dongle:

    SHOAL_HW_ADAPTERS=hci0,hci1 .venv/bin/pytest hardware-tests -v

Both agents run on this machine (separate data dirs, mDNS off so BLE is the only way to
meet, TCP on loopback for the handover). Skips unless SHOAL_HW_ADAPTERS names two adapters
present under /sys/class/bluetooth. CI does not run this folder.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.agents import Agent  # noqa: E402


def _adapters() -> list[str]:
    names = [a.strip() for a in os.environ.get("SHOAL_HW_ADAPTERS", "").split(",") if a.strip()]
    return [a for a in names if Path(f"/sys/class/bluetooth/{a}").exists()]


pytestmark = pytest.mark.skipif(
    len(_adapters()) < 2,
    reason="set SHOAL_HW_ADAPTERS=hciX,hciY to two BlueZ adapters present on this machine",
)


def _config(adapter: str) -> str:
    return ('[lan]\nlisten = "127.0.0.1"\nmdns = false\n'
            f'[ble]\nenabled = true\nadapter = "{adapter}"\nconnect_timeout = 30\n')


def _poll(fn, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what}: not reached within {timeout} s")


@pytest.fixture
def pair_of_agents(tmp_path):
    hci_a, hci_b = _adapters()[:2]
    a, b = Agent("hw-a", tmp_path / "a"), Agent("hw-b", tmp_path / "b")
    a.config(_config(hci_a))
    b.config(_config(hci_b))
    b.start()
    a.start()
    yield a, b
    a.stop(timeout=10)
    b.stop(timeout=10)


def test_meet_pair_hand_over_and_fetch_on_real_adapters(pair_of_agents, tmp_path):
    a, b = pair_of_agents
    data = tmp_path / "survey.bin"
    data.write_bytes(os.urandom(2 * 1024 * 1024))
    b.cli("publish", str(data))

    def b_seen():
        row = next((x for x in a.json("peers") if x["name"] == "hw-b"), None)
        return row if row and "ble" in row["sources"] and row["rssi"] is not None else None

    _poll(b_seen, "hw-b seen over BLE with an RSSI")
    b.cli("pair", "--open")
    code = a.json("pair", "ble:hw-b", "--no-wait")["code"]
    a.cli("pair", "--code", code, "--no-wait")
    assert b.json("pair", "--code", code, "--timeout", "60")["complete"]
    _poll(lambda: (r := b_seen()) and "lan" in r["sources"], "handover to TCP")
    out = tmp_path / "out.bin"
    a.cli("fetch", "survey.bin", "-o", str(out), timeout=300)
    assert out.read_bytes() == data.read_bytes()
