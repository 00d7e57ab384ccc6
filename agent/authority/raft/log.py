"""The Raft log as the core sees it: stable storage plus a not-yet-persisted tail.

Why two parts: the core may append (as leader) or accept (as follower) entries long before
the caller has fsynced them. Those live in the *unstable* tail until the caller reports
them persisted via ``stable_to``; a snapshot received from the leader is likewise pending
until persisted. Reads transparently combine both, with the unstable tail winning where
it overwrites stored entries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .messages import Entry, Snapshot
from .storage import CompactedError, RaftStorage, UnavailableError


class RaftInvariantError(RuntimeError):
    """The core was asked to do something that would break a Raft safety property."""


class RaftLog:
    def __init__(self, storage: RaftStorage, on_append: Callable[[Sequence[Entry]], None]) -> None:
        self.storage = storage
        self._on_append = on_append
        self._unstable: list[Entry] = []
        self._offset = storage.last_index() + 1  # index of _unstable[0]
        self.pending_snapshot: Snapshot | None = None
        self.committed = storage.first_index() - 1
        self.applied = storage.first_index() - 1

    # --- bounds ------------------------------------------------------------------------
    def first_index(self) -> int:
        if self.pending_snapshot is not None:
            return self.pending_snapshot.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self._unstable:
            return self._offset + len(self._unstable) - 1
        if self.pending_snapshot is not None:
            return self.pending_snapshot.index
        return self.storage.last_index()

    def term_of(self, index: int) -> int | None:
        """Term of *index*, or None if it is compacted away or beyond the last entry."""
        if index >= self._offset:
            k = index - self._offset
            return self._unstable[k].term if k < len(self._unstable) else None
        snap = self.pending_snapshot
        if snap is not None:
            return snap.term if index == snap.index else None
        if index < self.storage.first_index() - 1:
            return None
        return self.storage.term(index)

    def last_term(self) -> int:
        t = self.term_of(self.last_index())
        assert t is not None
        return t

    def match_term(self, index: int, term: int) -> bool:
        return self.term_of(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: is a candidate's log at least as up-to-date as ours?"""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    # --- reads -------------------------------------------------------------------------
    def entries(self, lo: int, hi: int, max_entries: int | None = None) -> list[Entry]:
        """Entries in [lo, hi) (hi clipped to last+1, count clipped to max_entries)."""
        if lo < self.first_index():
            raise CompactedError(f"index {lo} compacted (first {self.first_index()})")
        hi = min(hi, self.last_index() + 1)
        if max_entries is not None:
            hi = min(hi, lo + max_entries)
        if lo >= hi:
            return []
        out: list[Entry] = []
        if lo < self._offset:
            out = self.storage.entries(lo, min(hi, self._offset))
        if hi > self._offset:
            start = max(lo, self._offset) - self._offset
            out = out + self._unstable[start : hi - self._offset]
        return out

    def snapshot(self) -> Snapshot:
        return (
            self.pending_snapshot
            if self.pending_snapshot is not None
            else (self.storage.snapshot())
        )

    def has_unstable(self) -> bool:
        return bool(self._unstable)

    def unstable_entries(self) -> list[Entry]:
        return list(self._unstable)

    def has_next_committed(self) -> bool:
        return self.pending_snapshot is None and self.committed > self.applied

    def next_committed(self) -> list[Entry]:
        if not self.has_next_committed():
            return []
        return self.entries(self.applied + 1, self.committed + 1)

    # --- conflict search (fast backoff) ------------------------------------------------
    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest index <= *index* whose term is <= *term*, with that term.

        Used on both sides of a rejected append so the leader can skip a whole run of
        entries from a conflicting term in one round trip. An unknown term (compacted)
        is reported as 0, meaning "maybe a match".
        """
        while index > 0:
            t = self.term_of(index)
            if t is None:
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    # --- writes ------------------------------------------------------------------------
    def append(self, entries: Sequence[Entry]) -> int:
        """Leader append (no conflict check); returns the new last index."""
        if entries:
            if entries[0].index <= self.committed:
                raise RaftInvariantError(
                    f"append at {entries[0].index} would overwrite committed {self.committed}"
                )
            self._truncate_and_append(entries)
        return self.last_index()

    def maybe_append(
        self, prev_index: int, prev_term: int, committed: int, entries: Sequence[Entry]
    ) -> int | None:
        """Follower append; None if (prev_index, prev_term) does not match our log."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        for e in entries:
            if not self.match_term(e.index, e.term):
                if e.index <= self.committed:
                    raise RaftInvariantError(
                        f"entry {e.index} conflicts with committed log (commit {self.committed})"
                    )
                self._truncate_and_append(entries[e.index - prev_index - 1 :])
                break
        self.commit_to(min(committed, last_new))
        return last_new

    def _truncate_and_append(self, entries: Sequence[Entry]) -> None:
        after = entries[0].index
        end = self._offset + len(self._unstable)
        if after == end:
            self._unstable.extend(entries)
        elif after <= self._offset:
            self._offset = after
            self._unstable = list(entries)
        else:
            del self._unstable[after - self._offset :]
            self._unstable.extend(entries)
        self._on_append(entries)

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise RaftInvariantError(
                    f"commit {index} beyond last index {self.last_index()}: log lost or corrupted"
                )
            self.committed = index

    def applied_to(self, index: int) -> None:
        if index < self.applied or index > self.committed:
            raise RaftInvariantError(f"applied {index} outside [{self.applied}, {self.committed}]")
        self.applied = index

    def stable_to(self, index: int, term: int) -> None:
        """The caller persisted entries up to (index, term): drop them from the tail."""
        if index < self._offset:
            return
        k = index - self._offset
        if k < len(self._unstable) and self._unstable[k].term == term:
            del self._unstable[: k + 1]
            self._offset = index + 1

    def stable_snap_to(self, index: int) -> None:
        if self.pending_snapshot is not None and self.pending_snapshot.index == index:
            self.pending_snapshot = None

    def restore(self, snap: Snapshot) -> None:
        """Replace the log with a snapshot from the leader (pending until persisted)."""
        self.committed = snap.index
        self._unstable = []
        self._offset = snap.index + 1
        self.pending_snapshot = snap


__all__ = ["CompactedError", "RaftInvariantError", "RaftLog", "UnavailableError"]
