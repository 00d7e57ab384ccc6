"""Folder manifests (agent/store/tree.py): the ``files`` list is hostile input. Every bad
path in the table is refused, a good tree round-trips, and a file manifest is unchanged."""

from __future__ import annotations

import json
from typing import Any

import pytest
from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st
from store_helpers import PUBLISHER

from agent.store import ChunkEntry, Manifest, ManifestError
from agent.store.tree import MAX_DEPTH, MAX_FILES, FileEntry, validate_path

CIDS = [blake3(bytes([i])).digest() for i in range(8)]


def make(files: Any = None, chunks: tuple[ChunkEntry, ...] | None = None,
         **over: Any) -> Manifest:
    chunks = chunks if chunks is not None else (ChunkEntry(CIDS[0], 10),
                                                ChunkEntry(CIDS[1], 20))
    fields: dict[str, Any] = dict(
        resource_id="12" * 16, name="album", version=1, size=sum(c.length for c in chunks),
        avg_chunk_size=64 * 1024, chunks=chunks, created=1_700_000_000.25,
        publisher=PUBLISHER, public=False, parent=None, files=files)
    fields.update(over)
    return Manifest(**fields)


def tree(*paths: str) -> tuple[FileEntry, ...]:
    """One 10-byte and one 20-byte file by default: the two chunks of make()."""
    sizes = [10, 20]
    return tuple(FileEntry(p, 1, sizes[i], 0o644) for i, p in enumerate(paths))


def test_file_manifest_bytes_and_hash_are_unchanged() -> None:
    # a manifest from before folders existed: its exact bytes parse, re-encode identically
    # and keep their hash (no "files" key is added)
    old = make()
    data = old.to_bytes()
    assert b'"files"' not in data
    assert Manifest.from_bytes(data).manifest_hash == blake3(data).hexdigest()
    assert old.version_record() == {
        "manifest": old.manifest_hash, "name": "album", "public": False,
        "publisher": PUBLISHER, "resource_id": "12" * 16, "size": 30, "version": 1}


def test_folder_round_trips_canonically() -> None:
    m = make(tree("docs/a.txt", "z.sh"))
    data = m.to_bytes()
    assert b'"files":[["docs/a.txt",1,10,420],["z.sh",1,20,420]]' in data
    back = Manifest.from_bytes(data)
    assert back == m and back.files == m.files and back.is_folder
    assert back.version_record()["files"] == 2
    assert make(tree("a", "b")).manifest_hash != make(tree("a", "c")).manifest_hash


BAD_PATHS = [
    ("", "empty"),
    ("/etc/passwd", "absolute"),
    ("../up", "traversal"),
    ("a/../../b", "traversal inside"),
    ("a/./b", "dot component"),
    (".", "dot"),
    ("a//b", "empty component"),
    ("a/", "trailing slash"),
    ("a\\b", "backslash"),
    ("a\x00b", "NUL"),
    ("a\nb", "newline"),
    ("a\x1b[31mb", "terminal escape"),
    ("evil\u202etxt.exe", "bidi override"),
    ("zero\u200bwidth", "zero-width space"),
    ("cafe\u0301", "not NFC"),
    ("x" * 256, "component over 255 bytes"),
    ("/".join(["d"] * (MAX_DEPTH + 1)), "too deep"),
    ("/".join(["y" * 200] * 6), "path over 1024 bytes"),
    (42, "not a string"),
]


@pytest.mark.parametrize(("path", "why"), BAD_PATHS, ids=[w for _, w in BAD_PATHS])
def test_hostile_path_is_refused(path: Any, why: str) -> None:
    with pytest.raises(ManifestError):
        validate_path(path)
    # and through the parser, as a peer would send it
    obj = json.loads(make(tree("a", "b")).to_bytes())
    obj["files"][0][0] = path
    obj["files"].sort(key=lambda f: str(f[0]))
    with pytest.raises(ManifestError):
        Manifest.from_obj(obj)


BAD_TREES = [
    (["b", "a"], "not sorted"),
    (["a", "a"], "duplicate"),
    (["a", "a/b"], "file and directory"),
    (["A", "a"], "case collision"),
    (["D/x", "d/y"], "directory case collision"),
    (["a", "A/b"], "file folds to a directory"),
    (["Stra\u00dfe", "strasse"], "casefold collision"),
]


@pytest.mark.parametrize(("paths", "why"), BAD_TREES, ids=[w for _, w in BAD_TREES])
def test_bad_tree_is_refused(paths: list[str], why: str) -> None:
    with pytest.raises(ManifestError):
        make(tuple(FileEntry(p, 1, n, 0o644) for p, n in zip(paths, [10, 20], strict=True)))


@pytest.mark.parametrize(("entry", "why"), [
    (["a", 1, 10, 0o4755], "setuid mode"),
    (["a", 1, 10, 0o666], "group/other writable"),
    (["a", 1, 10, True], "bool mode"),
    (["a", 1, 11, 0o644], "size does not match its chunks"),
    (["a", 2, 30, 0o644], "runs past the chunk list"),
    (["a", 0, 10, 0o644], "no chunks but a size"),
    (["a", -1, 10, 0o644], "negative count"),
    (["a", 1, 10], "three fields"),
    ("a", "not a list"),
])
def test_bad_file_entry_is_refused(entry: Any, why: str) -> None:
    obj = json.loads(make(tree("a", "b")).to_bytes())
    obj["files"][0] = entry
    with pytest.raises(ManifestError):
        Manifest.from_obj(obj)


def test_files_must_cover_every_chunk() -> None:
    with pytest.raises(ManifestError, match="cover 1 chunks"):
        make((FileEntry("a", 1, 10, 0o644),))
    with pytest.raises(ManifestError):
        make(())  # a folder lists at least one file


def test_empty_files_and_limits() -> None:
    m = make((FileEntry("a", 1, 10, 0o644), FileEntry("empty", 0, 0, 0o755),
              FileEntry("z", 1, 20, 0o644)))
    assert Manifest.from_bytes(m.to_bytes()).files == m.files
    obj = json.loads(m.to_bytes())
    obj["files"] = [["f", 0, 0, 420]] * (MAX_FILES + 1)
    with pytest.raises(ManifestError, match="limit"):
        Manifest.from_obj(obj)


def test_unknown_key_next_to_files_is_refused() -> None:
    obj = json.loads(make(tree("a", "b")).to_bytes())
    obj["dirs"] = []
    with pytest.raises(ManifestError, match="unexpected dirs"):
        Manifest.from_obj(obj)


_path_chars = st.sampled_from([*"aAbB/.\\\x00\x1b\u202e\u0301é ß-_", "..", "SS"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.lists(_path_chars, min_size=0, max_size=12).map("".join),
                          st.integers(-1, 3), st.integers(-1, 40),
                          st.sampled_from([420, 493, 511, 2541, True, "420"])),
                max_size=6))
def test_any_files_list_parses_or_is_refused_cleanly(entries: list[Any]) -> None:
    """Whatever a peer puts in ``files``: a ManifestError, or a tree that round-trips
    byte for byte and whose every path passes the path rules."""
    obj = json.loads(make(tree("a", "b")).to_bytes())
    obj["files"] = [list(e) for e in entries]
    try:
        m = Manifest.from_obj(obj)
    except ManifestError:
        return
    assert Manifest.from_bytes(m.to_bytes()) == m
    for f in m.files or ():
        assert validate_path(f.path) == f.path


def test_a_folder_manifest_stays_within_the_manifest_size_bound() -> None:
    """MAX_CHUNKS chunk entries alone fit MAX_MANIFEST_BYTES; a folder's paths on top of
    them must not push the encoding past it."""
    from agent.store.manifest import MAX_CHUNKS, MAX_MANIFEST_BYTES

    n_files = MAX_FILES
    per = MAX_CHUNKS // n_files
    chunks = tuple(ChunkEntry(blake3(i.to_bytes(4, "big")).digest(), 100_000)
                   for i in range(per * n_files))
    files = tuple(FileEntry(f"{i:05d}-" + "p" * 44, per, per * 100_000, 0o644)  # 1 MB paths
                  for i in range(n_files))
    with pytest.raises(ManifestError, match=f"limit is {MAX_MANIFEST_BYTES}"):
        make(files, chunks=chunks)
