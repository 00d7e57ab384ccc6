"""Stride prediction: a device walking a numbered series asks for the next number next.

Why: scripted clients (tile scans, time series, paged listings) name resources by numbers
that step regularly: ``..._N60W133_dem.nc`` then ``..._N60W134_dem.nc``, ``h10v04`` then
``h10v05``, ``page=3`` then ``page=4``. Such a resource has often never been requested by
anyone, so no table of past transitions (Markov, PPM, lookahead, a GRU over a vocabulary)
can predict it, while the stride is obvious. This is the CPU stride prefetcher applied to
names: split a name into its digit and non-digit runs; when the device's last two names have
the same non-digit parts and differ in exactly one number, predict that number stepped by the
same delta again (and again, for depth), keeping zero padding.

Scores are the device's own record: ``(hits + 1) / (tries + 2)`` over its last stride
predictions (a device that scans earns confidence, one that browses loses it). Per-device
state only (the last name and the record), bounded by *max_devices*; nothing is learned from
other devices, so this needs no sharing at all. A predicted name may not exist: the agent
checks its catalog before fetching (the harness drops names that never occur in the trace).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Container
from dataclasses import dataclass, field

from agent.predict.base import Ranked, deep_size

_RUNS = re.compile(r"(\d+)")
MAX_DIGITS = 18  # longer digit runs are identifiers, not counters
RECORD_DEPTH = 3  # a request counts as a stride hit when it is one of the next 3 steps


@dataclass
class _Device:
    last: str
    parts: list[str]
    predicted: set[str] = field(default_factory=set)  # the next strides, to score the record
    hits: float = 0.0
    tries: float = 0.0


def _split(name: str) -> list[str]:
    """Alternating non-digit / digit runs: even indices text, odd indices digits."""
    return _RUNS.split(name)


def step(prev: list[str], cur: list[str]) -> tuple[int, int] | None:
    """(index of the one digit run that differs, delta) or None when the names do not form a
    one-number stride."""
    if len(prev) != len(cur) or len(cur) < 3:
        return None
    where = -1
    for i in range(len(cur)):
        if prev[i] == cur[i]:
            continue
        if i % 2 == 0 or where != -1 or len(cur[i]) > MAX_DIGITS or len(prev[i]) > MAX_DIGITS:
            return None  # text differs, or a second number differs, or not a counter
        where = i
    if where == -1:
        return None
    delta = int(cur[where]) - int(prev[where])
    return (where, delta) if delta != 0 else None


def _render(parts: list[str], where: int, value: int) -> str | None:
    if value < 0:
        return None
    digits = str(value)
    width = len(parts[where]) if parts[where].startswith("0") else 0
    out = list(parts)
    out[where] = digits.zfill(width)
    return "".join(out)


class Stride:
    """Per-device numeric-stride predictor (no shared model)."""

    def __init__(self, max_devices: int = 4096, decay: float = 0.9,
                 name: str = "stride") -> None:
        if max_devices < 1 or not 0.0 < decay <= 1.0:
            raise ValueError("stride bounds: max_devices >= 1, 0 < decay <= 1")
        self.name = name
        self.max_devices = max_devices
        self.decay = decay  # the record ages: a device that stops scanning loses confidence
        self._devices: OrderedDict[str, _Device] = OrderedDict()
        self._steps: OrderedDict[str, tuple[int, int]] = OrderedDict()  # device -> last stride

    def observe(self, device: str, resource: str, t: float, size: int) -> None:
        parts = _split(resource)
        dev = self._devices.get(device)
        if dev is None:
            if len(self._devices) >= self.max_devices:
                old, _ = self._devices.popitem(last=False)
                self._steps.pop(old, None)
            self._devices[device] = _Device(resource, parts)
            return
        self._devices.move_to_end(device)
        if dev.predicted:
            dev.hits = dev.hits * self.decay + (1.0 if resource in dev.predicted else 0.0)
            dev.tries = dev.tries * self.decay + 1.0
            dev.predicted = set()
        found = step(dev.parts, parts)
        dev.last, dev.parts = resource, parts
        if found is None:
            self._steps.pop(device, None)
        else:
            self._steps[device] = found
            where, delta = found
            value = int(parts[where])
            names = (_render(parts, where, value + n * delta) for n in range(1, RECORD_DEPTH + 1))
            dev.predicted = {n for n in names if n is not None}

    def predict(self, device: str, k: int, exclude: Container[str] = ()) -> Ranked:
        dev = self._devices.get(device)
        found = self._steps.get(device)
        if dev is None or found is None or k <= 0:
            return []
        where, delta = found
        score = (dev.hits + 1.0) / (dev.tries + 2.0)
        out: Ranked = []
        value = int(dev.parts[where])
        for n in range(1, k + 1):
            name = _render(dev.parts, where, value + n * delta)
            if name is None:
                break
            if name not in exclude:
                out.append((name, score * (0.9 ** (n - 1))))
        return out

    def state_size(self) -> int:
        return len(self._devices) + len(self._steps)

    def max_state(self) -> int:
        return 2 * self.max_devices

    def memory_bytes(self) -> int:
        return 0  # no shared model: everything is per-device context

    def context_bytes(self) -> int:
        return deep_size(self._devices, self._steps)
