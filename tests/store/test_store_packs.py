"""Pack-file chunk backend: rotation, torn tails, tombstones, sidecars, compaction (incl.
SIGKILL during it), migration from the file-per-chunk layout, concurrency, startup."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from blake3 import blake3
from store_helpers import (
    CHUNK,
    KIB,
    MIB,
    OTHER_PUBLISHER,
    OTHER_SIGNER,
    SIGNER,
    TEST_AVG,
    TOMBSTONE,
    chunk_payload,
    flip_chunk_byte,
    live_bytes,
    live_chunks,
    pack_files,
    pack_records,
    randbytes,
    temp_leftovers,
    write_file,
)

from agent.store import (
    ChunkEntry,
    ContentStore,
    CorruptChunk,
    Manifest,
    NotFound,
    StoreError,
    chunk_bytes,
)
from agent.store import packs as packs_mod
from agent.store import store as store_mod

REPO = Path(__file__).resolve().parents[2]
SMALL_PACK = 64 * KIB
HDR = packs_mod.HEADER_SIZE


def put(st: ContentStore, data: bytes) -> bytes:
    cid = blake3(data).digest()
    st.put_chunk(cid, data)
    return cid


def blobs(n: int, size: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(size + rng.randrange(size // 4 + 1)) for _ in range(n)]


def idx_files(root: Path) -> list[Path]:
    return sorted((root / "chunks").glob("pack-*.idx"))


def open_store(root: Path, **kw: object) -> ContentStore:
    return ContentStore(root, avg_chunk_size=TEST_AVG, **kw)  # type: ignore[arg-type]


def committed(st: ContentStore, chunks: list[bytes], name: str = "kept") -> Manifest:
    """Commit chunks already in the store as a peer's resource (so gc keeps them)."""
    entries = tuple(ChunkEntry(blake3(c).digest(), len(c)) for c in chunks)
    m = Manifest(blake3(name.encode()).hexdigest()[:32], name, 1, sum(len(c) for c in chunks),
                 TEST_AVG, entries, 1_700_000_000.0, OTHER_PUBLISHER, True,
                 None).signed_by(OTHER_SIGNER)
    st.commit_resource(m)
    return m


# -- rotation ---------------------------------------------------------------------------------

def test_packs_rotate_at_pack_size_and_seal_with_sidecars(tmp_path: Path) -> None:
    root = tmp_path / "s"
    data = blobs(40, 10 * KIB, seed=1)
    with open_store(root, pack_size=SMALL_PACK) as st:
        ids = [put(st, d) for d in data]
        big = randbytes(3 * SMALL_PACK, seed=2)  # larger than a pack: gets one of its own
        ids.append(put(st, big))
        data.append(big)
        tail = put(st, b"after the big one")
    packs = pack_files(root)
    assert len(packs) >= 8
    sizes = [p.stat().st_size for p in packs]
    assert all(s <= SMALL_PACK for s in sizes if s != HDR + len(big))
    assert HDR + len(big) in sizes  # alone in its pack
    # every pack but the active (last) one is sealed with a sidecar
    assert [p.with_suffix(".idx") for p in packs[:-1]] == idx_files(root)
    assert live_chunks(root)[tail][0] == packs[-1]
    with open_store(root, pack_size=SMALL_PACK) as st:
        for cid, d in zip(ids, data, strict=True):
            assert st.get_chunk(cid) == d
        assert st.usage()[0] == sum(map(len, data)) + len(b"after the big one")
        put(st, b"appended to the active pack after reopen")
    assert len(pack_files(root)) == len(packs)


def test_pack_size_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pack_size"):
        ContentStore(tmp_path / "s", pack_size=100)


# -- torn tails ---------------------------------------------------------------------------------

def test_torn_tail_is_truncated_at_every_cut_point(tmp_path: Path) -> None:
    root = tmp_path / "s"
    first, second, last = b"first" * 300, b"second" * 200, randbytes(300, seed=3)
    with open_store(root) as st:
        a, b = put(st, first), put(st, second)
        c = put(st, last)
    (pack,) = pack_files(root)
    whole = pack.read_bytes()
    start = len(whole) - HDR - len(last)
    for cut in range(start, len(whole)):
        pack.write_bytes(whole[:cut])
        with open_store(root) as st:
            assert st.get_chunk(a) == first and st.get_chunk(b) == second
            assert not st.has_chunk(c)
            assert st.usage()[0] == len(first) + len(second)
        assert pack.stat().st_size == start, cut
    with open_store(root) as st:  # appending after a repaired tail works
        assert put(st, last) == c
    with open_store(root) as st:
        assert st.get_chunk(c) == last
    again = pack.read_bytes()  # same bytes but the record header's write time
    assert len(again) == len(whole) and again[:start] == whole[:start]
    assert again[start + HDR:] == whole[start + HDR:]


@pytest.mark.parametrize("junk", [b"\0" * 5000, b"SHPK" + bytes(range(200)) * 10],
                         ids=["zeros", "garbage"])
def test_junk_after_last_record_is_truncated(tmp_path: Path, junk: bytes) -> None:
    root = tmp_path / "s"
    with open_store(root) as st:
        a = put(st, b"a" * 1000)
    (pack,) = pack_files(root)
    size = pack.stat().st_size
    with open(pack, "ab") as f:  # e.g. a file extended by a power cut without its data
        f.write(junk)
    with open_store(root) as st:
        assert st.get_chunk(a) == b"a" * 1000
    assert pack.stat().st_size == size


def test_damaged_header_mid_pack_keeps_the_records_after_it(tmp_path: Path) -> None:
    root = tmp_path / "s"
    data = blobs(5, 2000, seed=4)
    with open_store(root) as st:
        ids = [put(st, d) for d in data]
    (pack,) = pack_files(root)
    _, off, _ = live_chunks(root)[ids[2]]
    raw = bytearray(pack.read_bytes())
    raw[off - HDR + 10] ^= 0xFF  # bit rot in the third record's header
    pack.write_bytes(raw)
    with open_store(root) as st:
        assert not st.has_chunk(ids[2])  # its length is unknown: lost (peers can resupply)
        for i in (0, 1, 3, 4):
            assert st.get_chunk(ids[i]) == data[i]
        assert st.put_chunk(ids[2], data[2])
    with open_store(root) as st:
        assert all(st.get_chunk(c) == d for c, d in zip(ids, data, strict=True))


# -- tombstones -------------------------------------------------------------------------------

def test_tombstones_survive_restart(tmp_path: Path) -> None:
    root = tmp_path / "s"
    data = blobs(30, 8 * KIB, seed=5)
    with open_store(root, pack_size=SMALL_PACK) as st:
        ids = [put(st, d) for d in data]
        committed(st, data[10:])
        assert st.gc(grace_seconds=0).chunks_removed == 10  # removed from sealed packs
        victim = ids[20]
        flip_chunk_byte(root, victim, 7)
        with pytest.raises(CorruptChunk):
            st.get_chunk(victim)  # quarantined: tombstone as well
        assert st.put_chunk(ids[25], data[25]) is False
    kinds = [k for p in pack_files(root) for k, *_ in pack_records(p)]
    assert kinds.count(TOMBSTONE) >= 11
    with open_store(root, pack_size=SMALL_PACK) as st:
        assert not any(st.has_chunk(c) for c in ids[:10]) and not st.has_chunk(victim)
        assert st.usage()[0] == sum(map(len, data[10:])) - len(data[20]) == live_bytes(root)
        assert st.put_chunk(victim, data[20])  # a re-put after a tombstone is live again
        assert st.put_chunk(ids[0], data[0])
    with open_store(root, pack_size=SMALL_PACK) as st:
        assert st.get_chunk(victim) == data[20] and st.get_chunk(ids[0]) == data[0]
        assert not st.has_chunk(ids[1])


def test_rollback_of_failed_publish_truncates_instead_of_tombstoning(
        store: ContentStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put_chunk(blake3(b"before").digest(), b"before")
    (pack,) = pack_files(store.root)
    size = pack.stat().st_size

    def boom(*_a: object, **_k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "_commit_publish", boom)
    with pytest.raises(OSError):
        store.publish_file(write_file(tmp_path / "f", randbytes(MIB, seed=6)),
                           signer=SIGNER)
    assert pack.stat().st_size == size


# -- sidecars -----------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "stale", "orphan"])
def test_bad_sidecar_is_rebuilt_by_rescanning(tmp_path: Path, damage: str) -> None:
    root = tmp_path / "s"
    data = blobs(30, 8 * KIB, seed=7)
    with open_store(root, pack_size=SMALL_PACK) as st:
        ids = [put(st, d) for d in data]
        st.gc(grace_seconds=0)  # nothing committed: tombstones everywhere, packs compacted
        ids = [put(st, d) for d in data]
    idx = idx_files(root)[0]
    good = idx.read_bytes()
    if damage == "flip":
        idx.write_bytes(good[:40] + bytes([good[40] ^ 1]) + good[41:])
    elif damage == "truncate":
        idx.write_bytes(good[:-7])
    elif damage == "delete":
        idx.unlink()
    elif damage == "stale":  # pack grew behind the sidecar (junk): rescan + truncate
        with open(idx.with_suffix(".shp"), "ab") as f:
            f.write(b"\0" * 100)
    else:  # a sidecar whose pack is gone (compaction interrupted between the unlinks)
        (root / "chunks" / "pack-999998.idx").write_bytes(good)
    with open_store(root, pack_size=SMALL_PACK) as st:
        assert all(st.get_chunk(c) == d for c, d in zip(ids, data, strict=True))
    assert idx.read_bytes() == good  # rewritten identically
    assert not (root / "chunks" / "pack-999998.idx").exists()
    with open_store(root, pack_size=SMALL_PACK) as st:
        assert st.usage()[0] == sum(map(len, data)) == live_bytes(root)


def test_open_reads_sidecars_not_packs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "s"
    n = 20_000
    with open_store(root, pack_size=SMALL_PACK) as st:
        for i in range(n):
            put(st, i.to_bytes(4, "little") * 16)
    npacks = len(pack_files(root))
    assert npacks > 30
    scans = []
    real = packs_mod._scan
    monkeypatch.setattr(packs_mod, "_scan", lambda *a: scans.append(a) or real(*a))
    with open_store(root, pack_size=SMALL_PACK) as st:
        assert len(st._packs) == n
    assert len(scans) == 1  # only the active pack is scanned: opening is O(sidecars), not O(data)


# -- compaction ---------------------------------------------------------------------------------

def _interleaved(st: ContentStore, n: int, seed: int) -> tuple[list[bytes], list[bytes]]:
    """Put kept/doomed chunks alternately (doomed twice as big): every pack ~1/3 live."""
    rng = random.Random(seed)
    kept, doomed = [], []
    for _ in range(n):
        k = rng.randbytes(4 * KIB + rng.randrange(KIB))
        d = rng.randbytes(8 * KIB + rng.randrange(KIB))
        put(st, k)
        put(st, d)
        kept.append(k)
        doomed.append(d)
    return kept, doomed


def test_compaction_moves_live_chunks_and_deletes_packs(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with open_store(root, pack_size=SMALL_PACK) as st:
        kept, doomed = _interleaved(st, 40, seed=8)
        m = committed(st, kept)
        before = {p.name for p in pack_files(root)}
        disk_before = sum(p.stat().st_size for p in pack_files(root))
        report = st.gc(grace_seconds=0)
        assert report.chunks_removed == len(doomed)
        assert report.packs_compacted == len(before)  # the active one was mostly dead too
        assert not before & {p.name for p in pack_files(root)}
        assert sum(p.stat().st_size for p in pack_files(root)) < disk_before / 2
        assert st.usage()[0] == sum(map(len, kept)) == live_bytes(root)
        st.export(m, tmp_path / "out")
        assert st.verify().ok
        assert st.gc(grace_seconds=0).packs_compacted == 0  # nothing left to do
    assert (tmp_path / "out").read_bytes() == b"".join(kept)
    with open_store(root, pack_size=SMALL_PACK) as st:
        assert st.usage()[0] == sum(map(len, kept)) and st.verify().ok
        assert all(st.get_chunk(blake3(k).digest()) == k for k in kept)


def test_compaction_keeps_tombstones_only_while_they_hide_something(tmp_path: Path) -> None:
    root = tmp_path / "s"

    def tombstones_of(cid: bytes) -> list[str]:
        return [p.name for p in pack_files(root) for k, c, *_ in pack_records(p)
                if k == TOMBSTONE and c == cid]

    with open_store(root, pack_size=SMALL_PACK) as st:
        keep = blobs(5, 10 * KIB, seed=9)
        for k in keep:
            put(st, k)
        x = randbytes(2 * KIB, seed=10)
        cx = put(st, x)  # pack 1: keepers + x; stays more than half live without x
        committed(st, keep)
        filler = blobs(12, 10 * KIB, seed=11)
        for f in filler:
            put(st, f)
        st.gc(grace_seconds=0)  # x and filler die; tombstones go to the active pack
        first_tomb_pack = tombstones_of(cx)
        assert 1 in st._packs.pack_stats() and first_tomb_pack
        for round_ in range(3):  # roll the tombstone pack over and let it be compacted
            for f in blobs(8, 10 * KIB, seed=12 + round_):
                put(st, f)
            st.gc(grace_seconds=0)
        assert tombstones_of(cx) and tombstones_of(cx) != first_tomb_pack  # carried
        for f in filler:  # ...while the filler's tombstones hid nothing any more
            assert tombstones_of(blake3(f).digest()) == []
    with open_store(root, pack_size=SMALL_PACK) as st:
        assert not st.has_chunk(cx)  # x is still dead in pack 1, hidden by the tombstone
        assert all(st.get_chunk(blake3(k).digest()) == k for k in keep)
        st.remove_resource(st.find("kept").resource_id)
        for round_ in range(3):  # pack 1 goes; then x's tombstone is no longer carried
            st.gc(grace_seconds=0)
            for f in blobs(8, 10 * KIB, seed=20 + round_):
                put(st, f)
        st.gc(grace_seconds=0)
        assert 1 not in st._packs.pack_stats() and st.usage()[0] == 0
    records = [(k, c) for p in pack_files(root) for k, c, *_ in pack_records(p)]
    assert (TOMBSTONE, cx) not in records and (CHUNK, cx) not in records
    assert len(records) < 40  # tombstones do not pile up


COMPACT_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from agent.store import ContentStore
    from agent.store import packs as packs_mod

    root, kill_at, torn = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    st = ContentStore(root, avg_chunk_size=65536, pack_size=65536)
    events = 0

    def step(kind):
        global events
        events += 1
        return events == kill_at

    real_write = packs_mod._pwrite_all
    def pwrite_all(fd, header, payload, off):
        if step("write"):
            if torn:  # half of the record reaches the file
                rec = header + bytes(payload)
                os.pwrite(fd, rec[: len(rec) // 2], off)
            os.kill(os.getpid(), signal.SIGKILL)
        real_write(fd, header, payload, off)
    packs_mod._pwrite_all = pwrite_all

    real_sync = st._packs._sync
    def sync():
        if step("sync"):
            os.kill(os.getpid(), signal.SIGKILL)
        real_sync()
    st._packs._sync = sync

    real_delete = st._packs._delete_pack
    def delete(seq):
        n = real_delete(seq)
        if step("delete"):  # after the pack went, before its sidecar... or the next one
            os.kill(os.getpid(), signal.SIGKILL)
        return n
    st._packs._delete_pack = delete

    st.gc(grace_seconds=0)
    print("events", events, flush=True)
    """
)


def _check_after_crash(root: Path, kept: dict[bytes, bytes]) -> None:
    with open_store(root, pack_size=SMALL_PACK) as st:
        assert temp_leftovers(root) == []
        assert all(p.with_suffix(".shp").exists() for p in idx_files(root))
        for cid, data in kept.items():
            assert st.get_chunk(cid) == data
        assert st.usage()[0] == live_bytes(root)  # packs parse cleanly after recovery
        assert st.verify().ok
        st.gc(grace_seconds=0)  # finishing the interrupted work is clean too
        assert st.usage()[0] == live_bytes(root) == sum(map(len, kept.values()))
        assert len(pack_files(root)) <= 4
    with open_store(root, pack_size=SMALL_PACK) as st:
        assert all(st.get_chunk(c) == d for c, d in kept.items()) and st.verify().ok


@pytest.mark.slow
def test_sigkill_during_gc_and_compaction(tmp_path: Path) -> None:
    base = tmp_path / "base"
    with open_store(base, pack_size=SMALL_PACK) as st:
        kept_list, _doomed = _interleaved(st, 24, seed=14)
        committed(st, kept_list)
    kept = {blake3(k).digest(): k for k in kept_list}
    script = tmp_path / "child.py"
    script.write_text(COMPACT_CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run(kill_at: int, torn: bool) -> subprocess.CompletedProcess[bytes]:
        root = tmp_path / "run"
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(base, root)
        return subprocess.run([sys.executable, str(script), str(root), str(kill_at),
                               "1" if torn else "0"], capture_output=True, env=env,
                              timeout=60, check=False)

    calib = run(0, False)
    assert calib.returncode == 0, calib.stderr.decode()
    total = int(calib.stdout.split()[-1])
    assert total > 40  # tombstones + copies + sync + deletes
    _check_after_crash(tmp_path / "run", kept)
    points = sorted({round(i * (total - 1) / 39) + 1 for i in range(40)})
    for i, k in enumerate(points):
        res = run(k, torn=i % 2 == 1)
        assert res.returncode == -signal.SIGKILL, (k, res.stderr.decode())
        _check_after_crash(tmp_path / "run", kept)


# -- migration from chunks/ab/<hex> ---------------------------------------------------------------

def _to_old_layout(root: Path) -> dict[bytes, bytes]:
    """Rewrite a (closed) store's chunks as the old one file per chunk layout."""
    chunks = {cid: chunk_payload(root, cid) for cid in live_chunks(root)}
    for p in list((root / "chunks").iterdir()):
        p.unlink()
    for i in range(256):  # the old store created every fan-out dir up front
        (root / "chunks" / f"{i:02x}").mkdir(mode=0o700)
    for cid, data in chunks.items():
        path = root / "chunks" / cid.hex()[:2] / cid.hex()
        path.write_bytes(data)
        path.chmod(0o600)
    return chunks


def test_old_file_per_chunk_store_is_imported(tmp_path: Path) -> None:
    root = tmp_path / "s"
    data = randbytes(2 * MIB, seed=15)
    with open_store(root) as st:
        m = st.publish_file(write_file(tmp_path / "f", data), signer=SIGNER)
        orphan = put(st, b"an orphan chunk")
    chunks = _to_old_layout(root)
    old = time.time() - 3600
    os.utime(root / "chunks" / orphan.hex()[:2] / orphan.hex(), (old, old))
    bad = blake3(b"good").digest()
    (root / "chunks" / bad.hex()[:2] / bad.hex()).write_bytes(b"evil")
    (root / "chunks" / "ab" / ".tmp-crash").write_bytes(b"partial")
    (root / "chunks" / "cd" / "notes.txt").write_bytes(b"not a chunk: left alone")
    with open_store(root) as st:
        assert st.usage()[0] == sum(map(len, chunks.values())) == live_bytes(root)
        st.export(m, tmp_path / "out")
        assert st.get_chunk(orphan) == b"an orphan chunk" and not st.has_chunk(bad)
        assert st.verify().ok
        assert st.gc(grace_seconds=1800).chunks_removed == 1  # the old mtime was kept
    assert (tmp_path / "out").read_bytes() == data
    assert (root / "quarantine" / bad.hex()).read_bytes() == b"evil"
    assert sorted(p.name for p in (root / "chunks").iterdir() if p.is_dir()) == ["cd"]
    assert temp_leftovers(root) == []
    with open_store(root) as st:
        assert st.usage()[0] == len(data) and st.verify().ok
        st.export(m, tmp_path / "out2")


def test_interrupted_import_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "s"
    data = randbytes(2 * MIB, seed=16)
    with open_store(root) as st:
        m = st.publish_file(write_file(tmp_path / "f", data), signer=SIGNER)
    _to_old_layout(root)
    monkeypatch.setattr(packs_mod, "_IMPORT_BATCH", 256 * KIB)
    calls = {"n": 0}
    real = store_mod.syncfs

    def dies_on_third(path: Path) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(5, "simulated crash")
        real(path)

    monkeypatch.setattr(store_mod, "syncfs", dies_on_third)
    with pytest.raises(OSError, match="simulated"):
        open_store(root)
    monkeypatch.undo()
    left = [p for p in (root / "chunks").rglob("*") if p.is_file() and len(p.name) == 64]
    assert left and live_chunks(root)  # half done: chunks both in files and in packs
    with open_store(root) as st:
        st.export(m, tmp_path / "out")
        assert st.usage()[0] == len(data) == live_bytes(root) and st.verify().ok
    assert (tmp_path / "out").read_bytes() == data
    assert not [p for p in (root / "chunks").iterdir() if p.is_dir()]


# -- concurrency ----------------------------------------------------------------------------------

def test_reads_from_threads_while_writing_and_compacting(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with open_store(root, pack_size=SMALL_PACK) as st:
        st._packs._max_open = 2  # constant descriptor eviction as well
        kept, _ = _interleaved(st, 30, seed=17)
        committed(st, kept)
        kept_ids = [blake3(k).digest() for k in kept]
        stop = threading.Event()
        errors: list[BaseException] = []
        reads = [0]

        def reader(seed: int) -> None:
            rng = random.Random(seed)
            try:
                while not stop.is_set():
                    i = rng.randrange(len(kept))
                    assert st.get_chunk(kept_ids[i]) == kept[i]
                    assert st.has_chunk(kept_ids[i])
                    reads[0] += 1
            except BaseException as e:
                errors.append(e)

        def writer() -> None:
            rng = random.Random(99)
            try:
                while not stop.is_set():
                    d = rng.randbytes(6 * KIB)
                    cid = put(st, d)
                    with contextlib.suppress(NotFound):  # a concurrent gc may take it
                        assert st.get_chunk(cid) == d
            except BaseException as e:
                errors.append(e)

        def collector() -> None:
            try:
                while not stop.is_set():
                    st.gc(grace_seconds=0)
                    time.sleep(0.005)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
        threads += [threading.Thread(target=writer), threading.Thread(target=collector)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert not errors, errors[0]
        assert reads[0] > 100
        st.gc(grace_seconds=0)
        assert st.usage()[0] == sum(map(len, kept)) == live_bytes(root)
        assert st.verify().ok


def test_vanished_pack_reads_as_missing_not_crash(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with open_store(root, pack_size=SMALL_PACK) as st:
        ids = [put(st, d) for d in blobs(20, 8 * KIB, seed=18)]
    first = pack_files(root)[0]
    victim = next(c for c in ids if live_chunks(root)[c][0] == first)
    with open_store(root, pack_size=SMALL_PACK) as st:
        first.unlink()  # not open yet: no descriptor keeps it readable
        with pytest.raises(NotFound):
            st.get_chunk(victim)
        assert not st.has_chunk(victim)


def test_store_error_is_raised_for_second_open(tmp_path: Path) -> None:
    with open_store(tmp_path / "s") as st, pytest.raises(StoreError):
        open_store(st.root)


def test_chunks_from_peers_round_trip_through_packs(store: ContentStore) -> None:
    data = randbytes(MIB, seed=19)
    refs = list(chunk_bytes(data, TEST_AVG))
    for r in refs:
        assert store.put_chunk(r.chunk_id, memoryview(data)[r.offset:r.offset + r.length])
    for r in reversed(refs):
        assert store.get_chunk(r.chunk_id) == data[r.offset:r.offset + r.length]
