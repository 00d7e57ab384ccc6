"""A compact first-order successor table: each resource remembers the one resource that
usually follows it, in about 13 bytes, in a table sized by a memory budget.

Why: a server of scripted scans (the OPeNDAP trace: 93k tiles, scanned again and again by
a few clients in the same order) is predicted almost perfectly by first-order Markov, but
only if the table holds a context per tile; the general tables (:mod:`agent.predict.base`,
a list of successors and a Python object per context, ~600 bytes) hold 1,000 in 1 MB. Here a
context costs a 64-bit key (a BLAKE2b hash of its name: stable across runs, unlike
``hash()``), a 32-bit successor code and an 8-bit counter, in three flat arrays. The
successor is stored *relative to the context*: when the two names differ in one number (the
usual case in a scan: ``..._N60W134`` -> ``..._N60W135``) the code is that number's position
and delta; other successors are kept by name in a small bounded side table (row ends, a
switch of product).

One best successor per context, kept by a majority vote (Misra-Gries with one counter): the
same successor again adds one, another one takes one away and replaces it at zero. Its
score is the device's own decayed record of right guesses (as :mod:`agent.predict.stride`
keeps), with the table's ``count / (count + 1)`` as a prior worth one guess:
``(hits + c / (c + 1)) / (tries + 1)``. A scanning client earns confidence, a browsing one,
for whom the next request is a coin toss, does not. With a *gate* the table answers only
devices whose record is at least that: the regime switch that lets a blend add it for
scanners without costing browsers precision. The table is 4-way set associative: a context's four
candidate slots follow from its hash, and a new context takes the one with the lowest count
(ties: the last), so eviction is bounded and costs nothing to maintain (2-way lost two
points of hit ratio on OPeNDAP to conflicts at the same budget). Pure and
deterministic: the same observations give the same predictions in every process.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Container

from agent.predict.base import Ranked, deep_size
from agent.predict.stride import MAX_DIGITS, _render, _split, step

SLOT_BYTES = 2 + 4 + 1  # key tag, successor code, counter
GATE_TRIES = 3.0  # decayed guesses a device needs before the gate can open
RECORD_DECAY = 0.9  # the device's record of right guesses ages like stride's
WAYS = 4  # slots a context may take: fewer conflicts than 2-way at the same budget
_DELTA_BIAS = 1 << 19  # deltas in (-2^19, 2^19) are encoded; larger ones are edits or names
_EDIT = 1 << 31  # the code's top bit: a short text edit rather than a number's step
_BY_NAME = 0xFFFFFFFF  # what _encode returns; stored as _NAMED | ring index
_NAMED = _EDIT | 0xFFFF << 15  # an edit whose middle is 0xFFFF (never UTF-8) names the ring
_NAMED_INDEX = (1 << 15) - 1
MAX_NAMED = 1 << 15


def _is_named(code: int) -> bool:
    return code & _NAMED == _NAMED


def _key(name: str) -> int:
    """A stable unsigned 64-bit key for *name*: its low bits pick the set, its top 16 bits
    are the tag kept in the slot (0 is reserved for an empty slot)."""
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8", "surrogatepass"),
                                          digest_size=8).digest(), "little")


def _tag(key: int) -> int:
    return (key >> 48) or 1


def _diff(prev: str, cur: str) -> bytes:
    """*cur* as an edit of *prev*: common prefix and suffix lengths, then the middle."""
    n = min(len(prev), len(cur), 0xFFFF)
    p = 0
    while p < n and prev[p] == cur[p]:
        p += 1
    q = 0
    while q < n - p and prev[-1 - q] == cur[-1 - q]:
        q += 1
    middle = cur[p:len(cur) - q].encode("utf-8", "surrogatepass")
    return p.to_bytes(2, "big") + q.to_bytes(2, "big") + middle


def _undiff(prev: str, blob: bytes) -> str:
    p, q = int.from_bytes(blob[:2], "big"), int.from_bytes(blob[2:4], "big")
    middle = blob[4:].decode("utf-8", "surrogatepass")
    return prev[:p] + middle + (prev[len(prev) - q:] if q else "")


def _next_stride(prev: str, cur: str) -> str | None:
    """The name after *cur* if the device keeps stepping as it did from *prev*."""
    parts = _split(cur)
    found = step(_split(prev), parts)
    if found is None:
        return None
    where, delta = found
    return _render(parts, where, int(parts[where]) + delta)


class Successor:
    """Mesh-wide, budget-sized first-order table; per-device last request."""

    def __init__(self, budget_bytes: int = 1 << 20, *, max_named: int = 4096,
                 max_devices: int = 4096, gate: float = 0.0, skip_stride: bool = False,
                 name: str = "successor") -> None:
        slots = budget_bytes // SLOT_BYTES
        if slots < 2 or not 1 <= max_named <= MAX_NAMED or max_devices < 1:
            raise ValueError("successor bounds: budget >= 14 bytes, max_named in 1..32768, "
                             "max_devices >= 1")
        self.name = name
        self.gate = gate  # answer only devices whose record is at least this (0: always)
        self.skip_stride = skip_stride  # learn only what a stride would not have guessed
        self.sets = max(1, slots // WAYS)
        self.keys = array("H", bytes(2 * WAYS * self.sets))
        self.codes = array("I", bytes(4 * WAYS * self.sets))
        self.counts = array("B", bytes(WAYS * self.sets))
        self.max_named = max_named
        # successors by name, a ring of the newest: the context's tag, then the successor as
        # an edit of the context's name (_diff: a row end in a scan changes a few characters
        # of a 100-character URL); a slot refers to its entry by index
        self.named: list[bytes | None] = [None] * max_named
        self._next_named = 0
        self.max_devices = max_devices
        # device -> (last name, its key, predicted next name, decayed hits, decayed tries,
        # the next name a stride would guess)
        self._last: OrderedDict[
            str, tuple[str, int, str | None, float, float, str | None]] = OrderedDict()

    def _slot(self, key: int, create: bool) -> int:
        ways = WAYS
        base = ways * ((key & 0xFFFFFFFFFFFF) % self.sets)
        keys = self.keys
        tag = _tag(key)
        for i in range(base, base + ways):
            if keys[i] == tag:
                return i
        if not create:
            return -1
        counts = self.counts
        i = min(range(base, base + ways), key=lambda j: (counts[j], -j))
        keys[i] = tag
        self.codes[i] = 0
        counts[i] = 0
        return i

    @staticmethod
    def _encode(prev: str, cur: str) -> int:
        """*cur* relative to *prev* in 32 bits: a one-number step (top bit 0: the number's
        position and delta) or a short edit (top bit 1: :func:`_diff`'s prefix and suffix
        lengths and up to 2 bytes of middle); _BY_NAME when neither fits."""
        found = step(_split(prev), _split(cur))
        if found is not None:
            where, delta = found
            if where < 1 << 11 and abs(delta) < _DELTA_BIAS:
                return (where << 20) | (delta + _DELTA_BIAS)
        blob = _diff(prev, cur)
        p, q, middle = int.from_bytes(blob[:2], "big"), int.from_bytes(blob[2:4], "big"), blob[4:]
        if p > 0xFF or q > 0x7F or len(middle) > 2 or 0 in middle:
            return _BY_NAME
        return _EDIT | p | q << 8 | int.from_bytes(middle, "little") << 15

    def _decode(self, prev: str, key: int, code: int) -> str | None:
        if _is_named(code):
            blob = self.named[code & _NAMED_INDEX]
            if blob is None or blob[:2] != _tag(key).to_bytes(2, "big"):
                return None  # overwritten by a newer named successor
            return _undiff(prev, blob[2:])
        if code & _EDIT:
            p, q = code & 0xFF, code >> 8 & 0x7F
            if p + q > len(prev):
                return None
            try:
                text = (code >> 15 & 0xFFFF).to_bytes(2, "little").rstrip(b"\0").decode(
                    "utf-8", "surrogatepass")
            except UnicodeDecodeError:
                return None
            return prev[:p] + text + (prev[len(prev) - q:] if q else "")
        where, delta = code >> 20, (code & ((1 << 20) - 1)) - _DELTA_BIAS
        parts = _split(prev)
        if where >= len(parts) or where % 2 == 0 or len(parts[where]) > MAX_DIGITS:
            return None
        return _render(parts, where, int(parts[where]) + delta)

    def observe(self, device: str, resource: str, t: float, size: int) -> None:
        key = _key(resource)
        last = self._last.get(device)
        hits = tries = 0.0
        stride_next: str | None = None
        if last is None:
            if len(self._last) >= self.max_devices:
                self._last.popitem(last=False)
        else:
            self._last.move_to_end(device)
            prev, pkey, guess, hits, tries, stride_guess = last
            if guess is not None:  # the device's own record: is this table right for it?
                hits = hits * RECORD_DECAY + (guess == resource)
                tries = tries * RECORD_DECAY + 1.0
            if prev != resource:
                # a step the device's stride already foresaw needs no slot of its own
                self._learn(prev, pkey, resource,
                            create=not (self.skip_stride and stride_guess == resource))
                if self.skip_stride:
                    stride_next = _next_stride(prev, resource)
        self._last[device] = (resource, key, self._guess(resource, key), hits, tries,
                              stride_next)

    def _learn(self, prev: str, pkey: int, cur: str, create: bool = True) -> None:
        i = self._slot(pkey, create=create)
        if i < 0:
            return
        code = self._encode(prev, cur)
        blob = _tag(pkey).to_bytes(2, "big") + _diff(prev, cur) if code == _BY_NAME else b""
        count = self.counts[i]
        old = self.codes[i]
        if count and (old == code if code != _BY_NAME else
                      _is_named(old) and self.named[old & _NAMED_INDEX] == blob):
            self.counts[i] = min(255, count + 1)
            if code == _BY_NAME and (self._next_named - (old & _NAMED_INDEX)) % \
                    self.max_named > self.max_named // 2:
                self.codes[i] = self._add_named(blob)  # in use: moved to the ring's head
            return
        if count > 1:
            self.counts[i] = count - 1  # another successor: the vote for the kept one drops
            return
        self.codes[i] = self._add_named(blob) if code == _BY_NAME else code
        self.counts[i] = 1

    def _add_named(self, blob: bytes) -> int:
        """Put *blob* at the ring's head (the oldest entry makes way: a slot that still
        refers to it then decodes to None) and return the code that refers to it."""
        j = self._next_named
        self._next_named = (j + 1) % self.max_named
        self.named[j] = blob
        return _NAMED | j

    def _guess(self, prev: str, key: int) -> str | None:
        i = self._slot(key, create=False)
        if i < 0 or not self.counts[i]:
            return None
        name = self._decode(prev, key, self.codes[i])
        return None if name == prev else name

    def predict(self, device: str, k: int, exclude: Container[str] = ()) -> Ranked:
        last = self._last.get(device)
        if last is None or k <= 0:
            return []
        prev, key, _, hits, tries, _ = last
        if self.gate and (tries < GATE_TRIES or hits < self.gate * tries):
            return []  # not (yet) a device whose next request follows the table
        name = self._guess(prev, key)
        if name is None or name in exclude:
            return []
        count = self.counts[self._slot(key, create=False)]
        # the device's record, with the table's confidence as a prior worth one guess (a
        # browser, for whom first-order guesses are right half the time, gets half the score
        # of a scanner, whose record soon outweighs a count of one)
        return [(name, (hits + count / (count + 1.0)) / (tries + 1.0))]

    def state_size(self) -> int:
        return (sum(1 for c in self.counts if c) + sum(1 for b in self.named if b)
                + len(self._last))

    def max_state(self) -> int:
        return len(self.counts) + self.max_named + self.max_devices

    def memory_bytes(self) -> int:
        return deep_size(self.keys, self.codes, self.counts, self.named)

    def context_bytes(self) -> int:
        return deep_size(self._last)
