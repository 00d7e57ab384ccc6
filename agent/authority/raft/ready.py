"""The Ready batch: everything the core asks its caller to do, in one value.

Contract (as in etcd-io/raft): for each Ready the caller must, in order,
  1. persist `snapshot`, `entries` and `hard_state` and fsync them
     (:func:`~agent.authority.raft.storage.persist_ready`),
  2. only then send `messages` (a vote or an acknowledgement must never leave the device
     before the state it promises is durable),
  3. restore `snapshot` into the state machine (if any) and apply `committed_entries`,
  4. call ``node.advance(ready)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .messages import Entry, HardState, Message, Snapshot


class StateType(StrEnum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile, informational state: who leads and what role this node plays."""

    lead: str | None
    state: StateType


@dataclass(frozen=True, slots=True)
class Ready:
    hard_state: HardState | None
    """New hard state to persist, or None when unchanged since the last Ready."""
    entries: tuple[Entry, ...]
    """Entries to append to stable storage before sending `messages`."""
    snapshot: Snapshot | None
    """Snapshot to persist and restore into the state machine."""
    messages: tuple[Message, ...]
    """Messages to send once the above are durable."""
    committed_entries: tuple[Entry, ...]
    """Committed entries to apply to the state machine, in order."""
    soft_state: SoftState
    """Current soft state (always present; `soft_state_changed` says if it moved)."""
    soft_state_changed: bool = False

    # Names used in the design brief.
    @property
    def entries_to_persist(self) -> tuple[Entry, ...]:
        return self.entries

    @property
    def snapshot_to_persist(self) -> Snapshot | None:
        return self.snapshot

    @property
    def committed_entries_to_apply(self) -> tuple[Entry, ...]:
        return self.committed_entries
