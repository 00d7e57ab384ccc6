"""Chunk deltas: send a changed chunk as the difference from a chunk the receiver holds.

Why: content-defined chunking already makes a new version cost only the chunks that
changed, but a changed chunk is 256 KiB on average, so a one-byte edit moved 256 KiB (and
ten scattered 4 KiB rewrites moved ~2.5 MiB, ten times rsync's bytes). The receiver names,
for each chunk it lacks, the chunk of its older version that covered the same offset (the
*base*); a sender holding that base answers with the bytes that differ. An edit inside a
chunk leaves a common prefix and a common suffix, so the delta is ``(prefix, suffix,
middle)``: a few bytes for an insert, the rewritten bytes for a rewrite.

Nothing here is trusted: :func:`apply` bounds every length, and the receiver hashes the
rebuilt chunk against its ID before storing it (``store.put_chunk``), as for a whole chunk.
Pure functions, no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.store import Manifest

__all__ = ["DeltaError", "apply", "bases_for", "encode"]

_HDR = struct.Struct(">II")  # prefix length, suffix length
_BLOCK = 4096
#: A delta is sent only when it saves at least this fraction of the chunk.
MIN_SAVING = 0.25


class DeltaError(ValueError):
    """A delta that does not fit its base (malformed, or for another base)."""


def _common_prefix(a: memoryview, b: memoryview) -> int:
    n = min(len(a), len(b))
    i = 0
    while i + _BLOCK <= n and a[i:i + _BLOCK] == b[i:i + _BLOCK]:  # C-speed block compare
        i += _BLOCK
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _common_suffix(a: memoryview, b: memoryview, limit: int) -> int:
    i = 0
    la, lb = len(a), len(b)
    while i + _BLOCK <= limit and a[la - i - _BLOCK:la - i] == b[lb - i - _BLOCK:lb - i]:
        i += _BLOCK
    while i < limit and a[la - i - 1] == b[lb - i - 1]:
        i += 1
    return i


def encode(base: bytes | memoryview, new: bytes | memoryview) -> bytes | None:
    """The delta that turns *base* into *new*, or None when it would not save enough."""
    a, b = memoryview(base).cast("B"), memoryview(new).cast("B")
    prefix = _common_prefix(a, b)
    suffix = _common_suffix(a, b, min(len(a), len(b)) - prefix)
    middle = b[prefix:len(b) - suffix]
    if _HDR.size + len(middle) > len(b) * (1 - MIN_SAVING):
        return None
    return _HDR.pack(prefix, suffix) + bytes(middle)


def apply(base: bytes | memoryview, delta: bytes | memoryview, max_len: int) -> bytes:
    """Rebuild the chunk from *base* and *delta* (at most *max_len* bytes); DeltaError if
    the delta does not fit. The caller still verifies the result's hash."""
    d = memoryview(delta).cast("B")
    if len(d) < _HDR.size:
        raise DeltaError("truncated delta")
    prefix, suffix = _HDR.unpack_from(d)
    if prefix + suffix > len(base):
        raise DeltaError("delta reaches past its base")
    middle = d[_HDR.size:]
    if prefix + len(middle) + suffix > max_len:
        raise DeltaError("delta rebuilds an oversized chunk")
    b = memoryview(base).cast("B")
    return b"".join((b[:prefix], middle, b[len(b) - suffix:]))


def bases_for(old: Manifest, new: Manifest,
              held: Callable[[bytes], bool]) -> dict[bytes, bytes]:
    """For each chunk of *new* that *old* lacks: the chunk of *old* (held here, per *held*)
    that covered the same byte offset; past the old end, the old last chunk (an append).

    Content-defined cuts realign right after an edit, so the changed chunk starts where
    the old chunk covering the edit started: that old chunk is the best base.
    """
    old_ids = {c.chunk_id for c in old.chunks}
    starts: list[tuple[int, bytes]] = []
    off = 0
    for c in old.chunks:
        starts.append((off, c.chunk_id))
        off += c.length
    if not starts:
        return {}
    out: dict[bytes, bytes] = {}
    j = 0
    pos = 0
    for c in new.chunks:
        if c.chunk_id not in old_ids and c.chunk_id not in out:
            while j + 1 < len(starts) and starts[j + 1][0] <= pos:
                j += 1
            base = starts[j][1]
            if held(base):
                out[c.chunk_id] = base
        pos += c.length
    return out
