"""`shoal doctor`'s judgement on injected machine states: each problem is found, explained
with a fix, and fails the run only when the configuration needs what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.control.render import table
from agent.doctor.checks import CLOCK_FLOOR, Status, diagnose, exit_code
from agent.doctor.report import as_json, as_text
from agent.doctor.state import (
    Adapter,
    Bluetooth,
    BusAccess,
    Clock,
    Disk,
    Expect,
    Firewall,
    Interface,
    Machine,
    Service,
    Wpa,
    WpaSocket,
)

GOOD_BT = Bluetooth(("hci0",), (), BusAccess.OK, "", (Adapter("hci0", "AA:BB", True),),
                    "/usr/libexec/bluetooth/bluetoothd", "5.66", True)
GOOD = Machine(
    bluetooth=GOOD_BT,
    wpa=Wpa("/usr/sbin/wpa_supplicant", Path("/run/wpa_supplicant"),
            (WpaSocket("wlan0"), WpaSocket("p2p-dev-wlan0", True))),
    interfaces=(Interface("wlan0", ("192.168.1.5",), True, True),),
    firewall=Firewall("nft", True, {"nftables": []}),
    disk=Disk(Path("/var/lib/shoal"), 20 * 1024**3, 32 * 1024**3),
    clock=Clock(CLOCK_FLOOR + 1e8, True),
    service=Service(True, "loaded", "active", "running", "enabled", 0,
                    Path("/run/shoal/control.sock"), True))
BLE = Expect(ble=True)


def _by(findings, check):
    return [f for f in findings if f.check == check]


def test_a_healthy_machine_is_all_ok():
    findings = diagnose(GOOD, BLE)
    assert {f.status for f in findings} == {Status.OK}, findings
    assert exit_code(findings) == 0
    assert {f.check for f in findings} >= {"bluetooth", "bluez", "wifi-direct", "mdns",
                                           "firewall", "disk", "clock", "service"}


def _no_radio_machine() -> Machine:
    """The checker's machine: no Bluetooth, no wpa_supplicant, no systemd."""
    return Machine(bluetooth=Bluetooth(bus=BusAccess.NO_BUS, bus_detail="no socket"),
                   wpa=Wpa(), interfaces=GOOD.interfaces, firewall=Firewall(),
                   disk=GOOD.disk, clock=Clock(CLOCK_FLOOR + 1e8), service=Service())


def test_no_bluetooth_no_wpa_with_ble_off_warns_and_exits_zero():
    findings = diagnose(_no_radio_machine(), Expect(ble=False))
    bt = _by(findings, "bluetooth")
    assert [f.status for f in bt] == [Status.WARN]
    assert "no Bluetooth adapter" in bt[0].what and "[ble] enabled = false" in bt[0].what
    assert bt[0].why and bt[0].fix
    wifi = _by(findings, "wifi-direct")
    assert wifi[0].status is Status.WARN and "apt install wpasupplicant" in wifi[0].fix
    assert exit_code(findings) == 0


def test_no_bluetooth_with_ble_on_fails():
    findings = diagnose(_no_radio_machine(), BLE)
    assert _by(findings, "bluetooth")[0].status is Status.FAIL
    assert _by(findings, "bluez")[0].status is Status.FAIL
    assert exit_code(findings) == 1


@pytest.mark.parametrize(("bt", "check", "words"), [
    (Bluetooth(("hci0",), ("hci0",), BusAccess.OK, "", (Adapter("hci0", "", True),),
               "/b", "5.66", True), "bluetooth", "rfkill unblock"),
    (Bluetooth(("hci0",), (), BusAccess.OK, "", (Adapter("hci0", "", False),), "/b", "5.66",
               True), "bluetooth", "bluetoothctl power on"),
    (Bluetooth(("hci0",), (), BusAccess.DENIED, "AccessDenied", (), "/b", "5.66", True),
     "d-bus", "bluetooth group"),
    (Bluetooth(("hci0",), (), BusAccess.NO_SERVICE, "", (), "/b", "5.66", None),
     "d-bus", "systemctl enable --now bluetooth"),
    (Bluetooth(("hci1",), (), BusAccess.OK, "", (Adapter("hci1", "", True),), "/b", "5.66",
               True), "bluetooth", 'adapter = "hci1"'),
])
def test_bluetooth_problems_fail_with_ble_on(bt, check, words):
    m = Machine(**{**GOOD.__dict__, "bluetooth": bt})
    bad = [f for f in diagnose(m, BLE) if f.status is not Status.OK]
    assert [f.check for f in bad] == [check], bad
    assert bad[0].status is Status.FAIL and words in bad[0].fix
    assert exit_code(bad) == 1


def test_old_bluez_and_no_experimental_only_warn():
    bt = Bluetooth(("hci0",), (), BusAccess.OK, "", (Adapter("hci0", "", True),), "/b",
                   "5.55", False)
    bad = [f for f in diagnose(Machine(**{**GOOD.__dict__, "bluetooth": bt}), BLE)
           if f.status is not Status.OK]
    assert [f.status for f in bad] == [Status.WARN, Status.WARN]
    assert "older than 5.62" in bad[0].what
    assert "Experimental = true" in bad[1].fix
    assert exit_code(bad) == 0


@pytest.mark.parametrize(("wpa", "words"), [
    (Wpa("/sbin/wpa_supplicant", None, ()), "ctrl_interface"),
    (Wpa("/sbin/wpa_supplicant", Path("/run/wpa_supplicant"), (WpaSocket("wlan0"),)),
     "p2p_disabled=0"),
    (Wpa("/sbin/wpa_supplicant", Path("/run/wpa_supplicant"),
         (WpaSocket("p2p-dev-wlan0", False, "permission denied"),)), "netdev"),
])
def test_wifi_direct_problems_warn(wpa, words):
    f = _by(diagnose(Machine(**{**GOOD.__dict__, "wpa": wpa}), BLE), "wifi-direct")
    assert f[0].status is Status.WARN and words in f[0].fix


def test_no_lan_interface_fails_and_multicast_off_warns():
    none = diagnose(Machine(**{**GOOD.__dict__, "interfaces": ()}), Expect())
    assert _by(none, "mdns")[0].status is Status.FAIL and exit_code(none) == 1
    off = _by(diagnose(Machine(**{**GOOD.__dict__, "interfaces": (
        Interface("eth0", ("10.0.0.2",), False, None),)}), Expect()), "mdns")
    assert off[0].status is Status.WARN and "multicast on" in off[0].fix
    assert _by(diagnose(Machine(**{**GOOD.__dict__, "interfaces": ()}), Expect(lan=False)),
               "mdns")[0].status is Status.OK


DROP_ALL = {"nftables": [
    {"chain": {"family": "inet", "table": "filter", "name": "input", "hook": "input",
               "policy": "drop"}},
    {"rule": {"family": "inet", "table": "filter", "chain": "input", "expr": [
        {"match": {"op": "in", "left": {"ct": {"key": "state"}},
                   "right": ["established", "related"]}}, {"accept": None}]}},
    {"rule": {"family": "inet", "table": "filter", "chain": "input", "expr": [
        {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "lo"}},
        {"accept": None}]}},
    {"rule": {"family": "inet", "table": "filter", "chain": "input", "expr": [
        {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                   "right": 22}}, {"accept": None}]}},
]}


def test_firewall_dropping_the_port_fails_with_the_rule_to_add():
    m = Machine(**{**GOOD.__dict__, "firewall": Firewall("nft", True, DROP_ALL)})
    fw = _by(diagnose(m, Expect(port=47474)), "firewall")
    assert [f.status for f in fw] == [Status.FAIL, Status.FAIL]
    assert "tcp dport 47474 accept" in fw[0].fix and "udp dport 5353" in fw[1].fix


def test_unreadable_firewall_warns_and_asks_for_root():
    m = Machine(**{**GOOD.__dict__, "firewall": Firewall("nft", False, None,
                                                         "Operation not permitted")})
    fw = _by(diagnose(m, Expect()), "firewall")
    assert fw[0].status is Status.WARN and "sudo shoal doctor" in fw[0].fix


@pytest.mark.parametrize(("free", "status"), [
    (10 * 1024**2, Status.FAIL), (500 * 1024**2, Status.WARN), (None, Status.WARN),
    (20 * 1024**3, Status.OK)])
def test_disk(free, status):
    m = Machine(**{**GOOD.__dict__, "disk": Disk(Path("/d"), free, 32 * 1024**3)})
    assert _by(diagnose(m, Expect()), "disk")[0].status is status


def test_clock_before_2025_fails_and_unsynchronised_warns():
    m = Machine(**{**GOOD.__dict__, "clock": Clock(1e9, True)})
    assert _by(diagnose(m, Expect()), "clock")[0].status is Status.FAIL
    m = Machine(**{**GOOD.__dict__, "clock": Clock(CLOCK_FLOOR + 1e8, False)})
    assert _by(diagnose(m, Expect()), "clock")[0].status is Status.WARN


@pytest.mark.parametrize(("svc", "status", "words"), [
    (Service(True, "not-found"), Status.OK, "shoal service install"),
    (Service(True, "loaded", "failed", "failed", "enabled"), Status.FAIL, "journalctl"),
    (Service(True, "loaded", "inactive", "dead", "enabled"), Status.WARN, "enable --now"),
    (Service(True, "loaded", "active", "running", "enabled", 2, Path("/run/shoal/c"),
             False, "no answer within 3 s"), Status.FAIL, "journalctl"),
])
def test_service_state(svc, status, words):
    f = _by(diagnose(Machine(**{**GOOD.__dict__, "service": svc}), Expect()), "service")[0]
    assert f.status is status
    assert words in (f.fix or f.what)


def test_report_text_and_json():
    findings = diagnose(_no_radio_machine(), BLE)
    text = as_text(findings, table)
    assert text.splitlines()[0].split() == ["STATUS", "CHECK", "FINDING"]
    assert "fix: " in text and "problem(s) block normal operation" in text
    j = as_json(findings)
    assert j["exit"] == 1 and not j["ok"] and j["counts"]["fail"] >= 2
    assert set(j["findings"][0]) == {"check", "status", "what", "why", "fix"}
