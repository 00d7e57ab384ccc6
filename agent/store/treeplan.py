"""What updating an exported folder takes: the pure decision, no I/O (sans-I/O core).

Given the version a destination was last written from (*old*, None the first time), the
version to write (*new*) and what each path holds on disk now (:class:`Local`), decide per
path: keep, write from the store, move an unchanged local file (a rename: no bytes read or
fetched), delete, or leave the user's file alone. The rule that matters: a local file is
replaced or removed only if it still holds what we wrote (the old version's content) or
already holds the new content; anything the user changed or created is kept, and reported.

agent/store/treeapply.py looks at the disk, calls :func:`plan`, and carries the plan out.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.store.manifest import Manifest
from agent.store.tree import chunk_ranges

__all__ = ["Content", "Local", "Plan", "file_contents", "plan"]


class Local(enum.Enum):
    """What a path of the tree holds in the destination now."""

    ABSENT = "absent"          # nothing there (nor a parent directory)
    OLD = "old"                # a regular file with the old version's content
    NEW = "new"                # a regular file with the new version's content already
    DIFFERS = "differs"        # a regular file with other content: the user's
    OTHER = "other"            # a directory, symlink, device...: never touched
    BLOCKED = "blocked"        # a parent component is a file, not a directory


@dataclass(frozen=True)
class Content:
    """One file of a manifest: its chunk ids (the content key), size and mode."""

    key: tuple[bytes, ...]
    size: int
    mode: int


def file_contents(m: Manifest | None) -> dict[str, Content]:
    """Path -> content of every file of a folder manifest (empty for None)."""
    if m is None or m.files is None:
        return {}
    out: dict[str, Content] = {}
    for f, (a, b) in zip(m.files, chunk_ranges(m.files), strict=True):
        out[f.path] = Content(tuple(c.chunk_id for c in m.chunks[a:b]), f.size, f.mode)
    return out


@dataclass
class Plan:
    """The decisions, each list sorted by path."""

    write: list[str] = field(default_factory=list)              # from the store
    move: list[tuple[str, str]] = field(default_factory=list)   # (from, to), local rename
    chmod: list[str] = field(default_factory=list)              # content right, mode not
    delete: list[str] = field(default_factory=list)             # unchanged, gone in new
    kept: list[tuple[str, str]] = field(default_factory=list)   # (path, why): user's
    unchanged: int = 0


def plan(old: Mapping[str, Content], new: Mapping[str, Content],
         local: Mapping[str, Local], *, force: bool = False,
         modes: Mapping[str, int] | None = None) -> Plan:
    """Decide how to turn the destination into *new* (see the module docstring).

    *local* has an entry for every path of *old* and *new* (missing = ABSENT); *modes*
    the current permission bits of paths that are NEW. *force* lets a file the user
    changed (DIFFERS) be replaced by the new content (never a directory or a symlink).
    """
    p = Plan()
    modes = modes or {}

    def state(path: str) -> Local:
        return local.get(path, Local.ABSENT)

    # unchanged local files whose content the new version wants elsewhere: move sources
    sources: dict[tuple[bytes, ...], list[str]] = {}
    for path, c in sorted(old.items()):
        gone_or_changed = path not in new or new[path].key != c.key
        if c.key and gone_or_changed and state(path) is Local.OLD:
            sources.setdefault(c.key, []).append(path)
    for path, c in sorted(new.items()):
        st = state(path)
        if st is Local.NEW:
            p.unchanged += 1
            if modes.get(path, c.mode) != c.mode:
                p.chmod.append(path)
            continue
        writable = (st in (Local.ABSENT, Local.BLOCKED)
                    or (st is Local.OLD and path in old)
                    or (st is Local.DIFFERS and force))
        if not writable:
            why = ("changed here since it was written" if path in old
                   else "not written by Shoal") if st is Local.DIFFERS else (
                "a directory or link is in its place")
            p.kept.append((path, why))
            continue
        movable = sources.get(c.key)
        if movable:
            p.move.append((movable.pop(0), path))
        else:
            p.write.append(path)
    for path in sorted(set(old) - set(new)):
        st = state(path)
        if st is Local.OLD:
            p.delete.append(path)
        elif st in (Local.DIFFERS, Local.OTHER):
            p.kept.append((path, "removed in the new version but changed here: kept"))
    return p
