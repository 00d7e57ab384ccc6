"""Wi-Fi Direct through wpa_supplicant's control socket (asyncio, no D-Bus, no wpa_cli).

The control interface is a Unix *datagram* socket (``ctrl_interface=DIR``: one socket per
interface, ``DIR/<ifname>``; P2P commands go to the P2P device interface, ``p2p-dev-wlan0`` when
the driver has one, else ``wlan0``). A client binds its own socket, connects to the server's,
and exchanges one datagram per request and reply. ``ATTACH`` turns a socket into an event
monitor: from then on wpa_supplicant sends it ``<level>EVENT ...`` datagrams at any time. Like
wpa_cli we use **two sockets**, so an event can never be taken for a reply: :class:`WpaControl`
(request/reply) and :class:`WpaMonitor` (ATTACHed). Each is bound to its own path inside a
private directory (mode 0700, so no other local user can send us forged events) and the path
is removed on close.

What "gone" looks like: wpa_supplicant announces ``CTRL-EVENT-TERMINATING`` on an orderly exit;
otherwise (killed, restarted) the next send fails with ``ECONNREFUSED`` / ``ENOENT``. The
monitor therefore PINGs on its own socket every ``ping_interval`` and ends its event streams
with :class:`WpaGone` when a PONG does not come back.

Every reply and event is parsed by :mod:`radio.wpa_parse` (bounded, hostile-input safe).
GO credentials (passphrase/PSK) appear in ``GroupStarted``; the agent sends them only over the
encrypted BLE session and never logs them (``GroupStarted.__repr__`` hides them).

This module never imports :mod:`agent`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Literal

from radio.base import NotConnectedError, RadioError, RadioTimeoutError
from radio.wpa_parse import (
    MAX_DATAGRAM,
    ControlEvent,
    GoNegotiationFailure,
    GroupFormationFailure,
    GroupRemoved,
    GroupStarted,
    P2pPeer,
    SupplicantTerminating,
    WpaCommandError,
    WpaProtocolError,
    check_ifname,
    check_mac,
    parse_event,
    parse_kv_lines,
    parse_peer,
    reply_text,
    safe_text,
)

__all__ = [
    "DEFAULT_CTRL_DIR",
    "EventStream",
    "GroupFormationError",
    "P2pUnsupportedError",
    "WifiDirect",
    "WpaControl",
    "WpaGone",
    "WpaMonitor",
    "WpaPermissionError",
    "WpaSocketMissingError",
    "WpaTimeoutError",
    "check_ok",
    "ctrl_path_for",
    "wait_group",
]

_log = logging.getLogger("shoal.wifi_direct")
DEFAULT_CTRL_DIR = "/run/wpa_supplicant"
MAX_PEERS = 256
_PIN_RE = re.compile(r"[0-9]{8}")
_counter = itertools.count()


class WpaSocketMissingError(RadioError):
    """No wpa_supplicant listens at the control socket path."""


class WpaPermissionError(RadioError):
    """The control socket exists but this user may not talk to it."""


class P2pUnsupportedError(RadioError):
    """wpa_supplicant answers, but without P2P (not built in, disabled, or no driver support)."""


class WpaGone(NotConnectedError):
    """wpa_supplicant went away (exited, restarted, or its socket was removed) mid-use."""


class WpaTimeoutError(RadioTimeoutError):
    """wpa_supplicant did not answer (or an expected event did not come) in time."""


class GroupFormationError(RadioError):
    """A group did not form: negotiation or provisioning failed, or the group vanished."""

    def __init__(self, message: str, event: ControlEvent | None = None) -> None:
        super().__init__(message)
        self.event = event


def _connect_error(path: str, exc: OSError) -> RadioError:
    if isinstance(exc, FileNotFoundError):
        return WpaSocketMissingError(
            f"no wpa_supplicant control socket at {path}: start wpa_supplicant with "
            f"ctrl_interface={os.path.dirname(path) or DEFAULT_CTRL_DIR} (and -i <wifi iface>), "
            f"or name the right socket (DIR/p2p-dev-<iface> when the driver has a P2P device)")
    if isinstance(exc, PermissionError):
        return WpaPermissionError(
            f"permission denied on {path}: set ctrl_interface=DIR={os.path.dirname(path)} "
            f"GROUP=netdev in wpa_supplicant.conf, add this user to that group "
            f"(sudo usermod -aG netdev $USER), then restart wpa_supplicant")
    if isinstance(exc, ConnectionRefusedError):
        return WpaSocketMissingError(
            f"{path} exists but nothing answers (stale socket: wpa_supplicant is not "
            f"running): start it, e.g. sudo systemctl start wpa_supplicant")
    return WpaSocketMissingError(f"cannot reach {path}: {safe_text(str(exc))}")


class _Socket:
    """One bound + connected datagram socket to the supplicant, in a private directory."""

    def __init__(self, server_path: str, client_dir: str | None) -> None:
        self.server_path = server_path
        self._own_dir = client_dir is None
        self._dir = client_dir or tempfile.mkdtemp(prefix="shoal-wpa-")
        if self._own_dir:
            os.chmod(self._dir, 0o700)
        self.local_path = os.path.join(self._dir, f"c{os.getpid()}-{next(_counter)}")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        try:
            self.sock.bind(self.local_path)
        except OSError as e:  # our side: not the supplicant's fault, say so
            self.close()
            raise RadioError(f"cannot bind a client socket at {self.local_path}: "
                             f"{e.strerror}; give a short, writable client directory") from e
        try:
            self.sock.connect(server_path)
        except OSError as e:
            self.close()
            raise _connect_error(server_path, e) from e

    def send(self, command: str) -> None:
        data = command.encode("utf-8")
        try:
            self.sock.send(data)
        except (ConnectionRefusedError, FileNotFoundError, ConnectionResetError) as e:
            raise WpaGone(f"wpa_supplicant at {self.server_path} went away "
                          f"(restarted or stopped); reconnect once it is back") from e
        except BlockingIOError as e:  # its receive queue is full: it is wedged
            raise WpaTimeoutError(f"wpa_supplicant at {self.server_path} is not reading") from e

    async def recv(self) -> bytes:
        data = await asyncio.get_running_loop().sock_recv(self.sock, MAX_DATAGRAM + 1)
        if len(data) > MAX_DATAGRAM:
            raise WpaProtocolError(f"datagram larger than {MAX_DATAGRAM} bytes")
        return data

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.local_path)
        if self._own_dir:
            shutil.rmtree(self._dir, ignore_errors=True)


class WpaControl:
    """Request/reply on one control socket. One request at a time (a lock); a request that
    times out reopens the socket, so a late reply can never answer the next request."""

    def __init__(self, path: str, *, timeout: float = 5.0, client_dir: str | None = None) -> None:
        self.path = path
        self.timeout = timeout
        self._client_dir = client_dir
        self._sock: _Socket | None = None
        self._lock = asyncio.Lock()

    def open(self) -> None:
        if self._sock is None:
            self._sock = _Socket(self.path, self._client_dir)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def request(self, command: str, *, timeout: float | None = None) -> str:
        """Send *command*, return the reply text (not yet interpreted)."""
        if "\n" in command or "\x00" in command or len(command) > 1024:
            raise ValueError("a control command is one short line")
        async with self._lock:
            self.open()
            assert self._sock is not None
            try:
                self._sock.send(command)
            except WpaGone:
                self.close()  # the next request reconnects (to a restarted supplicant)
                raise
            try:
                async with asyncio.timeout(self.timeout if timeout is None else timeout):
                    while True:
                        data = await self._sock.recv()
                        if not data.startswith(b"<"):  # an event on a non-ATTACHed socket
                            return reply_text(data)
            except TimeoutError as e:
                self.close()  # a late reply must not answer the next request
                raise WpaTimeoutError(f"wpa_supplicant did not answer "
                                      f"{safe_text(command.split(' ')[0])} in time") from e

    async def ok(self, command: str) -> None:
        """Send *command* and require ``OK``."""
        check_ok(command, await self.request(command))


def check_ok(command: str, reply: str) -> None:
    """``OK`` passes; ``FAIL…`` raises WpaCommandError; ``UNKNOWN COMMAND`` for a P2P command
    means the build lacks P2P."""
    text = reply.strip()
    if text == "OK":
        return
    if text == "UNKNOWN COMMAND" and command.startswith("P2P_"):
        raise P2pUnsupportedError(_NO_P2P)
    raise WpaCommandError(command, text)


_NO_P2P = ("wpa_supplicant has no P2P: use a build with CONFIG_P2P=y (Debian's has it), remove "
           "p2p_disabled=1 from its config, and check `iw list` lists P2P-GO and P2P-client "
           "under supported interface modes")


class EventStream:
    """A bounded queue of events from a :class:`WpaMonitor`, registered on creation (so no
    event between subscribing and the command that causes it is missed). Iterating ends by
    raising :class:`WpaGone` once the supplicant is gone."""

    def __init__(self, monitor: WpaMonitor, maxsize: int) -> None:
        self._monitor = monitor
        self.queue: asyncio.Queue[ControlEvent | WpaGone] = asyncio.Queue(maxsize)
        self.dropped = 0
        monitor._streams.add(self)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> ControlEvent:
        item = await self.queue.get()
        if isinstance(item, WpaGone):
            self.queue.put_nowait(item)  # every later read fails fast too
            raise item
        return item

    def close(self) -> None:
        self._monitor._streams.discard(self)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _put(self, item: ControlEvent | WpaGone) -> None:
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()  # the oldest event is the least useful
            self.dropped += 1
        self.queue.put_nowait(item)


class WpaMonitor:
    """The ATTACHed socket: reads events, fans them out to :class:`EventStream` s, PINGs."""

    def __init__(self, path: str, *, timeout: float = 5.0, ping_interval: float = 5.0,
                 client_dir: str | None = None) -> None:
        self.path = path
        self.timeout = timeout
        self.ping_interval = ping_interval
        self._client_dir = client_dir
        self._sock: _Socket | None = None
        self._streams: set[EventStream] = set()
        self._reader: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._reply: asyncio.Queue[str] = asyncio.Queue(4)
        self.gone: WpaGone | None = None
        self.malformed = 0

    async def start(self) -> None:
        self._sock = _Socket(self.path, self._client_dir)
        self._reader = asyncio.create_task(self._read(), name="wpa-monitor")
        try:
            self._sock.send("ATTACH")
            try:
                reply = await asyncio.wait_for(self._reply.get(), self.timeout)
            except TimeoutError as e:
                raise WpaTimeoutError("wpa_supplicant did not answer ATTACH in time") from e
            if reply.strip() != "OK":
                raise WpaCommandError("ATTACH", reply.strip())
        except BaseException:
            await self.close()
            raise
        if self.ping_interval > 0:
            self._pinger = asyncio.create_task(self._ping(), name="wpa-ping")

    def stream(self, maxsize: int = 64) -> EventStream:
        stream = EventStream(self, maxsize)
        if self.gone is not None:
            stream._put(self.gone)
        return stream

    async def close(self) -> None:
        for task in (self._pinger, self._reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._pinger = self._reader = None
        if self._sock is not None:
            if self.gone is None:
                with contextlib.suppress(RadioError):
                    self._sock.send("DETACH")  # best effort: the socket goes anyway
            self._sock.close()
            self._sock = None

    async def _read(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = await self._sock.recv()
            except WpaProtocolError as e:
                self.malformed += 1
                _log.warning("wpa_supplicant event dropped: %s", e)
                continue
            except OSError as e:
                self._set_gone(WpaGone(f"wpa_supplicant monitor socket failed: {e.strerror}"))
                return
            if not data.startswith(b"<"):
                with contextlib.suppress(asyncio.QueueFull, WpaProtocolError):
                    self._reply.put_nowait(reply_text(data))
                continue
            try:
                _, event = parse_event(data)
            except WpaProtocolError as e:
                self.malformed += 1
                _log.warning("wpa_supplicant event dropped: %s", e)
                continue
            if isinstance(event, SupplicantTerminating):
                self._set_gone(WpaGone("wpa_supplicant is terminating"))
                return
            for stream in list(self._streams):
                stream._put(event)

    async def _ping(self) -> None:
        assert self._sock is not None
        while self.gone is None:
            await asyncio.sleep(self.ping_interval)
            try:
                self._sock.send("PING")
                reply = await asyncio.wait_for(self._reply.get(), self.timeout)
            except (WpaGone, WpaTimeoutError, TimeoutError):
                self._set_gone(WpaGone(f"wpa_supplicant at {self.path} stopped answering"))
                return
            if reply.strip() != "PONG":
                _log.warning("unexpected PING reply: %s", safe_text(reply, 40))

    def _set_gone(self, gone: WpaGone) -> None:
        if self.gone is None:
            self.gone = gone
            _log.warning("wpa_supplicant gone: %s", gone)
            for stream in list(self._streams):
                stream._put(gone)


class WifiDirect:
    """P2P operations on one wpa_supplicant interface (``ctrl_path`` is its socket).

    ``open()`` connects both sockets and checks that P2P is there (``STATUS`` names a
    ``p2p_device_address`` only then); the typed errors carry the fix in their message.
    """

    def __init__(self, ctrl_path: str, *, timeout: float = 5.0, ping_interval: float = 5.0,
                 client_dir: str | None = None) -> None:
        self.ctrl = WpaControl(ctrl_path, timeout=timeout, client_dir=client_dir)
        self.monitor = WpaMonitor(ctrl_path, timeout=timeout, ping_interval=ping_interval,
                                  client_dir=client_dir)
        self.device_address: str | None = None

    async def open(self) -> None:
        self.ctrl.open()
        try:
            status = parse_kv_lines(await self.ctrl.request("STATUS"))
            if "p2p_device_address" not in status:
                raise P2pUnsupportedError(_NO_P2P)
            self.device_address = check_mac(status["p2p_device_address"])
            await self.monitor.start()
        except BaseException:
            self.ctrl.close()
            raise

    async def close(self) -> None:
        await self.monitor.close()
        self.ctrl.close()

    async def __aenter__(self) -> WifiDirect:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def events(self, maxsize: int = 64) -> EventStream:
        """A new stream of typed events (close it, or use it as a context manager)."""
        return self.monitor.stream(maxsize)

    # ---------------------------------------------------------------------- discovery
    async def find(self, timeout_s: int | None = None) -> None:
        """Start P2P device discovery (``P2P_FIND``); found peers arrive as DeviceFound."""
        cmd = "P2P_FIND" if timeout_s is None else f"P2P_FIND {int(timeout_s)}"
        await self.ctrl.ok(cmd)

    async def stop_find(self) -> None:
        await self.ctrl.ok("P2P_STOP_FIND")

    async def peers(self) -> list[P2pPeer]:
        """The supplicant's peer table: ``P2P_PEER FIRST``, then ``NEXT-<addr>`` until FAIL
        (bounded by :data:`MAX_PEERS`; a repeated address ends the walk, so a confused or
        hostile server cannot make us loop)."""
        out: list[P2pPeer] = []
        seen: set[str] = set()
        cmd = "P2P_PEER FIRST"
        while len(out) < MAX_PEERS:
            reply = await self.ctrl.request(cmd)
            if reply.strip() == "UNKNOWN COMMAND":
                raise P2pUnsupportedError(_NO_P2P)
            peer = parse_peer(reply)
            if peer is None or peer.address in seen:
                break
            seen.add(peer.address)
            out.append(peer)
            cmd = f"P2P_PEER NEXT-{peer.address}"
        return out

    # ---------------------------------------------------------------------- groups
    async def connect(self, peer: str, method: str = "pbc", *, join: bool = False,
                      go_intent: int | None = None, persistent: bool = False,
                      freq: int | None = None) -> str | None:
        """``P2P_CONNECT``: start GO negotiation (or join the peer's group with ``join``).

        ``method`` is ``"pbc"``, an 8-digit PIN, or ``"pin"`` (the supplicant generates one and
        it is returned). The group itself is reported later (GroupStarted or a failure).
        """
        peer = check_mac(peer)
        if method not in ("pbc", "pin") and not _PIN_RE.fullmatch(method):
            raise ValueError("method must be 'pbc', 'pin' or an 8-digit PIN")
        parts = ["P2P_CONNECT", peer, method]
        if persistent:
            parts.append("persistent")
        if join:
            parts.append("join")
        if go_intent is not None:
            if not 0 <= go_intent <= 15:
                raise ValueError("go_intent is 0..15")
            parts.append(f"go_intent={go_intent}")
        if freq is not None:
            parts.append(f"freq={int(freq)}")
        cmd = " ".join(parts)
        reply = (await self.ctrl.request(cmd)).strip()
        if method == "pin" and _PIN_RE.fullmatch(reply):
            return reply
        check_ok(cmd, reply)
        return None

    async def group_add(self, *, persistent: bool = True, freq: int | None = None) -> None:
        """``P2P_GROUP_ADD``: an autonomous group with us as GO (no negotiation)."""
        parts = ["P2P_GROUP_ADD"] + (["persistent"] if persistent else [])
        if freq is not None:
            parts.append(f"freq={int(freq)}")
        elif not persistent:
            parts.append("freq=2")  # any 2.4 GHz channel; old supplicants refuse a bare command
        await self.ctrl.ok(" ".join(parts))

    async def group_remove(self, ifname: str) -> None:
        await self.ctrl.ok(f"P2P_GROUP_REMOVE {check_ifname(ifname)}")

    async def start_go(self, *, persistent: bool = True, freq: int | None = None,
                       timeout: float = 15.0) -> GroupStarted:
        """Autonomous (persistent) GO; returns its GroupStarted (SSID + passphrase)."""
        with self.events() as stream:
            await self.group_add(persistent=persistent, freq=freq)
            return await wait_group(stream, timeout, role="GO")

    async def join(self, go_address: str, method: str = "pbc", *,
                   timeout: float = 30.0) -> GroupStarted:
        """Join the group whose GO has P2P device address *go_address*, as a client."""
        with self.events() as stream:
            await self.connect(go_address, method, join=True)
            return await wait_group(stream, timeout, role="client")

    async def form_group(self, peer: str, method: str = "pbc", *, go_intent: int = 7,
                         persistent: bool = False, timeout: float = 30.0) -> GroupStarted:
        """GO negotiation with *peer*; returns the group whatever role we got."""
        with self.events() as stream:
            await self.connect(peer, method, go_intent=go_intent, persistent=persistent)
            return await wait_group(stream, timeout)


async def wait_group(stream: EventStream, timeout: float,
                     role: Literal["GO", "client"] | None = None) -> GroupStarted:
    """The next GroupStarted on *stream*; failures become :class:`GroupFormationError`
    whose message says why, so a caller (and the user) can tell what to retry."""
    try:
        async with asyncio.timeout(timeout):
            async for event in stream:
                if isinstance(event, GroupStarted) and (role is None or event.role == role):
                    return event
                if isinstance(event, GoNegotiationFailure):
                    raise GroupFormationError(
                        f"GO negotiation failed (P2P status {event.status}"
                        f"{': peer rejected or did not answer' if event.status else ''})",
                        event)
                if isinstance(event, GroupFormationFailure):
                    raise GroupFormationError(
                        f"group formation failed ({event.reason})", event)
                if isinstance(event, GroupRemoved) and event.reason == "FORMATION_FAILED":
                    raise GroupFormationError("group removed: formation failed", event)
    except TimeoutError as e:
        raise WpaTimeoutError(f"no group within {timeout} s") from e
    raise WpaGone("event stream ended")  # pragma: no cover - streams end by raising


def ctrl_path_for(ifname: str, ctrl_dir: str = DEFAULT_CTRL_DIR) -> str:
    """The socket of *ifname* in *ctrl_dir* (the P2P device interface if it has one)."""
    return str(Path(ctrl_dir) / check_ifname(ifname))

