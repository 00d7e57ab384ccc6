"""Deterministic simulator for the Raft core and the authority map.

Why: consensus bugs hide in rare interleavings. This runs N nodes over a seeded virtual
network (random delay, so reordering; drops; duplicates; partitions and heals) with
crash-restarts that lose un-fsynced writes, random authority proposals, leadership
transfers, membership changes and log compactions, and checks the safety invariants after
*every* step. Everything derives from one seed, so any failure replays exactly with
``python -m agent.authority.sim --seed N --trace`` or ``run_seed(N)``.

Invariants (checked incrementally, so thousands of seeds run quickly):

* election safety: at most one leader per term, ever;
* log matching: an (index, term) pair always names the same payload and the same
  previous term, on every node and across restarts (by induction: identical prefixes);
* leader completeness: every committed entry is in the log of every leader of a later
  term, as that log stood when it was elected;
* commit monotonicity / durability: a node's commit index never decreases while it runs,
  and after a crash it restarts with at least the commit index it had fsynced, with every
  committed entry it held still present and unchanged;
* state machine safety: every node applies the same entry at the same index, in order;
  snapshots at one index are byte-identical everywhere;
* single authority: for each resource the accepted assignments form one global sequence
  (epoch 1, 2, ...), and every node agrees on (holder, term, index) for each epoch.

Liveness (loose): after the chaos phase the network heals and every node restarts; within
`quiet_ticks` a leader must commit a probe proposal and every voter must apply it.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import heapq
import random
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from agent.authority import seeds as seeds_mod

from .authority_map import Assign, AuthorityMap, encode_command
from .raft.confchange import apply_conf_change
from .raft.core import ConfChangeError, ProposalDroppedError, RaftNode
from .raft.messages import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    RaftMessageError,
    Snapshot,
    decode,
    describe_message,
)
from .raft.ready import StateType
from .raft.storage import MemoryStorage
from .reputation import choose_authority

LEADER = StateType.LEADER


@dataclass(frozen=True)
class SimConfig:
    voters: int = 5
    learners: int = 0
    spares: int = 2
    """Fresh node ids the simulator may add (as learners) during the run."""
    chaos_ticks: int = 60
    quiet_ticks: int = 120
    tick_ms: int = 10
    min_delay_ms: int = 1
    max_delay_ms: int = 25
    drop_rate: float = 0.04
    dup_rate: float = 0.03
    partition_rate: float = 0.03
    heal_rate: float = 0.12
    crash_rate: float = 0.02
    min_down_ticks: int = 2
    max_down_ticks: int = 30
    torn_persist_rate: float = 0.005
    """Chance that a node loses power between writing a Ready and fsyncing it."""
    propose_rate: float = 0.6
    transfer_rate: float = 0.02
    conf_change_rate: float = 0.04
    compact_rate: float = 0.06
    compact_min_entries: int = 4
    resources: int = 3
    election_tick: int = 10
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_entries_per_msg: int = 64
    randomize: bool = True
    """Let the seed also pick a fault profile (batch size, loss, churn), for variety."""
    codec: bool = False
    """Round-trip every message through encode()/decode() (slower, tests the schema)."""
    trace: bool = False


def _apply_conf(conf: ConfState, data: bytes) -> ConfState:
    try:
        return apply_conf_change(conf, ConfChange.decode(data))
    except RaftMessageError:
        return conf


def _profile(cfg: SimConfig, rng: random.Random) -> SimConfig:
    """A seed-chosen variation of *cfg*: small append batches expose commit-rule bugs
    (Raft's Figure 8), heavy churn exposes membership bugs, loss exposes retry bugs."""
    return replace(
        cfg,
        voters=rng.choice((3, cfg.voters, cfg.voters)),
        max_entries_per_msg=rng.choice((1, 2, 4, cfg.max_entries_per_msg)),
        drop_rate=rng.choice((0.0, cfg.drop_rate, 3 * cfg.drop_rate)),
        crash_rate=rng.choice((cfg.crash_rate / 2, cfg.crash_rate, 2 * cfg.crash_rate)),
        conf_change_rate=rng.choice((cfg.conf_change_rate, 5 * cfg.conf_change_rate)),
        transfer_rate=rng.choice((cfg.transfer_rate, 4 * cfg.transfer_rate)),
        partition_rate=rng.choice((cfg.partition_rate, 3 * cfg.partition_rate)),
    )


class InvariantViolation(AssertionError):
    """A safety (or liveness) property failed; the message says how to replay it."""

    def __init__(self, seed: int, tick: int, step: int, detail: str, config: SimConfig) -> None:
        self.seed = seed
        self.tick = tick
        self.step = step
        self.detail = detail
        cfg = "" if config == SimConfig() else f", config={config!r}"
        super().__init__(
            f"seed {seed}: {detail} (tick {tick}, step {step}).\n"
            f"Replay: python -m agent.authority.sim --seed {seed} --trace"
            f"  (or agent.authority.sim.run_seed({seed}{cfg}))"
        )


class LivenessViolation(InvariantViolation):
    pass


@dataclass
class SimResult:
    seed: int
    ticks: int = 0
    steps: int = 0
    delivered: int = 0
    dropped: int = 0
    leaders: int = 0
    max_term: int = 0
    committed: int = 0
    proposals: int = 0
    proposals_dropped: int = 0
    accepted: int = 0
    rejected: int = 0
    crashes: int = 0
    torn_persists: int = 0
    snapshots_installed: int = 0
    compactions: int = 0
    conf_changes: int = 0
    transfers: int = 0
    liveness_ticks: int = 0
    foreign_commits: int = 0
    """Commit points first seen on a non-leader (expected 0; checked less strictly)."""
    trace: list[str] = field(default_factory=list)


class _Node:
    __slots__ = (
        "app",
        "boot_learners",
        "boot_voters",
        "checked_commit",
        "down_until",
        "durable_commit",
        "id",
        "max_commit",
        "raft",
        "storage",
    )

    def __init__(self, nid: str, voters: tuple[str, ...], learners: tuple[str, ...]) -> None:
        self.id = nid
        self.storage = MemoryStorage()
        self.raft: RaftNode | None = None
        self.app = AuthorityMap()
        self.boot_voters = voters
        self.boot_learners = learners
        self.checked_commit = 0
        self.max_commit = 0
        self.durable_commit = 0
        self.down_until = 0


class Simulation:
    def __init__(self, seed: int, config: SimConfig | None = None) -> None:
        self.seed = seed
        self.config = cfg = config or SimConfig()
        self.rng = random.Random(seed)
        if cfg.randomize:
            cfg = _profile(cfg, self.rng)
        self.cfg = cfg
        self.result = SimResult(seed)
        self.tick_no = 0
        self.now = 0
        self.step_no = 0
        self._queue: list[tuple[int, int, Message]] = []
        self._seq = 0
        self._groups: dict[str, int] | None = None
        self._chaos = True
        voters = tuple(f"n{i}" for i in range(1, cfg.voters + 1))
        learners = tuple(f"n{i}" for i in range(cfg.voters + 1, cfg.voters + cfg.learners + 1))
        first_spare = cfg.voters + cfg.learners + 1
        self._spares = [f"n{i}" for i in range(first_spare, first_spare + cfg.spares)]
        self.nodes: dict[str, _Node] = {}
        # Invariant state.
        self._leaders: dict[int, str] = {}
        self._leader_last: dict[int, tuple[int, int]] = {}
        self._chain: dict[tuple[int, int], tuple[EntryType, bytes, int]] = {}
        self._committed: dict[int, tuple[int, EntryType, bytes]] = {}
        self._commit_marks: list[tuple[int, int]] = []  # (commit index, term committed in)
        self._conf_idx: list[int] = [0]  # committed configurations, by log index
        self._confs: list[ConfState] = [ConfState()]
        self._epochs: dict[tuple[str, int], tuple[str | None, int, int]] = {}
        self._snap_digest: dict[int, bytes] = {}
        self._trace: list[str] | None = [] if cfg.trace else None
        for nid in (*voters, *learners):
            node = _Node(nid, voters, learners)
            self.nodes[nid] = node
            self._start(node)

    # ==================================================================================
    # Plumbing.

    def _fail(self, detail: str) -> InvariantViolation:
        return InvariantViolation(self.seed, self.tick_no, self.step_no, detail, self.config)

    def _log(self, text: str) -> None:
        if self._trace is not None:
            self._trace.append(f"[t{self.tick_no} s{self.step_no}] {text}")

    def _alive(self) -> list[_Node]:
        return [n for n in self.nodes.values() if n.raft is not None]

    def _start(self, node: _Node) -> None:
        cfg = self.cfg
        raft = RaftNode(
            node.id,
            node.boot_voters,
            node.storage,
            random.Random(self.rng.getrandbits(64)),
            learners=node.boot_learners,
            election_tick=cfg.election_tick,
            heartbeat_tick=cfg.heartbeat_tick,
            pre_vote=cfg.pre_vote,
            check_quorum=cfg.check_quorum,
            max_entries_per_msg=cfg.max_entries_per_msg,
            logger=self._log if self._trace is not None else None,
        )
        if raft.commit_index < node.durable_commit:
            raise self._fail(
                f"{node.id} restarted with commit {raft.commit_index} < fsynced "
                f"{node.durable_commit}"
            )
        snap = node.storage.snapshot()
        node.raft = raft
        node.app = AuthorityMap.restore(snap.data)
        if node.app.applied_index != snap.index:
            raise self._fail(
                f"{node.id} snapshot at {snap.index} holds state of {node.app.applied_index}"
            )
        node.checked_commit = snap.index
        node.max_commit = raft.commit_index
        self._log(f"{node.id} started (term {raft.term}, commit {raft.commit_index})")
        self._after_step(node)

    def _crash(self, node: _Node, why: str) -> None:
        self._log(f"{node.id} crashed ({why})")
        node.storage.crash()
        node.raft = None
        node.down_until = self.tick_no + self.rng.randint(
            self.cfg.min_down_ticks, self.cfg.max_down_ticks
        )
        self.result.crashes += 1

    def _send(self, m: Message) -> None:
        cfg = self.cfg
        rng = self.rng
        if self._chaos and rng.random() < cfg.drop_rate:
            self.result.dropped += 1
            return
        if cfg.codec:
            m = decode(m.encode())
        copies = 2 if self._chaos and rng.random() < cfg.dup_rate else 1
        for _ in range(copies):
            self._seq += 1
            at = self.now + rng.randint(cfg.min_delay_ms, cfg.max_delay_ms)
            heapq.heappush(self._queue, (at, self._seq, m))

    def _deliver_until(self, t: int) -> None:
        q = self._queue
        while q and q[0][0] < t:
            at, _, m = heapq.heappop(q)
            self.now = at
            node = self.nodes.get(m.dst)
            if node is None or node.raft is None:
                self.result.dropped += 1
                continue
            groups = self._groups
            if groups is not None and groups.get(m.src) != groups.get(m.dst):
                self.result.dropped += 1
                continue
            self.step_no += 1
            self.result.delivered += 1
            if self._trace is not None:
                self._log(describe_message(m))
            node.raft.step(m)
            self._after_step(node)

    # ==================================================================================
    # Ready handling and invariant checks.

    def _after_step(self, node: _Node) -> None:
        raft = node.raft
        rounds = 0
        while raft is not None and raft.has_ready():
            rounds += 1
            if rounds > 2:
                raise self._fail(f"{node.id} still has a Ready after advance()")
            rd = raft.ready()
            st = node.storage
            if rd.snapshot is not None:
                st.apply_snapshot(rd.snapshot)
            if rd.entries:
                st.append(rd.entries)
            if rd.hard_state is not None:
                st.set_hard_state(rd.hard_state)
            if self._chaos and self.rng.random() < self.cfg.torn_persist_rate:
                self.result.torn_persists += 1
                self._crash(node, "power cut before fsync")
                return
            st.sync()
            if rd.hard_state is not None:
                node.durable_commit = rd.hard_state.commit
            for e in rd.entries:
                self._record_entry(node, e)
            self._observe_commit(node)
            for m in rd.messages:
                self._send(m)
            if rd.snapshot is not None:
                self._restore_app(node, rd.snapshot)
            for e in rd.committed_entries:
                self._apply(node, e)
            raft.advance(rd)
        if raft is not None and raft.state is LEADER:
            self._check_leader(node, raft)

    def _check_leader(self, node: _Node, raft: RaftNode) -> None:
        holder = self._leaders.get(raft.term)
        if holder is None:
            self._leaders[raft.term] = node.id
            self._leader_last[raft.term] = (raft.last_index, raft.log.last_term())
            self.result.leaders += 1
            self.result.max_term = max(self.result.max_term, raft.term)
            self._log(f"{node.id} is leader of term {raft.term}")
            # Everything committed in an earlier term must be in the new leader's log. By
            # log matching, checking the highest such index covers all below it.
            for index, commit_term in reversed(self._commit_marks):
                if commit_term < raft.term:
                    self._check_in_leader_log(raft.term, index, self._committed[index][0])
                    break
        elif holder != node.id:
            raise self._fail(f"election safety: {holder} and {node.id} both lead term {raft.term}")

    def _record_entry(self, node: _Node, e: Entry) -> None:
        assert node.raft is not None
        prev_term = node.raft.log.term_of(e.index - 1)
        if prev_term is None:
            raise self._fail(f"{node.id} persisted entry {e.index} without its predecessor")
        key = (e.index, e.term)
        val = (e.type, e.data, prev_term)
        old = self._chain.get(key)
        if old is None:
            self._chain[key] = val
        elif old != val:
            raise self._fail(
                f"log matching: {node.id} has entry {e.term}/{e.index} = {val!r:.120}, "
                f"seen before as {old!r:.120}"
            )

    def _observe_commit(self, node: _Node) -> None:
        raft = node.raft
        assert raft is not None
        c = raft.commit_index
        if c < node.max_commit:
            raise self._fail(f"{node.id} commit index went back from {node.max_commit} to {c}")
        if c > node.max_commit and raft.state is LEADER and raft.log.term_of(c) != raft.term:
            # Raft §5.4.2: a leader only ever commits by counting replicas of an entry of
            # its own term (earlier ones follow indirectly), else Figure 8 bites.
            raise self._fail(
                f"commit rule: leader {node.id} of term {raft.term} committed "
                f"{raft.log.term_of(c)}/{c} by counting"
            )
        node.max_commit = c
        if c <= node.checked_commit:
            return
        lo = node.checked_commit + 1
        first = raft.log.first_index()
        if lo < first:  # covered by a snapshot
            snap = raft.log.snapshot()
            known = self._committed.get(snap.index)
            if known is None or known[0] != snap.term:
                raise self._fail(
                    f"{node.id} holds snapshot {snap.term}/{snap.index} that is not committed "
                    f"as such ({known!r:.80})"
                )
            lo = first
        newly: list[Entry] = []
        for e in raft.log.entries(lo, c + 1):
            val = (e.term, e.type, e.data)
            known = self._committed.get(e.index)
            if known is None:
                if e.index != len(self._committed) + 1:
                    raise self._fail(f"{node.id} commits {e.index} ahead of a gap")
                self._committed[e.index] = val
                newly.append(e)
                if e.type is EntryType.CONF_CHANGE:
                    self._conf_idx.append(e.index)
                    self._confs.append(_apply_conf(self._confs[-1], e.data))
            elif known != val:
                raise self._fail(
                    f"{node.id} commits {e.term}/{e.index} but {known[0]}/{e.index} was "
                    "committed before (committed entry lost or changed)"
                )
        node.checked_commit = c
        if newly:
            # A commit point is first learnt by the leader that reached it (followers
            # only hear of it afterwards), so its term is the term the entries were
            # committed in. Leaders of later terms, even ones already elected, must
            # hold them (Leader Completeness).
            if raft.state is LEADER:
                commit_term = raft.term
                for e in newly:
                    for lterm in self._leader_last:
                        if lterm > commit_term:
                            self._check_in_leader_log(lterm, e.index, e.term)
            else:
                commit_term = max(self._leaders, default=0)
                if self.tick_no > 0:  # the bootstrap configuration is committed by fiat
                    self.result.foreign_commits += 1
            self._commit_marks.append((newly[-1].index, commit_term))
            self.result.committed = max(self.result.committed, newly[-1].index)

    def _check_in_leader_log(self, lterm: int, index: int, term: int) -> None:
        li, lt = self._leader_last[lterm]
        if li < index:
            raise self._fail(
                f"leader completeness: committed {term}/{index} missing from the log of "
                f"term-{lterm} leader {self._leaders[lterm]} (last index {li})"
            )
        while li > index:
            link = self._chain.get((li, lt))
            if link is None:
                return  # chain not observable (never persisted anywhere): cannot judge
            lt = link[2]
            li -= 1
        if lt != term:
            raise self._fail(
                f"leader completeness: term-{lterm} leader {self._leaders[lterm]} had "
                f"{lt}/{index} where {term}/{index} is committed"
            )

    def _committed_conf(self, index: int) -> ConfState:
        return self._confs[bisect.bisect_right(self._conf_idx, index) - 1]

    def _check_snapshot_conf(self, node: _Node, snap: Snapshot) -> None:
        want = self._committed_conf(snap.index)
        if snap.conf_state != want:
            raise self._fail(
                f"{node.id} snapshot at {snap.index} records membership {snap.conf_state}, "
                f"the log says {want}"
            )

    def _restore_app(self, node: _Node, snap: Snapshot) -> None:
        self.result.snapshots_installed += 1
        index, term, data = snap.index, snap.term, snap.data
        known = self._committed.get(index)
        if known is None or known[0] != term:
            raise self._fail(f"{node.id} installed snapshot {term}/{index} of uncommitted state")
        self._check_snapshot_conf(node, snap)
        digest = hashlib.blake2b(data, digest_size=16).digest()
        if self._snap_digest.get(index, digest) != digest:
            raise self._fail(f"snapshot at {index} differs between nodes")
        node.app = AuthorityMap.restore(data)
        if node.app.applied_index != index:
            raise self._fail(f"snapshot at {index} holds state applied to {node.app.applied_index}")

    def _apply(self, node: _Node, e: Entry) -> None:
        known = self._committed.get(e.index)
        if known != (e.term, e.type, e.data):
            raise self._fail(
                f"state machine safety: {node.id} applies {e.term}/{e.index}, committed is "
                f"{known!r:.80}"
            )
        if e.index != node.app.applied_index + 1:
            raise self._fail(f"{node.id} applies {e.index} after {node.app.applied_index}")
        res = node.app.apply(e)
        if res is not None:
            if res.accepted:
                a = res.assignment
                assert a is not None and res.resource_id is not None
                key = (res.resource_id, a.epoch)
                val = (a.holder, a.term, a.index)
                old = self._epochs.get(key)
                if old is None:
                    self._epochs[key] = val
                    self.result.accepted += 1
                elif old != val:
                    raise self._fail(
                        f"single authority: {node.id} has {res.resource_id} epoch {a.epoch} = "
                        f"{val}, others have {old}"
                    )
            elif node.id == self._leaders.get(e.term):
                self.result.rejected += 1
        digest = self._snap_digest.get(e.index)
        if digest is not None:
            mine = hashlib.blake2b(node.app.snapshot(), digest_size=16).digest()
            if mine != digest:
                raise self._fail(f"{node.id} state at {e.index} differs from snapshot there")

    # ==================================================================================
    # Workload and faults.

    def _tick_round(self) -> None:
        self.tick_no += 1
        self.now = self.tick_no * self.cfg.tick_ms
        for node in self.nodes.values():
            if node.raft is None and node.down_until <= self.tick_no:
                self.step_no += 1
                self._start(node)
        for node in self._alive():
            if node.raft is not None:
                self.step_no += 1
                node.raft.tick()
                self._after_step(node)

    def _faults(self) -> None:
        cfg, rng = self.cfg, self.rng
        if self._groups is None and rng.random() < cfg.partition_rate:
            ids = sorted(self.nodes)
            rng.shuffle(ids)
            cut = rng.randint(1, len(ids) - 1)
            self._groups = {nid: int(i >= cut) for i, nid in enumerate(ids)}
            self._log(f"partition {sorted(ids[:cut])} | {sorted(ids[cut:])}")
        elif self._groups is not None and rng.random() < cfg.heal_rate:
            self._groups = None
            self._log("heal")
        if rng.random() < cfg.crash_rate:
            # Leaders are the interesting victims: half the crashes target one.
            pool = self._leaders_alive() if rng.random() < 0.5 else []
            pool = pool or self._alive()
            if pool:
                self.step_no += 1
                self._crash(rng.choice(pool), "random")
        if rng.random() < cfg.compact_rate:
            self._compact()
        if rng.random() < cfg.transfer_rate:
            self._transfer()
        if rng.random() < cfg.conf_change_rate:
            self._conf_change()

    def _leaders_alive(self) -> list[_Node]:
        return [n for n in self._alive() if n.raft is not None and n.raft.state is LEADER]

    def _propose(self) -> None:
        rng = self.rng
        alive = self._alive()
        if not alive:
            return
        leaders = self._leaders_alive()
        node = rng.choice(leaders) if leaders and rng.random() < 0.85 else rng.choice(alive)
        raft = node.raft
        assert raft is not None
        resource = f"r{rng.randrange(self.cfg.resources)}"
        current = node.app.authority_for(resource)
        candidates = sorted(self.nodes)
        scores = {h: rng.random() for h in rng.sample(candidates, min(3, len(candidates)))}
        holder = choose_authority(current.holder if current else None, scores, 0.15)
        assert holder is not None
        epoch = node.app.epoch_of(resource)
        if rng.random() < 0.1:
            epoch = max(0, epoch + rng.choice((-1, 1)))  # a stale or future view
        self.step_no += 1
        self.result.proposals += 1
        try:
            raft.propose(encode_command(Assign(resource, holder, epoch)))
        except ProposalDroppedError:
            self.result.proposals_dropped += 1
        self._after_step(node)

    def _compact(self) -> None:
        alive = self._alive()
        if not alive:
            return
        node = self.rng.choice(alive)
        raft = node.raft
        assert raft is not None
        index = raft.applied_index
        if index - raft.log.first_index() + 1 < self.cfg.compact_min_entries:
            return
        data = node.app.snapshot()
        digest = hashlib.blake2b(data, digest_size=16).digest()
        if self._snap_digest.setdefault(index, digest) != digest:
            raise self._fail(f"{node.id} snapshot at {index} differs from another node's")
        self.step_no += 1
        snap = raft.compact(index, data)
        self._check_snapshot_conf(node, snap)
        self.result.compactions += 1
        self._log(f"{node.id} compacted through {index}")

    def _transfer(self) -> None:
        leaders = self._leaders_alive()
        if not leaders:
            return
        node = self.rng.choice(leaders)
        raft = node.raft
        assert raft is not None
        targets = [v for v in raft.voters if v != node.id]
        if not targets:
            return
        to = self.rng.choice(targets)
        self.step_no += 1
        try:
            raft.transfer_leadership(to)
            self.result.transfers += 1
            self._log(f"{node.id} transfers leadership to {to}")
        except (ProposalDroppedError, ConfChangeError):
            pass
        self._after_step(node)

    def _conf_change(self) -> None:
        leaders = self._leaders_alive()
        if not leaders:
            return
        rng = self.rng
        node = rng.choice(leaders)
        raft = node.raft
        assert raft is not None
        voters, learners = raft.voters, raft.learners
        options: list[tuple[ConfChangeType, str]] = []
        if learners and len(voters) < 5:
            options.append((ConfChangeType.PROMOTE_LEARNER, rng.choice(learners)))
        if learners:
            options.append((ConfChangeType.REMOVE_VOTER, rng.choice(learners)))
        if len(voters) > 3:
            options.append(
                (ConfChangeType.REMOVE_VOTER, rng.choice([v for v in voters if v != node.id]))
            )
        if self._spares and len(learners) < 2:
            options.append((ConfChangeType.ADD_LEARNER, self._spares[0]))
        if not options:
            return
        op, nid = rng.choice(options)
        self.step_no += 1
        try:
            raft.propose_conf_change(op, nid)
        except (ProposalDroppedError, ConfChangeError):
            self._after_step(node)
            return
        self.result.conf_changes += 1
        self._log(f"{node.id} proposes {op} {nid}")
        if op is ConfChangeType.ADD_LEARNER and nid not in self.nodes:
            self._spares.remove(nid)
            joiner = _Node(nid, (), ())
            self.nodes[nid] = joiner
            self._start(joiner)
        self._after_step(node)

    # ==================================================================================
    # Phases.

    def _heal_everything(self) -> None:
        self._chaos = False
        self._groups = None
        self._log("quiet phase: healed, restarting everyone")
        for node in self.nodes.values():
            if node.raft is None:
                node.down_until = self.tick_no

    def _check_liveness(self) -> None:
        probe: tuple[str, int, int, bytes] | None = None  # (leader, term, index, data)
        for i in range(self.cfg.quiet_ticks):
            self._deliver_until((self.tick_no + 1) * self.cfg.tick_ms)
            self._tick_round()
            leaders = [(n.raft.term, n) for n in self._leaders_alive() if n.raft is not None]
            if not leaders:
                continue
            leader = max(leaders, key=lambda tn: tn[0])[1]  # a stale leader may linger
            raft = leader.raft
            assert raft is not None
            if probe is not None and probe[1] != raft.term:
                probe = None  # leadership moved before the probe committed; try again
            if probe is None:
                data = encode_command(
                    Assign("liveness", leader.id, leader.app.epoch_of("liveness"))
                )
                try:
                    index = raft.propose(data)
                except ProposalDroppedError:
                    continue
                probe = (leader.id, raft.term, index, data)
                self._after_step(leader)
                continue
            _, term, index, data = probe
            if self._committed.get(index) != (term, EntryType.NORMAL, data):
                continue
            lagging = [
                v
                for v in raft.voters
                if v not in self.nodes
                or self.nodes[v].raft is None
                or self.nodes[v].app.applied_index < index
            ]
            if not lagging:
                self.result.liveness_ticks = i + 1
                return
        raise LivenessViolation(
            self.seed,
            self.tick_no,
            self.step_no,
            f"no progress {self.cfg.quiet_ticks} ticks after healing "
            f"(leaders: {[(n.id, n.raft.term) for n in self._leaders_alive() if n.raft]}, "
            f"probe: {probe and probe[1:3]})",
            self.config,
        )

    def run(self) -> SimResult:
        try:
            cfg = self.cfg
            for _ in range(cfg.chaos_ticks):
                self._deliver_until((self.tick_no + 1) * cfg.tick_ms)
                self._tick_round()
                self._faults()
                if self.rng.random() < cfg.propose_rate:
                    self._propose()
                if self.rng.random() < cfg.propose_rate / 2:
                    self._propose()
            self._heal_everything()
            self._check_liveness()
        except InvariantViolation as exc:
            if self._trace is not None:
                exc.add_note("\n".join(self._trace[-80:]))
            raise
        except Exception as exc:  # a crash in the core is a bug too: report the seed
            err = self._fail(f"unexpected {type(exc).__name__}: {exc}")
            if self._trace is not None:
                err.add_note("\n".join(self._trace[-80:]))
            raise err from exc
        self.result.ticks = self.tick_no
        self.result.steps = self.step_no
        if self._trace is not None:
            self.result.trace = self._trace
        return self.result


def run_seed(seed: int, config: SimConfig | None = None) -> SimResult:
    """Run one seed; raises InvariantViolation (with replay instructions) on failure."""
    return Simulation(seed, config).run()


def run_seeds(seeds: Iterable[int], config: SimConfig | None = None) -> list[SimResult]:
    return [run_seed(s, config) for s in seeds]


def check_seeds(seeds: Sequence[int], config: SimConfig | None = None) -> list[str]:
    """Run *seeds*; return one report per failing seed (each says how to replay it)."""
    return seeds_mod.check_seeds(run_seed, InvariantViolation, seeds, config)


def run_parallel(seeds: Sequence[int], config: SimConfig | None = None,
                 workers: int | None = None) -> list[str]:
    """`check_seeds` spread over processes (results do not depend on the split)."""
    return seeds_mod.run_parallel(check_seeds, seeds, config, workers)


def _parse_range(text: str) -> range:
    lo, _, hi = text.partition(":")
    return range(int(lo), int(hi)) if hi else range(int(lo), int(lo) + 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.authority.sim", description=__doc__)
    p.add_argument("--seed", type=int, help="replay one seed")
    p.add_argument("--seeds", default="0:200", help="range lo:hi of seeds (default 0:200)")
    p.add_argument("--trace", action="store_true", help="print the event trace")
    p.add_argument("--codec", action="store_true", help="round-trip messages through JSON")
    p.add_argument("--chaos-ticks", type=int, default=SimConfig.chaos_ticks)
    p.add_argument("--workers", type=int, default=1, help="processes for a seed range")
    args = p.parse_args(argv)
    cfg = SimConfig(trace=args.trace, codec=args.codec, chaos_ticks=args.chaos_ticks)
    seeds = range(args.seed, args.seed + 1) if args.seed is not None else _parse_range(args.seeds)
    start = time.perf_counter()
    failures = 0
    if args.seed is None and args.workers > 1:
        reports = run_parallel(seeds, cfg, args.workers)
        for r in reports:
            print(f"FAIL {r}", file=sys.stderr)
        elapsed = time.perf_counter() - start
        print(
            f"{len(seeds)} seeds, {len(reports)} failures, {elapsed:.2f}s "
            f"({len(seeds) / elapsed:.0f} seeds/s on {args.workers} processes)"
        )
        return 1 if reports else 0
    for s in seeds:
        try:
            res = run_seed(s, cfg)
        except InvariantViolation as exc:
            failures += 1
            print(f"FAIL {exc}", file=sys.stderr)
            for note in getattr(exc, "__notes__", []):
                print(note, file=sys.stderr)
            continue
        if args.trace:
            print("\n".join(res.trace))
        if args.seed is not None:
            print(replace(res, trace=[]))
    elapsed = time.perf_counter() - start
    n = len(seeds)
    print(f"{n} seeds, {failures} failures, {elapsed:.2f}s ({n / elapsed:.0f} seeds/s)")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
