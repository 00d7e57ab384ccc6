"""Manifest deltas: a new version's manifest as the changes from one the asker holds.

Why: a follower that holds v3 and syncs v4 of a 256 MiB resource received the whole v4
manifest (~1,050 chunk entries, ~72 KiB) for a one-byte edit whose changed chunk travels as
a 17-byte chunk delta: the manifest was nearly all of the bytes (docs/benchmarks.md, "Delta
sync"). The asker names the manifest it holds (``manifest`` request, ``base``); the holder
may answer with the new version's fields and its chunk list as runs copied from the base's
list plus the new entries. The asker rebuilds the canonical manifest text, and everything
after is as for a whole manifest: the text must parse strictly, and the publisher's
signature (which covers the rebuilt bytes) must verify, so a wrong or lying delta is an
invalid offer, never a different resource. Pure functions, no I/O.

Form (JSON)::

    {"base": "<64 hex>", "fields": {every manifest key but "chunks"},
     "ops": [[start, count] | ["<64 hex chunk id>", length], ...]}

``[start, count]`` copies ``count`` entries of the base's list from ``start``; a
``[hex, length]`` pair is one new entry.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from agent.store import Manifest, ManifestError
from agent.store.manifest import MAX_CHUNKS

if TYPE_CHECKING:
    from agent.store import ChunkEntry

__all__ = ["apply", "encode"]

#: Longer chunk lists go whole: the diff is quadratic at worst, and it runs on the sender.
MAX_DIFFED = 20_000
_FIELDS = ("avg_chunk_size", "created", "name", "parent", "public", "publisher",
           "resource_id", "size", "version")


def encode(base: Manifest, new: Manifest) -> dict[str, Any] | None:
    """*new* as a delta against *base* (same resource), or None if it would not be at most
    half the size of the whole manifest."""
    if (base.resource_id != new.resource_id or base.publisher != new.publisher
            or max(len(base.chunks), len(new.chunks)) > MAX_DIFFED):
        return None
    a = [c.chunk_id for c in base.chunks]
    b = [c.chunk_id for c in new.chunks]
    ops: list[list[Any]] = []
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            ops.append([i1, i2 - i1])
        elif tag in ("replace", "insert"):
            ops.extend(_entry(c) for c in new.chunks[j1:j2])
    obj = new.to_obj()
    # a folder's file list goes whole (paths change on a rename; chunks are what is diffed)
    out = {"base": base.manifest_hash,
           "fields": {k: obj[k] for k in (*_FIELDS, "files") if k in obj}, "ops": ops}
    new_entries = sum(1 for op in ops if isinstance(op[0], str))
    if new_entries * 2 > len(b) and len(b) > 8:
        return None  # mostly new: the whole manifest is as small
    return out


def _entry(c: ChunkEntry) -> list[Any]:
    return [c.chunk_id.hex(), c.length]


def apply(base: Manifest, obj: object) -> bytes:
    """The canonical manifest text the delta describes (ManifestError if malformed); the
    caller parses it and verifies its signature as for any offered manifest."""
    if not isinstance(obj, dict) or set(obj) != {"base", "fields", "ops"}:
        raise ManifestError("manifest delta must be {base, fields, ops}")
    if obj["base"] != base.manifest_hash:
        raise ManifestError("manifest delta is against another manifest")
    fields, ops = obj["fields"], obj["ops"]
    if not isinstance(fields, dict) or set(fields) - {"files"} != set(_FIELDS):
        raise ManifestError("manifest delta: fields must be every manifest key but chunks "
                            "(and a folder's files)")
    if not isinstance(ops, list) or len(ops) > MAX_CHUNKS:
        raise ManifestError("manifest delta: ops must be a list of at most "
                            f"{MAX_CHUNKS} entries")
    chunks: list[list[Any]] = []
    for op in ops:
        if not isinstance(op, list) or len(op) != 2:
            raise ManifestError("manifest delta: each op is a pair")
        start, n = op
        if isinstance(start, str):
            chunks.append([start, n])  # checked by Manifest.from_obj below
        elif (isinstance(start, int) and isinstance(n, int) and not isinstance(start, bool)
              and not isinstance(n, bool) and start >= 0 and n > 0
              and start + n <= len(base.chunks)):
            chunks.extend(_entry(c) for c in base.chunks[start:start + n])
        else:
            raise ManifestError("manifest delta: a copy outside the base")
        if len(chunks) > MAX_CHUNKS:
            raise ManifestError(f"manifest delta: more than {MAX_CHUNKS} chunks")
    return Manifest.from_obj(dict(fields, chunks=chunks)).to_bytes()
