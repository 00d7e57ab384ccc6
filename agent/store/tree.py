"""Folder manifests: the ``files`` list that turns one resource into a directory tree.

Why the tree lives *inside* an ordinary manifest: every file of the folder is chunked on its
own and the chunks are concatenated, in file order, into the manifest's usual ``chunks``
list. Transfer, multi-source fetch, signatures, version history, delta and dedupe then work
unchanged, and a rename costs no chunk transfer: the same chunks appear under a new path.

Wire form (one more key of the canonical manifest JSON, present only for folders, so a
file manifest's bytes and hash are exactly what they were)::

    "files": [["docs/a.txt", 2, 300000, 420], ["run.sh", 1, 52, 493], ...]

one entry per regular file: ``[relative POSIX path, chunk count, size, mode]``, sorted by
path (code point order), the chunks of entry *i* following those of entry *i - 1*. The
first chunk index is implied by the counts before it (a redundant index would be one more
field that two encodings could disagree on). Mode is 0o644 (420) or 0o755 (493) only: the
executable bit is all a tree carries, never setuid, sticky or group-write.

Everything here parses hostile input: a peer chooses these paths and :func:`check_files`
is what keeps them inside the destination directory on every filesystem we export to.
Empty directories are not kept (as in git): a folder is its files.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.store import _schema as s
from agent.store.errors import ManifestError
from agent.store.names import validate_name

__all__ = [
    "FILE_MODES",
    "MAX_DEPTH",
    "MAX_FILES",
    "MAX_PATH_BYTES",
    "MAX_TOTAL_PATH_BYTES",
    "FileEntry",
    "check_files",
    "file_from_obj",
    "validate_path",
]

#: Files one folder manifest may list (each entry is at least ~20 bytes of JSON).
MAX_FILES = 20_000
#: One relative path, UTF-8 (Linux PATH_MAX is 4096; a quarter leaves room for DEST).
MAX_PATH_BYTES = 1024
#: Every path of one manifest together: with MAX_CHUNKS chunk entries the manifest still
#: fits MAX_MANIFEST_BYTES (checked on the encoding too).
MAX_TOTAL_PATH_BYTES = 1024 * 1024
MAX_DEPTH = 32
MODE_FILE, MODE_EXEC = 0o644, 0o755
FILE_MODES = frozenset({MODE_FILE, MODE_EXEC})


def _component_ok(part: str) -> str | None:
    """Why *part* may not be a path component (None if it may)."""
    if part == "":
        return "an empty component (leading, trailing or doubled '/')"
    try:
        validate_name(part)
    except ManifestError as e:
        return str(e)
    return None


def validate_path(path: object) -> str:
    """Return *path* if it is a safe relative POSIX path inside a tree, else ManifestError.

    Rules: a string of 1..MAX_PATH_BYTES UTF-8 bytes in Unicode NFC (one spelling per name,
    so two entries cannot be the same file on a normalising filesystem), at most MAX_DEPTH
    components separated by '/', each a valid resource name (no '.', '..', '\\', NUL,
    control, bidi or zero-width format characters, <= 255 bytes); hence no absolute path,
    no traversal, no empty component.
    """
    if not isinstance(path, str):
        raise ManifestError(f"path must be a string, got {type(path).__name__}")
    if not path:
        raise ManifestError("path is empty")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise ManifestError(f"path {path[:60]!r}... is longer than {MAX_PATH_BYTES} bytes")
    if path.startswith("/"):
        raise ManifestError(f"path {path[:80]!r} is absolute")
    parts = path.split("/")
    if len(parts) > MAX_DEPTH:
        raise ManifestError(f"path {path[:80]!r} is deeper than {MAX_DEPTH} levels")
    for part in parts:
        why = _component_ok(part)
        if why is not None:
            raise ManifestError(f"path {path[:80]!r}: {why}")
    if unicodedata.normalize("NFC", path) != path:
        raise ManifestError(f"path {path[:80]!r} is not in Unicode NFC")
    return path


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One regular file of a folder: where it goes, how many chunks, how big, its mode."""

    path: str
    chunks: int
    size: int
    mode: int = MODE_FILE

    def __post_init__(self) -> None:
        validate_path(self.path)
        s.check_int(self.chunks, f"{self.path!r} chunk count", 0)
        s.check_int(self.size, f"{self.path!r} size", 0)
        if self.mode not in FILE_MODES or isinstance(self.mode, bool):
            raise ManifestError(f"{self.path!r}: mode must be 0o644 or 0o755, "
                                f"got {self.mode!r}")
        if (self.chunks == 0) != (self.size == 0):
            raise ManifestError(f"{self.path!r}: an empty file has no chunks and only it")

    @property
    def executable(self) -> bool:
        return self.mode == MODE_EXEC

    def to_obj(self) -> list[object]:
        return [self.path, self.chunks, self.size, self.mode]


def file_from_obj(i: int, item: Any) -> FileEntry:
    if not isinstance(item, list) or len(item) != 4:
        raise ManifestError(f"files[{i}] must be [path, chunk count, size, mode]")
    try:
        return FileEntry(item[0], item[1], item[2], item[3])
    except ManifestError as e:
        raise ManifestError(f"files[{i}]: {e}") from None


def fold(path: str) -> str:
    """The key two paths collide under on a case-insensitive, normalising filesystem."""
    return unicodedata.normalize("NFC", path.casefold())


def check_files(files: Sequence[FileEntry], chunk_lengths: Sequence[int]) -> None:
    """The whole-tree rules: ManifestError unless *files* is a well-formed tree over a
    manifest whose chunks have *chunk_lengths*.

    * 1..MAX_FILES entries, strictly sorted by path (hence no duplicates), total path bytes
      bounded;
    * no path is both a file and a directory of another file ("a" and "a/b");
    * case collisions are refused: no two files, no file and a directory, no two spellings
      of one directory may fold to the same key (:func:`fold`). Such a tree would silently
      lose files on FAT (an SD card), exFAT or macOS, so it is never published, and a
      manifest that carries one is rejected rather than half-exported;
    * the chunk counts add up to the chunk list and each file's size is the sum of its
      chunks' lengths.
    """
    if not 1 <= len(files) <= MAX_FILES:
        raise ManifestError(f"a folder lists 1..{MAX_FILES} files, got {len(files)}")
    total_bytes = 0
    prev: str | None = None
    file_keys: dict[str, str] = {}
    dir_keys: dict[str, str] = {}
    at = 0
    for i, f in enumerate(files):
        if not isinstance(f, FileEntry):
            raise ManifestError(f"files[{i}] is not a FileEntry")
        if prev is not None and not prev < f.path:
            raise ManifestError(f"files[{i}] {f.path[:80]!r} is not sorted after "
                                f"{prev[:80]!r} (or repeats it)")
        prev = f.path
        total_bytes += len(f.path.encode("utf-8"))
        if total_bytes > MAX_TOTAL_PATH_BYTES:
            raise ManifestError(f"the folder's paths exceed {MAX_TOTAL_PATH_BYTES} bytes")
        key = fold(f.path)
        if key in file_keys:
            raise ManifestError(f"files {file_keys[key][:80]!r} and {f.path[:80]!r} differ "
                                "only in case or normalisation")
        file_keys[key] = f.path
        parts = f.path.split("/")
        for depth in range(1, len(parts)):
            d = "/".join(parts[:depth])
            dkey = fold(d)
            seen = dir_keys.setdefault(dkey, d)
            if seen != d:
                raise ManifestError(f"directories {seen[:80]!r} and {d[:80]!r} differ only "
                                    "in case or normalisation")
        if at + f.chunks > len(chunk_lengths):
            raise ManifestError(f"files[{i}] {f.path[:80]!r} runs past the chunk list")
        size = sum(chunk_lengths[at:at + f.chunks])
        if size != f.size:
            raise ManifestError(f"files[{i}] {f.path[:80]!r}: chunks sum to {size} bytes, "
                                f"entry says {f.size}")
        at += f.chunks
    if at != len(chunk_lengths):
        raise ManifestError(f"the files cover {at} chunks, the manifest has "
                            f"{len(chunk_lengths)}")
    for key, path in file_keys.items():
        if key in dir_keys:
            d = dir_keys[key]
            raise ManifestError(f"{path[:80]!r} is a file and also the directory "
                                f"{d[:80]!r} of another file")


def chunk_ranges(files: Sequence[FileEntry]) -> list[tuple[int, int]]:
    """(first chunk index, end index) of each file, in order."""
    out: list[tuple[int, int]] = []
    at = 0
    for f in files:
        out.append((at, at + f.chunks))
        at += f.chunks
    return out
