"""Central role: scan, recognise, connect, authenticate, attach, hand over.

Connection policy (why each rule exists):

* **Recognise before connecting.** A tag that resolves to a device we already reach (any
  transport) only updates that peer's RSSI: no second session, no radio time spent.
* **One connect at a time**, at most ``max_links`` links: BlueZ and small controllers
  handle concurrent connection attempts poorly, and each link costs a connection slot.
* **Tie-break.** Both nodes scan and advertise; the one with the smaller current tag connects
  at once, the other waits ``grace`` seconds (then connects anyway: the other side may not
  scan). Tags are public, so both sides agree without knowing each other.
* **Backoff** with full jitter after a failed attempt, per tag.
* The decision loop also runs on a timer, not only on sightings: BlueZ reports a device once
  and then only when its data or RSSI changes (BlueZoo's RSSI never changes).

Round trips after connect (docs/ble-profile.md): subscribe Events (CCC write), msg1 write
(answered by msg2 notifications), msg3 + the ``endpoints`` request in one write (answered by
notifications), then TCP. NodeInfo is not needed on this path: the advertisement flags say
whether a LAN link exists and the authenticated hello carries the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.links.ble.channel import BleSecureChannel, new_connection
from agent.links.ble.host import BleHost
from agent.links.ble.messages import (
    SessionData,
    SessionMessageError,
    decode_session,
    is_session_message,
    new_link_id,
)
from agent.links.ble.peripheral import FRAMED_MAX_MESSAGE
from agent.links.ble.stats import CountingGattClient, GattCounters
from agent.links.ble.tag import TAG_EPOCH_SECONDS, TagResolver
from agent.links.ble.tasks import TaskSet
from agent.peer.hello import parse_hello, peer_device_id
from agent.security.session import SessionError
from radio.base import GattClient, NotConnectedError, RadioError, Scanner, Sighting
from radio.ble import CentralChannel
from radio.ble.profile import (
    BLE_PROFILE_VERSION,
    FLAG_CATALOG_PAGING,
    MAX_PAGE_ENTRIES,
    NODEINFO_UUID,
    CatalogPage,
    CatalogPageRequest,
    ControlError,
    NodeInfo,
    ProfileError,
    ResourceEntry,
    decode_control,
    decode_slot,
    encode_control,
    resource_slot_uuid,
)

__all__ = ["CentralLimits", "CentralRole", "Observer", "read_public_catalog"]

_log = logging.getLogger("shoal.ble")

Observer = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class CentralLimits:
    connect_timeout: float = 15.0
    handshake_timeout: float = 10.0
    request_timeout: float = 10.0
    max_links: int = 4
    max_tags: int = 256
    evaluate_interval: float = 1.0
    grace: float = 3.0
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    duplicate_holdoff: float = 30.0
    forget_after: float = TAG_EPOCH_SECONDS
    # Ask `list` in the msg3 write too and keep the answer in the peer table. Off by default:
    # after a handover the catalog is cheaper over TCP; on for BLE-only deployments and the
    # benchmark (discovery -> authenticate -> catalog -> handover).
    catalog_on_connect: bool = False


@dataclass
class _Seen:
    tag: bytes
    address: str
    rssi: int
    flags: int
    first_seen: float
    last_seen: float
    failures: int = 0
    next_try: float = 0.0
    peer_id: bytes | None = None


@dataclass
class _Link:
    tag: bytes
    address: str
    client: CountingGattClient
    link_id: int
    cch: CentralChannel | None = None
    channel: BleSecureChannel | None = None
    conn: Any = None
    pump: asyncio.Task[None] | None = None
    foreign: int = 0
    malformed: int = 0
    profile: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(16))

    @property
    def counters(self) -> GattCounters:
        return self.client.counters


class CentralRole:
    """Scanner + connection manager. ``my_tag`` returns our own advertised tag (tie-break)."""

    def __init__(
        self,
        scanner: Scanner,
        client_factory: Callable[[], GattClient],
        host: BleHost,
        resolver: TagResolver,
        *,
        my_tag: Callable[[], bytes | None],
        handover: bool,
        limits: CentralLimits | None = None,
        observer: Observer | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._scanner = scanner
        self._factory = client_factory
        self._host = host
        self._resolver = resolver
        self._my_tag = my_tag
        self._handover = handover
        self._lim = limits or CentralLimits()
        self._observer = observer
        self._rng = rng or random.Random()
        self._seen: OrderedDict[bytes, _Seen] = OrderedDict()
        self._links: dict[str, _Link] = {}  # by address
        self._connecting = False
        self._kick = asyncio.Event()
        self._tasks = TaskSet()
        self._unsubscribe: Callable[[], None] | None = None
        self.totals = GattCounters()
        self.stats = {"connects": 0, "failures": 0, "sessions": 0, "duplicates": 0,
                      "handovers": 0, "handover_failures": 0, "decisions": 0}

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._unsubscribe = self._scanner.add_callback(self._on_sighting)
        await self._scanner.start()
        self._spawn(self._decide_loop(), "ble-central")

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        await self._tasks.cancel_all()
        with contextlib.suppress(Exception):
            await self._scanner.stop()

    # ------------------------------------------------------------------ sightings
    def _on_sighting(self, s: Sighting) -> None:
        if s.protocol_version != BLE_PROFILE_VERSION:
            return
        now = time.monotonic()
        seen = self._seen.get(s.node_tag)
        if seen is None:
            seen = _Seen(s.node_tag, s.address, s.rssi, s.flags, now, now)
            self._seen[s.node_tag] = seen
            while len(self._seen) > self._lim.max_tags:
                self._seen.popitem(last=False)
            self._kick.set()
        else:
            seen.address, seen.rssi, seen.flags, seen.last_seen = s.address, s.rssi, s.flags, now
            self._seen.move_to_end(s.node_tag)
        peer = self._resolver.resolve(s.node_tag)
        if peer is not None:
            seen.peer_id = peer
            self._host.saw_peer(peer, s.rssi)

    def rssi_of(self, peer_id: bytes) -> int | None:
        """Last RSSI of the tag that resolves to ``peer_id`` (e.g. a central met as peripheral)."""
        tag = self._resolver.current_tag(peer_id)
        seen = self._seen.get(tag)
        return seen.rssi if seen is not None else None

    # ------------------------------------------------------------------ decisions
    async def _decide_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._lim.evaluate_interval):
                    await self._kick.wait()
            self._kick.clear()
            try:
                self._decide()
            except Exception:
                _log.exception("BLE connection decision failed")

    def _decide(self) -> None:
        self.stats["decisions"] += 1
        now = time.monotonic()
        for tag in [t for t, s in self._seen.items() if now - s.last_seen > self._lim.forget_after]:
            del self._seen[tag]
        if self._connecting or len(self._links) >= self._lim.max_links:
            return
        mine = self._my_tag()
        for seen in sorted(self._seen.values(), key=lambda s: -s.rssi):
            if seen.address in self._links or now < seen.next_try:
                continue
            peer = self._resolver.resolve(seen.tag)
            if peer is not None:
                seen.peer_id = peer
                if peer == self._host.device_id or self._host.is_connected(peer):
                    continue
            if (mine is not None and mine > seen.tag and seen.failures == 0
                    and now - seen.first_seen < self._lim.grace):
                continue  # the other side connects first
            self._connecting = True
            self._spawn(self._run_link(seen), "ble-link")
            return

    def _backoff(self, seen: _Seen) -> None:
        seen.failures += 1
        ceiling = min(self._lim.backoff_max, self._lim.backoff_base * 2 ** (seen.failures - 1))
        seen.next_try = time.monotonic() + self._rng.uniform(ceiling / 2, ceiling)

    # ------------------------------------------------------------------ one link
    async def _run_link(self, seen: _Seen) -> None:
        link = _Link(seen.tag, seen.address, CountingGattClient(self._factory()), new_link_id())
        self._links[seen.address] = link
        self.stats["connects"] += 1
        try:
            try:
                established = await self._establish(link, seen)
            finally:
                self._connecting = False
                self._kick.set()
            if not established:
                return
            seen.failures = 0
            await self._after_attach(link)
            assert link.channel is not None
            await link.channel.closed.wait()
            seen.next_try = time.monotonic() + self._lim.backoff_base
        except (RadioError, SessionError, TimeoutError, ValueError, ConnectionError) as exc:
            self.stats["failures"] += 1
            self._backoff(seen)
            _log.info("BLE link to %s failed: %s", seen.address, exc)
            self._observe("failed", link, reason=str(exc))
        finally:
            await self._teardown(link)

    async def _establish(self, link: _Link, seen: _Seen) -> bool:
        host, lim = self._host, self._lim
        self._observe("connecting", link)
        cch = CentralChannel(link.client, max_message_size=FRAMED_MAX_MESSAGE, queue_size=64)
        link.cch = cch
        await link.client.connect(link.address, timeout=lim.connect_timeout,
                                  on_disconnect=cch.on_disconnect)
        self._observe("connected", link)
        await cch.open()
        self._observe("subscribed", link)
        channel = BleSecureChannel(
            new_connection(host.static_key, initiator=True, hello=host.hello()),
            cch.send, link_id=link.link_id, peer=link.address,
        )
        link.channel = channel
        link.pump = self._spawn(self._pump(link), "ble-pump")
        await channel.handshake(lim.handshake_timeout)
        peer_id = peer_device_id(channel.remote_static, parse_hello(channel.remote_payload))
        seen.peer_id = peer_id
        self._resolver.learn(peer_id)
        self._observe("authenticated", link, peer=peer_id.hex())
        if peer_id == host.device_id or host.is_connected(peer_id):
            # Raced with the other side (or our own advert): leave before msg3, so the
            # peripheral never attaches a second session (it sees SessionClose).
            self.stats["duplicates"] += 1
            await channel.close()
            seen.next_try = time.monotonic() + lim.duplicate_holdoff
            return False
        link.conn = host.attach(channel, outgoing=True, rssi=seen.rssi)
        self.stats["sessions"] += 1
        return True

    async def _after_attach(self, link: _Link) -> None:
        channel, conn = link.channel, link.conn
        assert channel is not None and conn is not None
        timeout = self._lim.request_timeout
        endpoints: asyncio.Future[Any] | None = None
        catalog: asyncio.Future[Any] | None = None
        if self._handover and self._host.wants_handover(channel):
            endpoints = asyncio.ensure_future(conn.request("endpoints", {}, timeout=timeout))
            await channel.wait_queued(1, 1.0)  # ride in the msg3 write
        if self._lim.catalog_on_connect:
            catalog = asyncio.ensure_future(conn.request("list", {}, timeout=timeout * 3))
            await channel.wait_queued(1 + (endpoints is not None), 1.0)
        await channel.uncork()
        self._observe("attached", link)
        if catalog is not None:
            catalog.add_done_callback(lambda f: self._catalog_done(link, f))
        if endpoints is None:
            return
        try:
            answer = await endpoints
        except Exception as exc:  # RemoteError, PeerGone, TimeoutError
            self.stats["handover_failures"] += 1
            _log.info("BLE peer %s did not give endpoints: %s", link.address, exc)
            return
        self._observe("endpoints", link)
        ok = await self._host.handover(conn, answer)
        self.stats["handovers" if ok else "handover_failures"] += 1
        self._observe("handover", link, ok=ok)

    def _catalog_done(self, link: _Link, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            _log.info("BLE peer %s did not list its catalog: %r", link.address,
                      None if future.cancelled() else future.exception())
            return
        entries = self._host.remember_catalog(link.conn, future.result())
        self._observe("catalog", link, entries=entries)

    async def _pump(self, link: _Link) -> None:
        """Notifications -> this link's session; everything for other links is dropped here."""
        assert link.cch is not None and link.channel is not None
        cch, channel = link.cch, link.channel
        while True:
            try:
                raw = await cch.receive()
            except NotConnectedError:
                channel.peer_closed("BLE link lost")
                return
            if not is_session_message(raw):
                if link.profile.full():
                    link.profile.get_nowait()
                link.profile.put_nowait(raw)
                continue
            try:
                msg = decode_session(raw)
            except SessionMessageError:
                link.malformed += 1
                continue
            if msg.link_id != link.link_id:
                link.foreign += 1  # another central's traffic (bless notifies everyone)
                continue
            if isinstance(msg, SessionData):
                channel.feed(msg.data)
            else:
                channel.peer_closed(msg.text)

    async def _teardown(self, link: _Link) -> None:
        if link.channel is not None and not link.channel.is_closed:
            await link.channel.close(timeout=1.0)
        if link.pump is not None:
            link.pump.cancel()
        with contextlib.suppress(Exception):
            await link.client.disconnect()
        self._links.pop(link.address, None)
        self.totals.add(link.counters)
        self._observe("closed", link)

    # ------------------------------------------------------------------ introspection
    def links(self) -> list[dict[str, Any]]:
        out = []
        for link in self._links.values():
            ch = link.channel
            out.append({
                "address": link.address, "tag": link.tag.hex(), "link_id": f"{link.link_id:08x}",
                "established": bool(ch is not None and ch.handshake_hash),
                "peer": link.conn.peer_id.hex() if link.conn is not None else None,
                "foreign_messages": link.foreign, **link.counters.snapshot(),
            })
        return out

    def sightings(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [{"tag": s.tag.hex(), "address": s.address, "rssi": s.rssi, "flags": s.flags,
                 "peer": s.peer_id.hex() if s.peer_id else None,
                 "age_s": round(now - s.last_seen, 1), "failures": s.failures}
                for s in self._seen.values()]

    def _observe(self, event: str, link: _Link, **extra: Any) -> None:
        if self._observer is None:
            return
        try:
            self._observer(event, {"address": link.address, "link_id": link.link_id,
                                   "counters": link.counters.snapshot(), **extra})
        except Exception:
            _log.exception("BLE observer failed")

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        return self._tasks.spawn(coro, name)


async def read_public_catalog(
    client: GattClient, cch: CentralChannel, *, timeout: float = 10.0,
    profile_messages: asyncio.Queue[bytes] | None = None,
) -> tuple[NodeInfo, list[ResourceEntry]]:
    """Read a peripheral's *public* catalog without a session: NodeInfo, then the slots if
    they hold everything, else catalog pages (2 writes for 100 entries instead of 8 reads).

    ``cch`` must be open (subscribed). Pages for other centrals (bless notifies everyone) are
    recognised by their start index and skipped; a generation change restarts the read.
    Pass ``profile_messages`` when a pump already consumes ``cch`` (plaintext messages land
    there); otherwise this function reads ``cch`` itself.
    """

    async def next_page(start: int) -> CatalogPage:
        async with asyncio.timeout(timeout):
            while True:
                raw = await (profile_messages.get() if profile_messages else cch.receive())
                if is_session_message(raw):
                    continue
                try:
                    msg = decode_control(raw)
                except ProfileError:
                    continue
                if isinstance(msg, ControlError):
                    raise RadioError(f"peripheral refused the page request (code {msg.code})")
                if isinstance(msg, CatalogPage) and msg.start == start:
                    return msg

    for _ in range(3):  # the catalog may change while we read it
        info = NodeInfo.decode(await client.read(NODEINFO_UUID))
        entries: list[ResourceEntry] = []
        if info.catalog_count <= info.populated_slots or not info.flags & FLAG_CATALOG_PAGING:
            # everything is in the slots: reads only, no Control/Events needed
            for slot in range(info.populated_slots):
                entry = decode_slot(await client.read(resource_slot_uuid(slot)))
                if entry is None or entry.generation != info.catalog_generation & 0xFFFF:
                    break
                entries.append(entry)
            else:
                return info, entries
            continue
        # more than the slots hold: pages are cheaper than slot reads (64 entries a write)
        while len(entries) < info.catalog_count:
            await cch.send(encode_control(CatalogPageRequest(len(entries), MAX_PAGE_ENTRIES)))
            page = await next_page(len(entries))
            if page.generation != info.catalog_generation or not page.entries:
                break
            entries.extend(page.entries)
        else:
            return info, entries
    raise RadioError("the catalog kept changing while it was read")
