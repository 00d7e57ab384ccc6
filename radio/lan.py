"""LAN discovery over mDNS / DNS-SD (``_shoal._tcp.local.``) with python-zeroconf.

One :class:`LanDiscovery` advertises this node and browses for other Shoal agents on the
interfaces chosen by :func:`select_interfaces`, and reports them as typed events
(:class:`LanPeerSeen`, :class:`LanPeerGone`) to one **async callback**, awaited in order from a
single task: the consumer never sees events out of order or concurrently, and a slow consumer
delays later events instead of blocking zeroconf's packet handling.

What this module deliberately does not do: decide liveness. mDNS caches records for minutes
(TTLs 120 s for SRV/A, 4500 s for PTR/TXT), so a peer that loses power is *not* reported gone;
the agent's own heartbeats cover that. :class:`LanPeerGone` is only emitted when zeroconf
reports a removal (goodbye packets from an orderly stop, or a record expiring), or when this
node loses every LAN interface.

Timing (measured on the testbed, see ``tests/radio_lan`` and ``bench/discovery_mdns.py``): the
browser starts before our own registration, so already-running peers answer our first query
within ~50-250 ms. Our own registration probes for name conflicts first (RFC 6762 §8.1;
python-zeroconf waits 150-250 ms, then sends 3 probes 500 ms apart), so *we* become visible to
others ~1.2-1.25 s after :meth:`LanDiscovery.start`, inside the 1.5 s target but with little
margin on a Wi-Fi LAN (multicast waits for DTIM beacons there). zeroconf has no legitimate knob
to shorten probing: ``strict=False`` only relaxes name validation and ``allow_name_change``
only decides what a conflict does. ``probe=False`` maps to ``cooperating_responders=True``,
which skips probing and announces at once (~0.07 s median) but detects no conflict at all;
that is tolerable only because our instance names embed the device's short id, so a collision
means the same identity running twice on one LAN. The default keeps probing, with
``allow_name_change=True`` so a conflict renames us (``-2``, logged as a warning) instead of
failing start-up.

Interfaces are followed by **polling** netifaces every ``poll_interval`` seconds: one
``getifaddrs`` call per interface, microseconds of work, portable to every platform netifaces
supports, and no netlink/pyroute2 dependency or privileged socket. A few seconds of latency on
a cable being plugged in is acceptable for discovery. On a change, zeroconf >= 0.150 reconciles
its sockets in place (``async_update_interfaces``) and we re-announce the new address set, so
peers see one updated :class:`LanPeerSeen`; older zeroconf is rebuilt, which peers see as Gone
then Seen. A removed address stays in peers' caches until its 120 s TTL runs out.

IPv4 only: IPv6 link-local addresses need scope ids (``%eth0``) in every address the agent
dials, which is not worth the complexity while every Shoal LAN has IPv4 (link-local 169.254/16
included).

This module never imports :mod:`agent`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import fnmatch
import ipaddress
import logging
import re
import socket
import struct
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import netifaces
from zeroconf import DNSQuestionType, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from radio.mesh import DEFAULT_MESH, MESH_RE, check_mesh

__all__ = [
    "DEFAULT_EXCLUDED_PREFIXES",
    "DEFAULT_MESH",
    "SERVICE_TYPE",
    "LanDiscovery",
    "LanEvent",
    "LanEventCallback",
    "LanInterface",
    "LanPeerGone",
    "LanPeerSeen",
    "MalformedTxtError",
    "PeerTxt",
    "build_txt",
    "instance_name",
    "order_addresses",
    "parse_txt",
    "select_interfaces",
]

_log = logging.getLogger(__name__)

SERVICE_TYPE = "_shoal._tcp.local."

# Interfaces that are (almost always) host-internal: container bridges and veths, VM bridges,
# VPN tunnels. Advertising on them leaks the node into containers/VPNs and gives peers
# addresses they cannot reach. An explicit ``interfaces=[...]`` list overrides this.
DEFAULT_EXCLUDED_PREFIXES: tuple[str, ...] = (
    "docker",
    "br-",
    "veth",
    "virbr",
    "lxcbr",
    "lxdbr",
    "cni",
    "flannel",
    "tun",
    "tap",
    "wg",
    "zt",
    "tailscale",
    "ppp",  # mobile data: multicast there only costs money
    "wwan",
)

INSTANCE_MAX_BYTES = 63  # one DNS label (RFC 6763 §4.1.1)
NAME_MAX_BYTES = 63  # TXT ``n``
SHORT_ID_RE = re.compile(r"[A-Za-z0-9-]{1,32}")
_DIGITS_RE = re.compile(rb"[0-9]{1,5}")
_TXT_MAX_KEYS = 32
_MAX_ADDRESSES = 16
_RESOLVE_TIMEOUT_MS = 3000
_IFF_UP = 0x1
_SIOCGIFFLAGS = 0x8913


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class LanPeerSeen:
    """A Shoal agent is advertised on the LAN, or its advertisement changed.

    ``addresses`` are IPv4 strings, best first (same subnet as one of our interfaces first,
    loopback only when nothing else is offered); ``interface`` is our interface that shares a
    subnet with ``addresses[0]``, if any. Emitted again only when a field changes.
    """

    short_id: str
    name: str
    addresses: list[str]
    port: int
    version: int
    interface: str | None = None


@dataclass(frozen=True, slots=True)
class LanPeerGone:
    """zeroconf reported the peer's advertisement removed (goodbye or expiry)."""

    short_id: str


LanEvent = LanPeerSeen | LanPeerGone
LanEventCallback = Callable[[LanEvent], Awaitable[None]]


# --------------------------------------------------------------------------- names and TXT


class MalformedTxtError(ValueError):
    """A peer's TXT record does not follow the Shoal format; the record is ignored."""


@dataclass(frozen=True, slots=True)
class PeerTxt:
    version: int
    short_id: str
    port: int
    name: str
    mesh: str = DEFAULT_MESH


def _clean_text(text: str, max_bytes: int) -> str:
    """NFC, control/format characters to spaces, whitespace collapsed, cut to ``max_bytes``.

    Format characters (Cf) go too: bidi overrides and zero-width joiners let a name look like
    another one in a terminal.
    """
    text = unicodedata.normalize("NFC", text)
    text = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in text)
    text = " ".join(text.split())
    raw = text.encode("utf-8")[:max_bytes]
    return raw.decode("utf-8", errors="ignore").rstrip()


def _check_short_id(short_id: str) -> str:
    if not SHORT_ID_RE.fullmatch(short_id):
        raise ValueError(f"short_id must be 1-32 characters of A-Z, a-z, 0-9, '-': {short_id!r}")
    return short_id


def instance_name(name: str, short_id: str) -> str:
    """``<device name> (<short id>)`` as a DNS-SD instance label of at most 63 UTF-8 bytes.

    The id is always kept whole (it makes the label unique); the device name is cleaned and
    truncated on a character boundary. Dots and backslashes become ``-`` because
    python-zeroconf splits names on dots without escaping them.
    """
    suffix = f" ({_check_short_id(short_id)})"
    base = _clean_text(
        name.replace(".", "-").replace("\\", "-"), INSTANCE_MAX_BYTES - len(suffix.encode())
    )
    return (base or "shoal") + suffix


def build_txt(
    *, version: int, short_id: str, port: int, name: str, mesh: str = DEFAULT_MESH
) -> dict[str, str]:
    """The TXT properties we publish (``v``, ``id``, ``port``, ``n``, ``mesh``).

    ``mesh`` is always published, the default one included, so a capture shows it plainly.
    """
    if not 0 <= version <= 0xFFFF:
        raise ValueError(f"version must be 0..65535: {version}")
    if not 1 <= port <= 0xFFFF:
        raise ValueError(f"port must be 1..65535: {port}")
    return {
        "v": str(version),
        "id": _check_short_id(short_id),
        "port": str(port),
        "n": _clean_text(name, NAME_MAX_BYTES) or "shoal",
        "mesh": check_mesh(mesh),
    }


def _txt_int(props: Mapping[bytes, bytes | None], key: bytes, lo: int, hi: int) -> int:
    raw = props.get(key)
    # int() alone would accept "+5", " 5" and non-ASCII digits.
    if raw is None or not _DIGITS_RE.fullmatch(raw):
        raise MalformedTxtError(f"{key.decode()}: not a number: {raw!r}")
    value = int(raw)
    if not lo <= value <= hi:
        raise MalformedTxtError(f"{key.decode()}: out of range: {value}")
    return value


def parse_txt(props: Mapping[bytes, bytes | None]) -> PeerTxt:
    """Strictly parse another agent's TXT properties; unknown keys are ignored.

    Raises :class:`MalformedTxtError` for anything missing, oversized or not in the expected
    form, so a hostile or broken record can only be ignored, never crash discovery.
    """
    if len(props) > _TXT_MAX_KEYS:
        raise MalformedTxtError(f"too many TXT keys: {len(props)}")
    version = _txt_int(props, b"v", 0, 0xFFFF)
    port = _txt_int(props, b"port", 1, 0xFFFF)
    raw_id = props.get(b"id")
    try:
        short_id = raw_id.decode("ascii") if raw_id is not None else ""
    except UnicodeDecodeError:
        short_id = ""
    if not SHORT_ID_RE.fullmatch(short_id):
        raise MalformedTxtError(f"id: invalid: {raw_id!r}")
    raw_name = props.get(b"n")
    if raw_name is None or not 1 <= len(raw_name) <= NAME_MAX_BYTES:
        raise MalformedTxtError(f"n: missing or longer than {NAME_MAX_BYTES} bytes")
    try:
        name = raw_name.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedTxtError("n: not UTF-8") from exc
    if any(unicodedata.category(c)[0] == "C" for c in name):
        raise MalformedTxtError("n: control or format characters")
    return PeerTxt(version=version, short_id=short_id, port=port, name=name, mesh=_txt_mesh(props))


def _txt_mesh(props: Mapping[bytes, bytes | None]) -> str:
    """``mesh``: absent means an agent from before mesh IDs, i.e. the default mesh; present
    but empty, valueless, too long or outside the allowed characters is malformed."""
    if b"mesh" not in props:
        return DEFAULT_MESH
    raw = props[b"mesh"]
    try:
        mesh = raw.decode("ascii") if raw is not None else ""
    except UnicodeDecodeError:
        mesh = ""
    if not MESH_RE.fullmatch(mesh):
        raise MalformedTxtError(f"mesh: invalid: {raw!r}")
    return mesh


# --------------------------------------------------------------------------- interfaces


@dataclass(frozen=True, slots=True, order=True)
class LanInterface:
    """One IPv4 address on one chosen interface."""

    name: str
    address: str
    netmask: str

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"{self.address}/{self.netmask}", strict=False)

    @property
    def is_loopback(self) -> bool:
        return ipaddress.IPv4Address(self.address).is_loopback


def _is_up(ifname: str) -> bool:
    """IFF_UP via SIOCGIFFLAGS (netifaces does not report flags); unknown counts as up.

    An ioctl on a socket rather than /sys/class/net, so it answers for the network namespace
    of the calling thread.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            req = struct.pack("16sH14x", ifname.encode()[:15], 0)
            flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, req))[1]
    except OSError:
        return True
    return bool(flags & _IFF_UP)


def select_interfaces(
    interfaces: Sequence[str] = (), *, include_loopback: bool = False
) -> tuple[LanInterface, ...]:
    """The IPv4 addresses to advertise and listen on, sorted.

    With ``interfaces`` (names or fnmatch patterns such as ``"wg*"``) exactly those are used,
    loopback or virtual included. Otherwise every interface except loopback and
    :data:`DEFAULT_EXCLUDED_PREFIXES`. ``include_loopback`` adds loopback in both cases (tests
    on one machine). Interfaces that are down or have no IPv4 address are skipped.
    """
    chosen: list[LanInterface] = []
    for ifname in netifaces.interfaces():
        try:
            entries = netifaces.ifaddresses(ifname).get(netifaces.AF_INET, [])
        except ValueError:  # vanished between the two calls
            continue
        addrs: list[LanInterface] = []
        for entry in entries:
            addr, mask = entry.get("addr"), entry.get("netmask") or "255.255.255.255"
            try:
                iface = LanInterface(ifname, str(ipaddress.IPv4Address(addr)), mask)
                iface.network  # noqa: B018 - validates the netmask
            except (ValueError, TypeError):
                continue
            addrs.append(iface)
        if not addrs:
            continue
        loopback = ifname == "lo" or all(a.is_loopback for a in addrs)
        if loopback and include_loopback:
            pass
        elif interfaces:
            if not any(fnmatch.fnmatchcase(ifname, pat) for pat in interfaces):
                continue
        elif loopback or ifname.startswith(DEFAULT_EXCLUDED_PREFIXES):
            continue
        if not _is_up(ifname):
            continue
        chosen.extend(addrs)
    return tuple(sorted(set(chosen)))


def order_addresses(
    addresses: Iterable[str], local: Sequence[LanInterface]
) -> tuple[list[str], str | None]:
    """Best-first usable IPv4 addresses of a peer and the local interface that reaches the first.

    Same-subnet addresses come first. Loopback addresses are kept only when the peer offers
    nothing else: a remote peer that also advertises 127.0.0.1 must not make us dial ourselves.
    """
    usable: list[ipaddress.IPv4Address] = []
    for text in addresses:
        try:
            ip = ipaddress.IPv4Address(text)
        except ValueError:
            continue
        if ip.is_unspecified or ip.is_multicast or ip in usable:
            continue
        usable.append(ip)
    remote = [ip for ip in usable if not ip.is_loopback] or usable
    nets = [(iface.network, iface.name) for iface in local]

    def via(ip: ipaddress.IPv4Address) -> str | None:
        return next((name for net, name in nets if ip in net), None)

    remote.sort(key=lambda ip: via(ip) is None)  # stable: keeps the peer's order otherwise
    ordered = [str(ip) for ip in remote[:_MAX_ADDRESSES]]
    return ordered, (via(remote[0]) if remote else None)


# --------------------------------------------------------------------------- discovery


@dataclass(slots=True)
class _Peer:
    event: LanPeerSeen
    names: set[str] = field(default_factory=set)


class LanDiscovery:
    """Advertise this node and report other Shoal agents on the LAN.

    ``on_event`` is awaited once per event, in order, from one task owned by this object;
    exceptions it raises are logged and do not stop discovery. Events of our own ``short_id``
    are never reported. No events are delivered after :meth:`stop` returns.

    Only agents of our own ``mesh`` are reported (an advertisement without a mesh counts as
    :data:`DEFAULT_MESH`): the filter sits here rather than in each consumer so that nothing
    built on discovery (the agent's dialler, benchmarks, test drivers) can dial another mesh
    by forgetting a check, and a foreign agent never occupies a peer slot. An agent that
    moves to another mesh under the same service name is reported gone.
    """

    # zeroconf >= 0.150 can reconcile sockets in place; older versions are rebuilt, which
    # makes peers see a goodbye and a fresh announcement (a Gone/Seen flap) on every change.
    _update_in_place = hasattr(AsyncZeroconf, "async_update_interfaces")

    def __init__(
        self,
        name: str,
        short_id: str,
        port: int,
        version: int,
        *,
        interfaces: Sequence[str] = (),
        include_loopback: bool = False,
        mesh: str = DEFAULT_MESH,
        on_event: LanEventCallback,
        probe: bool = True,
        poll_interval: float = 3.0,
        stop_timeout: float = 3.0,
    ) -> None:
        self._short_id = _check_short_id(short_id)
        self._instance = instance_name(name, short_id)
        self._mesh = check_mesh(mesh)
        self._txt = build_txt(version=version, short_id=short_id, port=port, name=name, mesh=mesh)
        self._port = port
        self._interfaces = tuple(interfaces)
        self._include_loopback = include_loopback
        self._on_event = on_event
        self._probe = probe
        self._poll_interval = poll_interval
        self._stop_timeout = stop_timeout

        self._selected: tuple[LanInterface, ...] = ()
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._peers: dict[str, _Peer] = {}  # by short id
        self._by_name: dict[str, str] = {}  # service name -> short id
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        self._events: asyncio.Queue[LanEvent] = asyncio.Queue()
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False

    # ------------------------------------------------------------------ public API

    @property
    def instance_name(self) -> str:
        """Our advertised instance label (may gain a ``-2`` suffix after a name conflict)."""
        if self._info is not None:
            return self._info.name[: -len(SERVICE_TYPE) - 1]
        return self._instance

    @property
    def mesh(self) -> str:
        """The mesh we advertise and the only one we report peers of."""
        return self._mesh

    @property
    def interfaces(self) -> tuple[LanInterface, ...]:
        """The interface addresses currently advertised on."""
        return self._selected

    async def start(self) -> None:
        """Start browsing, then register (probing ~1.2 s unless ``probe=False``).

        Returns once we are announced on the current interfaces, or at once when no interface
        qualifies yet or zeroconf cannot open its sockets there (logged): the poller brings
        discovery up when an interface appears and retries failures every ``poll_interval``.
        """
        if self._running:
            raise RuntimeError("LanDiscovery already started")
        self._running = True
        self._peers.clear()
        self._by_name.clear()
        self._events = asyncio.Queue()
        self._tasks = [asyncio.create_task(self._dispatch(), name="lan-events")]
        try:
            async with self._lock:
                await self._reconcile()
        except OSError:
            _log.warning("lan: cannot start mDNS yet; retrying", exc_info=True)
        except BaseException:
            await self.stop()
            raise
        if not self._selected:
            _log.info("lan: no usable interface yet; waiting for one")
        self._tasks.append(asyncio.create_task(self._poll(), name="lan-poll"))

    async def stop(self) -> None:
        """Send goodbyes, close zeroconf and end our tasks, within ``stop_timeout`` seconds."""
        if not self._running:
            return
        self._running = False
        for task in self._tasks:
            if task.get_name() == "lan-poll":
                task.cancel()
        try:
            async with asyncio.timeout(self._stop_timeout):
                async with self._lock:
                    await self._tear_down(goodbye=True)
        except TimeoutError:
            _log.warning("lan: stop timed out after %.1f s", self._stop_timeout)
            await self._tear_down(goodbye=False)  # if the lock was never ours
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def update(self, *, port: int) -> None:
        """Advertise a new TCP port (SRV and TXT) and re-announce."""
        self._txt = build_txt(
            version=int(self._txt["v"]),
            short_id=self._short_id,
            port=port,
            name=self._txt["n"],
            mesh=self._mesh,
        )
        self._port = port
        async with self._lock:
            if self._zc is not None and self._info is not None:
                self._info = self._make_info(self._info.name)
                await self._zc.async_update_service(self._info)

    # ------------------------------------------------------------------ zeroconf lifecycle

    def _select(self) -> tuple[LanInterface, ...]:
        return select_interfaces(self._interfaces, include_loopback=self._include_loopback)

    def _bind_addresses(self) -> list[str | int]:
        # One socket per interface: a second address on the same interface would make the
        # multicast group join fail with EADDRINUSE.
        first: dict[str, str] = {}
        for iface in self._selected:
            first.setdefault(iface.name, iface.address)
        return list(first.values())

    def _make_info(self, service_name: str) -> AsyncServiceInfo:
        return AsyncServiceInfo(
            SERVICE_TYPE,
            service_name,
            addresses=[socket.inet_aton(i.address) for i in self._selected],
            port=self._port,
            properties=self._txt,
            server=f"shoal-{self._short_id.lower()}.local.",
        )

    async def _bring_up(self) -> None:
        """Create zeroconf on the selected interfaces, start the browser, register."""
        zc = AsyncZeroconf(interfaces=self._bind_addresses(), ip_version=IPVersion.V4Only)
        self._zc = zc
        # QM questions: answers come back by multicast. The QU default of the first query asks
        # for a unicast reply to port 5353, which the kernel may hand to another mDNS socket
        # on this host (avahi, a second agent), costing a full second until the next query.
        self._browser = AsyncServiceBrowser(
            zc.zeroconf,
            [SERVICE_TYPE],
            handlers=[self._on_change],
            question_type=DNSQuestionType.QM,
        )
        info = self._make_info(f"{self._instance}.{SERVICE_TYPE}")
        await zc.async_register_service(
            info, allow_name_change=True, cooperating_responders=not self._probe
        )
        self._info = info
        if info.name != f"{self._instance}.{SERVICE_TYPE}":
            _log.warning("lan: name conflict; advertising as %r", info.name)
        _log.info(
            "lan: advertising %r on %s",
            info.name,
            ", ".join(f"{i.name}={i.address}" for i in self._selected),
        )

    async def _tear_down(self, *, goodbye: bool) -> None:
        """Cancel resolutions, stop the browser, send goodbyes if asked, close zeroconf.

        The close runs in ``finally`` so that a stop timing out during the goodbyes still
        releases the sockets.
        """
        for task in self._resolving.values():
            task.cancel()
        self._resolving.clear()
        self._dirty.clear()
        zc, browser = self._zc, self._browser
        self._zc = self._browser = self._info = None
        if zc is None:
            return
        try:
            if browser is not None:
                with contextlib.suppress(Exception):
                    await browser.async_cancel()
            if goodbye:
                try:
                    await zc.async_unregister_all_services()  # 3 goodbyes 125 ms apart
                except Exception:  # the interface may be gone already
                    _log.debug("lan: goodbye failed", exc_info=True)
        finally:
            registry = zc.zeroconf.registry
            registry.async_remove(registry.async_get_service_infos())  # no goodbyes in close
            with contextlib.suppress(Exception):
                await zc.async_close()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                async with self._lock:
                    await self._reconcile()
            except Exception:  # keep polling; the next round retries
                _log.exception("lan: interface update failed")

    async def _reconcile(self) -> None:
        """Make zeroconf match the current interface selection (called under the lock).

        On failure everything is torn down and the selection forgotten, so the next poll
        tries again from scratch instead of believing it is up to date.
        """
        selected = self._select()
        if selected == self._selected and (self._zc is not None or not selected):
            return
        if self._running and self._selected != selected:
            _log.info(
                "lan: interfaces changed: %s -> %s",
                [i.address for i in self._selected],
                [i.address for i in selected],
            )
        self._selected = selected
        try:
            if not selected:
                await self._tear_down(goodbye=True)
                for short_id in list(self._peers):  # no LAN left: nobody is visible here
                    self._forget(short_id)
            elif self._zc is None:
                await self._bring_up()
            elif self._update_in_place and self._info is not None:
                # New records first (sent on the senders we have), then the socket reconcile,
                # which re-announces the registry, now current, on any new sender.
                self._info = self._make_info(self._info.name)
                await self._zc.async_update_service(self._info)
                await self._zc.async_update_interfaces(
                    interfaces=self._bind_addresses(), ip_version=IPVersion.V4Only
                )
            else:
                await self._tear_down(goodbye=True)
                await self._bring_up()
        except BaseException:
            await self._tear_down(goodbye=False)
            self._selected = ()
            raise

    # ------------------------------------------------------------------ browsing

    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        """zeroconf handler: runs in the event loop, must not block; resolution is a task."""
        if self._info is not None and name == self._info.name:
            return
        if state_change is ServiceStateChange.Removed:
            task = self._resolving.pop(name, None)
            if task is not None:
                task.cancel()
            self._drop_name(name)
            return
        if name in self._resolving:
            self._dirty.add(name)  # resolve again once the running one ends
            return
        self._resolving[name] = asyncio.create_task(self._resolve(zeroconf, name))

    async def _resolve(self, zeroconf: Zeroconf, name: str) -> None:
        try:
            while True:
                self._dirty.discard(name)
                info = AsyncServiceInfo(SERVICE_TYPE, name)
                if not info.load_from_cache(zeroconf):
                    await info.async_request(
                        zeroconf, _RESOLVE_TIMEOUT_MS, question_type=DNSQuestionType.QM
                    )
                self._accept(name, info)
                if name not in self._dirty:
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.debug("lan: resolving %r failed", name, exc_info=True)
        finally:
            if self._resolving.get(name) is asyncio.current_task():
                del self._resolving[name]

    def _accept(self, name: str, info: AsyncServiceInfo) -> None:
        try:
            txt = parse_txt(info.properties or {})
            if info.port != txt.port:
                raise MalformedTxtError(f"SRV port {info.port} != TXT port {txt.port}")
        except MalformedTxtError as exc:
            _log.debug("lan: ignoring %r: %s", name, exc)
            return
        if txt.short_id == self._short_id:
            return
        if txt.mesh != self._mesh:
            _log.debug(
                "lan: ignoring %r (id %s): mesh %r, not ours (%r)",
                name,
                txt.short_id,
                txt.mesh,
                self._mesh,
            )
            self._drop_name(name)  # it may have been ours until now
            return
        addresses, via = order_addresses(info.parsed_addresses(IPVersion.V4Only), self._selected)
        if not addresses:
            _log.debug("lan: %r has no usable IPv4 address yet", name)
            return
        event = LanPeerSeen(txt.short_id, txt.name, addresses, txt.port, txt.version, via)
        old_id = self._by_name.get(name)
        if old_id is not None and old_id != txt.short_id and old_id in self._peers:
            self._peers[old_id].names.discard(name)
            if not self._peers[old_id].names:
                self._forget(old_id)
        self._by_name[name] = txt.short_id
        peer = self._peers.get(txt.short_id)
        if peer is None:
            self._peers[txt.short_id] = _Peer(event, {name})
        else:
            peer.names.add(name)
            if peer.event == event:
                return
            peer.event = event
        self._events.put_nowait(event)

    def _drop_name(self, name: str) -> None:
        """Stop attributing service *name* to its peer; forget the peer when no name is left."""
        short_id = self._by_name.pop(name, None)
        if short_id is not None and short_id in self._peers:
            peer = self._peers[short_id]
            peer.names.discard(name)
            if not peer.names:
                self._forget(short_id)

    def _forget(self, short_id: str) -> None:
        peer = self._peers.pop(short_id, None)
        if peer is None:
            return
        for name in peer.names:
            self._by_name.pop(name, None)
        self._events.put_nowait(LanPeerGone(short_id))

    async def _dispatch(self) -> None:
        while True:
            event = await self._events.get()
            try:
                await self._on_event(event)
            except Exception:
                _log.exception("lan: event callback failed for %r", event)
