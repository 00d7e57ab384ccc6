"""The node: the composition root. It builds every subsystem, hands each its ports, and
owns their lifetimes — nothing else.

One asyncio TaskGroup owns all long-running tasks, so shutdown is one place: stop accepting,
say goodbye to peers, cancel, and give up after a bounded time. What the agent *does* lives
in the subsystems (connections, pairing, chunk serving, fetching, authority, BLE) and in the
control commands; no subsystem imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING

from agent.authority.reputation import reputation_score
from agent.authority.service import AuthorityService
from agent.bandwidth import BandwidthGate, LinkScheduler
from agent.config import Config
from agent.control.commands import CommandContext, Commands
from agent.control.errors import ControlError
from agent.control.metrics import MetricsServer, MetricsUnavailable
from agent.control.metrics import snapshot as metrics_snapshot
from agent.control.server import ControlServer
from agent.daemon import (
    ServiceStatus,
    StartupError,
    listen_failure,
    lock_data_dir,
    notify_systemd,
    status_line,
    watchdog_interval,
)
from agent.dashboard import Dashboard
from agent.dht.service import DhtService
from agent.folders.exports import ExportBook, update_tree
from agent.folders.watch import WatchService
from agent.folders.watchstate import WatchEntry
from agent.log import kv
from agent.mirrors.service import MirrorService, PeerFacts
from agent.peer.connections import Connections
from agent.peer.pairing import PairingService
from agent.peer.router import Router
from agent.peer.table import PeerTable
from agent.peer.unpair import UnpairService
from agent.relay.adverts import EVENT as ROUTES_EVENT
from agent.relay.adverts import RouteService
from agent.relay.routes import RouteTable
from agent.relay.service import RelayService
from agent.security.identity import load_or_create_identity
from agent.security.pairing import PairingBook
from agent.security.session import SessionError
from agent.security.trust import TrustStore
from agent.store import ContentStore, Manifest
from agent.transfer.fetcher import find_offers
from agent.transfer.follow.service import FollowService
from agent.transfer.server import ChunkServer
from agent.transfer.service import AuthorityHint, FetchService
from agent.transfer.versions import VersionService
from agent.usage.models import ModelService
from agent.usage.service import UsageService

if TYPE_CHECKING:  # imported when BLE is enabled: ~40 modules and 3 MB RSS otherwise unused
    from agent.links.ble import BleAgent, BleLink

log = logging.getLogger("shoal.node")
TASK_PREFIX = "shoal:"


class Node:
    """A running Shoal agent."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        data_dir = cfg.node.data_dir
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_fd = lock_data_dir(data_dir)
        self.identity, created = load_or_create_identity(data_dir)
        if created:
            log.info("created device identity", extra=kv(id=self.identity.display_id))
        self.started = time.monotonic()
        self.ready = asyncio.Event()
        self.stopping = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self.trust = TrustStore(data_dir)
        self.store = ContentStore(data_dir / "store", avg_chunk_size=cfg.store.avg_chunk_size,
                                  quota_bytes=cfg.store.quota or None)
        # our own resources carry our signature (those of a v1 identity move to the v2 ID)
        self.store.adopt_signer(self.identity, (self.identity.legacy_id.hex(),))
        self.peers = PeerTable(is_trusted=self.trust.is_trusted,
                               stale_after=cfg.lan.forget_after)
        self.gate = BandwidthGate(LinkScheduler.from_config(cfg.bandwidth))
        self.router = Router()
        self.connections = Connections(
            static_key=self.identity.private_key, device_id=self.identity.device_id,
            name=cfg.node.name, lan=cfg.lan, peers=self.peers, trust=self.trust,
            handler=self.router.handle, on_event=self.router.event, spawn=self.spawn,
            signing_key=self.identity.signing_public, mesh=cfg.node.mesh)
        self.pairing = PairingService(
            PairingBook(cfg.pairing.window_seconds, cfg.pairing.max_pending), self.trust,
            cfg.node.name)
        self.connections.on_closed(self.pairing.connection_closed)
        self.unpairing = UnpairService(self.trust, self.peers, self.connections.sessions,
                                       self.spawn, data_dir)
        self.connections.on_opened(self.unpairing.session_opened)
        self.relay = RelayService(  # next_hop: set_next_hop() once a resolver exists (DHT)
            cfg.relay, me=self.identity.device_id, static_key=self.identity.private_key,
            connections=self.connections, trust=self.trust, gate=self.gate, spawn=self.spawn)
        self.connections.on_closed(self.relay.connection_closed)
        self.connections.on_opened(self.relay.session_opened)
        self.router.set_frames(self.relay.on_frame)
        # short paths for circuits: route adverts between paired neighbours
        self.routes = RouteService(
            RouteTable(self.identity.device_id, max_relays=cfg.relay.max_relays),
            sessions=self.connections, trust=self.trust, spawn=self.spawn)
        self.connections.on_opened(self.routes.session_opened)
        self.connections.on_closed(self.routes.connection_closed)
        self.relay.set_next_hop(self.routes.next_hop, self.routes.stats)
        self.authority: AuthorityService | None = None
        if cfg.authority.enabled:
            self.authority = AuthorityService(
                self.identity.hex_id, cfg.node.name, data_dir, self.connections, self.trust,
                self.store, self.gate.scheduler, self.spawn, hysteresis=cfg.authority.hysteresis)
        self.usage = UsageService.open(data_dir / "usage", cfg.usage, cfg.predict,
                                       connections=self.connections, trust=self.trust
                                       ) if cfg.usage.enabled else None
        self.server = ChunkServer(
            self.store, self.trust, self.gate, compress=cfg.transfer.compress,
            on_use=self.authority.record_use if self.authority else None, access=self.usage,
            signer=self.identity)
        # the DHT: holders beyond the neighbourhood (docs/dht.md); the relay, once wired,
        # is its opener (``self.dht.use_opener``) and takes ``self.dht.next_hop``
        self.dht = DhtService(
            self.identity.device_id, cfg.dht, connections=self.connections, trust=self.trust,
            signer=self.identity, spawn=self.spawn,
            held=lambda: [(r.resource_id, r.manifest.name, r.public)
                          for r in self.store.resources()],
        ) if cfg.dht.enabled else None
        if self.dht is not None:
            self.connections.on_opened(self.dht.session_opened)
            self.dht.use_opener(self.relay)
            self.dht.use_routes(self.routes.next_hop)  # shortest path first, then introducers
            self.relay.set_next_hop(self.dht.next_hop)
        self.fetcher = FetchService(
            self.store, self.connections, cfg.transfer, connect_timeout=cfg.lan.connect_timeout,
            default_port=cfg.lan.port or 47474, authority=self._authority_hint,
            on_fetched=self.catalog_changed, trust=self.trust, access=self.usage,
            mirrors=lambda rid: self.mirrors.mirrors_for(rid) if self.mirrors else [],
            holders=self.dht)
        self.models = ModelService(
            data_dir / "usage" / "model", cfg.predict, device_id=self.identity.device_id.hex(),
            usage=self.usage, store=self.store, signer=self.identity,
            connections=self.connections, trust=self.trust,
            fetch=lambda rid: self.fetcher.fetch(rid, traffic_class="prefetch",
                                                 max_size=cfg.predict.model_max_bytes),
            catalog_changed=self.catalog_changed) if self.usage is not None else None
        if self.usage is not None and self.models is not None:
            self.usage.on_access(self.models.observe_access)
        self.mirrors = MirrorService(
            cfg.prefetch, cfg.predict, data_dir / "mirrors", me=self.identity.device_id,
            store=self.store, fetch=lambda rid, cls, n: self.fetcher.fetch(
                rid, traffic_class=cls, max_size=n),
            predict=self.models.predict, usage=self.usage, connections=self.connections,
            trust=self.trust, link=self.gate.scheduler, facts=self._peer_facts,
            offer_size=self._offer_size, spawn=self.spawn,
            catalog_changed=self.catalog_changed,
            demand_active=lambda: self.fetcher.demand_in_flight,
        ) if cfg.prefetch.enabled and self.usage is not None and self.models else None
        if self.mirrors is not None and self.usage is not None:
            self.usage.on_access(self.mirrors.own_access)
        self.exports = ExportBook(data_dir / "exports.json")  # folders written where
        self.follow = FollowService(
            data_dir, self.store, self.connections, self.trust, self.fetcher, self.spawn,
            self.identity, self.catalog_changed,
            export_tree=lambda m, dest: update_tree(self.store, self.exports, m, dest))
        self.connections.on_opened(self.follow.session_opened)
        self.ble: BleLink | None = None
        self.watch = WatchService(cfg.watch, data_dir / "watches.json", self._republish,
                                  self._watch_published) if cfg.watch.enabled else None
        self.commands = Commands(CommandContext(
            cfg=cfg, identity=self.identity, started=self.started, store=self.store,
            trust=self.trust, peers=self.peers, connections=self.connections,
            pairing=self.pairing, fetcher=self.fetcher, catalog_changed=self.catalog_changed,
            stop=self.stop, unpairing=self.unpairing, authority=self.authority,
            usage=self.usage, models=self.models, watch=self.watch,
            exports=self.exports, mirrors=self.mirrors,
            follow=self.follow, dht=self.dht, relay=self.relay,
            versions=VersionService(self.store, self.connections, self.fetcher, cfg.transfer)))
        self.dashboard = Dashboard(self.commands.ctx, self.commands.table()) \
            if cfg.dashboard.enabled else None
        self.commands.ctx.dashboard = self.dashboard
        self.router.add_requests(self.connections.handlers())
        self.router.add_requests(self.pairing.handlers())
        self.router.add_requests(self.unpairing.handlers())
        self.router.add_requests(self.server.handlers())
        self.router.add_requests(self.relay.handlers())
        self.router.add_requests(self.follow.handlers())
        self.router.add_events(("version", "withdrawn"), self.follow.on_event)
        if self.usage is not None:
            self.router.add_requests(self.usage.handlers())
        if self.models is not None:
            self.router.add_requests(self.models.handlers())
        self.unpairing.on_unpaired(self.relay.unpaired)
        self.router.add_events((ROUTES_EVENT,), self.routes.on_event)
        self.unpairing.on_unpaired(self.routes.unpaired)
        if self.mirrors is not None:
            self.router.add_requests(self.mirrors.handlers())
            self.unpairing.on_unpaired(self.mirrors.unpaired)
        if self.dht is not None:
            self.router.add_requests(self.dht.handlers())
            self.unpairing.on_unpaired(self.dht.unpaired)
        if self.authority is not None:
            self.router.add_requests(self.authority.handlers())
            self.router.add_events(("raft", "cluster", "report"), self.authority.on_event)
            self.unpairing.on_unpaired(self.authority.unpaired)

    # ----------------------------------------------------------------- lifecycle
    async def run(self) -> None:
        """Run until stop() or SIGTERM/SIGINT; then shut down within the configured bound."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stop)
        control = ControlServer(self.cfg.node.control_socket_path, self.commands.table())
        metrics: MetricsServer | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                if self.dashboard is not None:  # before the socket: `status` answers =>
                    await self.dashboard.start()  # `shoal dashboard` has its URL
                await self._start_control(control)
                await self._start_connections()
                metrics = await self._start_metrics()
                if self.cfg.ble.enabled:
                    await self._start_ble()
                tg.create_task(self._housekeeping(), name=f"{TASK_PREFIX}housekeeping")
                tg.create_task(self.follow.run(), name=f"{TASK_PREFIX}follow")
                tg.create_task(self.relay.run(), name=f"{TASK_PREFIX}relay")
                tg.create_task(self.routes.run(), name=f"{TASK_PREFIX}routes")
                if self.authority is not None:
                    tg.create_task(self.authority.run(), name=f"{TASK_PREFIX}authority")
                if self.usage is not None:
                    tg.create_task(self.usage.run(), name=f"{TASK_PREFIX}usage")
                if self.models is not None:
                    tg.create_task(self.models.run(), name=f"{TASK_PREFIX}model")
                if self.mirrors is not None:
                    tg.create_task(self.mirrors.run(), name=f"{TASK_PREFIX}mirrors")
                if self.watch is not None:
                    tg.create_task(self.watch.run(), name=f"{TASK_PREFIX}watch")
                if self.dht is not None:
                    tg.create_task(self.dht.run(), name=f"{TASK_PREFIX}dht")
                self.ready.set()  # READY=1 only now: the control socket and LAN listener serve
                notify_systemd(f"READY=1\nSTATUS={self._status_line()}")
                log.info("agent ready", extra=kv(
                    id=self.identity.short_id, name=self.cfg.node.name,
                    port=self.connections.lan_port, control=self.cfg.node.control_socket_path,
                    startup_ms=round((time.monotonic() - self.started) * 1000)))
                await self.stopping.wait()
                await self._shutdown(control)
        except* StartupError as eg:  # one line for the user, not a task-group traceback
            raise eg.exceptions[0] from None
        finally:
            await control.close()
            if metrics is not None:
                await metrics.close()
            if self.dashboard is not None:
                await self.dashboard.close()
            if self.authority is not None:
                self.authority.close()
            if self.usage is not None:
                self.usage.close()
            self._tg = None
            log.info("agent stopped")

    async def _start_control(self, control: ControlServer) -> None:
        try:
            await control.start()
        except ControlError as e:  # a live agent answers on that socket
            raise StartupError(f"{e}: stop it (shoal stop) or give this agent its own "
                               "--data-dir") from None
        except OSError as e:
            raise StartupError(f"cannot open the control socket {control.path}: "
                               f"{e.strerror or e}; check node.control_socket and "
                               "$SHOAL_CONTROL_SOCKET") from None

    async def _start_metrics(self) -> MetricsServer | None:
        """[metrics] enabled: Prometheus text on a local port (agent/control/metrics.py)."""
        if not self.cfg.metrics.enabled:
            return None
        m = self.cfg.metrics
        server = MetricsServer(m.listen, m.port, lambda: metrics_snapshot(self.commands.ctx))
        try:
            await server.start()
        except MetricsUnavailable as e:
            raise StartupError(str(e)) from None
        return server

    async def _start_connections(self) -> None:
        try:
            await self.connections.start()
        except OSError as e:
            raise listen_failure(self.cfg.lan.listen, self.cfg.lan.port, e) from None

    async def _shutdown(self, control: ControlServer) -> None:
        notify_systemd("STOPPING=1")
        log.info("agent stopping")
        if self.ble is not None:
            with contextlib.suppress(Exception):
                await self.ble.stop()
        await control.close()
        await self.connections.stop(self.cfg.node.shutdown_timeout)
        for task in asyncio.all_tasks():
            if task.get_name().startswith(TASK_PREFIX):
                task.cancel()

    def stop(self) -> None:
        self.stopping.set()

    def spawn(self, coro: Coroutine[object, None, object], name: str) -> asyncio.Task[object]:
        """Run *coro* as a task of the node's TaskGroup, guarded: a failure in one
        background job (a send to a peer that just vanished) is logged, not fatal."""
        if self._tg is None:
            coro.close()
            raise RuntimeError("node is not running")
        return self._tg.create_task(self._guarded(coro, name), name=f"{TASK_PREFIX}{name}")

    @staticmethod
    async def _guarded(coro: Coroutine[object, None, object], name: str) -> object:
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
        """Liveness of peers, pairing expiry, stale peer rows, and the systemd watchdog."""
        interval, watchdog = watchdog_interval(self.cfg.lan.heartbeat_interval)
        status = ServiceStatus()
        while True:
            await asyncio.sleep(interval)
            if watchdog:  # from the event loop itself: a frozen loop stops the pings
                notify_systemd("WATCHDOG=1")
                status.update(self._status_line())
            try:
                await self.pairing.expire()
                self.peers.prune()
                self.connections.check()
            except Exception:  # never let bookkeeping take the agent down
                log.exception("housekeeping failed")

    def _status_line(self) -> str:
        return status_line(len(self.peers.all()), self.connections.count(),
                           self.fetcher.in_flight)

    # ----------------------------------------------------------------- wiring between services
    def catalog_changed(self) -> None:
        """Holdings changed (publish, fetch): every service that describes them refreshes."""
        self.server.catalog_changed()
        if self.ble is not None:
            self.ble.catalog_changed()
        if self.authority is not None:
            self.authority.catalog_changed()
        if self.dht is not None:
            self.dht.catalog_changed()
        if self.dashboard is not None:
            self.dashboard.poke()

    def _watch_published(self, m: Manifest) -> None:
        """A watched path was republished: as `shoal publish` does, refresh the catalog and
        announce the version, so followers fetch it now, not at their next check."""
        self.catalog_changed()
        self.follow.published(self.store.find(m.resource_id))

    def _republish(self, w: WatchEntry) -> Manifest:
        """A watched path changed: its next version (the same one if nothing did)."""
        if w.path.is_dir():
            return self.store.publish_tree(w.path, public=w.public, signer=self.identity,
                                           update=w.resource_id,
                                           exclude=(self.cfg.node.data_dir,))
        return self.store.publish_file(w.path, public=w.public, signer=self.identity,
                                       update=w.resource_id)

    def _authority_hint(self, resource_id: str) -> AuthorityHint | None:
        if self.authority is None:
            return None
        a = self.authority.map.authority_for(resource_id)
        if a is None or a.holder is None:
            return None
        return AuthorityHint(a.holder, self.authority.name_of(a.holder), a.term, a.epoch)

    def _peer_facts(self, member: str) -> PeerFacts | None:
        """A paired device's load, reputation, bandwidth and holdings, from its last
        authority report (the mirror manager's view of a candidate host)."""
        rep = self.authority.policy.reports.by_member.get(member) if self.authority else None
        if rep is None:
            return None
        stats = list(rep.holdings.values())
        scores = [reputation_score(st, time.time()) for st in stats]
        rate = max((st.quality.bitrate_bps for st in stats), default=0.0)
        return PeerFacts(rep.load, sum(scores) / len(scores) if scores else None,
                         rate or None, frozenset(rep.holdings))

    async def _offer_size(self, resource_id: str) -> tuple[int, frozenset[str]] | None:
        """The size paired holders state for *resource_id* (bounds a prefetch: the fetch
        refuses a version larger than this before any chunk moves), and who they are."""
        conns = [c for c in self.connections.live_connections()
                 if self.trust.is_trusted(c.peer_id)]
        offers, _ = await find_offers(conns, resource_id, self.cfg.transfer.request_timeout,
                                      self.fetcher.is_trusted, why="prefetch")
        mine = [o for o in offers if o.manifest.resource_id == resource_id]
        if not mine:
            return None
        return (max(o.manifest.size for o in mine),
                frozenset(o.conn.peer_id.hex() for o in mine))

    def ble_agent(self) -> BleAgent:
        """The ports the BLE link works with."""
        from agent.links.ble import BleAgent
        return BleAgent(self.identity, self.store, self.trust, self.peers, self.connections,
                        lan_enabled=self.cfg.lan.enabled)

    def use_ble(self, link: BleLink | None) -> None:
        self.ble = link
        self.commands.ctx.ble = link

    async def _start_ble(self) -> None:
        """BLE is the control plane; a missing adapter or D-Bus must not stop the agent."""
        from agent.links.ble import BleLink

        link = BleLink(self.ble_agent(), self.cfg.ble)
        try:
            await link.start()
        except Exception as e:
            log.warning("BLE unavailable", extra=kv(adapter=self.cfg.ble.adapter, reason=e))
            return
        self.use_ble(link)
