"""Durable Raft state: the storage interface and an in-memory implementation.

Why an interface: the core never touches disks. The caller persists what a Ready hands
it (see :func:`persist_ready`) and the core reads its stable log back through this
interface. :class:`MemoryStorage` additionally remembers what was *synced*, so the
simulator can model a power cut that loses everything written since the last fsync.

Log layout (as in etcd): the snapshot stands in for every entry up to and including
``snapshot.index``; ``term(snapshot.index)`` is still answerable, so ``first_index`` is
``snapshot.index + 1``.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .messages import Entry, HardState, Snapshot

if TYPE_CHECKING:
    from .ready import Ready


class RaftStorageError(Exception):
    """Storage cannot serve a request, or its on-disk state is inconsistent."""


class CompactedError(RaftStorageError):
    """The requested index was folded into the snapshot."""


class UnavailableError(RaftStorageError):
    """The requested index is beyond the last stored entry."""


class RaftStorage(ABC):
    """What the Raft core needs from durable state. All indexes are absolute log indexes."""

    @abstractmethod
    def hard_state(self) -> HardState: ...

    @abstractmethod
    def set_hard_state(self, hs: HardState) -> None: ...

    @abstractmethod
    def snapshot(self) -> Snapshot: ...

    @abstractmethod
    def first_index(self) -> int:
        """Index of the first entry still stored (snapshot.index + 1)."""

    @abstractmethod
    def last_index(self) -> int:
        """Index of the last stored entry (snapshot.index if there are none)."""

    @abstractmethod
    def term(self, index: int) -> int:
        """Term of entry *index*; valid for first_index()-1 <= index <= last_index()."""

    @abstractmethod
    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries in [lo, hi); requires first_index() <= lo <= hi <= last_index()+1."""

    @abstractmethod
    def append(self, entries: Sequence[Entry]) -> None:
        """Store *entries*, first truncating any stored suffix they overwrite."""

    @abstractmethod
    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log with *snap* (a follower catching up from the leader)."""

    @abstractmethod
    def compact(self, snap: Snapshot) -> None:
        """Record *snap* and drop entries up to snap.index (durable when it returns)."""

    @abstractmethod
    def sync(self) -> None:
        """Make everything written so far durable (fsync)."""


def persist_ready(storage: RaftStorage, rd: Ready) -> None:
    """Persist one Ready in the only safe order, then sync.

    Snapshot first (it replaces the log), then entries, then hard state: the commit index in
    the hard state must never point past entries that did not reach the disk.
    """
    if rd.snapshot is not None:
        storage.apply_snapshot(rd.snapshot)
    if rd.entries:
        storage.append(rd.entries)
    if rd.hard_state is not None:
        storage.set_hard_state(rd.hard_state)
    storage.sync()


def check_append(first: int, last: int, entries: Sequence[Entry]) -> None:
    """Validate that *entries* are contiguous and attach to a log spanning [first, last]."""
    lo = entries[0].index
    if lo > last + 1:
        raise RaftStorageError(f"append at {lo} leaves a gap after last index {last}")
    if lo < first:
        raise CompactedError(f"append at {lo} overwrites compacted index (first {first})")
    for prev, cur in itertools.pairwise(entries):
        if cur.index != prev.index + 1:
            raise RaftStorageError("appended entries are not contiguous")


class MemoryStorage(RaftStorage):
    """In-memory storage that tracks what was synced, to simulate crashes faithfully.

    Writes go to a volatile view; :meth:`sync` makes the durable view equal to it, and
    :meth:`crash` throws the volatile view away. Bookkeeping is incremental (only entries
    from the lowest index touched since the last sync are copied), so syncing every Ready
    stays cheap in the simulator.
    """

    def __init__(self) -> None:
        self._hs = HardState()
        self._snap = Snapshot()
        self._ents: list[Entry] = []  # entries after the snapshot
        self._d_hs = self._hs
        self._d_snap = self._snap
        self._d_ents: list[Entry] = []
        self._dirty_from: int | None = None  # lowest index written since the last sync
        self._snap_dirty = False

    # --- reads -------------------------------------------------------------------------
    def hard_state(self) -> HardState:
        return self._hs

    def snapshot(self) -> Snapshot:
        return self._snap

    def first_index(self) -> int:
        return self._snap.index + 1

    def last_index(self) -> int:
        return self._snap.index + len(self._ents)

    def term(self, index: int) -> int:
        off = self._snap.index
        if index < off:
            raise CompactedError(f"index {index} compacted (snapshot {off})")
        if index == off:
            return self._snap.term
        if index > off + len(self._ents):
            raise UnavailableError(f"index {index} beyond last {self.last_index()}")
        return self._ents[index - off - 1].term

    def entries(self, lo: int, hi: int) -> list[Entry]:
        off = self._snap.index
        if lo <= off:
            raise CompactedError(f"index {lo} compacted (snapshot {off})")
        if hi > off + len(self._ents) + 1 or lo > hi:
            raise UnavailableError(f"entries [{lo}, {hi}) beyond last {self.last_index()}")
        return self._ents[lo - off - 1 : hi - off - 1]

    # --- writes (volatile until sync) --------------------------------------------------
    def set_hard_state(self, hs: HardState) -> None:
        self._hs = hs

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        check_append(self.first_index(), self.last_index(), entries)
        lo = entries[0].index
        del self._ents[lo - self._snap.index - 1 :]
        self._ents.extend(entries)
        if self._dirty_from is None or lo < self._dirty_from:
            self._dirty_from = lo

    def apply_snapshot(self, snap: Snapshot) -> None:
        if snap.index < self._snap.index:
            raise RaftStorageError(f"snapshot {snap.index} older than {self._snap.index}")
        self._snap = snap
        self._ents = []
        self._snap_dirty = True

    def compact(self, snap: Snapshot) -> None:
        """Compaction is a synchronous, durable operation (like FileStorage's)."""
        if snap.index <= self._snap.index:
            return
        if snap.index > self._d_snap.index + len(self._d_ents):
            raise UnavailableError(f"compact at {snap.index} beyond durable last index")
        if self._dirty_from is not None and self._dirty_from <= snap.index:
            raise RaftStorageError(f"compact at {snap.index} covers unsynced entries")
        if self.term(snap.index) != snap.term:
            raise RaftStorageError(f"compact at {snap.index}: term mismatch")
        self._ents = self._ents[snap.index - self._snap.index :]
        self._snap = snap
        if not self._snap_dirty:
            self._d_ents = self._d_ents[snap.index - self._d_snap.index :]
            self._d_snap = snap

    # --- durability --------------------------------------------------------------------
    def sync(self) -> None:
        self._d_hs = self._hs
        if self._snap_dirty:
            self._d_snap = self._snap
            self._d_ents = list(self._ents)
        elif self._dirty_from is not None:
            off = self._snap.index
            del self._d_ents[self._dirty_from - off - 1 :]
            self._d_ents.extend(self._ents[self._dirty_from - off - 1 :])
        self._dirty_from = None
        self._snap_dirty = False

    def crash(self) -> MemoryStorage:
        """Simulate power loss: forget everything written since the last sync."""
        self._hs = self._d_hs
        self._snap = self._d_snap
        self._ents = list(self._d_ents)
        self._dirty_from = None
        self._snap_dirty = False
        return self

    def unsynced(self) -> bool:
        return self._dirty_from is not None or self._snap_dirty or self._hs != self._d_hs
