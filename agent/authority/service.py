"""Authority service: the asyncio adapter around the Raft core and the authority policy.

Every decision (lease, liveness, reassignment, voters, cluster merging) is made by the pure
:class:`~agent.authority.policy.AuthorityPolicy`; this module only reads the clock, carries
messages over peer sessions, persists the Raft Ready and executes the policy's decisions.

One Raft group per trust domain keeps the authority map (resource -> holder, stamped with the
Raft term) identical on every member.

* **Transport.** Raft messages travel as ``raft`` events inside the authenticated session of
  the paired peer they are addressed to; a message whose ``src`` is not the session's own
  device ID is dropped, so one member cannot speak for another. Unpaired devices and guests
  never reach the Raft core.
* **Membership** (:mod:`agent.authority.policy.merge`). A new agent founds a one-member
  cluster; paired members announce their cluster every second and the smaller cluster joins
  the larger (``raft_join``, answered once the ``add_learner`` entry committed); a member
  whose cluster can no longer elect a leader joins another or founds a new one. The leader
  keeps 3-5 voters chosen by uptime, one change at a time (:mod:`.policy.voters`).
* **Authority** (:mod:`.policy.reassign`, :mod:`.policy.lease`). Members report what they
  hold; the leader scores holders and proposes reassignments beyond the hysteresis; a device
  acts only under the lease, so two devices of one cluster never act for one resource at
  once (docs/authority.md, "Lease").

Only this module reads the clock (``clock``, monotonic by default); the policy gets ``now``.
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
from typing import TYPE_CHECKING, Any

from agent.authority.authority_map import Assignment, AuthorityMap, encode_command
from agent.authority.policy import (
    DEFAULT_TIMING,
    AddLearner,
    Admitted,
    AuthorityPolicy,
    Hello,
    HolderReport,
    Join,
    MergeDecision,
    Refound,
    RemoveFirst,
    Timing,
    VoterChange,
    for_earlier_incarnation,
)
from agent.authority.policy.reports import MAX_HOLDINGS, BadReport, parse_holdings
from agent.authority.raft import messages as raft_messages
from agent.authority.raft.core import ProposalDroppedError, RaftError, RaftNode
from agent.authority.raft.file_storage import FileStorage
from agent.authority.raft.messages import Message
from agent.authority.raft.ready import SoftState, StateType
from agent.authority.raft.storage import persist_ready
from agent.authority.reputation import (
    ReputationWeights,
    UsageCounter,
)
from agent.fsutil import atomic_write_bytes
from agent.log import kv
from agent.security.identity import short_device_id

if TYPE_CHECKING:
    from pathlib import Path

    from agent.peer.connection import PeerConnection
    from agent.ports import (
        Clock,
        ConnectionsPort,
        HolderStatsPort,
        JSONValue,
        PeerLink,
        Spawner,
        StoreView,
        TrustedDeviceView,
        TrustView,
    )

log = logging.getLogger("shoal.authority")

_T = DEFAULT_TIMING
TICK = _T.tick  # seconds per Raft tick
ELECTION_TICKS = _T.election_ticks
HEARTBEAT_TICKS = _T.heartbeat_ticks
SOLO_TICK = 0.5  # alone in its cluster an agent has nobody to heartbeat: tick slowly (idle CPU)
SOLO_REPORT_INTERVAL = 10.0
LEASE = _T.lease
DEAD_AFTER = _T.dead_after
REPORT_INTERVAL = 2.0  # plus an immediate report whenever our holdings change
COMPACT_EVERY = 1000
USAGE_HALF_LIFE = 600.0
JOIN_ATTEMPTS = 5


def short_member_id(member: str) -> str:
    """The short human device ID of a member (members are device IDs in hex)."""
    try:
        return short_device_id(bytes.fromhex(member))
    except ValueError:
        return "".join(c for c in member[:16] if c.isalnum())  # not a device ID: never raw


class AuthorityService:
    """Owned by the node; ``run()`` is one task in the node's TaskGroup."""

    def __init__(self, me: str, name: str, data_dir: Path, connections: ConnectionsPort,
                 trust: TrustView, store: StoreView, load: HolderStatsPort, spawn: Spawner, *,
                 hysteresis: float = 0.15, weights: ReputationWeights | None = None,
                 timing: Timing = DEFAULT_TIMING, clock: Clock = time.monotonic) -> None:
        if not timing.safe:
            raise ValueError("authority timing: need 0 < lease < dead_after")
        self.me = me
        self.my_name = name
        self.dir = data_dir / "raft"
        self.connections = connections
        self.trust = trust
        self.store = store
        self.load = load
        self.spawn = spawn
        self.timing = timing
        self.clock = clock  # the only clock the authority reads (the policy gets `now`)
        self.weights = weights or ReputationWeights()
        self.hysteresis = hysteresis
        self.inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=10_000)
        self.usage: dict[str, UsageCounter] = {}
        self.served_errors: dict[str, int] = {}
        self.names: dict[str, str] = {}  # resource id -> name, from reports (for display)
        self.started = clock()
        self._report_now = False
        self._raw_reports: dict[str, tuple[Any, ...]] = {}  # last raw report per member
        self._scores_dirty = True  # a report changed since the last full evaluation
        self._join_waiters: dict[str, list[asyncio.Future[str]]] = {}
        self._storage: FileStorage | None = None
        self.raft: RaftNode | None = None
        self.cluster_id = ""
        self.policy = AuthorityPolicy(me, "", self.started, timing=timing,
                                      hysteresis=hysteresis, weights=self.weights)
        self._open()

    # ----------------------------------------------------------------- state on disk
    def _open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        meta = self.dir / "cluster.json"
        cluster_id, member = "", ""
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            stored = json.loads(meta.read_bytes())
            cluster_id, member = str(stored["cluster"]), str(stored.get("me", ""))
        # State written under another device ID (the identity moved to ID v2, or a data dir
        # copied from another device) names a member that is not us: its log and votes are
        # someone else's. Found afresh; the map is replicated, so merging brings it back.
        valid = len(cluster_id) == 32 and all(c in "0123456789abcdef" for c in cluster_id)
        founding = not valid or member != self.me
        if founding:
            if valid and member != self.me:  # (a path only once it is plain hex)
                log.info("authority state of another device ID dropped",
                         extra=kv(cluster=cluster_id[:8], was=member[:16] or "unknown"))
                shutil.rmtree(self.dir / cluster_id, ignore_errors=True)
            cluster_id = secrets.token_hex(16)
            self._write_meta(cluster_id)
        self._start_raft(cluster_id, voters=[self.me] if founding else [])

    def _write_meta(self, cluster_id: str) -> None:
        atomic_write_bytes(self.dir / "cluster.json",
                           json.dumps({"cluster": cluster_id, "me": self.me}).encode(), 0o600)

    def _start_raft(self, cluster_id: str, voters: list[str]) -> None:
        if self._storage is not None:
            self._storage.close()
        self.cluster_id = cluster_id
        self.policy.cluster = cluster_id
        self._storage = FileStorage(self.dir / cluster_id)
        snap = self._storage.snapshot()
        amap = AuthorityMap.restore(snap.data) if snap.index else AuthorityMap()
        if snap.index:
            amap.applied_index = snap.index
        self.policy.restored(amap, self.clock())
        self.raft = RaftNode(
            self.me, voters, self._storage, random.Random(secrets.randbits(64)),
            election_tick=self.timing.election_ticks, heartbeat_tick=self.timing.heartbeat_ticks,
            pre_vote=True, check_quorum=True,
        )
        log.info("authority cluster", extra=kv(cluster=cluster_id[:8], voters=len(voters)))

    def _switch_cluster(self, cluster_id: str, *, found: bool = False) -> None:
        """Leave our cluster for *cluster_id*: its leader has added us as a learner (committed),
        or (*found*) we give up on a stranded cluster and found a new one of our own."""
        old = self.dir / self.cluster_id
        self._write_meta(cluster_id)
        for joiner in self.policy.switched(cluster_id, self.clock()):
            self._answer_join(joiner, None)
        if self._storage is not None:
            self._storage.close()
            self._storage = None
        self._start_raft(cluster_id, voters=[self.me] if found else [])
        shutil.rmtree(old, ignore_errors=True)

    def close(self) -> None:
        if self._storage is not None:
            self._storage.close()

    # ----------------------------------------------------------------- reads
    @property
    def map(self) -> AuthorityMap:
        return self.policy.map

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
        """True while this device may act as the resource's authority (the lease rule in
        :class:`agent.authority.policy.Lease`: two devices never act for one resource at
        the same moment)."""
        assert self.raft is not None
        return self.policy.acting_for(resource_id, self.raft, self.clock())

    def catalog_changed(self) -> None:
        """Our holdings changed (publish, fetch): report at the next driver step."""
        self._report_now = True

    def scores(self, resource_id: str, now: float | None = None) -> dict[str, float]:
        """Reputation of each holder of *resource_id* known from recent reports."""
        now = self.clock() if now is None else now
        return self.policy.scores(resource_id, now, time.time())

    # ----------------------------------------------------------------- inputs
    def record_use(self, resource_id: str) -> None:
        """A peer asked us for this resource (feeds our usage frequency)."""
        counter = self.usage.get(resource_id, UsageCounter())
        self.usage[resource_id] = counter.record(time.time(), USAGE_HALF_LIFE)

    def record_integrity_failure(self, resource_id: str) -> None:
        self.served_errors[resource_id] = self.served_errors.get(resource_id, 0) + 1

    def _paired(self, member: str) -> bool:
        dev = self._trusted(member)
        return dev is not None and dev.role == "member"

    def _member_peer(self, conn: PeerLink) -> bool:
        dev = self.trust.get(conn.peer_id)
        return dev is not None and dev.role == "member"

    def unpaired(self, peer_id: bytes) -> None:
        """A device is no longer paired with us (our user's unpair, or its notice): the
        driver removes it from the group now (:meth:`AuthorityPolicy.unpaired`)."""
        with contextlib.suppress(asyncio.QueueFull):
            self.inbox.put_nowait(("unpaired", peer_id.hex()))

    def on_event(self, conn: PeerConnection, op: str, args: dict[str, Any]) -> None:
        """Raft, cluster and report events from a session (already schema-checked)."""
        if not self._member_peer(conn):
            return
        src = conn.peer_id.hex()
        now = self.clock()
        if op == "cluster":
            self._on_cluster_hello(src, args, now)
            return
        if args["c"] != self.cluster_id:
            return
        self.policy.heard(src, now)
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

    def _on_report(self, src: str, args: dict[str, Any], now: float) -> None:
        raw_key = (args["h"], args["load"], args["up"])
        if self._raw_reports.get(src) == raw_key and src in self.policy.reports.by_member:
            self.policy.report(src, None, now)  # nothing new: skip parsing and re-scoring
            return
        try:
            load, up, holdings, names = parse_holdings(args["h"], load=args["load"],
                                                       up=args["up"], wall=time.time())
        except BadReport as e:  # the previous report (if any) stays
            log.warning("report dropped", extra=kv(member=src[:16], reason=e))
            return
        self._raw_reports[src] = raw_key
        self._scores_dirty = True
        for rid, name in names.items():
            if len(self.names) >= 100_000:
                break
            self.names[rid] = name
        self.policy.report(src, HolderReport(now, load, up, holdings), now)

    async def handle_join(self, conn: PeerConnection, cluster: str,
                          rejoin: bool = False) -> dict[str, Any]:
        """A paired member of another cluster asks to join ours (we must be its leader). We
        answer once its ``add_learner`` entry has committed, never before: a joiner that
        switched on an uncommitted add could be left in a cluster that does not know it."""
        from agent.peer.connection import Refused

        if not self._member_peer(conn):
            raise Refused("only paired members may join the authority group")
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        await self.inbox.put(("join", (conn.peer_id.hex(), cluster, rejoin, fut)))
        try:
            cluster_id = await asyncio.wait_for(fut, self.timing.join_timeout + 1.0)
        except TimeoutError:
            raise Refused("cannot add member now: timed out") from None
        except RaftError as e:
            raise Refused(str(e)) from None
        return {"cluster": cluster_id}

    def handlers(self) -> dict[str, Any]:
        """Peer requests this service answers (for the router's table)."""
        return {"raft_join": self._on_join_request}

    async def _on_join_request(self, conn: PeerConnection, req: Any) -> dict[str, Any]:
        return await self.handle_join(conn, req.args["c"], bool(req.args.get("r", False)))

    def _answer_join(self, joiner: str, cluster: str | None, reason: str = "") -> None:
        for fut in self._join_waiters.pop(joiner, []):
            if fut.done():
                continue
            if cluster is None:
                fut.set_exception(RaftError(reason or "cannot add member now"))
            else:
                fut.set_result(cluster)

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
        t = self.timing
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + t.tick
        next_report = next_eval = next_membership = next_full_eval = 0.0
        while True:
            assert self.raft is not None
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
                step = t.tick if self._has_company() else SOLO_TICK
                next_tick = max(next_tick + step, loop.time() - step)
            while item is not None:
                self._handle(item)
                item = None if self.inbox.empty() else self.inbox.get_nowait()
            await self._process_ready()
            now = self.clock()
            admitted, refused = self.policy.join_settle(self.raft, now)
            for j in admitted:
                self._answer_join(j, self.cluster_id)
            for j in refused:
                self._answer_join(j, None, "membership change did not commit")
            if now >= next_report or self._report_now:
                next_report = now + (REPORT_INTERVAL if self._has_company()
                                     else SOLO_REPORT_INTERVAL)
                self._report_now = False
                self._send_reports(now)
            if self.is_leader and now >= next_eval:
                next_eval = now + t.evaluate_interval
                # full pass only when some report changed (or every 5 intervals anyway)
                full = now >= next_full_eval and (
                    self._scores_dirty or now >= next_full_eval + 4 * t.full_evaluate_interval)
                if full:
                    next_full_eval = now + t.full_evaluate_interval
                    self._scores_dirty = False
                for cmd in self.policy.evaluate(self.raft, now, time.time(), full=full):
                    self._handle(("propose", encode_command(cmd)))
            if now >= next_membership:
                next_membership = now + t.membership_interval
                self._announce_cluster()
                if self.is_leader:
                    change = self.policy.voter_change(self.raft, now, self._paired)
                    if change is not None:
                        self._handle(("conf", (change.op, change.member)))
                self._execute(self.policy.merge(self.raft, now, self._paired))

    def _has_company(self) -> bool:
        """Other members in our cluster, or paired members we may merge with."""
        voters, learners = self.members()
        return len(voters) + len(learners) > 1 or self.policy.merger.joining is not None

    def _handle(self, item: tuple[str, Any]) -> None:
        kind, payload = item
        raft = self.raft
        assert raft is not None
        if kind == "msg":
            if for_earlier_incarnation(raft, payload):
                return
            try:
                raft.step(payload)
            except RaftError as e:
                log.debug("raft step rejected", extra=kv(reason=e))
                return
            self.policy.raft_message(payload.src, raft.lead, self.clock())
        elif kind == "conf":
            op, target = payload
            try:
                raft.propose_conf_change(op, target)
            except (RaftError, ValueError) as e:
                log.debug("membership change refused", extra=kv(reason=e))
        elif kind == "join":
            self._on_join(*payload)
        elif kind == "hello":
            src, hello = payload
            self._execute(self.policy.hello(src, hello, raft, self.clock(), self._paired))
        elif kind == "unpaired":
            decision = self.policy.unpaired(payload, raft, self.clock(), self._paired)
            if isinstance(decision, VoterChange):
                log.info("removing unpaired member", extra=kv(member=short_member_id(payload)))
                self._handle(("conf", (decision.op, decision.member)))
            else:
                self._execute(decision)
        elif kind == "switch":
            if payload != self.cluster_id:
                self._switch_cluster(payload)
        elif kind == "propose":
            try:
                raft.propose(payload)
            except (ProposalDroppedError, RaftError) as e:
                log.debug("proposal dropped", extra=kv(reason=e))

    def _on_join(self, joiner: str, cluster: str, rejoin: bool,
                 fut: asyncio.Future[str]) -> None:
        raft = self.raft
        assert raft is not None
        answer = self.policy.join_request(joiner, cluster, raft, self.clock(), rejoin=rejoin)
        if isinstance(answer, Admitted):
            fut.set_result(self.cluster_id)  # already a member
            return
        if isinstance(answer, RemoveFirst):
            with contextlib.suppress(RaftError, ValueError):
                raft.propose_conf_change("remove_voter", joiner)
            fut.set_exception(RaftError("removing its earlier membership first; retry"))
            return
        if not isinstance(answer, AddLearner):
            hint = f"; leader={answer.leader}" if answer.reason == "not leader" else ""
            fut.set_exception(RaftError(f"{answer.reason}{hint}"))
            return
        self._join_waiters.setdefault(joiner, []).append(fut)
        if joiner in self.policy.desk.waiting:
            return  # its add_learner is already on the way
        try:
            idx = raft.propose_conf_change("add_learner", joiner)
        except (RaftError, ValueError) as e:
            self._answer_join(joiner, None, f"cannot add member now: {e}")
            return
        self.policy.desk.proposed(joiner, idx, self.clock())

    async def _process_ready(self) -> None:
        raft = self.raft
        assert raft is not None and self._storage is not None
        while raft.has_ready():
            rd = raft.ready()
            if rd.hard_state is not None or rd.entries or rd.snapshot is not None:
                await asyncio.to_thread(persist_ready, self._storage, rd)
            now = self.clock()
            if rd.snapshot is not None and rd.snapshot.index > self.map.applied_index:
                amap = AuthorityMap.restore(rd.snapshot.data)
                amap.applied_index = rd.snapshot.index
                self.policy.restored(amap, now)
            self._send(rd.messages)
            for entry in rd.committed_entries:
                result = self.policy.apply(entry, now)
                if result is not None and result.accepted and result.assignment is not None:
                    self._log_assignment(result.resource_id or "", result.assignment)
            raft.advance(rd)
            if rd.soft_state_changed:
                self._on_soft_state(rd.soft_state, now)
            if self.map.applied_index - self._storage.first_index() > COMPACT_EVERY:
                with contextlib.suppress(RaftError, ValueError):
                    raft.compact(self.map.applied_index, self.map.snapshot())

    def _on_soft_state(self, ss: SoftState, now: float) -> None:
        assert self.raft is not None
        leader = ss.state == StateType.LEADER
        self.policy.soft_state(leader, ss.lead, now)
        if leader:
            log.info("became authority leader", extra=kv(cluster=self.cluster_id[:8],
                                                         term=self.raft.term))

    def _log_assignment(self, resource_id: str, a: Assignment) -> None:
        log.info("authority assigned", extra=kv(
            resource=resource_id[:12], holder=self.name_of(a.holder), term=a.term, epoch=a.epoch))

    def _send(self, msgs: tuple[Message, ...]) -> None:
        by_dst: dict[str, list[bytes]] = {}
        for m in msgs:
            by_dst.setdefault(m.dst, []).append(raft_messages.encode(m))
        for dst, payloads in by_dst.items():
            conn = self.connections.live_connection(dst)
            if conn is None or not self._paired(dst):
                with contextlib.suppress(RaftError):
                    assert self.raft is not None
                    self.raft.report_unreachable(dst)
                continue
            self.spawn(self._deliver(conn, payloads), "raft-send")

    async def _deliver(self, conn: Any, payloads: list[bytes]) -> None:
        for p in payloads:
            try:
                await conn.send_event("raft", {"c": self.cluster_id, "m": p.decode()})
            except (ConnectionError, OSError):
                return

    # ----------------------------------------------------------------- cluster merge
    def _announce_cluster(self) -> None:
        assert self.raft is not None
        hello = self.policy.hello_for(self.raft, self.clock())
        if hello is None:
            return  # just joined: nothing to announce until the log tells us our members
        args: dict[str, JSONValue] = {"c": hello.cluster, "n": hello.size, "l": hello.leader}
        for conn in self.connections.live_connections():
            if self._member_peer(conn):
                self.spawn(self._quiet(conn.send_event("cluster", args)), "cluster-hello")

    @staticmethod
    async def _quiet(coro: Any) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await coro

    def _on_cluster_hello(self, src: str, args: dict[str, Any], now: float) -> None:
        hello = Hello(str(args["c"]), int(args["n"]), str(args["l"]))
        with contextlib.suppress(asyncio.QueueFull):  # decided between driver steps
            self.inbox.put_nowait(("hello", (src, hello)))

    def _execute(self, decision: MergeDecision) -> None:
        if isinstance(decision, Refound):
            log.info("authority cluster stranded; founding a new one",
                     extra=kv(cluster=self.cluster_id[:8]))
            self._switch_cluster(secrets.token_hex(16), found=True)
        elif isinstance(decision, Join):
            self.policy.merger.join_started(decision.cluster, self.clock())
            self.spawn(self._join(decision), "raft-join")

    async def _join(self, decision: Join) -> None:
        from agent.peer.connection import PeerGone, RemoteError

        cluster = decision.cluster
        conn = (self.connections.live_connection(decision.leader) if decision.leader else None) \
            or self.connections.live_connection(decision.via)
        try:
            for _ in range(JOIN_ATTEMPTS):
                if conn is None:
                    return
                try:
                    # "r" only when set: agents before it was added reject unknown keys
                    args: dict[str, JSONValue] = {"c": cluster}
                    if decision.rejoin:
                        args["r"] = True
                    await conn.request("raft_join", args,
                                       timeout=self.timing.join_timeout + 2.0)
                except RemoteError as e:
                    hint = str(e).partition("leader=")[2].strip()
                    nxt = self.connections.live_connection(hint) if hint else None
                    if nxt is None:
                        await asyncio.sleep(0.5)
                    else:
                        conn = nxt
                    continue
                if decision.rejoin:
                    return  # back in the configuration: Raft repairs our log where it differs
                await self.inbox.put(("switch", cluster))  # the driver switches between steps
                log.info("joined authority cluster", extra=kv(cluster=cluster[:8],
                                                              via=conn.name))
                return
        except (PeerGone, TimeoutError, ConnectionError) as e:
            log.info("joining cluster failed", extra=kv(cluster=cluster[:8], reason=e))
        finally:
            self.policy.merger.join_ended()

    # ----------------------------------------------------------------- member duties
    def _holdings_report(self) -> dict[str, JSONValue]:
        now = time.time()
        rate = self.load.capacity_estimate() or 0.0
        out: dict[str, JSONValue] = {}
        for rec in self.store.resources()[:MAX_HOLDINGS]:
            rid = rec.resource_id
            usage = self.usage.get(rid, UsageCounter()).value_at(now, USAGE_HALF_LIFE)
            errors = self.served_errors.get(rid, 0)
            out[rid] = [round(usage, 1), round(rate, -5), 0.0, errors, rec.name]
        return out

    def _load(self) -> float:
        """Serving load in [0, 1]: chunk sends waiting for the link, 16 of them = full."""
        return round(min(1.0, self.load.queued() / 16), 2)

    def _uptime(self, now: float) -> float:
        """Fraction of the last hour this agent has been up (rounded: reports that do not
        change are cheap to receive)."""
        return round(min(1.0, (now - self.started) / 3600.0), 2)

    def _send_reports(self, now: float) -> None:
        args: dict[str, JSONValue] = {
                "c": self.cluster_id, "h": self._holdings_report(), "load": self._load(),
                "up": self._uptime(now)}
        self._on_report(self.me, args, now)  # the leader scores itself too
        for conn in self.connections.live_connections():
            if self._member_peer(conn):
                self.spawn(self._quiet(conn.send_event("report", args)), "report")

    # ----------------------------------------------------------------- presentation
    def name_of(self, member: str | None) -> str:
        """A member's device name; its short device ID when we know no name (never raw
        hex: a member we are no longer paired with has only an ID left)."""
        if member is None:
            return "-"
        if member == self.me:
            return self.my_name
        dev = self._trusted(member)
        if dev is not None:
            return dev.name
        conn = self.connections.live_connection(member)
        return conn.name if conn is not None else short_member_id(member)

    def label_of(self, member: str) -> str:
        """``name (SHORT-ID)``: how `shoal authority` shows a member, so two devices with
        one name stay apart and an unpaired one is visibly not paired."""
        short = short_member_id(member)
        name = self.name_of(member)
        if member != self.me and self._trusted(member) is None:
            return f"unpaired {short}" if name == short else f"{name} ({short}, unpaired)"
        return f"{name} ({short})"

    def _trusted(self, member: str) -> TrustedDeviceView | None:
        try:
            return self.trust.get(bytes.fromhex(member))
        except ValueError:
            return None

    def describe(self, resource: str | None = None) -> dict[str, Any]:
        """The map with scores and terms, for `shoal authority`."""
        assert self.raft is not None
        voters, learners = self.members()
        now = self.clock()
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
            "voters": [self.label_of(v) for v in voters],
            "learners": [self.label_of(x) for x in learners],
            "members": [{"id": m, "short_id": short_member_id(m), "name": self.name_of(m),
                         "role": "voter" if m in voters else "learner",
                         "paired": m == self.me or self._paired(m)}
                        for m in (*voters, *learners)],
            "commit": self.raft.commit_index, "applied": self.map.applied_index,
            "assignments": rows,
        }
