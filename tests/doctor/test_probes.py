"""The probes on fake sysfs/proc trees and on this machine: bounded, never raising."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agent.doctor.probes import _experimental, _kernel_adapters, multicast_loop, probe_wpa

ROOT = Path(__file__).resolve().parents[2]


def test_kernel_adapters_and_rfkill(tmp_path):
    (tmp_path / "class/bluetooth/hci0").mkdir(parents=True)
    (tmp_path / "class/bluetooth/hci0:12").mkdir()  # a connection, not a controller
    rf = tmp_path / "class/rfkill/rfkill0"
    rf.mkdir(parents=True)
    for name, text in (("type", "bluetooth\n"), ("soft", "1\n"), ("hard", "0\n"),
                       ("name", "hci0\n")):
        (rf / name).write_text(text)
    assert _kernel_adapters(tmp_path) == (("hci0",), ("hci0",))
    assert _kernel_adapters(tmp_path / "absent") == ((), ())


def test_experimental_from_the_running_daemon_or_main_conf(tmp_path):
    proc = tmp_path / "proc"
    (proc / "42").mkdir(parents=True)
    (proc / "42/comm").write_text("bluetoothd\n")
    (proc / "42/cmdline").write_bytes(b"/usr/libexec/bluetooth/bluetoothd\0")
    conf = tmp_path / "main.conf"
    assert _experimental(proc, conf) is False
    conf.write_text("[General]\nExperimental = true\n")
    assert _experimental(proc, conf) is True
    (proc / "42/cmdline").write_bytes(b"bluetoothd\0-E\0")
    conf.unlink()
    assert _experimental(proc, conf) is True
    assert _experimental(tmp_path / "empty", conf) is None  # not running


def test_wpa_socket_ping(tmp_path):
    ctrl = tmp_path / "wpa"
    ctrl.mkdir()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(ctrl / "p2p-dev-wlan0"))
    other = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    other.bind(str(ctrl / "wlan0"))
    import threading

    def answer():
        data, addr = server.recvfrom(64)
        if data == b"PING":
            server.sendto(b"PONG\n", addr)

    t = threading.Thread(target=answer)
    t.start()
    try:
        w = probe_wpa((tmp_path / "absent", ctrl))
    finally:
        t.join(5)
        server.close()
        other.close()
    assert w.ctrl_dir == ctrl
    assert [(s.name, s.p2p, s.answers) for s in w.sockets] == [
        ("p2p-dev-wlan0", True, True), ("wlan0", False, None)]


def test_multicast_loop_on_loopback_address():
    ok, detail = multicast_loop("127.0.0.1")
    assert isinstance(ok, bool) and (ok or detail)  # never raises; lo may lack MULTICAST


def _doctor(*args, env=None):
    return subprocess.run([sys.executable, "-m", "agent", "doctor", *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, **(env or {})})


def test_doctor_on_this_machine_exits_by_its_findings(tmp_path):
    """Whatever this machine lacks, the exit status is 1 exactly when a finding fails,
    the JSON has every check, and the text is a table with a header."""
    r = _doctor("--json", "--data-dir", str(tmp_path))
    doc = json.loads(r.stdout)
    assert r.returncode == doc["exit"] == (1 if doc["counts"]["fail"] else 0), r.stderr
    assert {f["check"] for f in doc["findings"]} >= {"bluetooth", "wifi-direct", "mdns",
                                                     "disk", "clock", "service"}
    for f in doc["findings"]:
        assert f["status"] == "ok" or (f["why"] and f["fix"]), f
    text = _doctor("--data-dir", str(tmp_path))
    assert text.returncode == r.returncode
    assert "STATUS  CHECK" in text.stdout


@pytest.mark.skipif(Path("/sys/class/bluetooth").exists() and
                    any(Path("/sys/class/bluetooth").iterdir()),
                    reason="this machine has a Bluetooth adapter")
def test_doctor_without_bluetooth_fails_only_when_ble_is_enabled(tmp_path):
    cfg = tmp_path / "shoal.toml"
    cfg.write_text("[ble]\nenabled = true\n")
    r = _doctor("--json", "--config", str(cfg), "--data-dir", str(tmp_path))
    doc = json.loads(r.stdout)
    bt = [f for f in doc["findings"] if f["check"] == "bluetooth"]
    assert r.returncode == 1 and bt[0]["status"] == "fail" and bt[0]["fix"]
    r = _doctor("--json", "--data-dir", str(tmp_path))
    bt = [f for f in json.loads(r.stdout)["findings"] if f["check"] == "bluetooth"]
    assert bt[0]["status"] == "warn"
