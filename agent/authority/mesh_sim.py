"""Seeded whole-mesh simulator of the authority *policy* (the real code) over virtual time.

:mod:`agent.authority.sim` checks the Raft core. This one checks what the service adds on top:
cluster formation and merging, stranded members, voter changes, reassignment and the lease.
Each simulated device runs a real :class:`~agent.authority.raft.core.RaftNode` and a real
:class:`~agent.authority.policy.AuthorityPolicy`, driven exactly as
:mod:`agent.authority.service` drives them (tick, step, Ready, apply, periodic duties), over:

* a virtual network with per-message delay (reordering) and loss, and partitions;
* a clock per device with its own **drift** (rate error) and **skew** (offset): the policy
  only ever sees its device's local time;
* **pairing and unpairing** during the run (devices start alone, pairs are made one at a
  time in random order, a device may be unpaired from everyone and paired again later);
* crash-restarts (volatile policy state is lost, the Raft log survives), holdings that change.

Properties, in true (simulator) time:

(a) **single actor**: within one authority cluster, no two devices ever act for one resource
    at the same instant. Acting is the policy's lease window (``acting_window``), recorded as
    exact intervals between a device's events and checked for overlap.
(b) **convergence**: once pairing and the network are stable, every clique of paired devices
    ends in one cluster with one leader that all of them follow (an unpaired loner leads its
    own cluster), within ``settle`` seconds.

A failure raises :class:`MeshViolation` whose message says how to replay the seed::

    python -m agent.authority.mesh_sim --seed 17 --trace
    python -m agent.authority.mesh_sim --seeds 0:5000 --workers 2
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial

from agent.authority import seeds as seeds_mod

from .authority_map import AuthorityMap, encode_command
from .policy import (
    DEFAULT_TIMING,
    AddLearner,
    Admitted,
    AuthorityPolicy,
    Hello,
    HolderReport,
    Join,
    MergeDecision,
    Refound,
    Refuse,
    RemoveFirst,
    Timing,
    VoterChange,
    for_earlier_incarnation,
)
from .raft.core import ProposalDroppedError, RaftError, RaftNode
from .raft.messages import Message
from .raft.ready import StateType
from .raft.storage import MemoryStorage
from .reputation import HolderStats, QualityMetrics, UsageCounter

REPORT_INTERVAL = 2.0


@dataclass(frozen=True)
class MeshConfig:
    min_devices: int = 3
    max_devices: int = 6
    resources: int = 3
    chaos: float = 8.0
    """Seconds of pairing, unpairing, partitions, loss and crashes."""
    settle: float = 30.0
    """After the chaos, seconds within which every clique must have converged."""
    hold: float = 1.0
    """Convergence must hold this long (a fleeting agreement does not count)."""
    min_delay: float = 0.001
    max_delay: float = 0.025
    max_drift: float = 0.02
    """Each device's clock runs at (1 + d) of true time, d uniform in [-max_drift, max_drift]."""
    loss: tuple[float, ...] = (0.0, 0.01, 0.03)
    partitions: bool = True
    crashes: bool = True
    unpair_rate: float = 0.5
    """Chance per seed that one device is unpaired from everyone during the chaos."""
    repair_rate: float = 0.3
    """Chance that an unpaired device is paired with the others again (a fresh pairing)."""
    two_meshes_rate: float = 0.2
    """Chance that the devices form two separate meshes (two cliques that never pair)."""
    timing: Timing = DEFAULT_TIMING
    check_convergence: bool = True
    trace: bool = False


class MeshViolation(AssertionError):
    def __init__(self, seed: int, t: float, detail: str, config: MeshConfig) -> None:
        self.seed = seed
        self.detail = detail
        cfg = "" if config == MeshConfig() else ", config=..."
        super().__init__(
            f"seed {seed}: {detail} (t={t:.3f} s).\n"
            f"Replay: python -m agent.authority.mesh_sim --seed {seed} --trace"
            f"  (or agent.authority.mesh_sim.run_seed({seed}{cfg}))")


class SafetyViolation(MeshViolation):
    """Two devices acted for one resource at the same instant."""


class ConvergenceViolation(MeshViolation):
    """A clique of paired devices did not end in one cluster with one leader."""


@dataclass
class MeshResult:
    seed: int
    devices: int = 0
    events: int = 0
    delivered: int = 0
    dropped: int = 0
    joins: int = 0
    refounds: int = 0
    pairings: int = 0
    unpairings: int = 0
    crashes: int = 0
    assignments: int = 0
    acting_seconds: float = 0.0
    converged_after: float = 0.0
    trace: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ wire
@dataclass(frozen=True, slots=True)
class RaftMsg:
    cluster: str
    msg: Message


@dataclass(frozen=True, slots=True)
class HelloMsg:
    hello: Hello


@dataclass(frozen=True, slots=True)
class ReportMsg:
    cluster: str
    holdings: tuple[tuple[str, float], ...]
    uptime: float


@dataclass(frozen=True, slots=True)
class JoinReq:
    cluster: str
    rejoin: bool = False


@dataclass(frozen=True, slots=True)
class JoinReply:
    cluster: str
    ok: bool
    leader: str


Payload = RaftMsg | HelloMsg | ReportMsg | JoinReq | JoinReply


# ------------------------------------------------------------------------------ device
class Device:
    """One agent: Raft node + policy, driven like AuthorityService._drive."""

    def __init__(self, sim: MeshSim, did: str, drift: float, offset: float) -> None:
        self.sim = sim
        self.id = did
        self.drift = drift
        self.offset = offset
        self.trusted: set[str] = set()
        self.up = True
        self.cluster = ""
        self.storage = MemoryStorage()
        self.raft: RaftNode
        self.policy: AuthorityPolicy
        self.holdings: dict[str, float] = {}
        self.started = 0.0
        self.next_report = self.next_eval = self.next_full = self.next_membership = 0.0
        self.scores_dirty = True
        self.join_target: str | None = None
        self.rejoin = False
        self.join_attempts = 0
        self.waiting_joiners: dict[str, str] = {}  # joiner -> cluster it asked for
        self.windows: dict[str, tuple[str, float, float]] = {}
        self.last_event = 0.0

    # clocks ---------------------------------------------------------------
    def local(self, t: float) -> float:
        return self.offset + t * (1.0 + self.drift)

    def true(self, local: float) -> float:
        return (local - self.offset) / (1.0 + self.drift)

    @property
    def now(self) -> float:
        return self.local(self.sim.t)

    def paired(self, other: str) -> bool:
        return other in self.trusted

    # lifecycle -------------------------------------------------------------
    def boot(self, *, found: bool) -> None:
        now = self.now
        self.started = now
        if found or not self.cluster:
            self.cluster = self.sim.new_cluster_id()
            self.storage = MemoryStorage()
            voters: list[str] = [self.id]
        else:
            voters = []
        self.policy = AuthorityPolicy(self.id, self.cluster, now, timing=self.sim.cfg.timing)
        self._start_raft(voters)

    def _start_raft(self, voters: list[str]) -> None:
        t = self.sim.cfg.timing
        snap = self.storage.snapshot()
        amap = AuthorityMap.restore(snap.data) if snap.index else AuthorityMap()
        if snap.index:
            amap.applied_index = snap.index
        self.policy.restored(amap, self.now)
        self.raft = RaftNode(self.id, voters, self.storage,
                             random.Random(self.sim.rng.getrandbits(64)),
                             election_tick=t.election_ticks, heartbeat_tick=t.heartbeat_ticks,
                             pre_vote=True, check_quorum=True)
        self.next_report = self.next_eval = self.next_full = self.next_membership = 0.0

    def crash(self) -> None:
        self.observe()
        self.up = False
        self.windows = {}
        self.storage.crash()
        self.join_target = None
        self.waiting_joiners.clear()

    def restart(self) -> None:
        self.up = True
        self.policy = AuthorityPolicy(self.id, self.cluster, self.now, timing=self.sim.cfg.timing)
        self._start_raft([])
        self.last_event = self.sim.t
        self.observe()

    def switch(self, cluster: str, *, found: bool) -> None:
        self.sim.log(f"{self.id} {'refounds' if found else 'switches to'} {cluster}")
        for joiner in self.policy.switched(cluster, self.now):
            self._answer(joiner, ok=False)
        self.cluster = cluster
        self.storage = MemoryStorage()
        self._start_raft([self.id] if found else [])
        self.join_target = None

    # driver ------------------------------------------------------------------
    def tick(self) -> None:
        self.raft.tick()
        self.process_ready()
        self.duties()

    def duties(self) -> None:
        now, t, raft, pol = self.now, self.sim.cfg.timing, self.raft, self.policy
        self.settle_joins()
        if now >= self.next_report:
            self.next_report = now + REPORT_INTERVAL
            self.send_reports()
        if raft.is_leader() and now >= self.next_eval:
            self.next_eval = now + t.evaluate_interval
            full = now >= self.next_full and (
                self.scores_dirty or now >= self.next_full + 4 * t.full_evaluate_interval)
            if full:
                self.next_full = now + t.full_evaluate_interval
                self.scores_dirty = False
            for cmd in pol.evaluate(raft, now, self.sim.t, full=full):
                with contextlib.suppress(ProposalDroppedError, RaftError):
                    raft.propose(encode_command(cmd))
            self.process_ready()
        if now >= self.next_membership:
            self.next_membership = now + t.membership_interval
            hello = pol.hello_for(raft, now)
            if hello is not None:
                for peer in sorted(self.trusted):
                    self.sim.send(self.id, peer, HelloMsg(hello))
            if raft.is_leader():
                change = pol.voter_change(raft, now, self.paired)
                if change is not None:
                    self.sim.log(f"{self.id} proposes {change.op} {change.member}")
                    with contextlib.suppress(RaftError, ValueError):
                        raft.propose_conf_change(change.op, change.member)
                    self.process_ready()
            self.execute(pol.merge(raft, now, self.paired))

    def settle_joins(self) -> None:
        admitted, refused = self.policy.join_settle(self.raft, self.now)
        for j in admitted:
            self._answer(j, ok=True)
        for j in refused:
            self._answer(j, ok=False)

    def process_ready(self) -> None:
        raft, st = self.raft, self.storage
        while raft.has_ready():
            rd = raft.ready()
            if rd.snapshot is not None:
                st.apply_snapshot(rd.snapshot)
            if rd.entries:
                st.append(rd.entries)
            if rd.hard_state is not None:
                st.set_hard_state(rd.hard_state)
            st.sync()
            now = self.now
            if rd.snapshot is not None and rd.snapshot.index > self.policy.map.applied_index:
                amap = AuthorityMap.restore(rd.snapshot.data)
                amap.applied_index = rd.snapshot.index
                self.policy.restored(amap, now)
            for m in rd.messages:  # like AuthorityService._send: never to an unpaired device
                if m.dst in self.trusted:
                    self.sim.send(self.id, m.dst, RaftMsg(self.cluster, m))
                else:
                    with contextlib.suppress(RaftError):
                        raft.report_unreachable(m.dst)
            for e in rd.committed_entries:
                res = self.policy.apply(e, now)
                if res is not None and res.accepted:
                    self.sim.result.assignments += 1
                    if self.sim.tracing:
                        a = res.assignment
                        self.sim.log(f"{self.id} applies {(res.resource_id or '')[-4:]} -> "
                                     f"{a.holder if a else None} (index {e.index})")
            raft.advance(rd)
            if rd.soft_state_changed:
                ss = rd.soft_state
                self.policy.soft_state(ss.state == StateType.LEADER, ss.lead, now)

    def send_reports(self) -> None:
        uptime = round(min(1.0, (self.now - self.started) / 3600.0), 2)
        msg = ReportMsg(self.cluster, tuple(sorted(self.holdings.items())), uptime)
        self.on_report(self.id, msg)
        for peer in sorted(self.trusted):
            self.sim.send(self.id, peer, msg)

    def on_report(self, src: str, r: ReportMsg) -> None:
        wall = self.sim.t
        holdings = {
            rid: HolderStats(usage=UsageCounter(q * 20, wall),
                             quality=QualityMetrics(bitrate_bps=q * 8e6, error_rate=0.0),
                             uptime=r.uptime, load=0.0)
            for rid, q in r.holdings}
        self.scores_dirty = True
        self.policy.report(src, HolderReport(self.now, 0.0, r.uptime, holdings), self.now)

    # inputs -------------------------------------------------------------------
    def receive(self, src: str, p: Payload) -> None:
        if src not in self.trusted:
            return  # unpaired devices never reach the authority
        now = self.now
        if isinstance(p, HelloMsg):
            self.execute(self.policy.hello(src, p.hello, self.raft, now, self.paired))
            return
        if isinstance(p, JoinReq):
            self.on_join_request(src, p.cluster, p.rejoin)
            return
        if isinstance(p, JoinReply):
            self.on_join_reply(src, p)
            return
        if p.cluster != self.cluster:
            return
        self.policy.heard(src, now)
        if isinstance(p, RaftMsg):
            m = p.msg
            if m.dst != self.id or m.src != src or for_earlier_incarnation(self.raft, m):
                return
            try:
                self.raft.step(m)
            except RaftError:
                return
            self.policy.raft_message(src, self.raft.lead, now)
            self.process_ready()
            if self.policy.desk.waiting:
                self.settle_joins()  # periodic duties run on ticks (every 50 ms)
        else:
            self.on_report(src, p)

    def unpaired(self, peer: str) -> None:
        """*peer* is no longer trusted here: like AuthorityService.unpaired."""
        self.trusted.discard(peer)
        if not self.up:
            self.policy.merger.unpaired(peer)
            return
        d = self.policy.unpaired(peer, self.raft, self.now, self.paired)
        if isinstance(d, VoterChange):
            self.sim.log(f"{self.id} proposes {d.op} {d.member} (unpaired)")
            with contextlib.suppress(RaftError, ValueError):
                self.raft.propose_conf_change(d.op, d.member)
            self.process_ready()
        else:
            self.execute(d)

    # merging ---------------------------------------------------------------------
    def execute(self, d: MergeDecision) -> None:
        if isinstance(d, Refound):
            self.sim.result.refounds += 1
            self.switch(self.sim.new_cluster_id(), found=True)
        elif isinstance(d, Join):
            self.policy.merger.join_started(d.cluster, self.now)
            self.join_target = d.cluster
            self.rejoin = d.rejoin
            self.join_attempts = 0
            to = d.leader if d.leader and self.paired(d.leader) else d.via
            self.sim.log(f"{self.id} asks {to} to join {d.cluster}")
            self.sim.send(self.id, to, JoinReq(d.cluster, d.rejoin))

    def on_join_request(self, joiner: str, cluster: str, rejoin: bool) -> None:
        answer = self.policy.join_request(joiner, cluster, self.raft, self.now, rejoin=rejoin)
        if isinstance(answer, Admitted):
            self.sim.send(self.id, joiner, JoinReply(self.cluster, True, ""))
        elif isinstance(answer, Refuse):
            self.sim.send(self.id, joiner, JoinReply(cluster, False, answer.leader))
        elif isinstance(answer, RemoveFirst):
            with contextlib.suppress(RaftError, ValueError):
                self.raft.propose_conf_change("remove_voter", joiner)
            self.sim.send(self.id, joiner, JoinReply(cluster, False, ""))
            self.process_ready()
        elif isinstance(answer, AddLearner):
            self.waiting_joiners[joiner] = cluster
            if joiner in self.policy.desk.waiting:
                return
            try:
                idx = self.raft.propose_conf_change("add_learner", joiner)
            except (RaftError, ValueError):
                self._answer(joiner, ok=False)
                return
            self.policy.desk.proposed(joiner, idx, self.now)
            self.process_ready()

    def _answer(self, joiner: str, *, ok: bool) -> None:
        cluster = self.waiting_joiners.pop(joiner, None)
        if cluster is not None:
            self.sim.send(self.id, joiner, JoinReply(cluster, ok, ""))

    def on_join_reply(self, src: str, r: JoinReply) -> None:
        if r.ok:
            if r.cluster != self.cluster:
                self.sim.result.joins += 1
                self.switch(r.cluster, found=False)
            self.policy.merger.join_ended()
            return
        if self.join_target != r.cluster:
            return
        self.join_attempts += 1
        if r.leader and self.paired(r.leader) and self.join_attempts < 5:
            self.sim.send(self.id, r.leader, JoinReq(r.cluster, self.rejoin))
            return
        self.join_target = None
        self.policy.merger.join_ended()

    # safety bookkeeping ------------------------------------------------------------
    def observe(self) -> None:
        """Record the acting intervals realised since the last event; project the next."""
        sim = self.sim
        t = sim.t
        for rid, (cluster, start, end) in self.windows.items():
            s, e = max(start, self.last_event), min(end, t)
            if s < e:
                sim.record_acting(cluster, rid, self.id, s, e)
        self.last_event = t
        if not self.up:
            self.windows = {}
            return
        ws = self.policy.acting_windows(self.raft, self.now)
        self.windows = {rid: (self.cluster, self.true(a), self.true(b))
                        for rid, (a, b) in ws.items()} if ws else {}


# ------------------------------------------------------------------------------ simulator
class MeshSim:
    def __init__(self, seed: int, config: MeshConfig | None = None) -> None:
        self.seed = seed
        self.cfg = cfg = config or MeshConfig()
        self.rng = rng = random.Random(seed)
        self.t = 0.0
        self.result = MeshResult(seed)
        self._trace: list[str] | None = [] if cfg.trace else None
        self.tracing = cfg.trace
        self._q: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._ids = 0
        n = rng.randint(cfg.min_devices, cfg.max_devices)
        self.result.devices = n
        self.loss = rng.choice(cfg.loss)
        self.resource_ids = [f"{i:032x}" for i in range(cfg.resources)]
        self.devices: dict[str, Device] = {}
        for i in range(n):
            d = Device(self, f"d{i}", rng.uniform(-cfg.max_drift, cfg.max_drift),
                       rng.uniform(0.0, 10_000.0))
            d.holdings = {r: round(rng.uniform(0.1, 1.0), 2)
                          for r in self.resource_ids if rng.random() < 0.6}
            self.devices[d.id] = d
        self.groups: dict[str, int] | None = None
        self.banned: set[str] = set()
        self.acting: dict[tuple[str, str], list[tuple[float, float, str]]] = {}
        for d in self.devices.values():
            d.boot(found=True)
            self._schedule_ticks(d, rng.uniform(0, cfg.timing.tick))
        self._plan()

    # plumbing -------------------------------------------------------------------
    def log(self, text: str) -> None:
        if self._trace is not None:
            self._trace.append(f"[{self.t:8.3f}] {text}")

    def fail(self, cls: type[MeshViolation], detail: str) -> MeshViolation:
        return cls(self.seed, self.t, detail, self.cfg)

    def new_cluster_id(self) -> str:
        self._ids += 1
        return f"{self.rng.getrandbits(96):024x}{self._ids:08x}"

    def at(self, t: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._q, (t, self._seq, fn))

    def send(self, src: str, dst: str, p: Payload) -> None:
        if dst not in self.devices or src == dst:
            return
        if self.rng.random() < self.loss:
            self.result.dropped += 1
            return
        delay = self.rng.uniform(self.cfg.min_delay, self.cfg.max_delay)
        self.at(self.t + delay, lambda: self._deliver(src, dst, p))

    def _deliver(self, src: str, dst: str, p: Payload) -> None:
        d, s = self.devices[dst], self.devices[src]
        g = self.groups
        if not d.up or not s.up or (g is not None and g[src] != g[dst]):
            self.result.dropped += 1
            return
        self.result.delivered += 1
        d.receive(src, p)
        d.observe()

    def _schedule_ticks(self, d: Device, first: float) -> None:
        interval = self.cfg.timing.tick / (1.0 + d.drift)

        def tick() -> None:
            if d.up:
                d.tick()
                d.observe()
            self.at(self.t + interval, tick)

        self.at(first, tick)

    def record_acting(self, cluster: str, rid: str, dev: str, s: float, e: float) -> None:
        self.result.acting_seconds += e - s
        segs = self.acting.setdefault((cluster, rid), [])
        for s2, e2, other in segs:
            if other != dev and s < e2 and s2 < e:
                raise self.fail(SafetyViolation,
                                f"{dev} and {other} both act for {rid[-4:]} in cluster "
                                f"{cluster[:8]} during [{max(s, s2):.4f}, {min(e, e2):.4f})")
        if segs and segs[-1][2] == dev and segs[-1][1] >= s:
            segs[-1] = (segs[-1][0], e, dev)  # the same device acting on: one interval
        else:
            segs.append((s, e, dev))
        if len(segs) > 16:
            horizon = self.t - 1.0  # a device records its interval at its next event
            segs[:] = [x for x in segs if x[1] >= horizon]

    # the scenario -----------------------------------------------------------------
    def _plan(self) -> None:
        cfg, rng = self.cfg, self.rng
        ids = sorted(self.devices)
        meshes = [ids]
        if len(ids) >= 4 and rng.random() < cfg.two_meshes_rate:
            cut = rng.randint(2, len(ids) - 2)
            meshes = [ids[:cut], ids[cut:]]
        pairs = [(a, b) for m in meshes for i, a in enumerate(m) for b in m[i + 1:]]
        rng.shuffle(pairs)
        span = cfg.chaos * 0.6
        for k, (a, b) in enumerate(pairs):
            when = rng.uniform(0, span) if rng.random() < 0.5 else span * k / len(pairs)
            self.at(when, partial(self.pair, a, b))
        self.final_meshes = [set(m) for m in meshes]
        if rng.random() < cfg.unpair_rate:
            victim = rng.choice(ids)
            when = rng.uniform(span * 0.5, cfg.chaos)
            self.at(when, partial(self.unpair_all, victim))
            mesh = next(m for m in self.final_meshes if victim in m)
            mesh.discard(victim)
            self.final_meshes.append({victim})
            if rng.random() < cfg.repair_rate:
                back = when + rng.uniform(0.5, 3.0)
                others = sorted(mesh)
                self.at(back, partial(self.repair, victim, others))
                self.final_meshes.remove({victim})
                mesh.add(victim)
        self.final_meshes = [m for m in self.final_meshes if m]
        if cfg.partitions:
            t = rng.uniform(0.5, 2.0)
            while t < cfg.chaos:
                self.at(t, self._partition)
                t += rng.uniform(0.3, 2.5)
                self.at(min(t, cfg.chaos), self._heal)
                t += rng.uniform(0.5, 3.0)
        if cfg.crashes:
            for _ in range(rng.randint(0, 2)):
                t, who = rng.uniform(0.5, cfg.chaos - 0.5), rng.choice(ids)
                self.at(t, partial(self._crash, who))
        for _ in range(rng.randint(0, 3)):
            self.at(rng.uniform(0, cfg.chaos), self._churn_holdings)
        self.at(cfg.chaos, self._quiet)

    def pair(self, a: str, b: str) -> None:
        if a in self.banned or b in self.banned:
            return  # unpaired from everyone: stays so unless paired again on purpose
        self.result.pairings += 1
        self.log(f"pair {a} {b}")
        self.devices[a].trusted.add(b)
        self.devices[b].trusted.add(a)

    def unpair_all(self, victim: str) -> None:
        """Everyone unpairs *victim* now; *victim* learns it from each one's notice a little
        later (at once over a live session, or at its next session: agent/peer/unpair.py),
        so trust is one-sided for a while, as between real agents."""
        self.result.unpairings += 1
        self.log(f"unpair {victim} from everyone")
        self.banned.add(victim)
        v = self.devices[victim]
        for other in sorted(v.trusted):
            self.devices[other].unpaired(victim)
            self.at(self.t + self.rng.uniform(0.0, 2.0), partial(self._notice, victim, other))

    def _notice(self, victim: str, sender: str) -> None:
        """*sender*'s unpair notice reaches *victim* (if they were not paired again since)."""
        if victim in self.banned and sender in self.devices[victim].trusted:
            self.log(f"{victim} learns {sender} unpaired it")
            self.devices[victim].unpaired(sender)

    def repair(self, victim: str, mesh: list[str]) -> None:
        self.banned.discard(victim)
        for other in mesh:
            if other != victim:
                self.pair(victim, other)

    def _partition(self) -> None:
        ids = sorted(self.devices)
        self.rng.shuffle(ids)
        cut = self.rng.randint(1, len(ids) - 1)
        self.groups = {d: int(i >= cut) for i, d in enumerate(ids)}
        self.log(f"partition {sorted(ids[:cut])} | {sorted(ids[cut:])}")

    def _heal(self) -> None:
        if self.groups is not None:
            self.log("heal")
        self.groups = None

    def _crash(self, victim: str) -> None:
        d = self.devices[victim]
        if not d.up:
            return
        self.result.crashes += 1
        self.log(f"crash {victim}")
        d.crash()
        self.at(self.t + self.rng.uniform(0.3, 2.0), self._restarter(d))

    def _restarter(self, d: Device) -> Callable[[], None]:
        def restart() -> None:
            self.log(f"restart {d.id}")
            d.restart()
        return restart

    def _churn_holdings(self) -> None:
        d = self.devices[self.rng.choice(sorted(self.devices))]
        rid = self.rng.choice(self.resource_ids)
        if rid in d.holdings and self.rng.random() < 0.5:
            del d.holdings[rid]
        else:
            d.holdings[rid] = round(self.rng.uniform(0.1, 1.0), 2)
        d.next_report = 0.0  # catalog changed: report at the next step

    def _quiet(self) -> None:
        self.loss = 0.0
        self.groups = None
        self.log("quiet: network healed, pairing final")

    # convergence ------------------------------------------------------------------
    def converged(self) -> str | None:
        """None if every final mesh is one cluster with one leader; else what is wrong."""
        for mesh in self.final_meshes:
            devs = [self.devices[x] for x in sorted(mesh)]
            if not all(d.up for d in devs):
                return "a device is down"
            clusters = {d.cluster for d in devs}
            if len(clusters) != 1:
                return f"mesh {sorted(mesh)} in {len(clusters)} clusters"
            leads = {d.raft.lead for d in devs}
            if len(leads) != 1 or None in leads:
                terms = sorted((d.id, d.raft.term, d.raft.lead) for d in devs)
                return f"mesh {sorted(mesh)} has no single leader: {terms}"
            lead = self.devices[next(iter(leads))]  # type: ignore[index]
            if lead.id not in mesh or not lead.raft.is_leader():
                return f"mesh {sorted(mesh)} follows {lead.id}, which does not lead"
            members = {*lead.raft.voters, *lead.raft.learners}
            if members != mesh:  # every member, and no device it is not paired with
                return f"mesh {sorted(mesh)} but members {sorted(members)}"
        return None

    def run(self) -> MeshResult:
        cfg = self.cfg
        try:
            end = cfg.chaos + cfg.settle
            since: float | None = None
            next_check = cfg.chaos
            last = "not checked"
            while self._q:
                t, _, fn = heapq.heappop(self._q)
                self.t = t
                self.result.events += 1
                fn()
                if t >= next_check:
                    next_check = t + 0.25
                    if not cfg.check_convergence:
                        if t >= end:
                            break
                        continue
                    problem = self.converged()
                    if problem is None:
                        since = t if since is None else since
                        if t - since >= cfg.hold:
                            self.result.converged_after = since - cfg.chaos
                            break
                    else:
                        since, last = None, problem
                    if t >= end:
                        raise self.fail(ConvergenceViolation,
                                        f"no convergence {cfg.settle:.0f} s after the chaos: "
                                        f"{last}")
            for d in self.devices.values():
                d.observe()
        except MeshViolation as exc:
            if self._trace is not None:
                exc.add_note("\n".join(self._trace[-120:]))
            raise
        except Exception as exc:
            err = self.fail(MeshViolation, f"unexpected {type(exc).__name__}: {exc}")
            if self._trace is not None:
                err.add_note("\n".join(self._trace[-120:]))
            raise err from exc
        if self._trace is not None:
            self.result.trace = self._trace
        return self.result


# ------------------------------------------------------------------------------ running
def run_seed(seed: int, config: MeshConfig | None = None) -> MeshResult:
    return MeshSim(seed, config).run()


def check_seeds(seeds: Sequence[int], config: MeshConfig | None = None) -> list[str]:
    """Run *seeds*; return one report per failing seed (each says how to replay it)."""
    return seeds_mod.check_seeds(run_seed, MeshViolation, seeds, config)


def run_parallel(seeds: Sequence[int], config: MeshConfig | None = None,
                 workers: int | None = None) -> list[str]:
    """`check_seeds` spread over processes (results do not depend on the split)."""
    return seeds_mod.run_parallel(check_seeds, seeds, config, workers)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.authority.mesh_sim",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, help="replay one seed")
    p.add_argument("--seeds", default="0:200", help="range lo:hi (default 0:200)")
    p.add_argument("--trace", action="store_true")
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args(argv)
    cfg = MeshConfig(trace=args.trace)
    if args.seed is not None:
        seeds: Sequence[int] = [args.seed]
    else:
        lo, _, hi = args.seeds.partition(":")
        seeds = range(int(lo), int(hi))
    start = time.perf_counter()
    if args.seed is None:
        reports = run_parallel(seeds, cfg, args.workers)
        for r in reports:
            print(f"FAIL {r}", file=sys.stderr)
        dt = time.perf_counter() - start
        print(f"{len(seeds)} seeds, {len(reports)} failures, {dt:.1f} s")
        return 1 if reports else 0
    try:
        res = run_seed(args.seed, cfg)
    except MeshViolation as exc:
        print(f"FAIL {exc}", file=sys.stderr)
        for note in getattr(exc, "__notes__", []):
            print(note, file=sys.stderr)
        return 1
    if args.trace:
        print("\n".join(res.trace))
    print(replace(res, trace=[]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
