"""The node: composition root that wires every subsystem and owns every task.

One asyncio TaskGroup owns all long-running tasks, so shutdown is one place: stop accepting,
say goodbye to peers, cancel, and give up after a bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from agent import PROTOCOL_VERSION, __version__
from agent.authority.service import AuthorityService
from agent.bandwidth import BandwidthGate, LinkScheduler
from agent.config import Config
from agent.control.errors import ControlError
from agent.control.server import ControlServer, Reply
from agent.log import kv
from agent.peer import wire
from agent.peer.connection import ChunkData, PeerConnection, PeerGone, Refused, RemoteError
from agent.peer.table import PeerTable
from agent.security.identity import device_id_for, format_device_id, load_or_create_identity
from agent.security.pairing import PairingBook, PairingError, format_code, normalize_code
from agent.security.session import SessionError, open_channel
from agent.security.trust import TrustStore
from agent.store import ContentStore, StoreError
from agent.transfer.fetcher import Fetch, FetchError, choose_version, find_offers
from radio.lan import LanDiscovery, LanPeerGone, LanPeerSeen

log = logging.getLogger("shoal.node")
MAX_HELLO = 1024
DIAL_GRACE = 0.3  # s the larger ID waits for the smaller one to dial (avoids twin sessions)


def parse_address(text: str, default_port: int) -> tuple[str, int]:
    """'host', 'host:port' or '[v6]:port' -> (host, port); ValueError with a clear message."""
    t = text.strip()
    if t.startswith("["):
        host, _, rest = t[1:].partition("]")
        port = rest.lstrip(":") or str(default_port)
    elif t.count(":") == 1:
        host, port = t.split(":")
    else:
        host, port = t, str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a peer address: {text!r} (expected HOST or HOST:PORT)")
    return host, int(port)


def parse_hello(raw: bytes) -> dict[str, Any]:
    """Validate the peer's handshake payload: small JSON with known keys only."""
    if len(raw) > MAX_HELLO:
        raise ValueError("hello too large")
    obj = json.loads(raw)
    if not isinstance(obj, dict) or not set(obj) <= {"v", "name", "port", "agent"}:
        raise ValueError("hello has unknown keys")
    if not isinstance(obj.get("v"), int) or obj["v"] < 1:
        raise ValueError("hello has no protocol version")
    name = obj.get("name", "?")
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        raise ValueError("hello has a bad name")
    port = obj.get("port", 0)
    if not isinstance(port, int) or not 0 <= port < 65536:
        raise ValueError("hello has a bad port")
    return obj


def _notify_systemd(state: str) -> None:
    """sd_notify without a dependency: one datagram to $NOTIFY_SOCKET."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(state.encode(), addr)


def _lock_data_dir(data_dir: Path) -> int:
    """One agent per data dir: two would race on the store's crash recovery."""
    fd = os.open(data_dir / "agent.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ControlError(f"another agent is already running with data dir {data_dir}") from None
    return fd


class Node:
    """A running Shoal agent."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        data_dir = cfg.node.data_dir
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_fd = _lock_data_dir(data_dir)
        self.identity, created = load_or_create_identity(data_dir)
        if created:
            log.info("created device identity", extra=kv(id=self.identity.display_id))
        self.trust = TrustStore(data_dir)
        self.store = ContentStore(
            data_dir / "store",
            avg_chunk_size=cfg.store.avg_chunk_size,
            quota_bytes=cfg.store.quota or None,
        )
        self.peers = PeerTable()
        self.gate = BandwidthGate(LinkScheduler.from_config(cfg.bandwidth))
        self.pairing = PairingBook(cfg.pairing.window_seconds, cfg.pairing.max_pending)
        self.lan_port: int | None = None
        self.ready = asyncio.Event()
        self.stopping = asyncio.Event()
        self.started = time.monotonic()
        self._tg: asyncio.TaskGroup | None = None
        self._conns: set[PeerConnection] = set()
        self._public_chunks: set[bytes] = set()
        self._pair_changed = asyncio.Condition()
        self._pair_conns: dict[str, PeerConnection] = {}
        self.short_id = self.identity.hex_id[:16]
        self.discovery: LanDiscovery | None = None
        self.ble: Any = None  # agent.links.ble.BleLink when [ble] enabled
        self._lan_seen: dict[str, tuple[LanPeerSeen, float]] = {}  # short id -> (event, first)
        self._dial_state: dict[str, tuple[int, float]] = {}  # short id -> (failures, next try)
        self._dialing: set[str] = set()
        self._refresh_public_index()
        self.authority: AuthorityService | None = None
        if cfg.authority.enabled:
            self.authority = AuthorityService(self, hysteresis=cfg.authority.hysteresis)

    # ----------------------------------------------------------------- lifecycle
    async def run(self) -> None:
        """Run until stop() or SIGTERM/SIGINT; then shut down within the configured bound."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stop)
        control = ControlServer(self.cfg.node.control_socket_path, self._commands())
        server: asyncio.AbstractServer | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                await control.start()
                if self.cfg.lan.enabled:
                    server = await asyncio.start_server(
                        self._on_tcp, self.cfg.lan.listen, self.cfg.lan.port,
                        reuse_address=True, limit=1 << 20,
                    )
                    self.lan_port = server.sockets[0].getsockname()[1]
                if self.cfg.lan.enabled and self.cfg.lan.mdns:
                    await self._start_discovery()
                if self.cfg.ble.enabled:
                    await self._start_ble()
                tg.create_task(self._housekeeping(), name="housekeeping")
                if self.authority is not None:
                    tg.create_task(self.authority.run(), name="shoal:authority")
                self.ready.set()
                _notify_systemd("READY=1\nSTATUS=running")
                log.info("agent ready", extra=kv(
                    id=self.identity.short_id, name=self.cfg.node.name, port=self.lan_port,
                    control=self.cfg.node.control_socket_path,
                    startup_ms=round((time.monotonic() - self.started) * 1000),
                ))
                await self.stopping.wait()
                _notify_systemd("STOPPING=1")
                log.info("agent stopping")
                if server is not None:
                    server.close()
                if self.discovery is not None:
                    with contextlib.suppress(Exception):
                        await self.discovery.stop()
                if self.ble is not None:
                    with contextlib.suppress(Exception):
                        await self.ble.stop()
                await control.close()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.cfg.node.shutdown_timeout):
                        await asyncio.gather(
                            *(c.close("agent shutting down") for c in list(self._conns)),
                            return_exceptions=True,
                        )
                for task in asyncio.all_tasks():
                    if task.get_name().startswith("shoal:") or task.get_name() == "housekeeping":
                        task.cancel()
        finally:
            await control.close()
            if self.authority is not None:
                self.authority.close()
            self._tg = None
            log.info("agent stopped")

    def stop(self) -> None:
        self.stopping.set()

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        """Run *coro* as a task of the node's TaskGroup, guarded: a failure in one
        background job (a send to a peer that just vanished) is logged, not fatal."""
        if self._tg is None:
            raise RuntimeError("node is not running")
        return self._tg.create_task(self._guarded(coro, name), name=f"shoal:{name}")

    @staticmethod
    async def _guarded(coro: Any, name: str) -> Any:
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except (ConnectionError, OSError, TimeoutError, SessionError) as e:
            log.debug("background task ended", extra=kv(task=name, reason=e))
        except Exception:
            log.exception("background task failed", extra=kv(task=name))
        return None

    async def _housekeeping(self) -> None:
        """Heartbeats and liveness: mDNS records linger for minutes, so peers prove they live."""
        interval = self.cfg.lan.heartbeat_interval
        watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        if watchdog_usec:
            interval = min(interval, watchdog_usec / 2e6)
        while True:
            await asyncio.sleep(interval)
            if watchdog_usec:
                _notify_systemd("WATCHDOG=1")
            try:
                self._check_peers()
            except Exception:  # never let bookkeeping take the agent down
                log.exception("housekeeping failed")

    def _check_peers(self) -> None:
        """Heartbeat live sessions, mark silent peers unreachable, redial known ones."""
        now = time.monotonic()
        self.pairing.expire(time.time())
        for info in self.peers.all():
            conn = info.connection
            if conn is None or conn.closed.is_set():
                info.reachable = False
                continue
            if now - conn.last_seen > self.cfg.lan.peer_timeout:
                info.reachable = False
                log.info("peer unreachable", extra=kv(peer=info.name))
                self._spawn(conn.close("heartbeat timeout"), "close")
                continue
            info.reachable = True
            self._spawn(self._heartbeat(conn), "heartbeat")
        for short_id in list(self._lan_seen):
            self._maybe_dial(short_id)

    async def _heartbeat(self, conn: PeerConnection) -> None:
        with contextlib.suppress(PeerGone, ConnectionError, TimeoutError, RemoteError):
            rtt = await conn.ping(timeout=self.cfg.lan.peer_timeout)
            info = self.peers.get(conn.peer_id)
            if info is not None:
                info.rtt = rtt

    # ----------------------------------------------------------------- BLE
    async def _start_ble(self) -> None:
        """BLE is the control plane; a missing adapter or D-Bus must not stop the agent."""
        from agent.links.ble import BleLink

        try:
            self.ble = BleLink(self, self.cfg.ble)
            await self.ble.start()
        except Exception as e:
            log.warning("BLE unavailable", extra=kv(adapter=self.cfg.ble.adapter, reason=e))
            self.ble = None

    # ----------------------------------------------------------------- LAN discovery
    async def _start_discovery(self) -> None:
        assert self.lan_port is not None
        try:
            self.discovery = LanDiscovery(
                self.cfg.node.name, self.short_id, self.lan_port, PROTOCOL_VERSION,
                interfaces=self.cfg.lan.interfaces,
                include_loopback=self.cfg.lan.include_loopback,
                on_event=self._on_lan_event,
            )
            await self.discovery.start()
        except (OSError, ValueError) as e:  # no usable interface must not stop the agent
            log.warning("mDNS discovery unavailable", extra=kv(reason=e))
            self.discovery = None

    async def _on_lan_event(self, event: LanPeerSeen | LanPeerGone) -> None:
        if isinstance(event, LanPeerGone):
            self._lan_seen.pop(event.short_id, None)
            return
        first = self._lan_seen.get(event.short_id, (event, time.monotonic()))[1]
        self._lan_seen[event.short_id] = (event, first)
        log.debug("mdns peer seen", extra=kv(peer=event.name, addrs=event.addresses,
                                             port=event.port))
        self._dial_state.pop(event.short_id, None)  # fresh news: retry at once
        self._maybe_dial(event.short_id)

    def lan_endpoints(self) -> list[tuple[str, int]]:
        """Where peers can reach our TCP listener: the handover target for BLE peers."""
        if self.lan_port is None:
            return []
        listen = self.cfg.lan.listen
        if listen not in ("0.0.0.0", "::", ""):
            return [(listen, self.lan_port)]
        if self.discovery is not None:
            return [(i.address, self.lan_port) for i in self.discovery.interfaces]
        from radio.lan import select_interfaces

        chosen = select_interfaces(self.cfg.lan.interfaces,
                                   include_loopback=self.cfg.lan.include_loopback)
        return [(i.address, self.lan_port) for i in chosen]

    def live_connection(self, peer_hex_prefix: str) -> PeerConnection | None:
        for c in self._conns:
            if c.peer_id.hex().startswith(peer_hex_prefix) and not c.closed.is_set():
                return c
        return None

    def live_connections(self) -> list[PeerConnection]:
        """One live session per peer (the newest when both sides dialled at once)."""
        best: dict[bytes, PeerConnection] = {}
        for info in self.peers.all():
            c = info.connection
            if c is not None and not c.closed.is_set():
                best[c.peer_id] = c
        for c in self._conns:
            if not c.closed.is_set():
                best.setdefault(c.peer_id, c)
        return list(best.values())

    def _maybe_dial(self, short_id: str) -> None:
        """Open a session to a peer found by mDNS, once, with backoff on failure.

        Both sides see each other at about the same time; the one with the smaller ID dials
        first and the other waits a moment, so usually only one session is opened.
        """
        if self._tg is None or self.stopping.is_set() or short_id in self._dialing:
            return
        if self.live_connection(short_id) is not None:
            return
        entry = self._lan_seen.get(short_id)
        if entry is None:
            return
        now = time.monotonic()
        fails, next_try = self._dial_state.get(short_id, (0, 0.0))
        if now < next_try:
            return
        if self.short_id > short_id and now - entry[1] < DIAL_GRACE and fails == 0:
            # the other side dials first; look again once the grace is over
            asyncio.get_running_loop().call_later(
                DIAL_GRACE - (now - entry[1]) + 0.01, self._maybe_dial, short_id)
            return
        self._dialing.add(short_id)
        self._spawn(self._dial(short_id, entry[0]), "dial")

    async def _dial(self, short_id: str, seen: LanPeerSeen) -> None:
        try:
            for addr in seen.addresses:
                try:
                    conn = await self.connect((addr, seen.port), expect=short_id)
                except ControlError as e:
                    log.debug("dial failed", extra=kv(peer=seen.name, addr=addr, reason=e))
                    continue
                if not conn.peer_id.hex().startswith(short_id):
                    # a stale record: another (valid) device answers there now; keep its
                    # session and forget the record until mDNS announces it again
                    log.info("stale mDNS record", extra=kv(
                        advertised=short_id, actual=conn.peer_id.hex()[:16], addr=addr))
                    self._lan_seen.pop(short_id, None)
                    return
                self.peers.upsert(conn.peer_id, source="mdns", name=seen.name)
                self._dial_state.pop(short_id, None)
                return
            fails = self._dial_state.get(short_id, (0, 0.0))[0] + 1
            self._dial_state[short_id] = (fails, time.monotonic() + min(10.0, 0.5 * 2**fails))
        finally:
            self._dialing.discard(short_id)

    # ----------------------------------------------------------------- connections
    def hello(self) -> bytes:
        return json.dumps({
            "v": PROTOCOL_VERSION, "name": self.cfg.node.name[:64],
            "port": self.lan_port or 0, "agent": f"shoal/{__version__}",
        }).encode()

    def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tg is None or self.stopping.is_set():
            writer.close()
            return
        self._spawn(self._accept(reader, writer), "accept")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            channel = await open_channel(
                reader, writer, self.identity.private_key, initiator=False,
                local_payload=self.hello(), handshake_timeout=self.cfg.lan.connect_timeout,
            )
            hello = parse_hello(channel.remote_payload)
        except (SessionError, ValueError, ConnectionError, TimeoutError) as e:
            log.info("handshake failed", extra=kv(addr=peer, reason=e))
            writer.close()
            return
        address = (peer[0], int(hello.get("port") or peer[1])) if peer else None
        conn = self._make_conn(channel, hello, outgoing=False, address=address)
        await self._serve_conn(conn)

    def attach_channel(self, channel: Any, *, outgoing: bool, transport: str,
                       rssi: int | None = None) -> PeerConnection:
        """Run the peer protocol over an authenticated channel from any radio (e.g. BLE).

        *channel* has the SecureChannel surface: send, recv, close, remote_static,
        remote_payload, handshake_hash. Raises ValueError for a malformed hello.
        """
        hello = parse_hello(channel.remote_payload)
        conn = self._make_conn(channel, hello, outgoing=outgoing, address=None,
                               transport=transport)
        self.peers.upsert(conn.peer_id, source=transport, name=conn.name, rssi=rssi)
        self._spawn(self._serve_conn(conn), f"{transport}-conn")
        return conn

    def _make_conn(self, channel: Any, hello: dict[str, Any], *, outgoing: bool,
                   address: tuple[str, int] | None, transport: str = "lan") -> PeerConnection:
        peer_key = channel.remote_static
        conn = PeerConnection(
            channel, peer_id=device_id_for(peer_key), peer_key=peer_key, hello=hello,
            handler=self._handle_request, on_event=self._on_event, outgoing=outgoing,
            address=address,
            gate=self.gate, transport=transport,
        )
        self._conns.add(conn)
        info = self.peers.attach(conn)
        if address is not None:
            info.addresses[address] = time.monotonic()
        log.info("session established", extra=kv(
            peer=conn.name, id=format_device_id(conn.peer_id)[:9], addr=address,
            direction="out" if outgoing else "in",
            trusted=self.trust.is_trusted(conn.peer_id),
        ))
        return conn

    async def _serve_conn(self, conn: PeerConnection) -> None:
        try:
            await conn.serve()
        finally:
            self._conns.discard(conn)
            self.peers.detach(conn)
            for p in self.pairing.pending.values():
                if p.peer_id == conn.peer_id and not p.complete and p.cancelled is None:
                    p.cancelled = "connection lost before both sides confirmed"
            await self._pairing_notify()
            log.info("session closed", extra=kv(peer=conn.name, reason=conn.close_reason))

    async def connect(self, address: tuple[str, int], expect: str | None = None
                      ) -> PeerConnection:
        """Open (or reuse) an authenticated session to the agent at *address*.

        *expect* (a device ID hex prefix) restricts reuse to a session with that device: an
        address may have changed hands since a stale mDNS record was cached.
        """
        for c in self._conns:
            if c.address == address and not c.closed.is_set() and (
                    expect is None or c.peer_id.hex().startswith(expect)):
                return c
        timeout = self.cfg.lan.connect_timeout
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(address[0], address[1], limit=1 << 20), timeout
            )
        except TimeoutError:
            raise ControlError(f"cannot reach {address[0]}:{address[1]}: timed out") from None
        except OSError as e:
            raise ControlError(f"cannot reach {address[0]}:{address[1]}: {e.strerror or e}") from e
        try:
            channel = await open_channel(
                reader, writer, self.identity.private_key, initiator=True,
                local_payload=self.hello(), handshake_timeout=timeout,
            )
            hello = parse_hello(channel.remote_payload)
        except (SessionError, ValueError, ConnectionError, TimeoutError) as e:
            writer.close()
            raise ControlError(f"secure handshake with {address[0]}:{address[1]} failed: {e}") \
                from e
        conn = self._make_conn(channel, hello, outgoing=True, address=address)
        self._spawn(self._serve_conn(conn), "conn")
        return conn

    # ----------------------------------------------------------------- peer requests
    def _on_event(self, conn: PeerConnection, event: wire.Event) -> None:
        if event.op in ("raft", "cluster", "report") and self.authority is not None:
            self.authority.on_event(conn, event.op, event.args)
    def _refresh_public_index(self) -> None:
        chunks: set[bytes] = set()
        for rec in self.store.resources():
            if rec.public:
                chunks.update(c.chunk_id for c in rec.manifest.chunks)
        self._public_chunks = chunks

    def _visible(self, rec: Any, trusted: bool) -> bool:
        return trusted or rec.public

    async def _handle_request(self, conn: PeerConnection, req: wire.Request) -> Any:
        trusted = self.trust.is_trusted(conn.peer_id)
        op, args = req.op, req.args
        if op == "ping":
            return {"t": time.time()}
        if op == "pair_request":
            return await self._pair_incoming(conn, args["name"])
        if op == "pair_confirm":
            return await self._pair_remote_confirm(conn, args["code"])
        if op == "pair_cancel":
            for p in self.pairing.pending.values():
                if p.peer_id == conn.peer_id and p.cancelled is None and not p.complete:
                    p.cancelled = "cancelled by the other device"
            await self._pairing_notify()
            return {}
        if op == "raft_join":
            if self.authority is None:
                raise Refused("authority is disabled on this device")
            return await self.authority.handle_join(conn, args["c"])
        if op == "endpoints":
            return {"lan": [[a, p] for a, p in self.lan_endpoints()]}
        if op == "list":
            return [self._resource_entry(r) for r in self.store.resources()
                    if self._visible(r, trusted)]
        if op == "manifest":
            rec = self._lookup(args["resource"])
            if rec is None or not self._visible(rec, trusted):
                hint = "" if trusted else " (only public resources are shared before pairing)"
                raise Refused(f"no resource {args['resource']!r} here{hint}")
            if self.authority is not None:
                self.authority.record_use(rec.resource_id)
            return {"manifest": rec.manifest.to_bytes().decode()}
        if op == "chunk":
            cid = bytes.fromhex(args["c"])
            if not trusted and cid not in self._public_chunks:
                raise Refused("not paired: only chunks of public resources are served")
            try:
                # Inline: a verified read of one chunk from the page cache is ~0.1 ms, cheaper
                # than a thread hand-off; see docs/benchmarks.md.
                data = self.store.get_chunk(cid)
            except StoreError as e:
                raise Refused(str(e)) from None
            # the requester asks for raw bytes on links faster than lz4 (see the fetcher)
            return ChunkData(cid, data, self.cfg.transfer.compress and args.get("z", True))
        raise Refused(f"operation {op!r} is not supported")

    def _lookup(self, resource: str) -> Any:
        """A held resource by name, ID, ID prefix or current manifest hash; None if absent."""
        if len(resource) == 64:
            for rec in self.store.resources():
                if rec.manifest.manifest_hash == resource.lower():
                    return rec
        try:
            return self.store.find(resource)
        except StoreError:
            return None

    @staticmethod
    def _resource_entry(rec: Any) -> dict[str, Any]:
        m = rec.manifest
        return {
            "resource_id": m.resource_id, "name": m.name, "version": m.version,
            "size": m.size, "chunks": len(m.chunks), "public": rec.public,
            "manifest": m.manifest_hash, "publisher": m.publisher,
        }

    # ----------------------------------------------------------------- pairing
    async def _pairing_notify(self) -> None:
        async with self._pair_changed:
            self._pair_changed.notify_all()

    async def _pair_incoming(self, conn: PeerConnection, name: str) -> dict[str, Any]:
        try:
            p = self.pairing.add(
                peer_id=conn.peer_id, peer_public_key=conn.peer_key, peer_name=name,
                handshake_hash=conn.handshake_hash, incoming=True, now=time.time(),
            )
        except PairingError as e:
            raise Refused(str(e)) from None
        p_conn_key = p.pairing_id
        self._pair_conns[p_conn_key] = conn
        log.info("pairing requested", extra=kv(peer=name, code=p.code))
        await self._pairing_notify()
        return {"name": self.cfg.node.name}

    async def _pair_remote_confirm(self, conn: PeerConnection, code: str) -> dict[str, Any]:
        for pid, p in self.pairing.pending.items():
            if self._pair_conns.get(pid) is conn and p.cancelled is None and not p.complete:
                if code != p.code:
                    p.cancelled = "the other device confirmed a different code"
                    await self._pairing_notify()
                    raise Refused("code mismatch: pairing cancelled")
                p.remote_confirmed = True
                self._maybe_finish(p)
                await self._pairing_notify()
                return {"complete": p.complete}
        raise Refused("no pairing in progress on this session")

    def _maybe_finish(self, p: Any) -> None:
        if p.complete and not self.trust.is_trusted(p.peer_id):
            self.trust.add(p.peer_id, p.peer_public_key, p.peer_name)
            log.info("paired", extra=kv(peer=p.peer_name, id=format_device_id(p.peer_id)))

    async def pair_start(self, address: tuple[str, int]) -> dict[str, Any]:
        conn = await self.connect(address)
        if self.trust.is_trusted(conn.peer_id):
            raise ControlError(
                f"already paired with {conn.name} ({format_device_id(conn.peer_id)})")
        try:
            answer = await conn.request("pair_request", {"name": self.cfg.node.name[:64]})
        except RemoteError as e:
            raise ControlError(f"{conn.name} refused pairing: {e}") from None
        p = self.pairing.add(
            peer_id=conn.peer_id, peer_public_key=conn.peer_key,
            peer_name=str(answer.get("name", conn.name))[:64],
            handshake_hash=conn.handshake_hash, incoming=False, now=time.time(),
        )
        self._pair_conns[p.pairing_id] = conn
        await self._pairing_notify()
        return p.summary()

    async def pair_confirm(self, code_text: str) -> dict[str, Any]:
        code = normalize_code(code_text)
        try:
            p = self.pairing.find_by_code(code)
        except PairingError as e:
            raise ControlError(str(e)) from None
        conn = self._pair_conns.get(p.pairing_id)
        if conn is None or conn.closed.is_set():
            p.cancelled = "connection lost"
            raise ControlError("the connection to the other device was lost; start again")
        p.local_confirmed = True
        try:
            await conn.request("pair_confirm", {"code": code})
        except RemoteError as e:
            p.cancelled = str(e)
            raise ControlError(f"{p.peer_name} did not accept: {e}") from None
        self._maybe_finish(p)
        await self._pairing_notify()
        return p.summary()

    async def pair_wait(self, pairing_id: str | None, timeout: float) -> dict[str, Any]:
        """Wait until a pairing completes/cancels, or (no id) until an incoming one appears."""
        async def ready() -> dict[str, Any] | None:
            if pairing_id is None:
                incoming = [p for p in self.pairing.active() if p.incoming]
                return incoming[0].summary() if incoming else None
            p = self.pairing.pending.get(pairing_id)
            if p is None:
                raise ControlError("unknown pairing")
            return p.summary() if (p.complete or p.cancelled) else None

        async with asyncio.timeout(timeout), self._pair_changed:
            while (res := await ready()) is None:
                await self._pair_changed.wait()
            return res

    # ----------------------------------------------------------------- control commands
    def _commands(self) -> dict[str, Any]:
        return {
            "id": self._cmd_id, "status": self._cmd_status, "peers": self._cmd_peers,
            "publish": self._cmd_publish, "resources": self._cmd_resources,
            "fetch": self._cmd_fetch, "pair_start": self._cmd_pair_start,
            "pair_open": self._cmd_pair_open, "pair_confirm": self._cmd_pair_confirm,
            "pair_pending": self._cmd_pair_pending, "pair_wait": self._cmd_pair_wait,
            "unpair": self._cmd_unpair, "trust_list": self._cmd_trust_list,
            "connect": self._cmd_connect, "stop": self._cmd_stop,
            "authority": self._cmd_authority,
        }

    async def _cmd_id(self, args: dict[str, Any], reply: Reply) -> Any:
        return {"display_id": self.identity.display_id, "hex": self.identity.hex_id,
                "name": self.cfg.node.name}

    async def _cmd_status(self, args: dict[str, Any], reply: Reply) -> Any:
        used, quota = self.store.usage()
        return {
            "name": self.cfg.node.name, "display_id": self.identity.display_id,
            "version": __version__, "uptime_s": round(time.monotonic() - self.started, 1),
            "lan_port": self.lan_port, "data_dir": str(self.cfg.node.data_dir),
            "peers": len(self.peers.all()), "connected": len(self._conns),
            "paired": len(self.trust.list()), "resources": len(self.store.resources()),
            "store_used": used, "store_quota": quota,
            "pairing_window_open": self.pairing.window_open(time.time()),
            "ble": self.ble.status() if self.ble is not None else None,
        }

    async def _cmd_peers(self, args: dict[str, Any], reply: Reply) -> Any:
        return [p.summary(self.trust.is_trusted(p.peer_id)) for p in self.peers.all()]

    async def _cmd_publish(self, args: dict[str, Any], reply: Reply) -> Any:
        path = Path(str(args.get("path", "")))
        if not path.is_absolute():
            raise ControlError("publish needs an absolute path")
        if not path.is_file():
            raise ControlError(f"{path}: not a readable regular file")
        if not os.access(path, os.R_OK):
            raise ControlError(f"{path}: the agent (uid {os.getuid()}) cannot read it")
        name = args.get("name") or path.name
        public = bool(args.get("public", False))
        try:
            m = await asyncio.to_thread(
                self.store.publish_file, path, name=name, public=public,
                publisher=self.identity.hex_id,
            )
        except StoreError as e:
            raise ControlError(str(e)) from None
        self._refresh_public_index()
        if self.ble is not None:
            self.ble.catalog_changed()
        if self.authority is not None:
            self.authority.catalog_changed()
        return self._resource_entry(self.store.find(m.resource_id))

    async def _cmd_resources(self, args: dict[str, Any], reply: Reply) -> Any:
        """Resources held here and, unless local_only, what reachable peers offer us."""
        local = [self._resource_entry(r) for r in self.store.resources()]
        remote: list[dict[str, Any]] = []
        if not args.get("local_only"):
            conns = self.live_connections()
            answers = await asyncio.gather(
                *(c.request("list", {}, timeout=3.0) for c in conns), return_exceptions=True)
            for conn, ans in zip(conns, answers, strict=True):
                if isinstance(ans, list):
                    remote.extend({**e, "holder": conn.name} for e in ans if isinstance(e, dict))
        return {"local": local, "remote": remote}

    async def _cmd_connect(self, args: dict[str, Any], reply: Reply) -> Any:
        conn = await self.connect(parse_address(str(args.get("address", "")), 47474))
        rtt = await conn.ping()
        return {"name": conn.name, "display_id": format_device_id(conn.peer_id),
                "trusted": self.trust.is_trusted(conn.peer_id), "rtt_ms": round(rtt * 1000, 2)}

    async def fetch(self, resource: str, *, source: str | None = None,
                    traffic_class: str = "demand", progress: Any = None) -> dict[str, Any]:
        """Fetch a resource by name or ID from the peers that hold it (or from *source*)."""
        rec = self._lookup(resource)
        if rec is not None and source is None:
            return self._resource_entry(rec) | {"already_held": True, "sources": {}}
        if source:
            conns = [await self.connect(parse_address(source, self.cfg.lan.port or 47474))]
        else:
            conns = self.live_connections()
            deadline = time.monotonic() + self.cfg.lan.connect_timeout
            while not conns and time.monotonic() < deadline:  # just started: peers dialling
                await asyncio.sleep(0.1)
                conns = self.live_connections()
        if not conns:
            raise ControlError(f"no peer is reachable to fetch {resource!r} from "
                               "(see: shoal peers)")
        timeout = self.cfg.transfer.request_timeout
        offers, errors = await find_offers(conns, resource, timeout)
        if not offers:
            why = "; ".join(f"{n}: {e}" for n, e in errors.items())
            raise ControlError(f"no reachable peer holds {resource!r} ({why})")
        try:
            manifest, holders = choose_version(offers, resource)
        except FetchError as e:
            raise ControlError(str(e)) from None
        holders, why = self._prefer_authority(manifest.resource_id, holders)

        async def find_sources() -> list[PeerConnection]:
            return self.live_connections()

        t = self.cfg.transfer
        job = Fetch(
            self.store, manifest, holders[: t.max_sources], traffic_class=traffic_class,
            initial_window=t.initial_window, max_window=t.max_window,
            request_timeout=t.request_timeout, stall_timeout=t.stall_timeout,
            find_sources=find_sources, progress=progress,
        )
        try:
            result = await job.run()
        except (FetchError, StoreError) as e:
            raise ControlError(f"fetch of {manifest.name!r} failed: {e}") from None
        if self.authority is not None:
            self.authority.catalog_changed()
        names = {c.peer_id.hex(): c.name for c in job.conns.values()}
        log.info("fetched", extra=kv(
            resource=manifest.name, size=manifest.size, seconds=round(result.seconds, 3),
            sources=",".join(names.values()), bytes=result.bytes_fetched))
        return self._resource_entry(self.store.find(manifest.resource_id)) | {
            "seconds": result.seconds, "bytes_fetched": result.bytes_fetched, "why": why,
            "sources": {names[k]: {"bytes": v["bytes"], "chunks": v["completed"],
                                   "state": v["state"], "reason": v["reason"],
                                   "window": v["window"], "failures": v["failures"],
                                   "min_rtt_ms": round((v["min_rtt"] or 0) * 1000, 2),
                                   "throughput": round(v["throughput"] or 0)}
                        for k, v in result.sources.items()},
        }

    def _prefer_authority(self, resource_id: str, holders: list[PeerConnection]
                          ) -> tuple[list[PeerConnection], str]:
        """Order the sources: the resource's authority first, then the other holders.

        The authority is always among the sources (max_sources cuts the others); the rest
        add speed in parallel and take over when the authority fails. Returns the sources
        and a sentence saying why.
        """
        a = self.authority.map.authority_for(resource_id) if self.authority else None
        if a is None or a.holder is None:
            return holders, f"no authority assigned: fetching from {len(holders)} holder(s)"
        name = self.authority.name_of(a.holder) if self.authority else a.holder[:12]
        first = [c for c in holders if c.peer_id.hex() == a.holder]
        if first:
            others = [c for c in holders if c is not first[0]]
            extra = f" plus {len(others)} other holder(s)" if others else ""
            return first[:1] + others, f"authority {name} (term {a.term}, epoch {a.epoch}){extra}"
        return holders, (f"authority {name} (term {a.term}) is unreachable or lacks this "
                         f"version: fell back to {len(holders)} holder(s)")

    async def _cmd_authority(self, args: dict[str, Any], reply: Reply) -> Any:
        if self.authority is None:
            raise ControlError("authority is disabled ([authority] enabled = false)")
        resource = args.get("resource")
        return self.authority.describe(str(resource) if resource else None)

    async def _cmd_fetch(self, args: dict[str, Any], reply: Reply) -> Any:
        resource = str(args.get("resource", ""))
        if not resource:
            raise ControlError("fetch needs a resource name or ID")

        async def progress(p: dict[str, Any]) -> None:
            await reply.event(**p)

        source = args.get("source")
        result = await self.fetch(resource, source=str(source) if source else None,
                                  progress=progress)
        if args.get("stream"):
            manifest = self.store.find(result["resource_id"]).manifest
            await reply.event(stage="export", name=manifest.name, size=manifest.size)
            for entry in manifest.chunks:
                await reply.data(await asyncio.to_thread(self.store.get_chunk, entry.chunk_id))
        return result

    async def _cmd_pair_start(self, args: dict[str, Any], reply: Reply) -> Any:
        address = str(args.get("address", ""))
        if address.startswith("ble:"):  # a device met over BLE: pair over that session
            if self.ble is None:
                raise ControlError("BLE is not running on this agent (see [ble] in the config)")
            return await self.ble.pair_start(address[4:])
        return await self.pair_start(parse_address(address, 47474))

    async def _cmd_pair_open(self, args: dict[str, Any], reply: Reply) -> Any:
        seconds = float(args.get("seconds") or self.cfg.pairing.window_seconds)
        until = self.pairing.open_window(time.time(), seconds)
        return {"open_until": until, "seconds": seconds}

    async def _cmd_pair_confirm(self, args: dict[str, Any], reply: Reply) -> Any:
        return await self.pair_confirm(str(args.get("code", "")))

    async def _cmd_pair_pending(self, args: dict[str, Any], reply: Reply) -> Any:
        return [p.summary() | {"code_display": format_code(p.code)}
                for p in self.pairing.active()]

    async def _cmd_pair_wait(self, args: dict[str, Any], reply: Reply) -> Any:
        return await self.pair_wait(args.get("pairing_id"), float(args.get("timeout", 120)))

    async def _cmd_unpair(self, args: dict[str, Any], reply: Reply) -> Any:
        from agent.security.trust import TrustError

        try:
            dev = self.trust.resolve(str(args.get("device", "")))
        except TrustError as e:
            raise ControlError(str(e)) from None
        self.trust.remove(dev.device_id)
        for c in list(self._conns):
            if c.peer_id.hex() == dev.device_id:
                await c.close("unpaired")
        return {"name": dev.name, "display_id": dev.display_id}

    async def _cmd_trust_list(self, args: dict[str, Any], reply: Reply) -> Any:
        return [{"name": d.name, "display_id": d.display_id, "role": d.role,
                 "paired_at": d.paired_at} for d in self.trust.list()]

    async def _cmd_stop(self, args: dict[str, Any], reply: Reply) -> Any:
        asyncio.get_running_loop().call_later(0.05, self.stop)
        return {"stopping": True}
