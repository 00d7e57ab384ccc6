"""MemoryStorage (crash model) and FileStorage (crash recovery on real files)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.authority.raft import (
    CompactedError,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    RaftNode,
    RaftStorageError,
    Snapshot,
    StateType,
    UnavailableError,
    persist_ready,
)
from agent.authority.raft.file_storage import HARDSTATE_NAME, WAL_NAME, FileStorage


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(i, term, EntryType.NORMAL, f"e{i}".encode()) for i in range(lo, hi)]


# --- MemoryStorage ---------------------------------------------------------------------


def test_memory_storage_ranges_and_truncation() -> None:
    s = MemoryStorage()
    s.append(ents(1, 6))
    assert (s.first_index(), s.last_index(), s.term(0), s.term(5)) == (1, 5, 0, 1)
    s.append(ents(4, 6, term=2))  # overwrite 4..5
    assert [e.term for e in s.entries(1, 6)] == [1, 1, 1, 2, 2]
    with pytest.raises(UnavailableError):
        s.term(6)
    with pytest.raises(RaftStorageError):
        s.append(ents(8, 9))  # gap
    s.sync()
    s.compact(Snapshot(3, 1, ConfState(("a",)), b"snap"))
    assert (s.first_index(), s.term(3)) == (4, 1)
    with pytest.raises(CompactedError):
        s.entries(3, 4)
    with pytest.raises(CompactedError):
        s.term(2)


def test_memory_storage_crash_loses_only_unsynced_writes() -> None:
    s = MemoryStorage()
    s.append(ents(1, 4))
    s.set_hard_state(HardState(1, "a", 2))
    s.sync()
    s.append(ents(3, 6, term=2))  # rewrites 3 and adds 4, 5
    s.set_hard_state(HardState(2, "b", 2))
    assert s.unsynced()
    s.crash()
    assert s.hard_state() == HardState(1, "a", 2)
    assert [(e.index, e.term) for e in s.entries(1, 4)] == [(1, 1), (2, 1), (3, 1)]
    assert s.last_index() == 3
    s.apply_snapshot(Snapshot(10, 3, ConfState(("a",)), b"x"))
    s.crash()
    assert s.snapshot().index == 0 and s.last_index() == 3


# --- FileStorage -----------------------------------------------------------------------


def test_file_storage_survives_restart(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as s:
        s.append(ents(1, 6))
        s.set_hard_state(HardState(3, "n2", 4))
        s.append(ents(5, 8, term=3))  # truncates 5 then appends
    with FileStorage(tmp_path) as s:
        assert s.hard_state() == HardState(3, "n2", 4)
        assert [(e.index, e.term) for e in s.entries(1, 8)] == [
            (1, 1),
            (2, 1),
            (3, 1),
            (4, 1),
            (5, 3),
            (6, 3),
            (7, 3),
        ]
        assert s.entries(7, 8)[0].data == b"e7"


def test_file_storage_cuts_a_torn_tail(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as s:
        s.append(ents(1, 11))
    wal = tmp_path / WAL_NAME
    size = wal.stat().st_size
    os.truncate(wal, size - 3)  # power cut in the middle of the last record
    with FileStorage(tmp_path) as s:
        assert s.last_index() == 9
        assert s.recovered_truncation > 0
        s.append(ents(10, 12, term=2))  # and the log is writable again
    with FileStorage(tmp_path) as s:
        assert s.last_index() == 11 and s.term(11) == 2 and s.recovered_truncation == 0


def test_file_storage_cuts_at_a_bad_crc(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as s:
        s.append(ents(1, 11))
    wal = tmp_path / WAL_NAME
    buf = bytearray(wal.read_bytes())
    buf[len(buf) // 2] ^= 0xFF  # flip a bit inside some record in the middle
    wal.write_bytes(bytes(buf))
    with FileStorage(tmp_path) as s:
        last = s.last_index()
        assert 1 <= last < 10
        assert [e.index for e in s.entries(1, last + 1)] == list(range(1, last + 1))
    with FileStorage(tmp_path) as s:
        assert s.last_index() == last  # the cut was made durable


def test_file_storage_garbage_after_valid_records(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as s:
        s.append(ents(1, 4))
    with open(tmp_path / WAL_NAME, "ab") as f:
        f.write(b"\x00\x00\x10\x00garbage")
    with FileStorage(tmp_path) as s:
        assert s.last_index() == 3


def test_file_storage_compaction_and_snapshot(tmp_path: Path) -> None:
    snap = Snapshot(5, 1, ConfState(("a", "b"), ("c",)), b"\x00state\xff")
    with FileStorage(tmp_path) as s:
        s.append(ents(1, 9))
        s.compact(snap)
        assert s.first_index() == 6 and s.last_index() == 8
    with FileStorage(tmp_path) as s:
        assert s.snapshot() == snap
        assert (s.first_index(), s.last_index(), s.term(5)) == (6, 8, 1)
        s.apply_snapshot(Snapshot(20, 4, ConfState(("a",)), b"newer"))
        assert s.last_index() == 20 and s.first_index() == 21
    with FileStorage(tmp_path) as s:
        assert s.snapshot().index == 20 and s.last_index() == 20


def test_file_storage_crash_between_snapshot_and_log_reset(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as s:
        s.append(ents(1, 9))  # term 1 everywhere
        s._write_snapshot(Snapshot(6, 5, ConfState(("a",)), b"x"))  # crash right after
    with FileStorage(tmp_path) as s:
        # Entry 6 has term 1, the snapshot says term 5: the old log diverges, drop it.
        assert s.snapshot().index == 6 and s.last_index() == 6


def test_file_storage_corrupt_hard_state_is_fatal(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as s:
        s.set_hard_state(HardState(1, None, 0))
    (tmp_path / HARDSTATE_NAME).write_bytes(b"\x00\x00\x00\x05\x00\x00\x00\x00hello")
    with pytest.raises(RaftStorageError, match="corrupt"):
        FileStorage(tmp_path)


def test_file_storage_leaves_no_temp_files(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as s:
        s.set_hard_state(HardState(2, "a", 0))
        s.append(ents(1, 3))
    assert sorted(p.name for p in tmp_path.iterdir()) == [HARDSTATE_NAME, WAL_NAME]


def test_raft_node_restarts_from_file_storage(tmp_path: Path) -> None:
    s = FileStorage(tmp_path)
    node = RaftNode("a", ["a"], s, random.Random(1))
    node.campaign()
    for data in (b"one", b"two"):
        while node.has_ready():
            rd = node.ready()
            persist_ready(s, rd)
            node.advance(rd)
        node.propose(data)
    while node.has_ready():
        rd = node.ready()
        persist_ready(s, rd)
        node.advance(rd)
    s.close()
    s2 = FileStorage(tmp_path)
    node2 = RaftNode("a", ["a"], s2, random.Random(2))
    assert node2.term == node.term and node2.commit_index == node.commit_index == 4
    rd = node2.ready()
    assert [e.data for e in rd.committed_entries][-2:] == [b"one", b"two"]
    s2.close()


# --- FileStorage behaves like MemoryStorage (model check) ------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 6), st.integers(1, 4), st.integers(1, 4)),
        st.tuples(st.just("hs"), st.integers(0, 9), st.integers(0, 9)),
        st.tuples(st.just("compact"), st.integers(0, 6)),
        st.tuples(st.just("reopen")),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_file_storage_matches_memory_model(
    tmp_path_factory: pytest.TempPathFactory, script: list
) -> None:
    d = tmp_path_factory.mktemp("fs")
    fs, mem = FileStorage(d), MemoryStorage()
    term = 1
    try:
        for op in script:
            if op[0] == "append":
                back, n, dt = op[1], op[2], op[3]
                lo = max(mem.first_index(), mem.last_index() + 1 - back)
                term += dt
                batch = ents(lo, lo + n, term)
                fs.append(batch)
                mem.append(batch)
            elif op[0] == "hs":
                hs = HardState(op[1], None, min(op[2], mem.last_index()))
                fs.set_hard_state(hs)
                mem.set_hard_state(hs)
            elif op[0] == "compact":
                at = mem.first_index() - 1 + op[1]
                if mem.first_index() <= at <= mem.last_index():
                    snap = Snapshot(at, mem.term(at), ConfState(("a",)), b"s%d" % at)
                    mem.sync()
                    fs.compact(snap)
                    mem.compact(snap)
            else:
                fs.close()
                fs = FileStorage(d)
            mem.sync()
            assert (fs.first_index(), fs.last_index()) == (mem.first_index(), mem.last_index())
            assert fs.hard_state() == mem.hard_state()
            assert fs.snapshot() == mem.snapshot()
            assert fs.entries(fs.first_index(), fs.last_index() + 1) == mem.entries(
                mem.first_index(), mem.last_index() + 1
            )
    finally:
        fs.close()


def test_single_node_state_type_is_leader_after_restart_campaign(tmp_path: Path) -> None:
    s = FileStorage(tmp_path)
    node = RaftNode("a", ["a"], s, random.Random(1))
    node.campaign()
    assert node.state is StateType.LEADER
    s.close()
