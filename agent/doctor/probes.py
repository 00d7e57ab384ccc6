"""Ask the machine what the checks need: each probe is small, bounded in time and output,
and turns "cannot tell" into ``None`` rather than an exception.

Nothing here sends a packet off the machine: the multicast probe uses TTL 0 (looped back by
the kernel, never transmitted), the wpa_supplicant probe is a ``PING`` on its Unix socket,
and BlueZ is only asked for its object tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import struct
import time
from pathlib import Path

from agent.daemon import SERVICE_CONTROL_SOCKET, SERVICE_UNIT
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

RUN_TIMEOUT = 3.0  # seconds any helper command may take
MAX_OUTPUT = 4 * 1024 * 1024  # bytes read from any helper command
_SIOCGIFFLAGS = 0x8913
_IFF_MULTICAST = 0x1000
_PROBE_GROUP = "239.255.77.77"  # administratively scoped; TTL 0 keeps it on this host
SBIN = ("/usr/sbin", "/sbin", "/usr/libexec/bluetooth", "/usr/lib/bluetooth")


def find_binary(name: str) -> str | None:
    """*name* on $PATH or in the sbin/libexec directories a non-root $PATH often lacks."""
    found = shutil.which(name)
    if found:
        return found
    for d in SBIN:
        p = Path(d) / name
        if os.access(p, os.X_OK):
            return str(p)
    return None


async def run(*argv: str) -> tuple[int, str, str] | None:
    """(exit status, stdout, stderr) of a helper command; None if it is missing or hangs."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={**os.environ, "LC_ALL": "C"})
    except OSError:
        return None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return None
    return (proc.returncode or 0, out[:MAX_OUTPUT].decode(errors="replace"),
            err[:4096].decode(errors="replace"))


# ------------------------------------------------------------------------------ bluetooth
def _kernel_adapters(sysfs: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """hci* controllers the kernel has, and those rfkill blocks."""
    names: list[str] = []
    with contextlib.suppress(OSError):
        names = sorted(p.name for p in (sysfs / "class/bluetooth").iterdir()
                       if re.fullmatch(r"hci\d+", p.name))
    blocked: list[str] = []
    with contextlib.suppress(OSError):
        for r in (sysfs / "class/rfkill").iterdir():
            with contextlib.suppress(OSError, ValueError):
                if (r / "type").read_text().strip() != "bluetooth":
                    continue
                if int((r / "soft").read_text()) or int((r / "hard").read_text()):
                    blocked.append((r / "name").read_text().strip())
    return tuple(names), tuple(sorted(blocked))


async def _bluez_objects() -> tuple[BusAccess, str, tuple[Adapter, ...]]:
    """Ask org.bluez for its adapters over the system bus (the D-Bus permission check)."""
    addr = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/run/dbus/system_bus_socket")
    path = addr.partition("unix:path=")[2].split(",")[0]
    if path and not Path(path).exists():
        return BusAccess.NO_BUS, f"{path} does not exist", ()
    try:
        from dbus_fast import BusType, Message, MessageType
        from dbus_fast.aio import MessageBus
    except ImportError:  # bleak's D-Bus library is Linux-only
        return BusAccess.ERROR, "dbus-fast is not installed", ()
    bus = None
    try:
        bus = await asyncio.wait_for(MessageBus(bus_type=BusType.SYSTEM).connect(), 2.0)
        reply = await asyncio.wait_for(bus.call(Message(
            destination="org.bluez", path="/", interface="org.freedesktop.DBus.ObjectManager",
            member="GetManagedObjects")), 2.0)
    except TimeoutError:
        return BusAccess.ERROR, "no answer within 2 s", ()
    except OSError as e:
        kind = BusAccess.DENIED if isinstance(e, PermissionError) else BusAccess.NO_BUS
        return kind, e.strerror or str(e), ()
    except Exception as e:  # dbus-fast raises its own errors for auth and parsing
        return BusAccess.ERROR, f"{type(e).__name__}: {e}"[:200], ()
    finally:
        if bus is not None:
            bus.disconnect()
    if reply is None or reply.message_type == MessageType.ERROR:
        name = (reply.error_name or "") if reply is not None else ""
        if name.endswith(("AccessDenied", "Error.AuthFailed")):
            return BusAccess.DENIED, name, ()
        if name.endswith(("ServiceUnknown", "NameHasNoOwner")):
            return BusAccess.NO_SERVICE, name, ()
        return BusAccess.ERROR, name or "no reply", ()
    adapters: list[Adapter] = []
    objects = reply.body[0] if reply.body and isinstance(reply.body[0], dict) else {}
    for obj_path, ifaces in sorted(objects.items()):
        props = ifaces.get("org.bluez.Adapter1") if isinstance(ifaces, dict) else None
        if not isinstance(props, dict):
            continue
        powered = getattr(props.get("Powered"), "value", None)
        address = getattr(props.get("Address"), "value", "")
        adapters.append(Adapter(str(obj_path).rsplit("/", 1)[-1],
                                str(address)[:17], powered if isinstance(powered, bool)
                                else None))
    return BusAccess.OK, "", tuple(adapters)


def _experimental(proc: Path, main_conf: Path) -> bool | None:
    """Whether the running bluetoothd has experimental features (None: it is not running)."""
    running = False
    with contextlib.suppress(OSError):
        for p in proc.iterdir():
            if not p.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if (p / "comm").read_text().strip() != "bluetoothd":
                    continue
                running = True
                args = (p / "cmdline").read_bytes()[:4096].split(b"\0")
                if b"-E" in args or b"--experimental" in args:
                    return True
    if not running:
        return None
    with contextlib.suppress(OSError):
        text = main_conf.read_text(errors="replace")[:65536]
        if re.search(r"^\s*Experimental\s*=\s*true\b", text, re.M | re.I):
            return True
    return False


async def probe_bluetooth(sysfs: Path = Path("/sys"), proc: Path = Path("/proc")
                          ) -> Bluetooth:
    kernel, blocked = _kernel_adapters(sysfs)
    bus, detail, adapters = await _bluez_objects()
    daemon = find_binary("bluetoothd")
    version = None
    if daemon:
        r = await run(daemon, "--version")
        if r and r[0] == 0 and re.fullmatch(r"\d+\.\d+(\.\d+)?", r[1].strip()):
            version = r[1].strip()
    return Bluetooth(kernel, blocked, bus, detail, adapters, daemon, version,
                     _experimental(proc, Path("/etc/bluetooth/main.conf")))


# ------------------------------------------------------------------------------ wpa
def _ping(path: Path) -> tuple[bool, str]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        try:
            s.bind("")  # autobind: an abstract address wpa_supplicant can answer
            s.connect(str(path))
            s.send(b"PING")
            return s.recv(64).startswith(b"PONG"), ""
        except PermissionError:
            return False, "permission denied"
        except (OSError, TimeoutError) as e:
            return False, getattr(e, "strerror", None) or type(e).__name__


def probe_wpa(dirs: tuple[Path, ...] = (Path("/run/wpa_supplicant"),
                                        Path("/var/run/wpa_supplicant"))) -> Wpa:
    binary = find_binary("wpa_supplicant")
    for d in dirs:
        try:
            entries = sorted(p for p in d.iterdir() if p.is_socket())[:16]
        except OSError:
            continue
        sockets = []
        for p in entries:
            if p.name.startswith("p2p-dev-"):
                ok, detail = _ping(p)
                sockets.append(WpaSocket(p.name, ok, detail))
            else:
                sockets.append(WpaSocket(p.name))
        return Wpa(binary, d, tuple(sockets))
    return Wpa(binary, None, ())


# ------------------------------------------------------------------------------ network
def _flags(ifname: str) -> int | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            req = struct.pack("16sH14x", ifname.encode()[:15], 0)
            return int(struct.unpack("16sH14x",
                                     fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, req))[1])
    except OSError:
        return None


def multicast_loop(address: str) -> tuple[bool, str]:
    """Join a group on the interface with *address*, send to it with TTL 0 and loop on,
    and see the datagram come back: the kernel part of mDNS works there."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            s.bind(("", 0))
            port = s.getsockname()[1]
            s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                         socket.inet_aton(_PROBE_GROUP) + socket.inet_aton(address))
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(address))
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            token = os.urandom(8)
            s.sendto(token, (_PROBE_GROUP, port))
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                if s.recv(64) == token:
                    return True, ""
            return False, "no datagram looped back"
    except (OSError, TimeoutError) as e:
        return False, getattr(e, "strerror", None) or type(e).__name__


def probe_interfaces(e: Expect, pinned: tuple[str, ...]) -> tuple[Interface, ...]:
    if not e.lan:
        return ()
    from radio.lan import select_interfaces

    by_name: dict[str, list[str]] = {}
    for i in select_interfaces(pinned):
        by_name.setdefault(i.name, []).append(i.address)
    out = []
    for name, addrs in sorted(by_name.items()):
        flags = _flags(name)
        mc = None if flags is None else bool(flags & _IFF_MULTICAST)
        loop, detail = multicast_loop(addrs[0]) if mc and e.mdns else (None, "")
        out.append(Interface(name, tuple(addrs), mc, loop, detail))
    return tuple(out)


async def probe_firewall() -> Firewall:
    nft = find_binary("nft")
    if nft is None:
        return Firewall()
    r = await run(nft, "-j", "list", "ruleset")
    if r is None:
        return Firewall("nft", False, None, "nft did not answer")
    if r[0] != 0:
        return Firewall("nft", False, None, " ".join(r[2].split())[:160] or f"exit {r[0]}")
    try:
        return Firewall("nft", True, json.loads(r[1] or '{"nftables": []}'))
    except ValueError:
        return Firewall("nft", False, None, "unreadable nft output")


# ------------------------------------------------------------------------------ host
def probe_disk(path: Path) -> Disk:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return Disk(path)
    return Disk(path, st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)


async def probe_clock() -> Clock:
    now = time.time()
    tool = shutil.which("timedatectl")
    r = await run(tool, "show", "-p", "NTPSynchronized", "--value") if tool else None
    synced = {"yes": True, "no": False}.get(r[1].strip()) if r and r[0] == 0 else None
    return Clock(now, synced)


async def probe_service(socket_path: Path = SERVICE_CONTROL_SOCKET) -> Service:
    if not Path("/run/systemd/system").is_dir() or not shutil.which("systemctl"):
        return Service()
    r = await run("systemctl", "show", SERVICE_UNIT, "--property",
                  "LoadState,ActiveState,SubState,UnitFileState,NRestarts")
    if r is None or r[0] != 0:
        return Service(detail="systemctl did not answer")
    props = dict(line.partition("=")[::2] for line in r[1].splitlines() if "=" in line)
    restarts = props.get("NRestarts", "")
    s = Service(True, props.get("LoadState", ""), props.get("ActiveState", ""),
                props.get("SubState", ""), props.get("UnitFileState", ""),
                int(restarts) if restarts.isdigit() else None, socket_path)
    if s.active_state != "active":
        return s
    from agent.control.client import call_simple
    from agent.control.errors import ControlError
    from agent.errors import ErrorKind

    try:
        await asyncio.wait_for(call_simple(socket_path, "status"), 3.0)
    except ControlError as e:
        if e.error_kind is ErrorKind.REFUSED:  # permission denied: not ours to ask
            return s
        return _with(s, False, str(e))
    except (TimeoutError, OSError) as e:
        return _with(s, False, "no answer within 3 s" if isinstance(e, TimeoutError)
                     else e.strerror or str(e))
    return _with(s, True, "")


def _with(s: Service, answers: bool, detail: str) -> Service:
    import dataclasses

    return dataclasses.replace(s, answers=answers, detail=detail[:200])


async def probe_machine(e: Expect, data_dir: Path, pinned: tuple[str, ...] = ()) -> Machine:
    """Everything the checks need, the slow probes (subprocesses, D-Bus) concurrently."""
    bt, fw, clk, svc = await asyncio.gather(probe_bluetooth(), probe_firewall(), probe_clock(),
                                            probe_service())
    loop = asyncio.get_running_loop()
    wpa = await loop.run_in_executor(None, probe_wpa)
    ifaces = await loop.run_in_executor(None, probe_interfaces, e, pinned)
    return Machine(bt, wpa, ifaces, fw, probe_disk(data_dir), clk, svc)
