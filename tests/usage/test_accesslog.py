"""The access log: record codec, segments, bounds, crash recovery and hostile files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from agent.usage.accesslog import AccessLog
from agent.usage.record import (
    FRAME_SIZE,
    SEGMENT_MAGIC,
    AccessRecord,
    DecodeStats,
    RecordError,
    Source,
    decode_segment,
    encode_record,
    parse_source,
)


class Wall:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def rec(i: int, t: float = 1_700_000_000.0, *, hit: bool = True) -> AccessRecord:
    return AccessRecord(t + i, 7, bytes([i % 256]) * 16, (i % 256).to_bytes(16, "big"),
                        1000 + i, hit, Source.PEER if i % 2 else Source.LOCAL,
                        bytes.fromhex("0123456789abcdef") if i % 2 else bytes(8))


def make_log(path: Path, clock: Wall, **kw: int | float) -> AccessLog:
    args: dict[str, int | float] = {"max_bytes": 1 << 20, "max_age": 86400.0,
                                    "segment_bytes": 64 * 1024}
    args.update(kw)
    return AccessLog(path, clock=clock, **args)  # type: ignore[arg-type]


def test_a_record_round_trips_and_its_frame_is_fixed_size() -> None:
    r = rec(3, hit=False)
    frame = encode_record(r)
    assert len(frame) == FRAME_SIZE == 67
    assert list(decode_segment(SEGMENT_MAGIC + frame)) == [r]


def test_bad_values_are_refused_at_encoding() -> None:
    with pytest.raises(RecordError):
        encode_record(AccessRecord(float("nan"), 0, bytes(16), bytes(16), 1, True, Source.LOCAL))
    with pytest.raises(RecordError):
        encode_record(AccessRecord(1.0, 0, bytes(15), bytes(16), 1, True, Source.LOCAL))


def test_sources_parse() -> None:
    assert parse_source("local") == (Source.LOCAL, bytes(8))
    assert parse_source("mirror") == (Source.MIRROR, bytes(8))
    assert parse_source("0123456789abcdef") == (Source.PEER, bytes.fromhex("0123456789abcdef"))
    assert parse_source("mirror:0123456789abcdef")[0] is Source.MIRROR
    for bad in ("", "peer", "0123", "zz23456789abcdef", "0123456789abcdef00"):
        with pytest.raises(RecordError):
            parse_source(bad)


def test_damage_in_the_middle_is_skipped_and_the_reader_stays_aligned() -> None:
    frames = [bytearray(encode_record(rec(i))) for i in range(5)]
    frames[2][10] ^= 0xFF  # bit rot in record 2
    buf = SEGMENT_MAGIC + b"".join(frames) + encode_record(rec(5))[:30]  # torn tail
    stats = DecodeStats()
    got = list(decode_segment(buf, stats))
    assert [r.size for r in got] == [1000, 1001, 1003, 1004]
    assert (stats.records, stats.corrupt, stats.torn_bytes) == (4, 1, 30)


def test_a_file_without_the_header_yields_nothing() -> None:
    stats = DecodeStats()
    assert list(decode_segment(b"GARBAGE!" + encode_record(rec(1)), stats)) == []
    assert stats.bad_header


def test_append_buffers_and_flush_writes(tmp_path: Path) -> None:
    clock = Wall()
    log = make_log(tmp_path / "log", clock)
    for i in range(10):
        assert log.append(rec(i))
    assert log.segment_count() == 0 and log.buffered == 10  # no I/O on the hot path
    assert [r.size for r in log.records()] == [1000 + i for i in range(10)]  # buffer visible
    assert log.flush() == 10
    assert log.buffered == 0 and log.segment_count() == 1
    assert [r.size for r in log.records()] == [1000 + i for i in range(10)]
    log.close()


def test_a_full_buffer_drops_and_counts(tmp_path: Path) -> None:
    log = make_log(tmp_path / "log", Wall(), max_buffered=3)
    assert [log.append(rec(i)) for i in range(5)] == [True, True, True, False, False]
    assert log.dropped == 2
    log.close()


def test_segments_rotate_at_their_size_and_the_total_stays_bounded(tmp_path: Path) -> None:
    clock = Wall()
    seg = len(SEGMENT_MAGIC) + 10 * FRAME_SIZE
    log = make_log(tmp_path / "log", clock, segment_bytes=seg, max_bytes=3 * seg)
    for i in range(100):
        log.append(rec(i))
    log.flush()
    assert log.size_bytes() <= 3 * seg
    names = sorted(p.name for p in (tmp_path / "log").iterdir())
    assert len(names) == log.segment_count() <= 3
    assert all(os.path.getsize(tmp_path / "log" / n) <= seg for n in names)
    assert [r.size for r in log.records()][-1] == 1099  # the newest survive
    log.close()


def test_old_segments_are_pruned_by_age(tmp_path: Path) -> None:
    clock = Wall()
    seg = len(SEGMENT_MAGIC) + 5 * FRAME_SIZE
    log = make_log(tmp_path / "log", clock, segment_bytes=seg, max_age=1000.0)
    for i in range(10):
        log.append(rec(i, t=clock.t))
    log.flush()
    assert log.segment_count() == 2
    clock.t += 5000
    log.append(rec(0, t=clock.t))
    log.flush()
    assert [r.time for r in log.records()] == [clock.t]
    log.close()


def test_recovery_after_a_torn_write_keeps_everything_before_it(tmp_path: Path) -> None:
    clock = Wall()
    log = make_log(tmp_path / "log", clock)
    for i in range(6):
        log.append(rec(i))
    log.flush()
    (seg,) = list((tmp_path / "log").iterdir())
    log._close_active()  # the process dies (no close: nothing more is written)
    with open(seg, "ab") as f:
        f.write(encode_record(rec(99))[:40])  # power cut mid-append
    again = make_log(tmp_path / "log", clock)
    assert again.damage.torn_bytes == 40
    assert [r.size for r in again.records()] == [1000 + i for i in range(6)]
    again.append(rec(6))
    again.flush()  # a new run writes a new segment: the torn one is never appended to
    assert again.segment_count() == 2
    assert [r.size for r in again.records()] == [1000 + i for i in range(7)]
    again.close()


def test_hostile_files_are_skipped_and_counted_never_raised(tmp_path: Path) -> None:
    d = tmp_path / "log"
    d.mkdir()
    (d / "seg-000000000001.log").write_bytes(os.urandom(5000))  # not ours
    (d / "seg-000000000002.log").write_bytes(SEGMENT_MAGIC + os.urandom(FRAME_SIZE * 20))
    (d / "seg-000000000003.log").write_bytes(b"")
    (d / "seg-000000000004.log").mkdir()  # a directory with a segment's name
    (d / "seg-000000000005.log").write_bytes(SEGMENT_MAGIC + encode_record(rec(1)) * 3)
    (d / "notes.txt").write_text("left alone")
    big = d / "seg-000000000006.log"
    big.write_bytes(SEGMENT_MAGIC + encode_record(rec(2)) * 10_000)  # larger than a segment
    clock = Wall(time.time())
    log = make_log(d, clock, segment_bytes=4096)
    assert log.damage.bad_segments == 2  # random and empty headers
    assert log.damage.corrupt_records == 20
    sizes = [r.size for r in log.records()]
    assert sizes.count(1001) == 3 and 0 < sizes.count(1002) <= 4096 // FRAME_SIZE
    log.append(rec(3))
    log.flush()  # unknown-age segments are pruned first; the agent carries on
    assert not (d / "seg-000000000001.log").exists()
    assert (d / "notes.txt").exists()
    log.close()


def test_segment_creation_is_atomic_no_temp_file_survives(tmp_path: Path) -> None:
    d = tmp_path / "log"
    d.mkdir()
    (d / ".tmp-leftover").write_bytes(b"half a header")  # a crash during rotation
    log = make_log(d, Wall())
    assert not (d / ".tmp-leftover").exists()
    log.append(rec(1))
    log.flush()
    (seg,) = [p for p in d.iterdir()]
    assert seg.read_bytes().startswith(SEGMENT_MAGIC)
    assert seg.stat().st_mode & 0o077 == 0
    log.close()
