"""Leader-side view of one follower's replication progress (etcd's tracker.Progress).

Why three states: a follower whose log position is unknown is *probed* one append at a
time; once an append succeeds the leader *replicates* optimistically (pipelining up to
`max_inflight` appends); a follower that needs compacted entries gets a *snapshot* and
receives nothing else until it is acknowledged or times out.
"""

from __future__ import annotations

from collections import deque
from enum import StrEnum


class ProgressState(StrEnum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Progress:
    __slots__ = (
        "inflights",
        "is_learner",
        "match",
        "max_inflight",
        "next",
        "paused",
        "pending_snapshot",
        "recent_active",
        "removed_at",
        "snapshot_ticks",
        "state",
    )

    def __init__(self, next_index: int, *, max_inflight: int, is_learner: bool = False) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.paused = False  # probe: an append is outstanding
        self.pending_snapshot = 0
        self.snapshot_ticks = 0
        self.recent_active = False
        self.is_learner = is_learner
        self.removed_at = 0  # >0: removed by the conf entry at this index (lame duck)
        self.max_inflight = max_inflight
        self.inflights: deque[int] = deque()  # last index of each outstanding append

    def _reset_state(self, state: ProgressState) -> None:
        self.paused = False
        self.pending_snapshot = 0
        self.snapshot_ticks = 0
        self.state = state
        self.inflights.clear()

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def snapshot_failed(self) -> None:
        """The snapshot was lost or refused: probe again from the last known match."""
        self.pending_snapshot = 0
        self.become_probe()

    def maybe_update(self, index: int) -> bool:
        """An append up to *index* succeeded; False if the ack is stale."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.paused = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """An append at prev_index *rejected* failed; back off. False if stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.paused = False
        return True

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.paused
        if self.state is ProgressState.REPLICATE:
            return len(self.inflights) >= self.max_inflight
        return True

    def sent(self, last_index: int | None) -> None:
        """Bookkeeping after an append carrying entries up to *last_index* (None: empty)."""
        if self.state is ProgressState.REPLICATE:
            if last_index is not None:
                self.next = last_index + 1
                self.inflights.append(last_index)
        elif self.state is ProgressState.PROBE:
            self.paused = True

    def free_le(self, index: int) -> None:
        inflights = self.inflights
        while inflights and inflights[0] <= index:
            inflights.popleft()

    def __repr__(self) -> str:
        return (
            f"Progress({self.state} match={self.match} next={self.next}"
            f"{' learner' if self.is_learner else ''}"
            f"{' paused' if self.is_paused() else ''})"
        )
