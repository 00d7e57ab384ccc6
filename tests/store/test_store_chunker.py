"""Chunker: determinism, sizes, edit locality, bounds, empty input."""

from __future__ import annotations

import io
import statistics
from pathlib import Path

import pytest
from blake3 import blake3
from store_helpers import KIB, MIB, randbytes, write_file

from agent.store import chunk_bytes, chunk_file, chunk_stream, cut_stream, max_chunk_size
from agent.store.chunker import min_chunk_size


def ids(refs) -> list[bytes]:
    return [r.chunk_id for r in refs]


def test_deterministic_and_all_entry_points_agree(tmp_path: Path) -> None:
    data = randbytes(8 * MIB, seed=1)
    path = write_file(tmp_path / "f", data)
    a = list(chunk_bytes(data, 64 * KIB))
    assert a == list(chunk_bytes(data, 64 * KIB))
    assert a == list(chunk_file(path, 64 * KIB))
    assert a == list(chunk_stream(io.BytesIO(data), 64 * KIB))
    assert len(a) > 50


def test_chunk_ids_are_blake3_of_the_chunk_bytes() -> None:
    data = randbytes(2 * MIB, seed=2)
    refs = list(chunk_bytes(data, 16 * KIB))
    for r in refs:
        assert r.chunk_id == blake3(data[r.offset:r.offset + r.length]).digest()
    for ref, view in cut_stream(io.BytesIO(data), 16 * KIB):
        assert blake3(view).digest() == ref.chunk_id and len(view) == ref.length


@pytest.mark.parametrize("avg", [16 * KIB, 64 * KIB, 256 * KIB])
def test_mean_chunk_size_near_configured_average(avg: int) -> None:
    data = randbytes(max(32 * MIB, 256 * avg), seed=3)
    lengths = [r.length for r in chunk_bytes(data, avg)][:-1]  # last chunk is a remainder
    mean = statistics.mean(lengths)
    # pyfastcdc's raw avg_size would give ~1.2x; the chunker corrects to ~1.05-1.10x.
    assert 0.9 * avg <= mean <= 1.15 * avg, mean / avg


@pytest.mark.parametrize(
    "edit",
    [
        lambda d, at: d[:at] + b"hello" + d[at:],  # insert
        lambda d, at: d[:at] + d[at + 7:],  # delete
        lambda d, at: d[:at] + b"XXXX" + d[at + 4:],  # overwrite
    ],
    ids=["insert", "delete", "overwrite"],
)
def test_small_edit_only_changes_chunks_around_it(edit) -> None:
    data = randbytes(16 * MIB, seed=4)
    at = len(data) // 2 + 12345
    before = list(chunk_bytes(data, 64 * KIB))
    after = list(chunk_bytes(edit(data, at), 64 * KIB))
    changed_after = [r for r in after if r.chunk_id not in set(ids(before))]
    changed_before = [r for r in before if r.chunk_id not in set(ids(after))]
    assert len(before) > 150
    # Only the chunk(s) touching the edit (plus at most one resync neighbour) change.
    assert 1 <= len(changed_after) <= 3
    assert 1 <= len(changed_before) <= 3
    window = (at - 2 * max_chunk_size(64 * KIB), at + 2 * max_chunk_size(64 * KIB))
    for r in changed_before:
        assert window[0] <= r.offset <= window[1]


def test_chunk_boundaries_respect_min_and_max() -> None:
    avg = 16 * KIB
    # Random data plus a long run of zeros (no natural cut points -> forced max cuts).
    data = randbytes(4 * MIB, seed=5) + bytes(3 * MIB) + randbytes(MIB, seed=6)
    refs = list(chunk_bytes(data, avg))
    assert [r.offset for r in refs] == [0, *(r.offset + r.length for r in refs[:-1])]
    assert sum(r.length for r in refs) == len(data)
    assert all(min_chunk_size(avg) <= r.length <= max_chunk_size(avg) for r in refs[:-1])
    assert 1 <= refs[-1].length <= max_chunk_size(avg)
    assert sum(r.length == max_chunk_size(avg) for r in refs) >= 40  # the zero run


def test_input_shorter_than_min_is_one_chunk() -> None:
    refs = list(chunk_bytes(b"abc", 16 * KIB))
    assert [(r.offset, r.length) for r in refs] == [(0, 3)]


def test_empty_input_gives_no_chunks(tmp_path: Path) -> None:
    assert list(chunk_bytes(b"", 64 * KIB)) == []
    assert list(chunk_stream(io.BytesIO(b""), 64 * KIB)) == []
    assert list(chunk_file(write_file(tmp_path / "empty", b""), 64 * KIB)) == []


@pytest.mark.parametrize("bad", [16 * KIB - 1, 4 * MIB + 1, 0, -1, True, 65536.0, "64k"])
def test_average_outside_allowed_range_is_rejected(bad) -> None:
    with pytest.raises(ValueError):
        list(chunk_bytes(b"x" * 10, bad))
    with pytest.raises(ValueError):
        max_chunk_size(bad)


def test_max_chunk_size_is_four_times_average() -> None:
    assert max_chunk_size(256 * KIB) == MIB
    assert max_chunk_size(16 * KIB) == 64 * KIB
    assert max_chunk_size(4 * MIB) == 16 * MIB
