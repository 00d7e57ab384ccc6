"""What the probes found on the machine: plain frozen data, the input of the pure checks.

``None`` always means "could not be determined" (a tool missing, permission denied), which
the checks report as such instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class BusAccess(StrEnum):
    """How a call to BlueZ on the system D-Bus went."""

    OK = "ok"
    NO_BUS = "no-bus"  # no system bus socket (a container, a minimal image)
    DENIED = "denied"  # the bus policy refused this user
    NO_SERVICE = "no-service"  # nobody owns org.bluez: bluetoothd is not running
    ERROR = "error"  # anything else (timeout, a broken reply)


@dataclass(frozen=True)
class Adapter:
    """A Bluetooth controller as BlueZ reports it."""

    name: str  # hci0
    address: str = ""
    powered: bool | None = None


@dataclass(frozen=True)
class Bluetooth:
    kernel_adapters: tuple[str, ...] = ()  # /sys/class/bluetooth
    rfkill_blocked: tuple[str, ...] = ()  # adapters with a soft or hard rfkill block
    bus: BusAccess = BusAccess.ERROR
    bus_detail: str = ""
    adapters: tuple[Adapter, ...] = ()  # from BlueZ over D-Bus (empty unless bus is OK)
    bluetoothd: str | None = None  # path of the daemon binary, None if not installed
    version: str | None = None  # "5.66"
    experimental: bool | None = None  # started with -E/--experimental or Experimental=true


@dataclass(frozen=True)
class WpaSocket:
    """One control socket in wpa_supplicant's ctrl_interface directory."""

    name: str  # wlan0, p2p-dev-wlan0
    answers: bool | None = None  # PING -> PONG; None: not tried
    detail: str = ""  # why it did not answer (permission denied...)

    @property
    def p2p(self) -> bool:
        return self.name.startswith("p2p-dev-")


@dataclass(frozen=True)
class Wpa:
    binary: str | None = None
    ctrl_dir: Path | None = None  # /run/wpa_supplicant when it exists
    sockets: tuple[WpaSocket, ...] = ()


@dataclass(frozen=True)
class Interface:
    """An interface mDNS would use (radio.lan.select_interfaces) and its multicast state."""

    name: str
    addresses: tuple[str, ...] = ()
    multicast_flag: bool | None = None  # IFF_MULTICAST
    multicast_loop: bool | None = None  # a group joined and a datagram looped back (TTL 0)
    detail: str = ""


@dataclass(frozen=True)
class Firewall:
    tool: str | None = None  # "nft" when the nft binary exists
    readable: bool = False  # the ruleset could be listed (needs root)
    ruleset: object = None  # `nft -j list ruleset`, parsed JSON
    detail: str = ""


@dataclass(frozen=True)
class Disk:
    path: Path
    free: int | None = None
    total: int | None = None


@dataclass(frozen=True)
class Clock:
    now: float  # seconds since the epoch, as this machine believes
    synchronized: bool | None = None  # systemd-timesyncd/chrony say NTP is synchronised


@dataclass(frozen=True)
class Service:
    """The systemd unit's state and whether its control socket answers."""

    systemd: bool = False  # systemd is PID 1 and systemctl answers
    load_state: str = ""  # loaded / not-found
    active_state: str = ""  # active / inactive / failed / activating
    sub_state: str = ""
    unit_file_state: str = ""  # enabled / disabled
    n_restarts: int | None = None
    socket: Path | None = None
    answers: bool | None = None  # `status` over the control socket
    detail: str = ""


@dataclass(frozen=True)
class Machine:
    bluetooth: Bluetooth = field(default_factory=Bluetooth)
    wpa: Wpa = field(default_factory=Wpa)
    interfaces: tuple[Interface, ...] = ()
    firewall: Firewall = field(default_factory=Firewall)
    disk: Disk = field(default_factory=lambda: Disk(Path("/")))
    clock: Clock = field(default_factory=lambda: Clock(now=0.0))
    service: Service = field(default_factory=Service)


@dataclass(frozen=True)
class Expect:
    """What the configuration asks of the machine (from the effective Config)."""

    ble: bool = False
    ble_adapter: str = "hci0"
    lan: bool = True
    mdns: bool = True
    port: int = 47474
    interfaces_pinned: bool = False  # lan.interfaces was given
