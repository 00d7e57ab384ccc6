"""Authority service: drives the sans-I/O Raft core over peer sessions.

One Raft group per trust domain keeps the authority map (resource -> holder, stamped with the
Raft term) identical on every member. This module is the asyncio adapter around it:

* **Transport.** Raft messages travel as ``raft`` events inside the authenticated session of
  the paired peer they are addressed to; a message whose ``src`` is not the session's own
  device ID is dropped, so one member cannot speak for another. Unpaired devices and guests
  never reach the Raft core.
* **Membership.** A new agent founds a one-member cluster (it is its own leader, so the map
  works offline). When two paired agents in different clusters meet, the smaller cluster
  (fewer members; ties by cluster ID) joins the larger one: it asks the leader to add it as a
  learner, drops its old state and replicates the log. The leader keeps 3-5 voters chosen
  by uptime (:func:`choose_voters`) and promotes or demotes one member at a time.
* **Authority.** Members report what they hold and how they serve it; the leader scores
  holders (:mod:`agent.authority.reputation`) and proposes reassignments beyond the
  hysteresis. Safety rule: a device *acts* as authority only while the map names it **and**
  it heard from a leader within ``LEASE``; the leader moves authority away from a holder only
  after that holder has been silent for ``DEAD_AFTER`` > ``LEASE`` (or after revoking it and
  waiting ``LEASE``), so two devices never act as authority for one resource at once.
  A minority partition keeps serving cached content but cannot commit reassignments.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import shutil
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.authority.authority_map import Assign, AuthorityMap, Revoke, encode_command
from agent.authority.raft import messages as raft_messages
from agent.authority.raft.core import ProposalDroppedError, RaftError, RaftNode
from agent.authority.raft.file_storage import FileStorage
from agent.authority.raft.ready import StateType
from agent.authority.raft.storage import persist_ready
from agent.authority.reputation import (
    HolderStats,
    QualityMetrics,
    ReputationWeights,
    UsageCounter,
    choose_authority,
    choose_voters,
    reputation_score,
)
from agent.fsutil import atomic_write_bytes
from agent.log import kv

if TYPE_CHECKING:
    from pathlib import Path

    from agent.peer.connection import PeerConnection
    from agent.ports import ConnectionsPort, HolderStatsPort, Spawner, StoreView, TrustView

log = logging.getLogger("shoal.authority")

TICK = 0.05  # seconds per Raft tick
ELECTION_TICKS = 6  # election timeout 0.3-0.6 s (randomised in [6, 12) ticks)
HEARTBEAT_TICKS = 2  # leader heartbeat every 100 ms (a third of the shortest election timeout)
SOLO_TICK = 0.5  # alone in its cluster an agent has nobody to heartbeat: tick slowly (idle CPU)
SOLO_REPORT_INTERVAL = 10.0
LEASE = 0.4  # an authority acts only while it heard from a leader this recently
DEAD_AFTER = 0.6  # the leader moves authority off a holder silent this long (> LEASE)
REPORT_INTERVAL = 2.0  # plus an immediate report whenever our holdings change
REPORT_STALE = 7.0
EVALUATE_INTERVAL = 0.1  # quick pass: resources of holders that just went silent, new ones
FULL_EVALUATE_INTERVAL = 2.0  # every resource, scores compared with hysteresis
MEMBERSHIP_INTERVAL = 1.0
DEMOTE_AFTER = 30.0  # a voter silent this long is replaced by a live learner
COMPACT_EVERY = 1000
MAX_HOLDINGS = 4096
USAGE_HALF_LIFE = 600.0


@dataclass
class HolderReport:
    """What one member last told us about its holdings (leader input for scores)."""

    received: float
    load: float
    uptime: float
    holdings: dict[str, HolderStats] = field(default_factory=dict)


class AuthorityService:
    """Owned by the node; ``run()`` is one task in the node's TaskGroup."""

    def __init__(self, me: str, name: str, data_dir: Path, connections: ConnectionsPort,
                 trust: TrustView, store: StoreView, load: HolderStatsPort, spawn: Spawner, *,
                 hysteresis: float = 0.15, weights: ReputationWeights | None = None) -> None:
        self.me = me
        self.my_name = name
        self.dir = data_dir / "raft"
        self.connections = connections
        self.trust = trust
        self.store = store
        self.load = load
        self.spawn = spawn
        self.weights = weights or ReputationWeights()
        self.hysteresis = hysteresis
        self.map = AuthorityMap()
        self.inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=10_000)
        self.last_heard: dict[str, float] = {}
        self.reports: dict[str, HolderReport] = {}
        self.usage: dict[str, UsageCounter] = {}
        self.served_errors: dict[str, int] = {}
        self.names: dict[str, str] = {}  # resource id -> name, from reports (for display)
        self.started = time.monotonic()
        self.leader_since: float | None = None
        self.last_leader_contact = 0.0
        self._revoked_at: dict[str, float] = {}  # resource -> when our Revoke was applied
        self._assigned_at: dict[str, float] = {}  # resource -> when its assignment applied here
        self._by_holder: dict[str, set[str]] = {}  # holder -> resources it is authority for
        self._pending: set[str] = set()  # resources to look at in the next quick pass
        self._report_now = False
        self._raw_reports: dict[str, tuple[Any, ...]] = {}  # last raw report per member
        self._scores_dirty = True  # a report changed since the last full evaluation
        self._proposed: dict[str, float] = {}  # resource -> when we last proposed for it
        self._joining = False
        self._storage: FileStorage | None = None
        self.raft: RaftNode | None = None
        self.cluster_id = ""
        self._open()

    # ----------------------------------------------------------------- state on disk
    def _open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        meta = self.dir / "cluster.json"
        cluster_id = ""
        with contextlib.suppress(OSError, ValueError, TypeError):
            cluster_id = str(json.loads(meta.read_bytes())["cluster"])
        founding = not cluster_id or len(cluster_id) != 32
        if founding:
            cluster_id = secrets.token_hex(16)
            atomic_write_bytes(meta, json.dumps({"cluster": cluster_id}).encode(), 0o600)
        self._start_raft(cluster_id, voters=[self.me] if founding else [])

    def _start_raft(self, cluster_id: str, voters: list[str]) -> None:
        if self._storage is not None:
            self._storage.close()
        self.cluster_id = cluster_id
        self._storage = FileStorage(self.dir / cluster_id)
        snap = self._storage.snapshot()
        self.map = AuthorityMap.restore(snap.data) if snap.index else AuthorityMap()
        if snap.index:
            self.map.applied_index = snap.index
        self._reindex()
        self.raft = RaftNode(
            self.me, voters, self._storage, random.Random(secrets.randbits(64)),
            election_tick=ELECTION_TICKS, heartbeat_tick=HEARTBEAT_TICKS,
            pre_vote=True, check_quorum=True,
        )
        log.info("authority cluster", extra=kv(cluster=cluster_id[:8], voters=len(voters)))

    def _reindex(self) -> None:
        """Rebuild holder -> resources after the whole map was replaced (snapshot)."""
        self._by_holder = {}
        now = time.monotonic()
        for rid, a in self.map.assignments():
            self._assigned_at[rid] = now
            if a.holder is not None:
                self._by_holder.setdefault(a.holder, set()).add(rid)

    def _switch_cluster(self, cluster_id: str) -> None:
        """Leave our cluster for *cluster_id*: its leader has added us as a learner."""
        self._by_holder.clear()
        self._pending.clear()
        old = self.dir / self.cluster_id
        atomic_write_bytes(self.dir / "cluster.json",
                           json.dumps({"cluster": cluster_id}).encode(), 0o600)
        self._start_raft(cluster_id, voters=[])
        shutil.rmtree(old, ignore_errors=True)
        self.leader_since = None
        self._revoked_at.clear()
        self._proposed.clear()

    def close(self) -> None:
        if self._storage is not None:
            self._storage.close()

    # ----------------------------------------------------------------- reads
    @property
    def leader(self) -> str | None:
        return self.raft.lead if self.raft else None

    @property
    def is_leader(self) -> bool:
        return self.raft is not None and self.raft.is_leader()

    def members(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        assert self.raft is not None
        return self.raft.voters, self.raft.learners

    def authority_for(self, resource_id: str) -> str | None:
        a = self.map.authority_for(resource_id)
        return a.holder if a is not None else None

    def acting_for(self, resource_id: str) -> bool:
        """True while this device may act as the resource's authority.

        Three conditions: the map names us; we heard from a leader within LEASE (so a
        device cut off from the group stops acting); and our assignment was applied at least
        LEASE ago (so the previous holder has surely applied the change or lost its lease).
        Together: two devices never act for one resource at the same moment.
        """
        if self.authority_for(resource_id) != self.me:
            return False
        now = time.monotonic()
        if now - self._assigned_at.get(resource_id, now) < LEASE:
            return False
        return self.is_leader or now - self.last_leader_contact < LEASE

    def catalog_changed(self) -> None:
        """Our holdings changed (publish, fetch): report at the next driver step."""
        self._report_now = True

    def scores(self, resource_id: str, now: float | None = None) -> dict[str, float]:
        """Reputation of each holder of *resource_id* known from recent reports."""
        now = time.monotonic() if now is None else now
        out: dict[str, float] = {}
        for holder, rep in self.reports.items():
            stats = rep.holdings.get(resource_id)
            if stats is not None and now - rep.received < REPORT_STALE:
                out[holder] = reputation_score(stats, time.time(), self.weights)
        return out

    # ----------------------------------------------------------------- inputs
    def record_use(self, resource_id: str) -> None:
        """A peer asked us for this resource (feeds our usage frequency)."""
        counter = self.usage.get(resource_id, UsageCounter())
        self.usage[resource_id] = counter.record(time.time(), USAGE_HALF_LIFE)

    def record_integrity_failure(self, resource_id: str) -> None:
        self.served_errors[resource_id] = self.served_errors.get(resource_id, 0) + 1

    def on_event(self, conn: PeerConnection, op: str, args: dict[str, Any]) -> None:
        """Raft, cluster and report events from a session (already schema-checked)."""
        if not self._member_peer(conn):
            return
        src = conn.peer_id.hex()
        now = time.monotonic()
        if op == "cluster":
            self._on_cluster_hello(conn, args)
            return
        if args["c"] != self.cluster_id:
            return
        self.last_heard[src] = now
        if op == "raft":
            try:
                msg = raft_messages.decode(args["m"].encode())
            except raft_messages.RaftMessageError as e:
                log.warning("bad raft message", extra=kv(peer=conn.name, reason=e))
                return
            if msg.src != src or msg.dst != self.me:
                log.warning("raft message with forged endpoints", extra=kv(peer=conn.name))
                return
            with contextlib.suppress(asyncio.QueueFull):
                self.inbox.put_nowait(("msg", msg))
        elif op == "report":
            self._on_report(src, args, now)

    def _member_peer(self, conn: PeerConnection) -> bool:
        dev = self.trust.get(conn.peer_id)
        return dev is not None and dev.role == "member"

    def _on_report(self, src: str, args: dict[str, Any], now: float) -> None:
        previous = self.reports.get(src)
        raw = (args["h"], args["load"], args["up"])
        if previous is not None and self._raw_reports.get(src) == raw:
            previous.received = now  # nothing new: keep the parsed stats, skip re-scoring
            return
        self._raw_reports[src] = raw
        self._scores_dirty = True
        holdings: dict[str, HolderStats] = {}
        for rid, raw in list(args["h"].items())[:MAX_HOLDINGS]:
            if not (isinstance(rid, str) and len(rid) == 32 and isinstance(raw, list)
                    and len(raw) == 5 and all(isinstance(x, (int, float)) for x in raw[:4])
                    and isinstance(raw[4], str) and len(raw[4]) <= 255):
                continue
            usage, bitrate, err, integrity, name = raw
            if len(self.names) < 100_000:
                self.names[rid] = name
            holdings[rid] = HolderStats(
                usage=UsageCounter(max(0.0, float(usage)), time.time()),
                quality=QualityMetrics(bitrate_bps=max(0.0, float(bitrate)),
                                       error_rate=min(1.0, max(0.0, float(err))),
                                       integrity_failures=max(0, int(integrity))),
                uptime=float(args["up"]), load=float(args["load"]),
            )
        if previous is None or holdings.keys() != previous.holdings.keys():
            known = previous.holdings.keys() if previous else set()
            self._pending.update(holdings.keys() - known)
        self.reports[src] = HolderReport(now, float(args["load"]), float(args["up"]), holdings)

    async def handle_join(self, conn: PeerConnection, cluster: str) -> dict[str, Any]:
        """A paired member of another cluster asks to join ours (we must be its leader)."""
        from agent.peer.connection import Refused

        if not self._member_peer(conn):
            raise Refused("only paired members may join the authority group")
        if cluster != self.cluster_id:
            raise Refused("not this cluster")
        if not self.is_leader:
            raise Refused(f"not leader; leader={self.leader or ''}")
        joiner = conn.peer_id.hex()
        voters, learners = self.members()
        if joiner not in voters and joiner not in learners:
            fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            await self.inbox.put(("conf", ("add_learner", joiner, fut)))
            try:
                await asyncio.wait_for(fut, 5.0)
            except (RaftError, TimeoutError) as e:
                raise Refused(f"cannot add member now: {e}") from None
        return {"cluster": self.cluster_id}

    def handlers(self) -> dict[str, Any]:
        """Peer requests this service answers (for the router's table)."""
        return {"raft_join": self._on_join_request}

    async def _on_join_request(self, conn: PeerConnection, req: Any) -> dict[str, Any]:
        return await self.handle_join(conn, req.args["c"])

    # ----------------------------------------------------------------- the driver
    async def run(self) -> None:
        """Run the driver; a bug in it is logged and the driver restarted, because losing
        the authority map must never take the data plane (serving, fetching) down."""
        while True:
            try:
                await self._drive()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("authority driver failed; restarting in 1 s")
                await asyncio.sleep(1.0)

    async def _drive(self) -> None:
        """Tick, step, persist, send, apply; plus the periodic duties of members/leaders."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + TICK
        next_report = next_eval = next_membership = next_full_eval = 0.0
        while True:
            timeout = max(0.0, next_tick - loop.time())
            item: tuple[str, Any] | None = None
            if not self.inbox.empty():
                item = self.inbox.get_nowait()
            else:
                # asyncio.timeout, not wait_for: no extra task per wake-up (idle CPU on a Pi)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        item = await self.inbox.get()
            if loop.time() >= next_tick:
                self.raft.tick()
                step = TICK if self._has_company() else SOLO_TICK
                next_tick = max(next_tick + step, loop.time() - step)
            while item is not None:
                self._handle(item)
                item = None if self.inbox.empty() else self.inbox.get_nowait()
            await self._process_ready()
            now = time.monotonic()
            if now >= next_report or self._report_now:
                next_report = now + (REPORT_INTERVAL if self._has_company()
                                     else SOLO_REPORT_INTERVAL)
                self._report_now = False
                self._send_reports()
            if self.is_leader and now >= next_eval:
                next_eval = now + EVALUATE_INTERVAL
                # full pass only when some report changed (or every 5 intervals anyway)
                full = now >= next_full_eval and (
                    self._scores_dirty or now >= next_full_eval + 4 * FULL_EVALUATE_INTERVAL)
                if full:
                    next_full_eval = now + FULL_EVALUATE_INTERVAL
                    self._scores_dirty = False
                self._evaluate(now, full=full)
            if now >= next_membership:
                next_membership = now + MEMBERSHIP_INTERVAL
                self._announce_cluster()
                if self.is_leader:
                    self._manage_voters(now)

    def _has_company(self) -> bool:
        """Other members in our cluster, or paired members we may merge with."""
        voters, learners = self.members()
        return len(voters) + len(learners) > 1 or self._joining

    def _handle(self, item: tuple[str, Any]) -> None:
        kind, payload = item
        assert self.raft is not None
        if kind == "msg":
            if payload.src == self.raft.lead:
                self.last_leader_contact = time.monotonic()
            try:
                self.raft.step(payload)
            except RaftError as e:
                log.debug("raft step rejected", extra=kv(reason=e))
        elif kind == "conf":
            op, target, fut = payload
            try:
                idx = self.raft.propose_conf_change(op, target)
            except (RaftError, ValueError) as e:
                if fut is not None and not fut.done():
                    fut.set_exception(RaftError(str(e)))
                return
            if fut is not None and not fut.done():
                fut.set_result(idx)
        elif kind == "switch":
            if payload != self.cluster_id:
                self._switch_cluster(payload)
        elif kind == "propose":
            try:
                self.raft.propose(payload)
            except (ProposalDroppedError, RaftError) as e:
                log.debug("proposal dropped", extra=kv(reason=e))

    async def _process_ready(self) -> None:
        raft = self.raft
        assert raft is not None and self._storage is not None
        while raft.has_ready():
            rd = raft.ready()
            if rd.hard_state is not None or rd.entries or rd.snapshot is not None:
                await asyncio.to_thread(persist_ready, self._storage, rd)
            if rd.snapshot is not None and rd.snapshot.index > self.map.applied_index:
                self.map = AuthorityMap.restore(rd.snapshot.data)
                self.map.applied_index = rd.snapshot.index
                self._reindex()
            self._send(rd.messages)
            for entry in rd.committed_entries:
                result = self.map.apply(entry)
                if result is not None and result.accepted and result.assignment is not None:
                    self._on_assignment(result.resource_id or "", result.assignment)
            raft.advance(rd)
            if rd.soft_state_changed:
                self._on_soft_state(rd.soft_state)
            if self.map.applied_index - self._storage.first_index() > COMPACT_EVERY:
                with contextlib.suppress(RaftError, ValueError):
                    raft.compact(self.map.applied_index, self.map.snapshot())

    def _on_soft_state(self, ss: Any) -> None:
        if ss.state == StateType.LEADER:
            self.leader_since = time.monotonic()
            log.info("became authority leader", extra=kv(cluster=self.cluster_id[:8],
                                                         term=self.raft.term))
        else:
            self.leader_since = None
        if ss.lead:
            self.last_leader_contact = time.monotonic()

    def _on_assignment(self, resource_id: str, a: Any) -> None:
        self._proposed.pop(resource_id, None)
        self._assigned_at[resource_id] = time.monotonic()
        for held in self._by_holder.values():
            held.discard(resource_id)
        if a.holder is not None:
            self._by_holder.setdefault(a.holder, set()).add(resource_id)
        else:
            self._pending.add(resource_id)  # revoked: a successor is chosen next pass
        if a.holder is None:
            self._revoked_at[resource_id] = time.monotonic()
        log.info("authority assigned", extra=kv(
            resource=resource_id[:12], holder=self.name_of(a.holder), term=a.term, epoch=a.epoch))

    def _send(self, msgs: Any) -> None:
        by_dst: dict[str, list[bytes]] = {}
        for m in msgs:
            by_dst.setdefault(m.dst, []).append(raft_messages.encode(m))
        for dst, payloads in by_dst.items():
            conn = self.connections.live_connection(dst)
            if conn is None:
                with contextlib.suppress(RaftError):
                    self.raft.report_unreachable(dst)
                continue
            self.spawn(self._deliver(conn, payloads), "raft-send")

    async def _deliver(self, conn: PeerConnection, payloads: list[bytes]) -> None:
        for p in payloads:
            try:
                await conn.send_event("raft", {"c": self.cluster_id, "m": p.decode()})
            except (ConnectionError, OSError):
                return

    # ----------------------------------------------------------------- cluster merge
    def _announce_cluster(self) -> None:
        voters, learners = self.members()
        if not voters:
            return  # just joined: nothing to announce until the log tells us our members
        args = {"c": self.cluster_id, "n": len(voters) + len(learners), "l": self.leader or ""}
        for conn in self.connections.live_connections():
            if self._member_peer(conn):
                self.spawn(self._quiet(conn.send_event("cluster", args)), "cluster-hello")

    @staticmethod
    async def _quiet(coro: Any) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await coro

    def _on_cluster_hello(self, conn: PeerConnection, args: dict[str, Any]) -> None:
        if args["c"] == self.cluster_id or self._joining:
            return
        voters, learners = self.members()
        mine = (len(voters) + len(learners), self.cluster_id)
        theirs = (int(args["n"]), args["c"])
        if theirs <= mine:
            return  # they come to us
        target = conn
        leader = args["l"]
        if leader and leader != conn.peer_id.hex():
            target = self.connections.live_connection(leader) or conn
        self._joining = True
        self.spawn(self._join(target, args["c"]), "raft-join")

    async def _join(self, conn: PeerConnection, cluster: str) -> None:
        from agent.peer.connection import PeerGone, RemoteError

        try:
            for _ in range(5):
                try:
                    await conn.request("raft_join", {"c": cluster}, timeout=6.0)
                except RemoteError as e:
                    hint = str(e).partition("leader=")[2].strip()
                    nxt = self.connections.live_connection(hint) if hint else None
                    if nxt is None:
                        await asyncio.sleep(0.5)
                    else:
                        conn = nxt
                    continue
                await self.inbox.put(("switch", cluster))  # the driver switches between steps
                log.info("joined authority cluster", extra=kv(cluster=cluster[:8],
                                                              via=conn.name))
                return
        except (PeerGone, TimeoutError, ConnectionError) as e:
            log.info("joining cluster failed", extra=kv(cluster=cluster[:8], reason=e))
        finally:
            self._joining = False

    # ----------------------------------------------------------------- member duties
    def _holdings_report(self) -> dict[str, list[Any]]:
        now = time.time()
        rate = self.load.capacity_estimate() or 0.0
        out: dict[str, list[Any]] = {}
        for rec in self.store.resources()[:MAX_HOLDINGS]:
            rid = rec.resource_id
            usage = self.usage.get(rid, UsageCounter()).value_at(now, USAGE_HALF_LIFE)
            errors = self.served_errors.get(rid, 0)
            out[rid] = [round(usage, 1), round(rate, -5), 0.0, errors, rec.name]
        return out

    def _load(self) -> float:
        """Serving load in [0, 1]: chunk sends waiting for the link, 16 of them = full."""
        return round(min(1.0, self.load.queued() / 16), 2)

    def _uptime(self) -> float:
        """Fraction of the last hour this agent has been up (rounded: reports that do not
        change are cheap to receive)."""
        return round(min(1.0, (time.monotonic() - self.started) / 3600.0), 2)

    def _send_reports(self) -> None:
        args = {"c": self.cluster_id, "h": self._holdings_report(), "load": self._load(),
                "up": self._uptime()}
        self._on_report(self.me, args, time.monotonic())  # the leader scores itself too
        for conn in self.connections.live_connections():
            if self._member_peer(conn):
                self.spawn(self._quiet(conn.send_event("report", args)), "report")

    def _alive(self, member: str, now: float) -> bool:
        if member == self.me:
            return True
        return now - self.last_heard.get(member, -1e9) < DEAD_AFTER

    def _evaluate(self, now: float, *, full: bool) -> None:
        """Leader: (re)assign held resources to their best live holder.

        The quick pass (every 0.1 s) looks only at resources whose authority went silent
        and at newly reported or revoked ones, so a mesh with thousands of resources costs
        nothing while nothing changes; the full pass compares every score.
        """
        assert self.raft is not None
        if self.leader_since is None:
            self.leader_since = now
        voters, learners = self.members()
        members = set(voters) | set(learners)
        if full:
            resources: set[str] = set()
            for holder, rep in self.reports.items():
                if holder in members and now - rep.received < REPORT_STALE:
                    resources.update(rep.holdings)
        else:
            resources = self._pending
            for holder, held in self._by_holder.items():
                if held and not self._alive(holder, now):
                    resources |= held
        self._pending = set()
        for rid in sorted(resources):
            if now - self._proposed.get(rid, -1e9) < 1.0:
                self._pending.add(rid)
                continue  # our last proposal for it is still in flight
            scores = {h: s for h, s in self.scores(rid, now).items()
                      if h in members and self._alive(h, now)}
            current = self.authority_for(rid)
            incumbent_ok = current in scores
            if current is not None and not incumbent_ok:
                # the incumbent is silent or gone: only after its lease has surely expired
                silent_for = now - self.last_heard.get(current, -1e9)
                if (now - self.leader_since) < DEAD_AFTER and silent_for < DEAD_AFTER:
                    continue
            best = choose_authority(current if incumbent_ok else None, scores, self.hysteresis)
            if best is None or best == current:
                continue
            epoch = self.map.epoch_of(rid)
            if current is not None and incumbent_ok:
                # a live incumbent loses on score: revoke first, assign after its lease
                self._propose(rid, encode_command(Revoke(rid, epoch)), now)
                continue
            if current is None and rid in self._revoked_at and \
                    now - self._revoked_at[rid] < LEASE:
                self._pending.add(rid)
                continue
            self._propose(rid, encode_command(Assign(rid, best, epoch)), now)

    def _propose(self, rid: str, data: bytes, now: float) -> None:
        self._proposed[rid] = now
        self._handle(("propose", data))

    def _manage_voters(self, now: float) -> None:
        """Keep 3-5 voters, chosen by uptime among live members, one change at a time."""
        assert self.raft is not None
        voters, learners = self.members()
        status = self.raft.status()
        uptimes: dict[str, float] = {}
        for m in (*voters, *learners):
            alive = m == self.me or now - self.last_heard.get(m, -1e9) < DEMOTE_AFTER
            rep = self.reports.get(m)
            uptimes[m] = (rep.uptime if rep else 0.0) + (1.0 if alive else -1.0)
        want_voters, _ = choose_voters(uptimes)
        for m in want_voters:
            # promote only while below the target count: a full voter set changes only when
            # a dead voter is removed below (else 5 voters + a promotion = 6)
            if m in learners and len(voters) < len(want_voters):
                pr = status.progress.get(m)
                if pr is not None and pr.match >= status.commit - 5 and self._alive(m, now):
                    self._handle(("conf", ("promote_learner", m, None)))
                    return
        for m in voters:
            if m not in want_voters and m != self.me and \
                    now - self.last_heard.get(m, -1e9) > DEMOTE_AFTER:
                self._handle(("conf", ("remove_voter", m, None)))
                return

    # ----------------------------------------------------------------- presentation
    def name_of(self, member: str | None) -> str:
        if member is None:
            return "-"
        if member == self.me:
            return self.my_name
        conn = self.connections.live_connection(member)
        if conn is not None:
            return conn.name
        dev = self.trust.get(bytes.fromhex(member))
        return dev.name if dev is not None else member[:12]

    def describe(self, resource: str | None = None) -> dict[str, Any]:
        """The map with scores and terms, for `shoal authority`."""
        assert self.raft is not None
        voters, learners = self.members()
        now = time.monotonic()
        rows = []
        names = dict(self.names)
        names.update((r.resource_id, r.name) for r in self.store.resources())
        for rid, a in self.map.assignments():
            if resource and not (rid.startswith(resource.lower()) or names.get(rid) == resource):
                continue
            rows.append({
                "resource_id": rid, "name": names.get(rid, ""),
                "holder": self.name_of(a.holder), "holder_id": a.holder, "term": a.term,
                "epoch": a.epoch, "index": a.index,
                "acting_here": self.acting_for(rid),
                "scores": {self.name_of(h): round(s, 4) for h, s in
                           sorted(self.scores(rid, now).items(), key=lambda x: -x[1])},
            })
        return {
            "cluster": self.cluster_id, "term": self.raft.term,
            "role": "leader" if self.is_leader else (
                "learner" if self.me in learners else "follower"),
            "leader": self.name_of(self.leader), "leader_id": self.leader,
            "voters": [self.name_of(v) for v in voters],
            "learners": [self.name_of(x) for x in learners],
            "commit": self.raft.commit_index, "applied": self.map.applied_index,
            "assignments": rows,
        }
