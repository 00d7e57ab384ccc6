"""Chunk deltas: send a changed chunk as the difference from a chunk the receiver holds.

Why: content-defined chunking already makes a new version cost only the chunks that
changed, but a changed chunk is 256 KiB on average, so a one-byte edit moved 256 KiB (and
ten scattered 4 KiB rewrites moved ~2.5 MiB, ten times rsync's bytes). The receiver names,
for each chunk it lacks, the chunks of its older version that covered the same offsets (the
*base*, 1 to :data:`MAX_BASES` chunks, concatenated); a sender holding them answers with the
bytes that differ. An edit inside a chunk leaves a common prefix and a common suffix, so the
delta is two copies from the base and the literal bytes between them:
``base[p:p + plen] + middle + base[s:s + slen]``. The copies need not start at the base's
start or end at its end: an edit that moved a cut point (a new cut inside an old chunk, or two
old chunks merged into one) still costs only its own bytes.

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

#: prefix offset and length in the base, suffix offset and length in the base
_HDR = struct.Struct(">IIII")
#: Bytes of the new chunk's start/end looked up in the base when they are not its start/end
_PROBE = 64
#: Old chunks one base may concatenate (an edit that removed up to two cut points).
MAX_BASES = 3
_BLOCK = 4096
#: A delta is sent only when it saves at least this many bytes (it costs the sender a read
#: of the base; any real saving on the link is worth that).
MIN_SAVING = 256


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


def _locate(a: bytes, probe: bytes, last: bool) -> int:
    """Where *probe* occurs in *a* (the last occurrence if *last*), or -1."""
    return a.rfind(probe) if last else a.find(probe)


def encode(base: bytes | memoryview, new: bytes | memoryview,
           ends: tuple[int, ...] | None = None) -> bytes | None:
    """The delta that turns *base* into *new*, or None when it would not save enough.

    Two copies from the base and the literal bytes between them: the longest common
    prefix, from the base's start or, when the new chunk starts elsewhere in the base (a
    new cut point inside an old chunk), from where its first bytes occur; the longest
    common suffix, ending at a chunk end in *ends* (default the base's end) or where the new
    chunk's last bytes occur."""
    a, b = bytes(base), memoryview(new).cast("B")
    av = memoryview(a)
    n = len(b)
    prefix, p_off = _common_prefix(av, b), 0
    if prefix < _PROBE <= n:
        at = _locate(a, bytes(b[:_PROBE]), last=False)
        if at > 0:
            p_len = _common_prefix(av[at:], b)
            if p_len > prefix:
                prefix, p_off = p_len, at
    candidates = [e for e in (ends or (len(a),)) if 0 < e <= len(a)]
    if n >= _PROBE:
        at = _locate(a, bytes(b[n - _PROBE:]), last=True)
        if at >= 0:
            candidates.append(at + _PROBE)
    suffix, s_end = 0, len(a)
    for end in candidates:
        k = _common_suffix(av[:end], b, min(end, n - prefix))
        if k > suffix:
            suffix, s_end = k, end
    middle = b[prefix:n - suffix]
    if _HDR.size + len(middle) > n - MIN_SAVING:
        return None
    return _HDR.pack(p_off, prefix, s_end - suffix, suffix) + bytes(middle)


def apply(base: bytes | memoryview, delta: bytes | memoryview, max_len: int) -> bytes:
    """Rebuild the chunk from *base* and *delta* (at most *max_len* bytes); DeltaError if
    the delta does not fit. The caller still verifies the result's hash."""
    d = memoryview(delta).cast("B")
    if len(d) < _HDR.size:
        raise DeltaError("truncated delta")
    p_off, prefix, s_off, suffix = _HDR.unpack_from(d)
    if p_off + prefix > len(base) or s_off + suffix > len(base):
        raise DeltaError("delta reaches past its base")
    middle = d[_HDR.size:]
    if prefix + len(middle) + suffix > max_len:
        raise DeltaError("delta rebuilds an oversized chunk")
    b = memoryview(base).cast("B")
    return b"".join((b[p_off:p_off + prefix], middle, b[s_off:s_off + suffix]))


def bases_for(old: Manifest, new: Manifest,
              held: Callable[[bytes], bool]) -> dict[bytes, tuple[bytes, ...]]:
    """For each chunk of *new* that *old* lacks: the chunks of *old* (held here, per *held*)
    that covered the same byte range — the one covering its start, and the following ones
    while they start inside its length (at most MAX_BASES); past the old end, the old last
    chunk (an append).

    Content-defined cuts realign right after an edit, so the changed chunk starts where
    the old chunk covering the edit started; if the edit removed a cut, the new chunk also
    spans the next old chunk, whose end the suffix then matches.
    """
    old_ids = {c.chunk_id for c in old.chunks}
    starts: list[tuple[int, bytes]] = []
    off = 0
    for c in old.chunks:
        starts.append((off, c.chunk_id))
        off += c.length
    if not starts:
        return {}
    out: dict[bytes, tuple[bytes, ...]] = {}
    j = 0
    pos = 0
    for c in new.chunks:
        if c.chunk_id not in old_ids and c.chunk_id not in out:
            while j + 1 < len(starts) and starts[j + 1][0] <= pos:
                j += 1
            group = [starts[j][1]]
            k = j + 1
            while (k < len(starts) and len(group) < MAX_BASES
                   and starts[k][0] < pos + c.length):
                group.append(starts[k][1])
                k += 1
            while group and not held(group[-1]):
                group.pop()
            if group and all(held(g) for g in group):
                out[c.chunk_id] = tuple(group)
        pos += c.length
    return out
