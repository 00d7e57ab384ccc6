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

SLOT_BYTES = 8 + 4 + 1  # key, successor code, counter
GATE_TRIES = 3.0  # decayed guesses a device needs before the gate can open
RECORD_DECAY = 0.9  # the device's record of right guesses ages like stride's
WAYS = 4  # slots a context may take: fewer conflicts than 2-way at the same budget
_DELTA_BIAS = 1 << 19  # deltas in (-2^19, 2^19) are encoded; larger ones go by name
_BY_NAME = -1


def _key(name: str) -> int:
    """A stable signed 64-bit key for *name* (0 is reserved for an empty slot)."""
    k = int.from_bytes(hashlib.blake2b(name.encode("utf-8", "surrogatepass"),
                                       digest_size=8).digest(), "little", signed=True)
    return k or 1


class Successor:
    """Mesh-wide, budget-sized first-order table; per-device last request."""

    def __init__(self, budget_bytes: int = 1 << 20, *, max_named: int = 4096,
                 max_devices: int = 4096, gate: float = 0.0,
                 name: str = "successor") -> None:
        slots = budget_bytes // SLOT_BYTES
        if slots < 2 or max_named < 1 or max_devices < 1:
            raise ValueError("successor bounds: budget >= 26 bytes, max_named and "
                             "max_devices >= 1")
        self.name = name
        self.gate = gate  # answer only devices whose record is at least this (0: always)
        self.sets = max(1, slots // WAYS)
        self.keys = array("q", bytes(8 * WAYS * self.sets))
        self.codes = array("i", bytes(4 * WAYS * self.sets))
        self.counts = array("B", bytes(WAYS * self.sets))
        self.max_named = max_named
        self.named: OrderedDict[int, str] = OrderedDict()  # key -> successor, by name
        self.max_devices = max_devices
        # device -> (last name, its key, predicted next name, decayed hits, decayed tries)
        self._last: OrderedDict[str, tuple[str, int, str | None, float, float]] = OrderedDict()

    def _slot(self, key: int, create: bool) -> int:
        ways = WAYS
        base = ways * ((key & 0x7FFFFFFFFFFFFFFF) % self.sets)
        keys = self.keys
        for i in range(base, base + ways):
            if keys[i] == key:
                return i
        if not create:
            return -1
        counts = self.counts
        i = min(range(base, base + ways), key=lambda j: (counts[j], -j))
        keys[i] = key
        self.codes[i] = 0
        counts[i] = 0
        return i

    @staticmethod
    def _encode(prev: str, cur: str) -> int:
        found = step(_split(prev), _split(cur))
        if found is None:
            return _BY_NAME
        where, delta = found
        if where >= 1 << 11 or abs(delta) >= _DELTA_BIAS:
            return _BY_NAME
        return (where << 20) | (delta + _DELTA_BIAS)

    def _decode(self, prev: str, key: int, code: int) -> str | None:
        if code == _BY_NAME:
            return self.named.get(key)
        where, delta = code >> 20, (code & ((1 << 20) - 1)) - _DELTA_BIAS
        parts = _split(prev)
        if where >= len(parts) or where % 2 == 0 or len(parts[where]) > MAX_DIGITS:
            return None
        return _render(parts, where, int(parts[where]) + delta)

    def observe(self, device: str, resource: str, t: float, size: int) -> None:
        key = _key(resource)
        last = self._last.get(device)
        hits = tries = 0.0
        if last is None:
            if len(self._last) >= self.max_devices:
                self._last.popitem(last=False)
        else:
            self._last.move_to_end(device)
            prev, pkey, guess, hits, tries = last
            if guess is not None:  # the device's own record: is this table right for it?
                hits = hits * RECORD_DECAY + (guess == resource)
                tries = tries * RECORD_DECAY + 1.0
            if prev != resource:
                self._learn(prev, pkey, resource)
        self._last[device] = (resource, key, self._guess(resource, key), hits, tries)

    def _learn(self, prev: str, pkey: int, cur: str) -> None:
        i = self._slot(pkey, create=True)
        code = self._encode(prev, cur)
        count = self.counts[i]
        if count and self.codes[i] == code and (
                code != _BY_NAME or self.named.get(pkey) == cur):
            self.counts[i] = min(255, count + 1)
            if code == _BY_NAME:
                self.named.move_to_end(pkey)
            return
        if count > 1:
            self.counts[i] = count - 1  # another successor: the vote for the kept one drops
            return
        self.codes[i] = code
        self.counts[i] = 1
        if code == _BY_NAME:
            self.named[pkey] = cur
            self.named.move_to_end(pkey)
            if len(self.named) > self.max_named:
                self.named.popitem(last=False)

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
        prev, key, _, hits, tries = last
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
        return sum(1 for c in self.counts if c) + len(self.named) + len(self._last)

    def max_state(self) -> int:
        return len(self.counts) + self.max_named + self.max_devices

    def memory_bytes(self) -> int:
        return deep_size(self.keys, self.codes, self.counts, self.named)

    def context_bytes(self) -> int:
        return deep_size(self._last)
