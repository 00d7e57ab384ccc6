"""Folders between two real agents on loopback: publish a directory, fetch it into a tree,
edit one file and rename another, republish, and update the tree in place: only the
edited file's changed chunks move; the rename moves none. And `publish --watch`."""

from __future__ import annotations

import os

import pytest

from .agents import pair, wait_until

CHUNK = 256 * 1024  # the default average chunk size


def _tree(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture
def folder(tmp_path):
    src = tmp_path / "album"
    (src / "raw").mkdir(parents=True)
    (src / "a.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    (src / "raw" / "b.bin").write_bytes(os.urandom(1024 * 1024))
    (src / "notes.txt").write_text("first\n")
    (src / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "run.sh").chmod(0o755)
    os.symlink("/etc/passwd", src / "escape")  # never followed, never published
    return src


def test_folder_fetch_then_update_moves_only_changed_chunks(agents, tmp_path, folder):
    a, b = agents("alpha"), agents("beta")
    pair(a, b)
    pub = a.cli("--json", "publish", str(folder))
    assert "escape (symbolic link" in pub.stdout
    r = a.json("publish", str(folder))  # identical content: the same version
    assert r["version"] == 1 and r["files"] == 4
    listed = b.json("resources")["remote"]
    assert [(x["name"], x["files"]) for x in listed] == [("album", 4)]
    dest = tmp_path / "copy"
    got = b.json("fetch", "album", "--from", a.address, "--to", str(dest))
    assert got["tree"]["written"] == 4 and got["bytes_fetched"] == got["size"]
    assert _tree(dest) == _tree(folder) and not (dest / "escape").exists()
    assert os.stat(dest / "run.sh").st_mode & 0o777 == 0o755
    # edit one file (append 1 KiB), rename another (across directories): republish
    with open(folder / "a.bin", "ab") as f:
        f.write(os.urandom(1024))
    (folder / "raw" / "b.bin").rename(folder / "b-moved.bin")
    (folder / "raw").rmdir()
    r2 = a.json("publish", str(folder))
    assert r2["version"] == 2 and r2["files"] == 4
    inode = os.stat(dest / "raw" / "b.bin").st_ino
    upd = b.json("fetch", "album", "--from", a.address, "--to", str(dest))
    assert upd["version"] == 2
    # only the edited file's tail chunk(s) moved: far less than the 1 MiB renamed file
    assert 0 < upd["bytes_fetched"] <= 2 * CHUNK + 1024
    chunks = sum(s["chunks"] for s in upd["sources"].values())
    assert chunks <= 2
    assert upd["tree"]["moved"] == 1 and upd["tree"]["written"] == 1
    assert upd["tree"]["deleted"] == 1 and upd["tree"]["unchanged"] == 2
    assert _tree(dest) == _tree(folder) and not (dest / "raw").exists()
    assert os.stat(dest / "b-moved.bin").st_ino == inode  # renamed locally, not rewritten


def test_folder_update_keeps_local_edits(agents, tmp_path, folder):
    a, b = agents("alpha"), agents("beta")
    pair(a, b)
    a.json("publish", str(folder))
    dest = tmp_path / "copy"
    b.json("fetch", "album", "--from", a.address, "--to", str(dest))
    (dest / "notes.txt").write_text("my own notes\n")  # the user's edit on B
    (folder / "notes.txt").unlink()
    a.json("publish", str(folder))
    res = b.cli("fetch", "album", "--from", a.address, "--to", str(dest))
    assert "kept 1 local file(s): notes.txt" in res.stderr
    assert (dest / "notes.txt").read_text() == "my own notes\n"


def test_fetch_of_a_folder_without_to_says_how(agents, tmp_path, folder):
    a = agents("alpha")
    a.json("publish", str(folder))
    res = a.cli("fetch", "album", "-o", str(tmp_path / "x"), check=False)
    assert res.returncode == 1 and "--to DIR" in res.stderr
    assert not (tmp_path / "x").exists()


def test_watch_republishes_and_survives_restart(agents, tmp_path, folder):
    a = agents("alpha", start=False)
    a.config('[lan]\ninterfaces = ["lo"]\ninclude_loopback = true\n'
             "[watch]\nquiet = 0.2\nmin_interval = 0.0\n")
    a.start()
    r = a.json("publish", str(folder), "--watch")
    assert r["version"] == 1 and r["watch"]["folder"]

    def version() -> int:
        return next(x["version"] for x in a.json("resources", "--local")["local"])

    (folder / "new.txt").write_text("added\n")
    (folder / "draft.txt.swp").write_text("editor swap file: ignored\n")
    wait_until(lambda: version() == 2, 30, "v2 after adding a file")
    files = a.json("resources", "--local")["local"][0]["files"]
    assert files == 5  # new.txt, not the swap file
    a.stop()
    a.start()  # the watch comes back from the state file
    assert [w["path"] for w in a.json("publish", "--watching")] == [str(folder)]
    (folder / "sub").mkdir()
    (folder / "sub" / "deep.txt").write_text("in a new directory\n")
    wait_until(lambda: version() == 3, 30, "v3 after a file in a new directory")
    gone = a.json("unwatch", str(folder))
    assert [g["path"] for g in gone] == [str(folder)]
    assert a.json("publish", "--watching") == []


def test_publish_dir_again_is_announced_to_a_follower(agents, tmp_path, folder):
    """`shoal publish DIR` of a new version tells the paired followers at once, as a file's
    publish does (it did not: a followed folder waited for the next periodic check, ~10 min)."""
    a, b = agents("alpha"), agents("beta")
    pair(a, b)
    r = a.json("publish", str(folder))
    dest = tmp_path / "followed"
    b.json("follow", r["resource_id"], "--to", str(dest))
    wait_until(lambda: _tree(dest) == _tree(folder), 30, "the first version written")
    wait_until(lambda: (b.json("follow")[0]["last"] or {}).get("why") == "first", 30,
               "the check right after following")
    (folder / "notes.txt").write_text("second\n")
    (folder / "raw" / "b.bin").rename(folder / "raw" / "b-renamed.bin")
    assert a.json("publish", str(folder))["version"] == 2
    wait_until(lambda: _tree(dest) == _tree(folder), 30, "the follower's tree at v2")
    assert b.json("follow")[0]["announced"] == 2


def test_a_watched_folder_republished_is_announced_to_a_follower(agents, tmp_path, folder):
    """`publish DIR --watch`: each automatic republish tells the followers at once (the
    watcher only refreshed the catalog: they waited for their periodic check, ~10 min)."""
    a, b = agents("alpha", start=False), agents("beta")
    a.config('[lan]\ninterfaces = ["lo"]\ninclude_loopback = true\n'
             "[watch]\nquiet = 0.2\nmin_interval = 0.0\n")
    a.start()
    pair(a, b)
    r = a.json("publish", str(folder), "--watch")
    dest = tmp_path / "followed"
    b.json("follow", r["resource_id"], "--to", str(dest))
    wait_until(lambda: _tree(dest) == _tree(folder), 30, "the first version written")
    wait_until(lambda: (b.json("follow")[0]["last"] or {}).get("why") == "first", 30,
               "the check right after following")
    (folder / "notes.txt").write_text("edited while watched\n")
    wait_until(lambda: _tree(dest) == _tree(folder), 30, "the follower's tree at v2")
    assert b.json("follow")[0]["announced"] == 2
