"""Reading a local directory as a folder resource: which files it holds, and which it skips.

Why its own module: publishing and watching must agree on exactly which files make up a
folder (a temp file an editor leaves behind must neither be published nor trigger a new
version), and the walk is where a local tree meets the hostile-path rules of
agent/store/tree.py. Symbolic links are never followed (neither to files nor to
directories: a link could point anywhere on the device), devices, FIFOs and sockets are
skipped, and every skip is reported so the caller can warn once.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from agent.fsutil import TMP_PREFIX
from agent.store.errors import ManifestError, StoreError
from agent.store.tree import MAX_DEPTH, MAX_FILES, MODE_EXEC, MODE_FILE, fold, validate_path

__all__ = ["IGNORED_SUFFIXES", "LocalFile", "Scan", "ignored", "scan_tree"]

#: Names that are someone's work in progress, never content: our own temp files, editors'
#: swap/backup/lock files, browsers' and downloaders' partial files.
IGNORED_PREFIXES = (TMP_PREFIX, ".shoal-tmp-", ".#", ".~lock.")
IGNORED_SUFFIXES = (".swp", ".swx", ".swo", "~", ".part", ".partial", ".crdownload",
                    ".tmp", ".download")
#: Skips listed by name in a Scan (more are only counted): a warning stays one short line.
MAX_SKIPS_LISTED = 20


def ignored(name: str) -> bool:
    """A temp or partial file by its name (see IGNORED_PREFIXES / IGNORED_SUFFIXES)."""
    return name.startswith(IGNORED_PREFIXES) or name.endswith(IGNORED_SUFFIXES)


@dataclass(frozen=True)
class LocalFile:
    """One regular file to publish: its path in the tree, on disk, and its mode."""

    rel: str
    path: Path
    mode: int


@dataclass
class Scan:
    files: list[LocalFile] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "rel (why)", at most MAX_SKIPS_LISTED
    skipped_count: int = 0
    dirs: int = 0

    def skip(self, rel: str, why: str) -> None:
        self.skipped_count += 1
        if len(self.skipped) < MAX_SKIPS_LISTED:
            self.skipped.append(f"{rel} ({why})")


def _entries(d: Path) -> Iterator[os.DirEntry[str]]:
    with os.scandir(d) as it:
        yield from sorted(it, key=lambda e: e.name)


def scan_tree(root: Path, exclude: Collection[Path] = ()) -> Scan:
    """The regular files under *root*, sorted by tree path, and what was skipped.

    Directories in *exclude* (the agent's data directory: its private key and store must
    never be published, even from a folder that contains them) are skipped, matched by
    device and inode so no spelling of the path gets around it.

    StoreError if *root* is not a directory, holds more than MAX_FILES files, or two of its
    paths collide on a case-insensitive filesystem (such a tree could not be exported
    everywhere: agent/store/tree.py). A name that is not a valid path component (control
    characters, not NFC, too long) is skipped with a reason, like a symlink.
    """
    try:
        st = os.stat(root, follow_symlinks=False)
    except OSError as err:
        raise StoreError(f"{root}: {err.strerror or err}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StoreError(f"{root} is not a directory")
    out = Scan()
    excluded: set[tuple[int, int]] = set()
    for x in exclude:
        try:
            xs = os.stat(x)
        except OSError:
            continue
        excluded.add((xs.st_dev, xs.st_ino))
    if (st.st_dev, st.st_ino) in excluded:
        raise StoreError(f"{root} is the agent's own data directory")
    keys: dict[str, str] = {}
    stack: list[tuple[Path, str, int]] = [(root, "", 0)]
    while stack:
        d, prefix, depth = stack.pop()
        out.dirs += 1
        try:
            entries = list(_entries(d))
        except OSError as err:
            out.skip(prefix or ".", err.strerror or "unreadable")
            continue
        for e in entries:
            rel = f"{prefix}{e.name}"
            if ignored(e.name):
                continue
            try:
                validate_path(rel)
            except ManifestError as err:
                out.skip(rel, str(err).split(": ", 1)[-1])
                continue
            try:
                est = e.stat(follow_symlinks=False)
            except OSError as err:
                out.skip(rel, err.strerror or "unreadable")
                continue
            if stat.S_ISLNK(est.st_mode):
                out.skip(rel, "symbolic link, not followed")
            elif stat.S_ISDIR(est.st_mode):
                if (est.st_dev, est.st_ino) in excluded:
                    out.skip(rel, "the agent's data directory")
                elif depth + 1 >= MAX_DEPTH:
                    out.skip(rel, f"deeper than {MAX_DEPTH} levels")
                else:
                    _claim(keys, rel)
                    stack.append((Path(e.path), rel + "/", depth + 1))
            elif stat.S_ISREG(est.st_mode):
                _claim(keys, rel)
                out.files.append(LocalFile(rel, Path(e.path),
                                           MODE_EXEC if est.st_mode & 0o100 else MODE_FILE))
                if len(out.files) > MAX_FILES:
                    raise StoreError(f"{root} holds more than {MAX_FILES} files; publish a "
                                     "smaller folder")
            else:
                out.skip(rel, "not a regular file (device, FIFO or socket)")
    out.files.sort(key=lambda f: f.rel)
    return out


def _claim(keys: dict[str, str], rel: str) -> None:
    key = fold(rel)
    other = keys.setdefault(key, rel)
    if other != rel:
        raise StoreError(f"{other!r} and {rel!r} differ only in case: the folder could not be "
                         "written on FAT or macOS; rename one of them")
