"""Raft consensus as a pure, deterministic state machine (modelled on etcd-io/raft).

Why pure: no clocks, threads, sockets or disks in here. Time is `tick()`, input is
`step(msg)` and the local API calls, output is a :class:`Ready` the caller executes
(persist, then send, then apply, then `advance`). Randomness comes only from the injected
`random.Random`, so a seed replays an execution exactly, which is what makes the
simulator's failures debuggable.

Features: randomized election timeouts in [election_tick, 2*election_tick); PreVote;
CheckQuorum with leader lease; log replication with probe/replicate/snapshot flow control
and conflict fast-backoff; current-term-only commit counting with a no-op on election;
snapshots and compaction; leadership transfer via TimeoutNow; learners; single-server
membership changes.

Membership semantics: a configuration takes effect as soon as its entry is *appended*
(the dissertation's rule, §4.1), not when applied. The configuration is then a pure
function of the log (snapshot ConfState + conf entries after it), so it survives crashes
and restarts with no help from the application and rolls back automatically when a
conflicting suffix is truncated. Safety needs two rules, both enforced by the leader:
at most one uncommitted conf entry in the log, and none until the leader has committed an
entry of its own term (the fix for the single-server-change bug, raft-dev 2015).
"""

from __future__ import annotations

import bisect
import contextlib
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from .confchange import apply_conf_change, bootstrap_changes, validate_conf_change
from .log import RaftInvariantError, RaftLog
from .messages import (
    MAX_ENTRIES_PER_MESSAGE,
    MAX_ENTRY_SIZE,
    AppendEntries,
    AppendResponse,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    RaftMessageError,
    RequestVote,
    Snapshot,
    TimeoutNow,
    VoteResponse,
    valid_node_id,
)
from .progress import Progress, ProgressState
from .ready import Ready, SoftState, StateType
from .storage import RaftStorage, RaftStorageError

FOLLOWER = StateType.FOLLOWER
PRE_CANDIDATE = StateType.PRE_CANDIDATE
CANDIDATE = StateType.CANDIDATE
LEADER = StateType.LEADER


class RaftError(Exception):
    """Base class for errors the core reports to its caller."""


class ProposalDroppedError(RaftError):
    """The proposal was not appended (not leader, transfer in progress, change pending)."""

    def __init__(self, reason: str, leader_hint: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.leader_hint = leader_hint


class ConfChangeError(RaftError, ValueError):
    """The membership change is invalid for the current configuration."""


class _Vote(Enum):
    PENDING = 0
    WON = 1
    LOST = 2


@dataclass(frozen=True, slots=True)
class ProgressStatus:
    match: int
    next: int
    state: ProgressState
    is_learner: bool
    recent_active: bool
    paused: bool


@dataclass(frozen=True, slots=True)
class Status:
    id: str
    term: int
    vote: str | None
    lead: str | None
    state: StateType
    commit: int
    applied: int
    last_index: int
    first_index: int
    voters: tuple[str, ...]
    learners: tuple[str, ...]
    lead_transferee: str | None
    progress: dict[str, ProgressStatus]
    """Per-member replication progress; only populated on the leader."""


class RaftNode:
    """One Raft participant. Not thread-safe: drive it from a single task."""

    def __init__(
        self,
        node_id: str,
        voters: Iterable[str],
        storage: RaftStorage,
        rng: random.Random,
        *,
        learners: Iterable[str] = (),
        election_tick: int = 10,
        heartbeat_tick: int = 1,
        pre_vote: bool = True,
        check_quorum: bool = True,
        max_inflight: int = 256,
        max_entries_per_msg: int = 256,
        max_bytes_per_msg: int = 1 << 20,
        logger: Callable[[str], None] | None = None,
    ) -> None:
        """Create or restart a node.

        If *storage* is empty, the node bootstraps the configuration (*voters*,
        *learners*) as committed conf entries 1..n of term 1, which every founding
        member must be given identically. A node joining later passes no voters: it
        learns the configuration from the log or a snapshot. With non-empty storage the
        arguments are ignored and the configuration is derived from the stored log.
        """
        if not valid_node_id(node_id):
            raise ValueError(f"invalid node id {node_id!r}")
        if heartbeat_tick < 1 or election_tick <= heartbeat_tick:
            raise ValueError("need 1 <= heartbeat_tick < election_tick")
        if max_inflight < 1 or not 1 <= max_entries_per_msg <= MAX_ENTRIES_PER_MESSAGE:
            raise ValueError("invalid flow-control limits")
        self.id = node_id
        self.storage = storage
        self.election_tick = election_tick
        self.heartbeat_tick = heartbeat_tick
        self.pre_vote = pre_vote
        self.check_quorum = check_quorum
        self.max_inflight = max_inflight
        self.max_entries_per_msg = max_entries_per_msg
        self.max_bytes_per_msg = max_bytes_per_msg
        self._rng = rng
        self._logger = logger

        snap = storage.snapshot()
        # Configuration derived from the log: base (from the snapshot) + conf entries.
        self._conf_base = snap.conf_state
        self._conf_idx: list[int] = []
        self._conf_states: list[ConfState] = []
        self._conf = ConfState()
        self._voters: tuple[str, ...] = ()
        self._voter_set: frozenset[str] = frozenset()
        self._learner_set: frozenset[str] = frozenset()

        self.term = 0
        self.vote: str | None = None
        self.lead: str | None = None
        self.state = FOLLOWER
        self._votes: dict[str, bool] = {}
        self._prs: dict[str, Progress] = {}
        self._peers: list[str] = []
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = election_tick
        self._lead_transferee: str | None = None
        self._msgs: list[Message] = []
        self._ready_pending = False

        self.log = RaftLog(storage, self._on_append)
        self._set_conf(self._conf_base)
        first, last = storage.first_index(), storage.last_index()
        if last >= first:
            stored = storage.entries(first, last + 1)
            confs = [e for e in stored if e.type is EntryType.CONF_CHANGE]
            if confs:
                self._track_conf(confs)

        hs = storage.hard_state()
        self._prev_hs = hs
        if last == 0 and snap.index == 0 and hs == HardState():
            changes = bootstrap_changes(voters, learners)
            if changes:
                ents = [
                    Entry(i + 1, 1, EntryType.CONF_CHANGE, cc.encode())
                    for i, cc in enumerate(changes)
                ]
                self.log.append(ents)
                self.log.committed = len(ents)
                hs = HardState(term=1, commit=len(ents))
        else:
            if hs.commit > self.log.last_index():
                raise RaftStorageError(
                    f"hard state commit {hs.commit} beyond last index {self.log.last_index()}"
                )
            self.log.committed = max(hs.commit, self.log.committed)
        self.term = hs.term
        self.vote = hs.vote
        self._become_follower(self.term, None)
        self._prev_ss = SoftState(None, FOLLOWER)

    # ==================================================================================
    # Read-only views.

    @property
    def commit_index(self) -> int:
        return self.log.committed

    @property
    def applied_index(self) -> int:
        return self.log.applied

    @property
    def last_index(self) -> int:
        return self.log.last_index()

    @property
    def conf_state(self) -> ConfState:
        return self._conf

    @property
    def voters(self) -> tuple[str, ...]:
        return self._voters

    @property
    def learners(self) -> tuple[str, ...]:
        return self._conf.learners

    @property
    def lead_transferee(self) -> str | None:
        return self._lead_transferee

    @property
    def randomized_election_timeout(self) -> int:
        return self._randomized_timeout

    @property
    def election_elapsed(self) -> int:
        return self._election_elapsed

    def is_leader(self) -> bool:
        return self.state is LEADER

    def promotable(self) -> bool:
        """May this node campaign? Only voters, and not while installing a snapshot."""
        return self.id in self._voter_set and self.log.pending_snapshot is None

    def progress(self, node_id: str) -> Progress | None:
        return self._prs.get(node_id)

    def status(self) -> Status:
        prs = {
            nid: ProgressStatus(
                pr.match, pr.next, pr.state, pr.is_learner, pr.recent_active, pr.is_paused()
            )
            for nid, pr in sorted(self._prs.items())
        }
        return Status(
            id=self.id,
            term=self.term,
            vote=self.vote,
            lead=self.lead,
            state=self.state,
            commit=self.log.committed,
            applied=self.log.applied,
            last_index=self.log.last_index(),
            first_index=self.log.first_index(),
            voters=self._voters,
            learners=self._conf.learners,
            lead_transferee=self._lead_transferee,
            progress=prs,
        )

    def conf_state_at(self, index: int) -> ConfState:
        """Configuration in force at log *index* (index must not be compacted)."""
        k = bisect.bisect_right(self._conf_idx, index)
        return self._conf_states[k - 1] if k else self._conf_base

    # ==================================================================================
    # Configuration tracking (use-on-append).

    def _on_append(self, entries: Sequence[Entry]) -> None:
        """Called by the log for every appended batch (possibly after a truncation)."""
        first = entries[0].index
        changed = False
        if self._conf_idx and self._conf_idx[-1] >= first:
            k = bisect.bisect_left(self._conf_idx, first)
            del self._conf_idx[k:]
            del self._conf_states[k:]
            changed = True
        confs = [e for e in entries if e.type is EntryType.CONF_CHANGE]
        if confs:
            self._track_conf(confs)
        elif changed:
            self._set_conf(self._conf_states[-1] if self._conf_states else self._conf_base)

    def _track_conf(self, confs: Sequence[Entry]) -> None:
        conf = self._conf_states[-1] if self._conf_states else self._conf_base
        for e in confs:
            with contextlib.suppress(RaftMessageError):  # malformed: a no-op everywhere
                conf = apply_conf_change(conf, ConfChange.decode(e.data))
            self._conf_idx.append(e.index)
            self._conf_states.append(conf)
        self._set_conf(conf)

    def _set_conf(self, conf: ConfState) -> None:
        if conf == self._conf:
            return
        self._conf = conf
        self._voters = conf.voters
        self._voter_set = frozenset(conf.voters)
        self._learner_set = frozenset(conf.learners)
        self._log(
            f"{self.id} switched to configuration voters=({' '.join(conf.voters)})"
            f" learners=({' '.join(conf.learners)})"
        )
        if self.state is LEADER:
            self._sync_progress()

    def _sync_progress(self) -> None:
        """Leader: make the progress map match the configuration.

        A removed member is kept as a *lame duck* (no vote, no quorum) until it has the
        entry that removes it: with use-on-append semantics, holding that entry is what
        stops it from campaigning, so it should not be left to time out and pester the
        cluster with (pre-)votes.
        """
        members = self._voter_set | self._learner_set
        removal = self._conf_idx[-1] if self._conf_idx else self.log.last_index()
        for nid, old in list(self._prs.items()):
            if nid not in members:
                if nid == self.id or old.match >= removal:
                    del self._prs[nid]
                elif not old.removed_at:
                    old.removed_at = removal
        next_index = self.log.last_index() + 1
        for nid in sorted(members):
            pr = self._prs.get(nid)
            if pr is None or pr.removed_at:
                # new, or a lame duck added again: it may have restarted with an empty log
                # (a device that rejoins), so what we knew of its log no longer holds
                pr = Progress(next_index, max_inflight=self.max_inflight)
                pr.recent_active = True  # don't fail check-quorum before it answers
                self._prs[nid] = pr
            pr.is_learner = nid in self._learner_set
            pr.removed_at = 0
        self._peers = sorted(n for n in self._prs if n != self.id)
        if self._lead_transferee is not None and self._lead_transferee not in self._voter_set:
            self._abort_transfer()
        if self.id not in self._voter_set:  # cannot happen via propose; be defensive
            self._become_follower(self.term, None)

    def _drop_lame_duck(self, nid: str) -> None:
        del self._prs[nid]
        self._peers.remove(nid)

    # ==================================================================================
    # Time.

    def tick(self) -> None:
        """Advance logical time by one tick."""
        if self.state is LEADER:
            self._tick_heartbeat()
        else:
            self._election_elapsed += 1
            if self._election_elapsed >= self._randomized_timeout and self.promotable():
                self._election_elapsed = 0
                self._hup(transfer=False)

    def _tick_heartbeat(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self.election_tick:
            self._election_elapsed = 0
            if self.check_quorum:
                if not self._quorum_active():
                    self._log(f"{self.id} stepped down to follower since quorum is not active")
                    self._become_follower(self.term, None)
                    return
                for nid, pr in list(self._prs.items()):
                    if nid != self.id:
                        if pr.removed_at and not pr.recent_active:
                            self._drop_lame_duck(nid)  # gone; stop trying
                        pr.recent_active = False
            if self._lead_transferee is not None:
                self._abort_transfer()
        for nid in self._peers:
            pr = self._prs[nid]
            if pr.state is ProgressState.SNAPSHOT:
                pr.snapshot_ticks += 1
                if pr.snapshot_ticks >= self.election_tick:  # lost or refused: retry
                    pr.snapshot_failed()
        if self._heartbeat_elapsed >= self.heartbeat_tick:
            self._heartbeat_elapsed = 0
            self._bcast_heartbeat()

    # ==================================================================================
    # Role transitions.

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = None
        self.lead = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = self.election_tick + self._rng.randrange(self.election_tick)
        self._lead_transferee = None
        self._votes = {}
        self._prs = {}
        self._peers = []

    def _become_follower(self, term: int, lead: str | None) -> None:
        self._reset(term)
        self.lead = lead
        self.state = FOLLOWER
        self._log(f"{self.id} became follower at term {self.term}")

    def _become_pre_candidate(self) -> None:
        # Deliberately leaves term and vote alone: a failed pre-vote disturbs nobody.
        self._votes = {}
        self.lead = None
        self.state = PRE_CANDIDATE
        self._log(f"{self.id} became pre-candidate at term {self.term}")

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.state = CANDIDATE
        self._log(f"{self.id} became candidate at term {self.term}")

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.lead = self.id
        self.state = LEADER
        last = self.log.last_index()
        for nid in sorted(self._voter_set | self._learner_set):
            self._prs[nid] = Progress(
                last + 1, max_inflight=self.max_inflight, is_learner=nid in self._learner_set
            )
        me = self._prs[self.id]
        me.become_replicate()
        me.match = last
        me.next = last + 1
        me.recent_active = True
        self._peers = sorted(n for n in self._prs if n != self.id)
        self._log(f"{self.id} became leader at term {self.term}")
        # The no-op lets the new leader commit (and so learn the commit point of) the
        # entries of earlier terms, which it may not count directly (Raft §5.4.2).
        self._append([Entry(last + 1, self.term)])
        self._bcast_append()

    def _hup(self, *, transfer: bool) -> None:
        if self.state is LEADER:
            self._log(f"{self.id} ignoring campaign: already leader")
            return
        if not self.promotable():
            self._log(f"{self.id} cannot campaign: not a voter")
            return
        self._campaign(pre=self.pre_vote and not transfer, transfer=transfer)

    def _campaign(self, *, pre: bool, transfer: bool) -> None:
        if pre:
            self._become_pre_candidate()
            term = self.term + 1
        else:
            self._become_candidate()
            term = self.term
        if self._poll(self.id, True) is _Vote.WON:  # single-voter cluster
            if pre:
                self._campaign(pre=False, transfer=transfer)
            else:
                self._become_leader()
            return
        li, lt = self.log.last_index(), self.log.last_term()
        for v in self._voters:
            if v != self.id:
                self._send(
                    RequestVote(
                        term=term,
                        src=self.id,
                        dst=v,
                        last_index=li,
                        last_term=lt,
                        pre_vote=pre,
                        transfer=transfer,
                    )
                )

    def _poll(self, nid: str, granted: bool) -> _Vote:
        self._votes.setdefault(nid, granted)
        yes = no = 0
        for v in self._voters:
            r = self._votes.get(v)
            if r is True:
                yes += 1
            elif r is False:
                no += 1
        quorum = len(self._voters) // 2 + 1
        if yes >= quorum:
            return _Vote.WON
        if len(self._voters) - no < quorum:
            return _Vote.LOST
        return _Vote.PENDING

    def campaign(self) -> None:
        """Start an election now (pre-vote first if enabled), as if the timer fired."""
        self._hup(transfer=False)

    # ==================================================================================
    # Messages.

    def _send(self, m: Message) -> None:
        self._msgs.append(m)

    def step(self, m: Message) -> None:
        """Process one message from a peer."""
        if m.dst != self.id:
            raise ValueError(f"message for {m.dst!r} delivered to {self.id!r}")
        if m.src == self.id:
            return
        mtype = type(m)
        if m.term > self.term:
            if isinstance(m, RequestVote):
                in_lease = (
                    self.check_quorum
                    and self.lead is not None
                    and self._election_elapsed < self.election_tick
                )
                if in_lease and not m.transfer:
                    # Leader lease: we heard from a live leader within the minimum
                    # election timeout, so this candidate is (at best) disruptive.
                    self._log(
                        f"{self.id} [term: {self.term}] ignored "
                        f"{'MsgPreVote' if m.pre_vote else 'MsgVote'} from {m.src}"
                        f" [term: {m.term}]: lease is not expired"
                    )
                    return
                if not m.pre_vote:
                    self._become_follower(m.term, None)
            elif isinstance(m, VoteResponse) and m.pre_vote and m.granted:
                pass  # granted pre-votes carry the term we would campaign at
            elif mtype is AppendEntries or mtype is Heartbeat or mtype is InstallSnapshot:
                self._become_follower(m.term, m.src)
            else:
                self._become_follower(m.term, None)
        elif m.term < self.term:
            if (mtype is AppendEntries or mtype is Heartbeat) and (
                self.check_quorum or self.pre_vote
            ):
                # A stale leader (e.g. back from a partition) must learn our term, or
                # with pre-vote/check-quorum nobody would ever make it step down.
                self._send(AppendResponse(term=self.term, src=self.id, dst=m.src, index=0))
            elif isinstance(m, RequestVote) and m.pre_vote:
                self._send(
                    VoteResponse(
                        term=self.term, src=self.id, dst=m.src, granted=False, pre_vote=True
                    )
                )
            return

        if isinstance(m, RequestVote):
            self._handle_vote_request(m)
        elif self.state is LEADER:
            self._step_leader(m)
        elif self.state is FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _handle_vote_request(self, m: RequestVote) -> None:
        can_vote = (
            self.vote == m.src
            or (self.vote is None and self.lead is None)
            or (m.pre_vote and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.last_index, m.last_term):
            self._send(
                VoteResponse(term=m.term, src=self.id, dst=m.src, granted=True, pre_vote=m.pre_vote)
            )
            if not m.pre_vote:
                self._election_elapsed = 0
                self.vote = m.src
        else:
            self._send(
                VoteResponse(
                    term=self.term, src=self.id, dst=m.src, granted=False, pre_vote=m.pre_vote
                )
            )

    def _step_follower(self, m: Message) -> None:
        if isinstance(m, AppendEntries):
            self._election_elapsed = 0
            self.lead = m.src
            self._handle_append(m)
        elif isinstance(m, Heartbeat):
            self._election_elapsed = 0
            self.lead = m.src
            self._handle_heartbeat(m)
        elif isinstance(m, InstallSnapshot):
            self._election_elapsed = 0
            self.lead = m.src
            self._handle_snapshot(m)
        elif isinstance(m, TimeoutNow):
            self._log(f"{self.id} received MsgTimeoutNow from {m.src}, campaigning")
            self._hup(transfer=True)

    def _step_candidate(self, m: Message) -> None:
        if isinstance(m, AppendEntries):
            self._become_follower(m.term, m.src)
            self._handle_append(m)
        elif isinstance(m, Heartbeat):
            self._become_follower(m.term, m.src)
            self._handle_heartbeat(m)
        elif isinstance(m, InstallSnapshot):
            self._become_follower(m.term, m.src)
            self._handle_snapshot(m)
        elif isinstance(m, VoteResponse):
            if m.pre_vote != (self.state is PRE_CANDIDATE):
                return
            result = self._poll(m.src, m.granted)
            if result is _Vote.WON:
                if self.state is PRE_CANDIDATE:
                    self._campaign(pre=False, transfer=False)
                else:
                    self._become_leader()
            elif result is _Vote.LOST:
                self._become_follower(self.term, None)

    def _step_leader(self, m: Message) -> None:
        if isinstance(m, AppendResponse):
            self._handle_append_response(m)
        elif isinstance(m, HeartbeatResponse):
            pr = self._prs.get(m.src)
            if pr is None:
                return
            pr.recent_active = True
            pr.paused = False
            if pr.state is ProgressState.REPLICATE and len(pr.inflights) >= pr.max_inflight:
                pr.inflights.popleft()  # make room so a lost append cannot stall us
            if pr.match < self.log.last_index() or pr.state is ProgressState.PROBE:
                self._maybe_send_append(m.src, send_if_empty=True)
        # Vote responses, TimeoutNow and same-term appends (impossible) are ignored.

    # --- follower side of replication ---------------------------------------------------

    def _handle_append(self, m: AppendEntries) -> None:
        if m.prev_index < self.log.committed:
            self._send(
                AppendResponse(term=self.term, src=self.id, dst=m.src, index=self.log.committed)
            )
            return
        last_new = self.log.maybe_append(m.prev_index, m.prev_term, m.commit, m.entries)
        if last_new is not None:
            self._send(AppendResponse(term=self.term, src=self.id, dst=m.src, index=last_new))
            return
        hint_index = min(m.prev_index, self.log.last_index())
        hint_index, hint_term = self.log.find_conflict_by_term(hint_index, m.prev_term)
        self._send(
            AppendResponse(
                term=self.term,
                src=self.id,
                dst=m.src,
                index=m.prev_index,
                reject=True,
                reject_hint=hint_index,
                hint_term=hint_term,
            )
        )

    def _handle_heartbeat(self, m: Heartbeat) -> None:
        self.log.commit_to(m.commit)
        self._send(HeartbeatResponse(term=self.term, src=self.id, dst=m.src))

    def _handle_snapshot(self, m: InstallSnapshot) -> None:
        s = m.snapshot
        if self._restore(s):
            self._log(f"{self.id} restored snapshot [index: {s.index}, term: {s.term}]")
            index = self.log.last_index()
        else:
            index = self.log.committed
        self._send(AppendResponse(term=self.term, src=self.id, dst=m.src, index=index))

    def _restore(self, s: Snapshot) -> bool:
        if s.index <= self.log.committed:
            return False
        if self.log.match_term(s.index, s.term):
            # We already hold this prefix: just learn that it is committed.
            self.log.commit_to(s.index)
            return False
        self.log.restore(s)
        self._conf_base = s.conf_state
        self._conf_idx = []
        self._conf_states = []
        self._set_conf(s.conf_state)
        return True

    # --- leader side of replication -----------------------------------------------------

    def _append(self, entries: list[Entry]) -> None:
        last = self.log.append(entries)
        self._prs[self.id].maybe_update(last)
        self._maybe_commit()

    def _maybe_commit(self) -> bool:
        """Commit the highest index stored on a quorum, if it is from our term."""
        voters = self._voters
        matches = sorted((self._prs[v].match for v in voters), reverse=True)
        mci = matches[len(voters) // 2]
        if mci > self.log.committed and self.log.term_of(mci) == self.term:
            self.log.commit_to(mci)
            return True
        return False

    def _bcast_append(self) -> None:
        for nid in self._peers:
            self._maybe_send_append(nid, send_if_empty=True)

    def _bcast_heartbeat(self) -> None:
        committed = self.log.committed
        for nid in self._peers:
            pr = self._prs[nid]
            self._send(
                Heartbeat(term=self.term, src=self.id, dst=nid, commit=min(pr.match, committed))
            )

    def _maybe_send_append(self, to: str, *, send_if_empty: bool) -> bool:
        pr = self._prs[to]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        prev_term = self.log.term_of(prev_index)
        if prev_term is None:
            if prev_index > self.log.last_index():
                raise RaftInvariantError(f"progress of {to} is beyond our log: {pr}")
            return self._send_snapshot(to, pr)
        ents = self.log.entries(pr.next, pr.next + self.max_entries_per_msg)
        if ents:
            ents = _limit_size(ents, self.max_bytes_per_msg)
        elif not send_if_empty:
            return False
        self._send(
            AppendEntries(
                term=self.term,
                src=self.id,
                dst=to,
                prev_index=prev_index,
                prev_term=prev_term,
                entries=tuple(ents),
                commit=self.log.committed,
            )
        )
        pr.sent(ents[-1].index if ents else None)
        return True

    def _send_snapshot(self, to: str, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # it may be down; don't ship a large snapshot into the void
        snap = self.log.snapshot()
        pr.become_snapshot(snap.index)
        self._send(InstallSnapshot(term=self.term, src=self.id, dst=to, snapshot=snap))
        return True

    def _handle_append_response(self, m: AppendResponse) -> None:
        pr = self._prs.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        if m.reject:
            next_probe = m.reject_hint
            if m.hint_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.hint_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._maybe_send_append(m.src, send_if_empty=True)
            return
        old_paused = pr.is_paused()
        if pr.maybe_update(m.index) or (pr.match == m.index and pr.state is ProgressState.PROBE):
            if pr.state is ProgressState.PROBE:
                pr.become_replicate()
            elif pr.state is ProgressState.SNAPSHOT and pr.match + 1 >= self.log.first_index():
                pr.become_probe()
                pr.become_replicate()
            elif pr.state is ProgressState.REPLICATE:
                pr.free_le(m.index)
            if self._maybe_commit():
                self._bcast_append()
            elif old_paused:
                self._maybe_send_append(m.src, send_if_empty=True)
            while self._maybe_send_append(m.src, send_if_empty=False):
                pass
            if pr.removed_at and pr.match >= pr.removed_at:
                self._drop_lame_duck(m.src)  # it now knows it was removed
                return
            if m.src == self._lead_transferee and pr.match == self.log.last_index():
                self._send_timeout_now(m.src)

    def _send_timeout_now(self, to: str) -> None:
        self._log(
            f"{self.id} sends MsgTimeoutNow to {to} immediately as {to} already has up-to-date log"
        )
        self._send(TimeoutNow(term=self.term, src=self.id, dst=to))

    # ==================================================================================
    # Local API.

    def _require_leader(self) -> None:
        if self.state is not LEADER:
            raise ProposalDroppedError("not the leader", self.lead)
        if self._lead_transferee is not None:
            raise ProposalDroppedError(
                f"leadership transfer to {self._lead_transferee} in progress", self.lead
            )

    def propose(self, data: bytes) -> int:
        """Append application data; returns its log index. Leader only."""
        if not isinstance(data, bytes):
            raise TypeError("proposal data must be bytes")
        if len(data) > MAX_ENTRY_SIZE:
            raise ValueError(f"proposal of {len(data)} bytes exceeds {MAX_ENTRY_SIZE}")
        self._require_leader()
        index = self.log.last_index() + 1
        self._append([Entry(index, self.term, EntryType.NORMAL, data)])
        self._bcast_append()
        return index

    def propose_conf_change(self, op: ConfChangeType | str, node_id: str) -> int:
        """Append a single-server membership change; returns its log index. Leader only.

        Dropped while another change is uncommitted or before this leader committed an
        entry of its own term. Removing the leader itself is refused: transfer first.
        """
        try:
            cc = ConfChange(ConfChangeType(op), node_id)
        except ValueError as exc:
            raise ConfChangeError(f"unknown conf change operation {op!r}") from exc
        if not valid_node_id(node_id):
            raise ConfChangeError(f"invalid node id {node_id!r}")
        self._require_leader()
        if self.log.term_of(self.log.committed) != self.term:
            raise ProposalDroppedError("leader has not committed an entry of its term yet", self.id)
        if self._conf_idx and self._conf_idx[-1] > self.log.committed:
            raise ProposalDroppedError("another configuration change is pending", self.id)
        if cc.op is ConfChangeType.REMOVE_VOTER and node_id == self.id:
            raise ConfChangeError("the leader cannot remove itself; transfer leadership first")
        reason = validate_conf_change(self._conf, cc)
        if reason is not None:
            raise ConfChangeError(reason)
        index = self.log.last_index() + 1
        self._append([Entry(index, self.term, EntryType.CONF_CHANGE, cc.encode())])
        self._bcast_append()
        return index

    def transfer_leadership(self, to: str) -> None:
        """Hand leadership to voter *to*: catch it up, then tell it to campaign now.

        Proposals are refused until the transfer completes or is aborted (after one
        election timeout), so the target's log cannot fall behind again.
        """
        if self.state is not LEADER:
            raise ProposalDroppedError("not the leader", self.lead)
        if to == self.id:
            return
        if to not in self._voter_set:
            raise ConfChangeError(f"cannot transfer leadership to non-voter {to!r}")
        if self._lead_transferee is not None:
            if self._lead_transferee == to:
                return
            self._abort_transfer()
        self._log(f"{self.id} starts to transfer leadership to {to}")
        self._election_elapsed = 0
        self._lead_transferee = to
        if self._prs[to].match == self.log.last_index():
            self._send_timeout_now(to)
        else:
            self._maybe_send_append(to, send_if_empty=True)

    def _abort_transfer(self) -> None:
        self._log(f"{self.id} aborted leadership transfer to {self._lead_transferee}")
        self._lead_transferee = None

    def report_snapshot(self, to: str, success: bool) -> None:
        """Transport feedback: the snapshot to *to* was delivered (or definitely lost)."""
        pr = self._prs.get(to) if self.state is LEADER else None
        if pr is None or pr.state is not ProgressState.SNAPSHOT:
            return
        if success:
            pr.become_probe()
        else:
            pr.snapshot_failed()
        pr.paused = True  # wait for a heartbeat response before probing again

    def report_unreachable(self, to: str) -> None:
        """Transport feedback: sending to *to* failed; stop pipelining to it."""
        pr = self._prs.get(to) if self.state is LEADER else None
        if pr is not None and pr.state is ProgressState.REPLICATE:
            pr.become_probe()

    def compact(self, index: int, snapshot_data: bytes) -> Snapshot:
        """Fold the log up to *index* (<= applied) into a snapshot holding *snapshot_data*.

        *snapshot_data* must be the application's state after applying exactly *index*.
        """
        if self.log.pending_snapshot is not None:
            raise RaftError("cannot compact while a received snapshot is being persisted")
        if index > self.log.applied:
            raise ValueError(f"cannot compact at {index}: applied is {self.log.applied}")
        if index < self.storage.first_index():
            raise ValueError(f"index {index} is already compacted")
        term = self.log.term_of(index)
        assert term is not None
        snap = Snapshot(index, term, self.conf_state_at(index), snapshot_data)
        self.storage.compact(snap)
        k = bisect.bisect_right(self._conf_idx, index)
        self._conf_base = snap.conf_state
        del self._conf_idx[:k]
        del self._conf_states[:k]
        return snap

    # ==================================================================================
    # Ready / advance.

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def has_ready(self) -> bool:
        log = self.log
        if self._msgs or log.has_unstable() or log.pending_snapshot is not None:
            return True
        if log.committed > log.applied:
            return True
        hs = self._prev_hs
        if hs.term != self.term or hs.vote != self.vote or hs.commit != log.committed:
            return True
        ss = self._prev_ss
        return ss.lead != self.lead or ss.state is not self.state

    def ready(self) -> Ready:
        """Collect pending work. Call :meth:`advance` with it before the next ready()."""
        if self._ready_pending:
            raise RaftError("ready() called again before advance()")
        self._ready_pending = True
        hs = self._hard_state()
        ss = SoftState(self.lead, self.state)
        msgs = tuple(self._msgs)
        self._msgs = []
        return Ready(
            hard_state=None if hs == self._prev_hs else hs,
            entries=tuple(self.log.unstable_entries()),
            snapshot=self.log.pending_snapshot,
            messages=msgs,
            committed_entries=tuple(self.log.next_committed()),
            soft_state=ss,
            soft_state_changed=ss != self._prev_ss,
        )

    def advance(self, rd: Ready) -> None:
        """The caller has persisted, sent and applied everything in *rd*."""
        if not self._ready_pending:
            raise RaftError("advance() without a pending ready()")
        self._ready_pending = False
        self._prev_ss = rd.soft_state
        if rd.hard_state is not None:
            self._prev_hs = rd.hard_state
        if rd.snapshot is not None:
            self.log.stable_snap_to(rd.snapshot.index)
            if rd.snapshot.index > self.log.applied:
                self.log.applied = rd.snapshot.index
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
        if rd.committed_entries:
            self.log.applied_to(rd.committed_entries[-1].index)

    def _quorum_active(self) -> bool:
        active = sum(1 for v in self._voters if v == self.id or self._prs[v].recent_active)
        return active >= len(self._voters) // 2 + 1

    def _log(self, text: str) -> None:
        if self._logger is not None:
            self._logger(text)


def _limit_size(ents: list[Entry], max_bytes: int) -> list[Entry]:
    """Keep a prefix of *ents* within *max_bytes* of payload (always at least one)."""
    total = 0
    for i, e in enumerate(ents):
        total += len(e.data)
        if total > max_bytes and i > 0:
            return ents[:i]
    return ents
