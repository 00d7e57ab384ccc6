"""Publishing a directory and writing it back (agent/store/scan.py, treeplan.py,
treeapply.py): what is skipped, what a rename costs, and that an update never destroys a
user's edit, never writes outside DEST or through a link, and never leaves a torn file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from store_helpers import KIB, SIGNER, randbytes, write_file

from agent.store import ContentStore, StoreError
from agent.store.scan import scan_tree
from agent.store.treeapply import STAGE_PREFIX, TreeError, apply_tree
from agent.store.treeplan import Content, Local, plan


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    write_file(root / "a.bin", randbytes(300 * KIB, 1))
    write_file(root / "docs" / "b.txt", b"bee\n" * 1000)
    write_file(root / "docs" / "deep" / "c.bin", randbytes(200 * KIB, 2))
    write_file(root / "run.sh", b"#!/bin/sh\n").chmod(0o755)
    return root


def test_scan_skips_links_specials_and_temp_files(src: Path, tmp_path: Path) -> None:
    os.symlink(tmp_path, src / "out-link")
    os.symlink("/etc/passwd", src / "docs" / "pw")
    os.mkfifo(src / "fifo")
    write_file(src / "draft.swp", b"x")
    write_file(src / ".shoal-tmp-123", b"x")
    write_file(src / "bad\x1bname", b"x")
    s = scan_tree(src)
    assert [f.rel for f in s.files] == ["a.bin", "docs/b.txt", "docs/deep/c.bin", "run.sh"]
    assert [f.mode for f in s.files] == [0o644, 0o644, 0o644, 0o755]
    reasons = " ".join(s.skipped)
    assert "out-link (symbolic link" in reasons and "docs/pw (symbolic link" in reasons
    assert "fifo (not a regular file" in reasons and "bad\x1bname (" in reasons
    assert s.skipped_count == 4


def test_scan_refuses_a_case_collision(src: Path) -> None:
    write_file(src / "A.bin", b"x")
    with pytest.raises(StoreError, match="differ only in case"):
        scan_tree(src)


def test_rename_adds_no_chunk_and_identical_republish_is_no_version(
        store: ContentStore, src: Path) -> None:
    m1 = store.publish_tree(src, signer=SIGNER)
    assert m1.is_folder and len(m1.files or ()) == 4 and m1.name == "src"
    assert store.publish_tree(src, signer=SIGNER) == m1
    (src / "docs" / "deep" / "c.bin").rename(src / "c-moved.bin")
    m2 = store.publish_tree(src, signer=SIGNER)
    assert m2.version == 2 and sorted(m2.chunks, key=lambda c: c.chunk_id) == sorted(
        m1.chunks, key=lambda c: c.chunk_id)
    assert store.history(m2.resource_id).latest.bytes_added == 0


def test_export_then_update_in_place(store: ContentStore, src: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    m1 = store.publish_tree(src, signer=SIGNER)
    r = apply_tree(store, None, m1, dest)
    assert snapshot(dest) == snapshot(src) and sorted(r.written) == sorted(snapshot(src))
    assert (dest / "run.sh").stat().st_mode & 0o777 == 0o755
    # swap two files' contents by renames, edit one, delete one
    (src / "a.bin").rename(src / "tmp")
    (src / "docs" / "deep" / "c.bin").rename(src / "a.bin")
    (src / "tmp").rename(src / "docs" / "deep" / "c.bin")
    write_file(src / "docs" / "b.txt", b"changed\n")
    (src / "run.sh").unlink()
    m2 = store.publish_tree(src, signer=SIGNER)
    r2 = apply_tree(store, m1, m2, dest)
    assert snapshot(dest) == snapshot(src)
    assert sorted(r2.moved) == [("a.bin", "docs/deep/c.bin"), ("docs/deep/c.bin", "a.bin")]
    assert r2.written == ["docs/b.txt"] and r2.deleted == ["run.sh"]
    assert r2.bytes_written == len(b"changed\n")
    assert not [p for p in dest.iterdir() if p.name.startswith(STAGE_PREFIX)]


def test_user_edits_are_never_destroyed(store: ContentStore, src: Path,
                                        tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    m1 = store.publish_tree(src, signer=SIGNER)
    apply_tree(store, None, m1, dest)
    write_file(dest / "run.sh", b"my edit\n")        # the new version deletes it
    write_file(dest / "docs" / "b.txt", b"mine\n")    # the new version changes it
    write_file(dest / "mine.txt", b"only mine\n")     # not in any version
    (src / "run.sh").unlink()
    write_file(src / "docs" / "b.txt", b"theirs\n")
    m2 = store.publish_tree(src, signer=SIGNER)
    r = apply_tree(store, m1, m2, dest)
    assert (dest / "run.sh").read_bytes() == b"my edit\n"
    assert (dest / "docs" / "b.txt").read_bytes() == b"mine\n"
    assert (dest / "mine.txt").read_bytes() == b"only mine\n"
    assert sorted(p for p, _ in r.kept) == ["docs/b.txt", "run.sh"]
    # --force replaces a changed file with the new content (it still removes nothing)
    r = apply_tree(store, m1, m2, dest, force=True)
    assert (dest / "docs" / "b.txt").read_bytes() == b"theirs\n"
    assert (dest / "run.sh").exists()


def test_first_export_keeps_existing_different_files(store: ContentStore, src: Path,
                                                     tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    write_file(dest / "a.bin", b"someone else's\n")
    r = apply_tree(store, None, store.publish_tree(src, signer=SIGNER), dest)
    assert (dest / "a.bin").read_bytes() == b"someone else's\n"
    assert [p for p, _ in r.kept] == ["a.bin"]


def test_refuses_to_write_through_a_symlink(store: ContentStore, src: Path,
                                           tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(outside, dest / "docs")
    m = store.publish_tree(src, signer=SIGNER)
    with pytest.raises(TreeError, match="symbolic link"):
        apply_tree(store, None, m, dest)
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in dest.iterdir()) == ["docs"]  # nothing written, no temps
    # a link where a file goes is left alone (and reported), never followed
    os.unlink(dest / "docs")
    os.symlink(outside / "target", dest / "a.bin")
    r = apply_tree(store, None, m, dest)
    assert ("a.bin", "a directory or link is in its place") in r.kept
    assert not (outside / "target").exists()


def test_file_becomes_directory_and_back(store: ContentStore, tmp_path: Path) -> None:
    src, dest = tmp_path / "s", tmp_path / "d"
    write_file(src / "x", b"a file\n")
    m1 = store.publish_tree(src, signer=SIGNER)
    apply_tree(store, None, m1, dest)
    (src / "x").unlink()
    write_file(src / "x" / "y", b"now a directory\n")
    m2 = store.publish_tree(src, signer=SIGNER)
    apply_tree(store, m1, m2, dest)
    assert snapshot(dest) == {"x/y": b"now a directory\n"}


def test_crash_after_staging_leaves_old_files(store: ContentStore, src: Path,
                                              tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure between staging and commit (here: the sync) changes no file of the tree;
    the next apply removes the leftovers and completes."""
    dest = tmp_path / "dest"
    m1 = store.publish_tree(src, signer=SIGNER)
    apply_tree(store, None, m1, dest)
    before = snapshot(dest)
    write_file(src / "a.bin", randbytes(300 * KIB, 9))
    m2 = store.publish_tree(src, signer=SIGNER)

    def crash(_path: Path) -> None:
        raise OSError("power cut")

    monkeypatch.setattr("agent.store.treeapply.syncfs", crash)
    with pytest.raises(OSError, match="power cut"):
        apply_tree(store, m1, m2, dest)
    assert snapshot(dest) == before
    monkeypatch.undo()
    write_file(dest / f"{STAGE_PREFIX}left-by-a-crash", b"x")
    apply_tree(store, m1, m2, dest)
    assert snapshot(dest) == snapshot(src)


def test_plan_is_pure_and_prefers_moves() -> None:
    k1, k2 = (b"1" * 32,), (b"2" * 32,)
    old = {"a": Content(k1, 1, 0o644), "b": Content(k2, 1, 0o644)}
    new = {"c": Content(k1, 1, 0o644), "b": Content(k2, 1, 0o755)}
    p = plan(old, new, {"a": Local.OLD, "b": Local.NEW}, modes={"b": 0o644})
    assert p.move == [("a", "c")] and p.delete == ["a"] and p.chmod == ["b"]
    p = plan(old, new, {"a": Local.DIFFERS, "b": Local.NEW}, modes={"b": 0o755})
    assert p.write == ["c"] and p.move == [] and p.delete == []
    assert p.kept == [("a", "removed in the new version but changed here: kept")]


def test_scan_never_includes_the_agents_data_directory(src: Path) -> None:
    """Publishing a folder that holds the agent's data directory (a home directory) must
    not publish the device's private key or its store."""
    data = src / "docs" / "shoal-data"
    write_file(data / "identity.pem", b"-----BEGIN PRIVATE KEY-----\n")
    s = scan_tree(src, exclude=(src / "docs" / "." / "shoal-data",))
    assert "docs/shoal-data/identity.pem" not in [f.rel for f in s.files]
    assert "docs/shoal-data (the agent's data directory)" in s.skipped
    with pytest.raises(StoreError, match="own data directory"):
        scan_tree(data, exclude=(data,))


def test_a_file_edited_during_the_update_is_not_removed(
        store: ContentStore, src: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "dest"
    m1 = store.publish_tree(src, signer=SIGNER)
    apply_tree(store, None, m1, dest)
    (src / "run.sh").unlink()
    m2 = store.publish_tree(src, signer=SIGNER)

    def user_saves_meanwhile(_path: Path) -> None:  # runs between planning and removal
        (dest / "run.sh").write_bytes(b"#!/bin/sh\necho edited\n")

    monkeypatch.setattr("agent.store.treeapply.syncfs", user_saves_meanwhile)
    r = apply_tree(store, m1, m2, dest)
    assert (dest / "run.sh").read_bytes() == b"#!/bin/sh\necho edited\n"
    assert ("run.sh", "changed during the update: kept") in r.kept and r.deleted == []
