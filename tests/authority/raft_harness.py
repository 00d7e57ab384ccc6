"""In-memory cluster driver shared by the Raft unit tests and the interaction scripts.

Messages are queued, not delivered, until the test says so; isolation drops them at
delivery. Every Ready is handled per the contract: persist + sync, then queue messages,
then apply, then advance.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from agent.authority.authority_map import AuthorityMap
from agent.authority.raft import (
    MemoryStorage,
    Message,
    RaftNode,
    Ready,
    StateType,
    describe_entry,
    describe_message,
    persist_ready,
)
from agent.authority.raft.messages import describe_snapshot

Printer = Callable[[str], None]


class Cluster:
    def __init__(
        self,
        n: int = 0,
        *,
        voters: Iterable[str] | None = None,
        learners: Iterable[str] = (),
        seed: int = 0,
        out: Printer | None = None,
        **raft_kwargs: object,
    ) -> None:
        self.nodes: dict[str, RaftNode] = {}
        self.storages: dict[str, MemoryStorage] = {}
        self.apps: dict[str, AuthorityMap] = {}
        self.applied: dict[str, list[tuple[int, int, bytes]]] = {}
        self.pending: list[Message] = []
        self.isolated: set[str] = set()
        self.cuts: set[frozenset[str]] = set()
        self.drop_filters: list[Callable[[Message], bool]] = []
        self.delivered: list[Message] = []
        self.seed = seed
        self.out = out
        self.raft_kwargs = raft_kwargs
        if n:
            ids = [str(i) for i in range(1, n + 1)]
            self.add_nodes(ids, voters=voters if voters is not None else ids, learners=learners)

    # --- membership of the test cluster ----------------------------------------------
    def _print(self, text: str) -> None:
        if self.out is not None:
            self.out(text)

    def _make(self, nid: str, voters: Iterable[str], learners: Iterable[str]) -> RaftNode:
        rng = random.Random(f"{self.seed}/{nid}/{len(self.applied.get(nid, []))}")
        return RaftNode(
            nid,
            voters,
            self.storages[nid],
            rng,
            learners=learners,
            logger=(lambda s: self._print(f"INFO {s}")) if self.out is not None else None,
            **self.raft_kwargs,  # type: ignore[arg-type]
        )

    def add_nodes(
        self, ids: Iterable[str], *, voters: Iterable[str] = (), learners: Iterable[str] = ()
    ) -> None:
        voters, learners = list(voters), list(learners)
        for nid in ids:
            self.storages[nid] = MemoryStorage()
            self.apps[nid] = AuthorityMap()
            self.applied[nid] = []
            self.nodes[nid] = self._make(nid, voters, learners)

    def restart(self, nid: str, *, lose_unsynced: bool = True) -> RaftNode:
        """Crash and restart *nid* from its storage (state machine rebuilt from scratch)."""
        if lose_unsynced:
            self.storages[nid].crash()
        snap = self.storages[nid].snapshot()
        self.apps[nid] = AuthorityMap.restore(snap.data)
        self.pending = [m for m in self.pending if m.dst != nid]
        self.nodes[nid] = self._make(nid, (), ())
        return self.nodes[nid]

    # --- driving -----------------------------------------------------------------------
    def __getitem__(self, nid: str) -> RaftNode:
        return self.nodes[nid]

    def process_ready(self, nid: str) -> Ready | None:
        node = self.nodes[nid]
        if not node.has_ready():
            return None
        rd = node.ready()
        self._print(f"> {nid} handling Ready")
        self._print_ready(rd)
        persist_ready(self.storages[nid], rd)
        self.pending.extend(rd.messages)
        if rd.snapshot is not None:
            self.apps[nid] = AuthorityMap.restore(rd.snapshot.data)
        for e in rd.committed_entries:
            self.apps[nid].apply(e)
            self.applied[nid].append((e.index, e.term, e.data))
        node.advance(rd)
        return rd

    def _print_ready(self, rd: Ready) -> None:
        if self.out is None:
            return
        lines = ["Ready:"]
        if rd.soft_state_changed:
            lead = rd.soft_state.lead or "0"
            lines.append(f"State:{_state_name(rd.soft_state.state)} Lead:{lead}")
        if rd.hard_state is not None:
            hs = rd.hard_state
            lines.append(f"HardState Term:{hs.term} Vote:{hs.vote or '0'} Commit:{hs.commit}")
        if rd.entries:
            lines.append("Entries:")
            lines.extend(describe_entry(e) for e in rd.entries)
        if rd.snapshot is not None:
            lines.append("Snapshot " + describe_snapshot(rd.snapshot))
        if rd.committed_entries:
            lines.append("CommittedEntries:")
            lines.extend(describe_entry(e) for e in rd.committed_entries)
        if rd.messages:
            lines.append("Messages:")
            lines.extend(describe_message(m) for m in rd.messages)
        for line in lines:
            self._print("  " + line)

    def _blocked(self, m: Message) -> bool:
        return (
            m.src in self.isolated
            or m.dst in self.isolated
            or frozenset((m.src, m.dst)) in self.cuts
            or any(f(m) for f in self.drop_filters)
        )

    def deliver(self, ids: Iterable[str] | None = None) -> int:
        """Deliver queued messages addressed to *ids* (all nodes if None)."""
        targets = sorted(self.nodes) if ids is None else list(ids)
        delivered = 0
        for nid in targets:
            mine = [m for m in self.pending if m.dst == nid]
            if not mine:
                continue
            self.pending = [m for m in self.pending if m.dst != nid]
            self._print(f"> {nid} receiving messages")
            for m in mine:
                if self._blocked(m):
                    self._print(f"  {describe_message(m)} DROPPED")
                    continue
                self._print(f"  {describe_message(m)}")
                self.delivered.append(m)
                self.nodes[nid].step(m)
                delivered += 1
        return delivered

    def stabilize(self, ids: Iterable[str] | None = None, max_rounds: int = 1000) -> None:
        """Process Readies and deliver messages until nothing moves."""
        targets = sorted(self.nodes) if ids is None else list(ids)
        for _ in range(max_rounds):
            moved = False
            for nid in targets:
                if self.process_ready(nid) is not None:
                    moved = True
            before = len(self.pending)
            if self.deliver(targets) or len(self.pending) != before:
                moved = True
            if not moved:
                return
        raise AssertionError("cluster did not stabilize")

    def tick(self, nid: str, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[nid].tick()

    def tick_election(self, nid: str) -> None:
        """Tick *nid* exactly until its election (or check-quorum) timer fires."""
        node = self.nodes[nid]
        if node.state is StateType.LEADER:
            self.tick(nid, node.election_tick - node.election_elapsed)
        else:
            self.tick(nid, node.randomized_election_timeout - node.election_elapsed)

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for nid in sorted(self.nodes):
                self.nodes[nid].tick()

    def elect(self, nid: str) -> None:
        self.nodes[nid].campaign()
        self.stabilize()
        assert self.nodes[nid].state is StateType.LEADER, self.nodes[nid].status()

    def isolate(self, nid: str) -> None:
        self.isolated.add(nid)

    def cut(self, a: str, b: str) -> None:
        self.cuts.add(frozenset((a, b)))

    def heal(self) -> None:
        self.isolated.clear()
        self.cuts.clear()

    def drop_pending(self) -> None:
        self.pending = []

    def leaders(self) -> list[str]:
        return [nid for nid, n in sorted(self.nodes.items()) if n.state is StateType.LEADER]

    def log_of(self, nid: str) -> list[tuple[int, int]]:
        node = self.nodes[nid]
        ents = node.log.entries(node.log.first_index(), node.last_index + 1)
        return [(e.index, e.term) for e in ents]


def _state_name(state: StateType) -> str:
    return {
        StateType.FOLLOWER: "StateFollower",
        StateType.PRE_CANDIDATE: "StatePreCandidate",
        StateType.CANDIDATE: "StateCandidate",
        StateType.LEADER: "StateLeader",
    }[state]


state_name = _state_name
