"""The doctor's judgement: a :class:`~.state.Machine` and an :class:`~.state.Expect` in,
findings out, no I/O. Each finding says what was found, why it matters and what to do.

Severity follows one rule: **fail** only when something the configuration asks for cannot
work (BLE enabled without an adapter, no interface for the LAN link, a full disk, a service
that does not answer); **warn** for what degrades Shoal or cannot be verified; **ok**
otherwise. `shoal doctor` exits non-zero when any finding fails.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum

from agent.doctor.firewall import Verdict, port_verdict
from agent.doctor.state import BusAccess, Expect, Machine

MDNS_PORT = 5353
MIN_BLUEZ = (5, 62)  # MTU - 3 write size (radio/ble/bleak_central.py); older works, slower
DISK_FAIL = 100 * 1024 * 1024  # below this the store cannot take a single large chunk run
DISK_WARN = 1024**3
CLOCK_FLOOR = 1_735_689_600.0  # 2025-01-01 UTC: a clock before it is certainly wrong


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Finding:
    check: str  # short name: "bluetooth", "firewall"
    status: Status
    what: str  # what was found, one line
    why: str = ""  # why it matters (empty when ok)
    fix: str = ""  # the next step (empty when ok)

    def as_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


def exit_code(findings: Iterable[Finding]) -> int:
    """1 when anything blocks normal operation, else 0 (warnings do not)."""
    return 1 if any(f.status is Status.FAIL for f in findings) else 0


def _ble_off(m: Machine, e: Expect) -> str:
    return "" if e.ble else " (BLE is off in the config: [ble] enabled = false)"


def bluetooth(m: Machine, e: Expect) -> list[Finding]:
    """Adapter present, not blocked, powered; BlueZ reachable on D-Bus."""
    bt = m.bluetooth
    bad = Status.FAIL if e.ble else Status.WARN
    why = ("BLE discovers nearby devices without a shared network and carries pairing"
           + ("; the config enables it, so the agent cannot start its BLE link" if e.ble
              else "; without it only the LAN link works"))
    if not bt.kernel_adapters and not bt.adapters:
        return [Finding("bluetooth", bad, "no Bluetooth adapter found" + _ble_off(m, e), why,
                        "plug in or enable a Bluetooth adapter (a Pi has one built in; "
                        "check `dmesg | grep -i blue`), or keep [ble] enabled = false")]
    out: list[Finding] = []
    names = bt.kernel_adapters or tuple(a.name for a in bt.adapters)
    if e.ble and e.ble_adapter not in names:
        out.append(Finding("bluetooth", Status.FAIL,
                           f"adapter {e.ble_adapter} (ble.adapter) not found; present: "
                           + ", ".join(names), why,
                           f"set [ble] adapter = \"{names[0]}\" in the config"))
    blocked = [n for n in bt.rfkill_blocked if n in names]
    if blocked:
        out.append(Finding("bluetooth", bad, f"{', '.join(blocked)} blocked by rfkill", why,
                           "unblock it: rfkill unblock bluetooth"))
    if bt.bus is BusAccess.OK:
        off = [a.name for a in bt.adapters if a.powered is False]
        if off:
            out.append(Finding("bluetooth", bad, f"{', '.join(off)} is powered off", why,
                               "power it on: bluetoothctl power on (and AutoEnable=true in "
                               "/etc/bluetooth/main.conf to keep it on after reboots)"))
    if not out:
        shown = ", ".join(f"{a.name} {'powered' if a.powered else 'state unknown'}"
                          for a in bt.adapters) or ", ".join(names)
        out.append(Finding("bluetooth", Status.OK, f"adapter present: {shown}"))
    return out


def bluez(m: Machine, e: Expect) -> list[Finding]:
    """bluetoothd installed, new enough, experimental features; D-Bus permissions."""
    bt = m.bluetooth
    bad = Status.FAIL if e.ble else Status.WARN
    out: list[Finding] = []
    if bt.bluetoothd is None and bt.bus is not BusAccess.OK:
        return [Finding("bluez", bad, "bluetoothd (BlueZ) is not installed" + _ble_off(m, e),
                        "Shoal reaches the Bluetooth radio only through BlueZ over D-Bus",
                        "install it: apt install bluez (then systemctl enable --now "
                        "bluetooth)")]
    if bt.version:
        parsed = tuple(int(x) for x in re.findall(r"\d+", bt.version)[:2])
        if len(parsed) == 2 and parsed < MIN_BLUEZ:
            out.append(Finding(
                "bluez", Status.WARN, f"BlueZ {bt.version} is older than "
                f"{MIN_BLUEZ[0]}.{MIN_BLUEZ[1]}",
                "older BlueZ reports a 20-byte write size, so BLE transfers are much slower",
                "upgrade bluez (Debian 12 / Raspberry Pi OS bookworm ship 5.66)"))
    if bt.experimental is False:
        out.append(Finding(
            "bluez", Status.WARN, "bluetoothd runs without experimental features",
            "passive BLE scanning filters advertisements in BlueZ with an advertisement "
            "monitor, which some BlueZ builds expose only with -E; without it Shoal scans "
            "actively (more radio traffic, same results)",
            "set Experimental = true under [General] in /etc/bluetooth/main.conf and "
            "systemctl restart bluetooth"))
    access = {
        BusAccess.NO_BUS: (bad, "no system D-Bus: " + (bt.bus_detail or "socket missing"),
                           "install and start dbus (apt install dbus)"),
        BusAccess.DENIED: (bad, "D-Bus policy denies this user access to BlueZ",
                           "run the agent as the service user (shoal service install adds "
                           "it to the bluetooth group), or add this user to the bluetooth "
                           "group: usermod -aG bluetooth USER"),
        BusAccess.NO_SERVICE: (bad, "bluetoothd is not running (nobody owns org.bluez)",
                               "systemctl enable --now bluetooth"),
        BusAccess.ERROR: (Status.WARN, "could not ask BlueZ over D-Bus: "
                          + (bt.bus_detail or "no answer"),
                          "check: busctl tree org.bluez"),
    }
    if bt.bus in access:
        status, what, fix = access[bt.bus]
        out.append(Finding("d-bus", status, what + _ble_off(m, e),
                           "every BLE operation is a D-Bus call to BlueZ", fix))
    if not out:
        extra = ", experimental on" if bt.experimental else ""
        out.append(Finding("bluez", Status.OK,
                           f"BlueZ {bt.version or '(version unknown)'} reachable on D-Bus"
                           + extra))
    return out


def wifi_direct(m: Machine, e: Expect) -> list[Finding]:
    """wpa_supplicant with a P2P device interface and a control socket we may use."""
    w = m.wpa
    why = ("Wi-Fi Direct links devices over Wi-Fi without an access point; it goes through "
           "wpa_supplicant's P2P control interface (the LAN and BLE links do not need it)")
    if w.binary is None:
        return [Finding("wifi-direct", Status.WARN, "wpa_supplicant is not installed", why,
                        "apt install wpasupplicant (built with P2P on Debian and Raspberry "
                        "Pi OS)")]
    if w.ctrl_dir is None or not w.sockets:
        return [Finding("wifi-direct", Status.WARN,
                        "wpa_supplicant has no control socket (not running, or no "
                        "ctrl_interface)", why,
                        "run it with ctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev "
                        "(e.g. systemctl enable --now wpa_supplicant@wlan0)")]
    p2p = [s for s in w.sockets if s.p2p]
    if not p2p:
        names = ", ".join(s.name for s in w.sockets)
        return [Finding("wifi-direct", Status.WARN,
                        f"no P2P device interface (control sockets: {names})", why,
                        "add p2p_disabled=0 and device_name=... to wpa_supplicant.conf; the "
                        "driver must support P2P (`iw list | grep -A8 'interface modes'` "
                        "shows P2P-client/P2P-GO)")]
    denied = [s for s in p2p if s.answers is False]
    if denied:
        s = denied[0]
        return [Finding("wifi-direct", Status.WARN,
                        f"control socket {s.name} does not answer this user"
                        + (f" ({s.detail})" if s.detail else ""), why,
                        "run as the service user (in group netdev) or add this user to the "
                        "ctrl_interface GROUP of wpa_supplicant: usermod -aG netdev USER")]
    return [Finding("wifi-direct", Status.OK,
                    f"wpa_supplicant P2P ready ({', '.join(s.name for s in p2p)})")]


def multicast(m: Machine, e: Expect) -> list[Finding]:
    """Interfaces mDNS will use, and whether multicast reaches them."""
    if not e.lan:
        return [Finding("mdns", Status.OK, "LAN link off in the config ([lan] enabled = false)")]
    if not m.interfaces:
        return [Finding("mdns", Status.FAIL, "no interface for the LAN link: none is up with "
                        "an IPv4 address" + (" among [lan] interfaces" if e.interfaces_pinned
                                             else ""),
                        "the LAN link discovers and connects peers over IPv4 on these "
                        "interfaces; without one no peer is found on the network",
                        "connect to a network (ip -br addr shows an IPv4 address), or fix "
                        "[lan] interfaces in the config")]
    out: list[Finding] = []
    names = ", ".join(i.name for i in m.interfaces)
    if not e.mdns:
        return [Finding("mdns", Status.OK, f"mDNS off; LAN link on {names}")]
    for i in m.interfaces:
        if i.multicast_flag is False:
            out.append(Finding("mdns", Status.WARN, f"{i.name}: multicast disabled on the "
                               "interface", "mDNS discovery sends to 224.0.0.251; peers "
                               "on this interface will not be discovered",
                               f"ip link set {i.name} multicast on"))
        elif i.multicast_loop is False:
            out.append(Finding("mdns", Status.WARN, f"{i.name}: cannot join a multicast "
                               "group" + (f" ({i.detail})" if i.detail else ""),
                               "mDNS needs to join 224.0.0.251 on each interface",
                               "check the interface and `ip maddr show dev "
                               f"{i.name}`; then run shoal doctor again"))
    if not out:
        out.append(Finding("mdns", Status.OK, f"mDNS on {names}; multicast works locally "
                           "(a switch or access point may still filter it)"))
    return out


def firewall(m: Machine, e: Expect) -> list[Finding]:
    """The agent's TCP port and mDNS's UDP port through the input chains."""
    if not e.lan:
        return []
    fw = m.firewall
    if fw.tool is None:
        return [Finding("firewall", Status.OK, "no nftables tool; no firewall seen")]
    if not fw.readable:
        return [Finding("firewall", Status.WARN, "could not read the firewall rules"
                        + (f" ({fw.detail})" if fw.detail else ""),
                        "a firewall dropping the agent's port hides this device from peers",
                        "run as root to check: sudo shoal doctor")]
    out: list[Finding] = []
    port = e.port
    for proto, p, what in (("tcp", port, "agent port"), ("udp", MDNS_PORT, "mDNS")):
        if p == 0 or (proto == "udp" and not e.mdns):
            continue  # any free port: nothing fixed to open
        v = port_verdict(fw.ruleset, p, proto)
        if v is Verdict.BLOCKED:
            out.append(Finding("firewall", Status.FAIL, f"{proto}/{p} ({what}) is dropped by "
                               "the input rules", "peers cannot reach this agent"
                               if proto == "tcp" else "peers cannot discover this agent",
                               f"allow it: nft add rule inet filter input {proto} dport {p} "
                               f"accept (or: ufw allow {p}/{proto})"))
        elif v is Verdict.RESTRICTED:
            out.append(Finding("firewall", Status.WARN, f"{proto}/{p} ({what}) is accepted "
                               "only from some sources or states",
                               "peers outside those sources cannot reach this agent",
                               "check the rules: nft list chain inet filter input"))
    if not out:
        out.append(Finding("firewall", Status.OK, f"tcp/{port} and udp/{MDNS_PORT} pass the "
                           "input rules" if port else "input rules let peers in"))
    return out


def disk(m: Machine, e: Expect) -> list[Finding]:
    d = m.disk
    if d.free is None:
        return [Finding("disk", Status.WARN, f"could not measure free space at {d.path}",
                        "the store needs room for fetched and published resources",
                        "check the data directory exists and is readable")]
    gib = d.free / 1024**3
    if d.free < DISK_FAIL:
        return [Finding("disk", Status.FAIL, f"only {d.free // 1024**2} MiB free at {d.path}",
                        "fetches, the access log and the Raft log fail when the disk fills",
                        "free space, or move the data directory (--data-dir / node.data_dir) "
                        "to a larger disk")]
    if d.free < DISK_WARN or (d.total and d.free < 0.05 * d.total):
        return [Finding("disk", Status.WARN, f"{gib:.1f} GiB free at {d.path}",
                        "large fetches will fail once the disk fills",
                        "free space or set [store] quota to what the disk can hold")]
    return [Finding("disk", Status.OK, f"{gib:.1f} GiB free at {d.path}")]


def clock(m: Machine, e: Expect) -> list[Finding]:
    c = m.clock
    if c.now < CLOCK_FLOOR:
        return [Finding("clock", Status.FAIL, "the clock is before 2025 (not set)",
                        "delegations and usage periods carry expiry times: a wrong clock "
                        "rejects valid ones and keeps expired ones",
                        "enable time sync: timedatectl set-ntp true (a Pi without a network "
                        "needs an RTC or fake-hwclock)")]
    if c.synchronized is False:
        return [Finding("clock", Status.WARN, "the clock is not synchronised (NTP)",
                        "delegation expiry and usage periods drift between devices",
                        "timedatectl set-ntp true (or install chrony)")]
    return [Finding("clock", Status.OK, "clock set" + (", synchronised" if c.synchronized
                                                        else ""))]


def service(m: Machine, e: Expect) -> list[Finding]:
    s = m.service
    if not s.systemd:
        return [Finding("service", Status.OK, "no systemd here: run the agent with shoal run")]
    if s.load_state in ("", "not-found"):
        return [Finding("service", Status.OK, "not installed as a service (optional): "
                        "sudo shoal service install")]
    restarts = f", {s.n_restarts} restart(s)" if s.n_restarts else ""
    if s.active_state == "failed":
        return [Finding("service", Status.FAIL, f"shoal.service failed ({s.sub_state})",
                        "the agent is not running, so nothing is shared or fetched",
                        "see why: journalctl -u shoal -n 50; then systemctl restart shoal")]
    if s.active_state != "active":
        status = Status.WARN if s.unit_file_state == "enabled" else Status.OK
        return [Finding("service", status, f"shoal.service is {s.active_state or 'inactive'} "
                        f"({s.unit_file_state or 'unknown'})",
                        "the agent runs only while the service is active" if status else "",
                        "systemctl enable --now shoal")]
    if s.answers is False:
        return [Finding("service", Status.FAIL, f"shoal.service is active but its control "
                        f"socket does not answer ({s.detail or s.socket})",
                        "the agent may be hung; the watchdog restarts it within 30 s",
                        "journalctl -u shoal -n 50; systemctl restart shoal")]
    return [Finding("service", Status.OK, f"shoal.service active ({s.unit_file_state}"
                    f"{restarts})" + ("" if s.answers else "; control socket not checked "
                                       "(no permission)"))]


CHECKS: tuple[Callable[[Machine, Expect], list[Finding]], ...] = (
    bluetooth, bluez, wifi_direct, multicast, firewall, disk, clock, service)


def diagnose(m: Machine, e: Expect) -> list[Finding]:
    """Every check's findings, in a fixed order."""
    return [f for check in CHECKS for f in check(m, e)]
