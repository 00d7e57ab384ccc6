"""ContentStore behaviour: publish/export, dedupe, versions, integrity, quota, find, gc."""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from blake3 import blake3
from store_helpers import (
    KIB,
    MIB,
    OTHER_PUBLISHER,
    OTHER_SIGNER,
    PUBLISHER,
    SIGNER,
    SIGNERS,
    TEST_AVG,
    chunk_payload,
    flip_chunk_byte,
    live_bytes,
    live_chunks,
    pack_files,
    randbytes,
    temp_leftovers,
    tree_snapshot,
    write_file,
)

from agent.store import (
    ChunkEntry,
    ChunkMismatch,
    ContentStore,
    CorruptChunk,
    IncompleteResource,
    Manifest,
    ManifestError,
    NotFound,
    QuotaExceeded,
    StoreError,
    VersionConflict,
    chunk_bytes,
)
from agent.store import store as store_mod


def peer_manifest(data: bytes, *, resource_id: str = "77" * 16, name: str = "peer.bin",
                  version: int = 1, parent: str | None = None,
                  publisher: str = OTHER_PUBLISHER, public: bool = True) -> Manifest:
    """A manifest as a remote publisher would have built it."""
    chunks = tuple(ChunkEntry(r.chunk_id, r.length) for r in chunk_bytes(data, TEST_AVG))
    m = Manifest(resource_id, name, version, len(data), TEST_AVG, chunks, 1_700_000_000.0,
                 publisher, public, parent)
    return m.signed_by(SIGNERS[publisher]) if publisher in SIGNERS else m


def feed(st: ContentStore, m: Manifest, data: bytes) -> None:
    """Deliver every chunk of *data* as a peer would."""
    for r in chunk_bytes(data, m.avg_chunk_size):
        st.put_chunk(r.chunk_id, data[r.offset:r.offset + r.length])


# -- publish / export ------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 100, 3 * MIB + 17], ids=["empty", "1B", "tiny", "multi"])
def test_publish_export_round_trip(store: ContentStore, tmp_path: Path, size: int) -> None:
    data = randbytes(size, seed=size)
    src = write_file(tmp_path / "in" / "file.bin", data)
    m = store.publish_file(src, signer=SIGNER)
    assert (m.name, m.version, m.size, m.parent, m.publisher) == (
        "file.bin", 1, size, None, PUBLISHER)
    assert sum(c.length for c in m.chunks) == size
    if size > 2 * MIB:
        assert len(m.chunks) > 10
    dest = tmp_path / "out" / "copy.bin"
    store.export(m, dest)
    assert dest.read_bytes() == data
    assert store.complete(m) and store.missing_chunks(m) == []
    assert store.manifest(m.manifest_hash) == m
    rec = store.find("file.bin")
    assert rec.manifest == m and rec.current == m.manifest_hash and not rec.public


def test_layout_modes_and_reopen(tmp_path: Path) -> None:
    root = tmp_path / "store"
    data = randbytes(MIB, seed=9)
    with ContentStore(root, avg_chunk_size=TEST_AVG) as st:
        m = st.publish_file(write_file(tmp_path / "a.bin", data), signer=SIGNER)
        used = st.usage()
    for d in ("chunks", "manifests", "resources", "quarantine", "tmp"):
        assert stat.S_IMODE((root / d).stat().st_mode) == 0o700
    assert set(live_chunks(root)) == {c.chunk_id for c in m.chunks}
    chunk_files = list((root / "chunks").iterdir())
    assert chunk_files == pack_files(root) and chunk_files  # one active pack, no fan-out dirs
    for p in chunk_files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert (root / "manifests" / f"{m.manifest_hash}.json").read_bytes() == m.to_bytes()
    assert (root / "resources" / f"{m.resource_id}.json").is_file()
    with ContentStore(root, avg_chunk_size=TEST_AVG) as st2:
        assert st2.usage() == used
        assert [r.manifest for r in st2.resources()] == [m]
        st2.export(m, tmp_path / "b.bin")
    assert (tmp_path / "b.bin").read_bytes() == data


def test_second_open_of_same_root_is_refused(store: ContentStore) -> None:
    with pytest.raises(StoreError, match="already open"):
        ContentStore(store.root)


def test_publish_rejects_non_regular_files(store: ContentStore, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(StoreError, match="not a regular file"):
        store.publish_file(fifo, signer=SIGNER)  # must not block either


def test_publish_memory_is_bounded(tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        for i in range(48):
            f.write(randbytes(MIB, seed=100 + i))
    with ContentStore(tmp_path / "store") as st:  # default 256 KiB average
        tracemalloc.start()
        try:
            st.publish_file(src, signer=SIGNER)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 6 * MIB, peak  # 48 MiB file; stream buffer is 2 MiB


# -- dedupe and versions ---------------------------------------------------------------------

def test_dedupe_across_resources(store: ContentStore, tmp_path: Path) -> None:
    data = randbytes(2 * MIB, seed=11)
    m1 = store.publish_file(write_file(tmp_path / "a.bin", data), signer=SIGNER)
    used = store.usage()[0]
    assert used == len(data)
    m2 = store.publish_file(write_file(tmp_path / "b.bin", data), signer=SIGNER)
    assert store.usage()[0] == used
    assert m1.resource_id != m2.resource_id and m1.chunks == m2.chunks
    assert store.history(m2.resource_id).latest.bytes_added == len(data)  # vs. its own v0


def test_edit_creates_next_version_storing_only_changed_chunks(store: ContentStore,
                                                               tmp_path: Path) -> None:
    data = randbytes(4 * MIB, seed=12)
    src = write_file(tmp_path / "doc.bin", data)
    v1 = store.publish_file(src, signer=SIGNER)
    used1 = store.usage()[0]
    edited = data[: 2 * MIB] + b"inserted text" + data[2 * MIB:]
    src.write_bytes(edited)
    v2 = store.publish_file(src, signer=SIGNER)
    assert (v2.resource_id, v2.version, v2.parent) == (v1.resource_id, 2, v1.manifest_hash)
    grown = store.usage()[0] - used1
    entry = store.history(v1.resource_id).latest
    assert entry.version == 2 and entry.manifest_hash == v2.manifest_hash
    assert grown == entry.bytes_added
    assert 0 < entry.bytes_added <= 3 * 4 * TEST_AVG  # a few chunks, not the file
    assert 1 <= entry.chunks_added <= 3 and 1 <= entry.chunks_removed <= 3
    assert entry.size == len(edited)
    # identical content: no new version
    assert store.publish_file(src, signer=SIGNER) == v2
    assert len(store.history(v1.resource_id)) == 2
    # both versions export byte-identical
    store.export(v1, tmp_path / "v1")
    store.export(v2, tmp_path / "v2")
    assert (tmp_path / "v1").read_bytes() == data
    assert (tmp_path / "v2").read_bytes() == edited


def test_republish_identical_flipping_public_is_a_new_signed_version(
        store: ContentStore, tmp_path: Path) -> None:
    # peers act on the public flag the publisher signed, so a flip is a new version
    src = write_file(tmp_path / "f", randbytes(1000, seed=1))
    m = store.publish_file(src, signer=SIGNER)
    assert store.publish_file(src, signer=SIGNER) == m
    m2 = store.publish_file(src, signer=SIGNER, public=True)
    assert m2.public and m2.version == 2 and m2.chunks == m.chunks
    assert m2.parent == m.manifest_hash
    m2.verify()
    rec = store.find(m.resource_id)
    assert rec.public and rec.version == 2
    store.close()
    with ContentStore(store.root, avg_chunk_size=TEST_AVG) as st2:
        again = st2.find(m.resource_id)
        assert again.public
        again.manifest.verify()  # the signature survived the restart


def test_same_name_other_publisher_is_a_different_resource(store: ContentStore,
                                                          tmp_path: Path) -> None:
    src = write_file(tmp_path / "f", b"one")
    a = store.publish_file(src, signer=SIGNER)
    src.write_bytes(b"two")
    b = store.publish_file(src, signer=OTHER_SIGNER)
    assert a.resource_id != b.resource_id and b.version == 1


# -- chunks: verification, corruption, quarantine ---------------------------------------------

def test_put_chunk_verifies_and_dedupes(store: ContentStore) -> None:
    data = b"hello chunk"
    cid = blake3(data).digest()
    with pytest.raises(ChunkMismatch, match="hashes to"):
        store.put_chunk(cid, b"hello chunK")
    assert not store.has_chunk(cid) and store.usage()[0] == 0
    assert store.put_chunk(cid, memoryview(data)) is True
    assert store.put_chunk(cid, data) is False
    assert store.usage()[0] == len(data)
    assert store.get_chunk(cid) == data
    with pytest.raises(ChunkMismatch):
        store.put_chunk(blake3(b"").digest(), b"")
    # malformed ids from a peer are store errors, not crashes
    with pytest.raises(ChunkMismatch):
        store.put_chunk(b"short", data)
    with pytest.raises(NotFound):
        store.get_chunk(b"../../etc/passwd")
    assert store.has_chunk(b"x" * 31) is False
    with pytest.raises(NotFound):
        store.get_chunk(blake3(b"absent").digest())


def test_flipped_byte_detected_by_get_chunk(store: ContentStore, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    data = randbytes(MIB, seed=13)
    m = store.publish_file(write_file(tmp_path / "f", data), signer=SIGNER)
    victim = m.chunks[len(m.chunks) // 2].chunk_id
    size = len(chunk_payload(store.root, victim))
    raw = flip_chunk_byte(store.root, victim, size // 2)
    used = store.usage()[0]
    with caplog.at_level(logging.WARNING), pytest.raises(CorruptChunk, match=victim.hex()):
        store.get_chunk(victim)
    assert f"chunk_id={victim.hex()}" in caplog.text
    assert victim not in live_chunks(store.root) and not store.has_chunk(victim)  # tombstoned
    assert (store.root / "quarantine" / victim.hex()).read_bytes() == raw
    assert store.usage()[0] == used - len(raw)
    assert store.missing_chunks(m) == [c for c in m.chunks if c.chunk_id == victim][:1]
    with pytest.raises(IncompleteResource):
        store.export(m, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    report = store.verify()
    assert report.incomplete == (m.resource_id,) and not report.ok
    # a peer re-supplies the chunk: repaired
    off = sum(c.length for c in m.chunks[: len(m.chunks) // 2])
    assert store.put_chunk(victim, data[off: off + len(raw)])
    assert store.verify().ok


def test_verify_scrubs_quarantines_and_reports(store: ContentStore, tmp_path: Path) -> None:
    a = store.publish_file(write_file(tmp_path / "a", randbytes(MIB, seed=14)),
                           signer=SIGNER)
    b = store.publish_file(write_file(tmp_path / "b", randbytes(MIB, seed=15)),
                           signer=SIGNER)
    assert store.verify().ok
    victim = a.chunks[0].chunk_id
    flip_chunk_byte(store.root, victim, 0, 0xFF)
    report = store.verify()
    assert report.corrupt_chunks == (victim.hex(),)
    assert report.incomplete == (a.resource_id,)
    assert report.chunks_checked == len(a.chunks) + len(b.chunks)
    assert (store.root / "quarantine" / victim.hex()).exists()
    assert victim not in live_chunks(store.root)
    assert store.complete(b) and not store.complete(a)


def test_truncated_or_swapped_chunk_is_corrupt(store: ContentStore) -> None:
    x, y = b"x" * 5000, b"y" * 5000
    cx, cy = blake3(x).digest(), blake3(y).digest()
    store.put_chunk(cx, x)
    store.put_chunk(cy, y)
    path, off, _ = live_chunks(store.root)[cx]
    with open(path, "r+b") as f:  # right size, wrong content
        f.seek(off)
        f.write(y)
    path, off, _ = live_chunks(store.root)[cy]  # the last record: cut inside its payload
    os.truncate(path, off + 10)
    for cid in (cx, cy):
        with pytest.raises(CorruptChunk):
            store.get_chunk(cid)


def test_corrupt_manifest_file_is_quarantined_and_healed(store: ContentStore,
                                                         tmp_path: Path) -> None:
    m = store.publish_file(write_file(tmp_path / "f", b"data" * 100), signer=SIGNER)
    mpath = store.root / "manifests" / f"{m.manifest_hash}.json"
    mpath.write_bytes(mpath.read_bytes().replace(b'"version":1', b'"version":2'))
    report = store.verify()
    assert report.corrupt_manifests == (m.manifest_hash,)
    assert mpath.read_bytes() == m.to_bytes()  # rewritten from the verified in-memory copy


# -- atomicity ---------------------------------------------------------------------------------

def test_failed_manifest_write_leaves_store_unchanged(store: ContentStore, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    base = store.publish_file(write_file(tmp_path / "base", randbytes(MIB, seed=16)),
                              signer=SIGNER)
    before = tree_snapshot(store.root)
    used = store.usage()

    real = store_mod.atomic_write_bytes

    def failing(path: Path, data: bytes, mode: int = 0o644) -> None:
        if path.parent.name == "manifests":
            raise OSError(28, "No space left on device")
        real(path, data, mode)

    monkeypatch.setattr(store_mod, "atomic_write_bytes", failing)
    new = write_file(tmp_path / "new", randbytes(2 * MIB, seed=17))
    with pytest.raises(OSError, match="No space"):
        store.publish_file(new, signer=SIGNER)
    assert tree_snapshot(store.root) == before  # new chunks rolled back
    assert store.usage() == used
    assert [r.manifest for r in store.resources()] == [base]
    monkeypatch.undo()
    m = store.publish_file(new, signer=SIGNER)
    store.export(m, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == new.read_bytes()


def test_failed_chunk_write_leaves_no_partial_record(store: ContentStore, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real_pwritev = os.pwritev

    def flaky(fd: int, buffers: list, offset: int) -> int:
        calls["n"] += 1
        if calls["n"] == 5:  # half a record reaches the pack, then the disk fails
            os.pwrite(fd, b"".join(bytes(b) for b in buffers)[:100], offset)
            raise OSError(5, "I/O error")
        return real_pwritev(fd, buffers, offset)

    monkeypatch.setattr(os, "pwritev", flaky)
    with pytest.raises(OSError, match="I/O error"):
        store.publish_file(write_file(tmp_path / "f", randbytes(2 * MIB, seed=18)),
                           signer=SIGNER)
    monkeypatch.undo()
    assert temp_leftovers(store.root) == []
    assert store.usage()[0] == 0 and store.resources() == []
    # the partial record and the 4 chunks before it (rolled back) are truncated away
    assert [p.stat().st_size for p in pack_files(store.root)] == [0]
    store.close()
    with ContentStore(store.root, avg_chunk_size=TEST_AVG) as st:
        assert st.usage()[0] == 0 and st.verify().ok


def test_export_failure_never_leaves_partial_dest(store: ContentStore, tmp_path: Path) -> None:
    m = store.publish_file(write_file(tmp_path / "f", randbytes(2 * MIB, seed=19)),
                           signer=SIGNER)
    dest = write_file(tmp_path / "out" / "dest.bin", b"previous content")
    flip_chunk_byte(store.root, m.chunks[-1].chunk_id, -1)  # found when export reaches it
    with pytest.raises(CorruptChunk):
        store.export(m, dest)
    assert dest.read_bytes() == b"previous content"
    assert temp_leftovers(tmp_path / "out") == []


# -- quota -------------------------------------------------------------------------------------

def test_quota_refusal_leaves_store_unchanged(tmp_path: Path) -> None:
    with ContentStore(tmp_path / "s", avg_chunk_size=TEST_AVG, quota_bytes=3 * MIB) as st:
        st.publish_file(write_file(tmp_path / "a", randbytes(2 * MIB, seed=20)),
                        signer=SIGNER)
        before, used = tree_snapshot(st.root), st.usage()
        assert used == (2 * MIB, 3 * MIB)
        with pytest.raises(QuotaExceeded,
                           match=r"needs \d+ bytes, 1048576 free of 3145728"):
            st.publish_file(write_file(tmp_path / "b", randbytes(2 * MIB, seed=21)),
                            signer=SIGNER)
        assert tree_snapshot(st.root) == before and st.usage() == used
        data = randbytes(2 * MIB, seed=22)
        with pytest.raises(QuotaExceeded, match="free of"):
            for r in chunk_bytes(data, TEST_AVG):
                st.put_chunk(r.chunk_id, data[r.offset:r.offset + r.length])
        assert st.usage()[0] <= 3 * MIB


def test_quota_counts_only_new_chunks(tmp_path: Path) -> None:
    data = randbytes(2 * MIB, seed=23)
    with ContentStore(tmp_path / "s", avg_chunk_size=TEST_AVG, quota_bytes=3 * MIB) as st:
        st.publish_file(write_file(tmp_path / "a", data), signer=SIGNER)
        # 2 MiB file but only the edited chunks are new: fits in the 1 MiB left
        m = st.publish_file(write_file(tmp_path / "b", data + b"tail"), signer=SIGNER)
        assert st.complete(m) and st.usage()[0] < 3 * MIB


# -- find / names / ids ------------------------------------------------------------------------

def _commit(st: ContentStore, rid: str, name: str, publisher: str = OTHER_PUBLISHER) -> None:
    data = (rid + name).encode() * 50
    m = peer_manifest(data, resource_id=rid, name=name, publisher=publisher)
    feed(st, m, data)
    st.commit_resource(m)


def test_find_rules(store: ContentStore) -> None:
    _commit(store, "abcdef01" + "0" * 24, "alpha")
    _commit(store, "abcdef02" + "0" * 24, "beta")
    _commit(store, "123456" + "9" * 26, "alpha", publisher=PUBLISHER)
    assert store.find("abcdef01" + "0" * 24).name == "alpha"  # exact id
    assert store.find("ABCDEF02" + "0" * 24).name == "beta"  # case-insensitive id
    assert store.find("abcdef02").name == "beta"  # unique prefix
    assert store.find("1234569").name == "alpha"
    assert store.find("beta").resource_id.startswith("abcdef02")  # exact name
    with pytest.raises(NotFound, match="ambiguous: matches 2"):
        store.find("abcdef")  # shared prefix
    with pytest.raises(NotFound, match="ambiguous"):
        store.find("alpha")  # two publishers, same name
    with pytest.raises(NotFound, match="no resource"):
        store.find("12345")  # prefix too short, not a name
    with pytest.raises(NotFound, match="no resource"):
        store.find("gamma")
    with pytest.raises(NotFound):
        store.history("../../etc/passwd")
    with pytest.raises(NotFound):
        store.manifest("../" + "a" * 61)


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", ".", "a\\b", "nul\x00", "/etc/passwd",
                                  "x" * 256])
def test_traversal_names_rejected(store: ContentStore, tmp_path: Path, name: str) -> None:
    src = write_file(tmp_path / "f", b"payload")
    before = set(tmp_path.rglob("*"))
    with pytest.raises(ManifestError):
        store.publish_file(src, name=name, signer=SIGNER)
    assert set(tmp_path.rglob("*")) == before and store.resources() == []


def test_only_the_publisher_can_sign() -> None:
    m = peer_manifest(b"x" * 100, publisher=PUBLISHER)
    with pytest.raises(ManifestError, match="only the publisher"):
        m.signed_by(OTHER_SIGNER)


# -- peer flow ---------------------------------------------------------------------------------

def test_peer_download_flow(store: ContentStore, tmp_path: Path) -> None:
    data = randbytes(MIB, seed=24)
    m = peer_manifest(data)
    store.put_manifest(m)
    assert store.missing_chunks(m) == list(m.chunks)
    with pytest.raises(IncompleteResource, match="missing"):
        store.commit_resource(m)
    assert store.resources() == []
    feed(store, m, data)
    assert store.complete(m)
    rec = store.commit_resource(m)
    assert rec.public and rec.publisher == OTHER_PUBLISHER and rec.versions.latest.version == 1
    assert store.commit_resource(m) == rec  # idempotent
    data2 = data + b"more"
    m2 = peer_manifest(data2, version=2, parent=m.manifest_hash)
    feed(store, m2, data2)
    rec2 = store.commit_resource(m2)
    assert [e.version for e in rec2.versions] == [1, 2]
    assert rec2.versions.latest.chunks_added <= 2
    with pytest.raises(VersionConflict, match="not newer"):
        store.commit_resource(peer_manifest(data, version=2, parent=m.manifest_hash,
                                            name="other"))
    with pytest.raises(VersionConflict, match="published by"):
        store.commit_resource(peer_manifest(data2, version=3, parent=m2.manifest_hash,
                                            publisher=PUBLISHER))
    store.export(m2, tmp_path / "o")
    assert (tmp_path / "o").read_bytes() == data2


def test_concurrent_puts_count_usage_once(store: ContentStore) -> None:
    blobs = [randbytes(10_000 + i, seed=i) for i in range(40)]
    ids = [blake3(b).digest() for b in blobs]
    stored: list[bool] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        for i in range(len(blobs)):
            j = (i + offset) % len(blobs)
            r = store.put_chunk(ids[j], blobs[j])
            with lock:
                stored.append(r)

    threads = [threading.Thread(target=worker, args=(k * 5,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(stored) == len(blobs)
    assert store.usage()[0] == sum(len(b) for b in blobs)
    assert store.verify().ok


# -- recovery and gc ---------------------------------------------------------------------------

def test_recover_cleans_temps_and_bad_records(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "s"
    with ContentStore(root, avg_chunk_size=TEST_AVG) as st:
        a = st.publish_file(write_file(tmp_path / "a", b"a" * 1000), signer=SIGNER)
        b = st.publish_file(write_file(tmp_path / "b", b"b" * 1000), signer=SIGNER)
        c = st.publish_file(write_file(tmp_path / "c", b"c" * 1000), signer=SIGNER)
    for d in (root / "chunks", root / "manifests", root / "resources", root / "tmp"):
        (d / ".tmp-crash").write_bytes(b"partial")
    (root / "manifests" / f"{b.manifest_hash}.json").unlink()  # record b loses its manifest
    (root / "resources" / f"{c.resource_id}.json").write_bytes(b'{"garbage":')
    with caplog.at_level(logging.WARNING), ContentStore(root, avg_chunk_size=TEST_AVG) as st:
        assert [r.resource_id for r in st.resources()] == [a.resource_id]
        assert temp_leftovers(root) == []
        assert st.verify().ok
    assert "records_dropped=" + b.resource_id in caplog.text
    assert (root / "quarantine" / f"record-{c.resource_id}.json").exists()


def test_gc_keeps_last_versions_and_frees_the_rest(store: ContentStore, tmp_path: Path) -> None:
    src = tmp_path / "f"
    versions = []
    for i in range(7):
        write_file(src, randbytes(300 * KIB, seed=200 + i))  # every version fully new
        versions.append(store.publish_file(src, signer=SIGNER))
    keeper = store.publish_file(write_file(tmp_path / "k", randbytes(200 * KIB, seed=5)),
                                signer=SIGNER)
    orphan = b"orphan chunk"
    store.put_chunk(blake3(orphan).digest(), orphan)
    # old versions' manifests go at once; the default grace still protects recent chunks
    first = store.gc()
    assert (first.manifests_removed, first.chunks_removed) == (2, 0)
    report = store.gc(keep_versions=5, grace_seconds=0)
    assert report.bytes_freed == 2 * 300 * KIB + len(orphan)
    for old in versions[:2]:
        with pytest.raises(NotFound):
            store.manifest(old.manifest_hash)
        assert not store.complete(old)
    for v in versions[2:]:
        assert store.complete(v)
        store.export(v, tmp_path / "out")
    assert len(store.history(versions[0].resource_id)) == 7  # history itself is kept
    store.remove_resource(versions[0].resource_id)
    with pytest.raises(NotFound):
        store.find(versions[0].resource_id)
    store.gc(grace_seconds=0)
    assert store.usage()[0] == keeper.size
    assert store.verify().ok and store.complete(keeper)


def test_gc_spares_pending_downloads_and_pinned_publishes(store: ContentStore) -> None:
    data = randbytes(300 * KIB, seed=30)
    m = peer_manifest(data)
    store.put_manifest(m)
    feed(store, m, data)
    assert store.gc(grace_seconds=3600).chunks_removed == 0  # pending manifest is fresh
    old = time.time() - 7200
    os.utime(store.root / "manifests" / f"{m.manifest_hash}.json", (old, old))
    report = store.gc(grace_seconds=3600)
    assert report.manifests_removed == 1
    assert report.chunks_removed == 0  # chunk files themselves are still within grace
    assert store.gc(grace_seconds=0).bytes_freed == len(data)
    assert store.usage()[0] == 0


def test_gc_during_publish_cannot_delete_deduped_chunks(store: ContentStore, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    data = randbytes(MIB, seed=31)
    for r in chunk_bytes(data, TEST_AVG):  # orphans that a publish will dedupe against
        store.put_chunk(r.chunk_id, data[r.offset:r.offset + r.length])
    real = store._commit_publish

    def gc_first(*args, **kwargs):
        store.gc(grace_seconds=0)  # runs after dedupe, before the record is written
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "_commit_publish", gc_first)
    m = store.publish_file(write_file(tmp_path / "f", data), signer=SIGNER)
    assert store.complete(m) and store.verify().ok


def test_usage_is_exact_after_reopen(tmp_path: Path) -> None:
    with ContentStore(tmp_path / "s", avg_chunk_size=TEST_AVG) as st:
        st.publish_file(write_file(tmp_path / "a", randbytes(MIB + 5, seed=1)),
                        signer=SIGNER)
        live = st.usage()[0]
    assert live == live_bytes(tmp_path / "s") == MIB + 5
