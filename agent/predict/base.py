"""The one interface every predictor implements, and the bounded tables they are built from.

Why a Protocol and not a base class: the harness, the planner and the tests only need
``observe`` / ``predict`` / the size accounting, and a recurrent model shares no code with a
count table. Why bounded tables: a predictor runs on a Raspberry Pi for months and learns
from every device of the mesh, so each table has a fixed capacity and evicts (least recently
used contexts, least counted successors) instead of growing with the trace.

Conventions shared by all predictors:

- ``observe(device, resource, t, size)`` is called once per demand request, in time order.
- ``predict(device, k, exclude)`` returns at most *k* ``(resource, score)`` pairs, best first,
  skipping resources in *exclude* (what the device already holds). Scores are in ``[0, 1]``
  and meant as "probability this resource is asked for soon", so a planner can threshold them.
- ``state_size()`` counts the entries held; ``max_state()`` is its bound. ``memory_bytes()``
  is the measured size of the shared model (tables or weights, walked with
  :func:`deep_size`); ``context_bytes()`` the per-device contexts, which on a real device
  hold one device's history only. Both walk the structures: call them to report, not per
  request.
- Everything is deterministic: the same observations give the same predictions.
"""

from __future__ import annotations

import sys
from array import array
from collections import OrderedDict, deque
from collections.abc import Container, Iterable
from typing import Protocol, runtime_checkable

Ranked = list[tuple[str, float]]


@runtime_checkable
class Predictor(Protocol):
    """Learns from requests, ranks what a device is likely to ask for next."""

    name: str

    def observe(self, device: str, resource: str, t: float, size: int) -> None:
        """Learn one demand request (time order)."""
        ...

    def predict(self, device: str, k: int, exclude: Container[str] = ()) -> Ranked:
        """Up to *k* resources *device* is likely to ask for soon, best first."""
        ...

    def state_size(self) -> int:
        """Entries currently held (contexts, successors, devices)."""
        ...

    def max_state(self) -> int:
        """The bound on :meth:`state_size`; eviction keeps the table under it."""
        ...

    def memory_bytes(self) -> int:
        """Measured bytes of the shared model (not the per-device contexts)."""
        ...

    def context_bytes(self) -> int:
        """Measured bytes of the per-device contexts (histories, hidden states)."""
        ...


class Successors:
    """Counts of what followed one context, at most *cap* successors (least counted evicted).

    Stored as a list of names and a parallel ``array('d')`` of counts rather than a dict of
    float objects: a successor costs 16 bytes instead of ~70, which is what lets a useful
    table fit a 1 MB budget. *cap* is small (tens), so the linear ``list.index`` lookup (in C,
    identity compared first) is as fast as hashing. Eviction removes the least counted
    successor and its count from ``total``, so probabilities stay normalised over what is kept.
    """

    __slots__ = ("cap", "counts", "names", "seen", "total")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.names: list[str] = []
        self.counts = array("d")
        self.total = 0.0
        self.seen = 0.0  # times the context itself occurred (used by lookahead tables)

    def add(self, resource: str, weight: float = 1.0) -> None:
        names, counts = self.names, self.counts
        try:
            i = names.index(resource)
        except ValueError:
            if len(names) >= self.cap:
                victim = min(range(len(counts)), key=counts.__getitem__)
                self.total -= counts[victim]
                del names[victim]
                del counts[victim]
            names.append(resource)
            counts.append(weight)
        else:
            counts[i] += weight
        self.total += weight

    def count(self, resource: str) -> float:
        try:
            return self.counts[self.names.index(resource)]
        except ValueError:
            return 0.0

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.names, self.counts, strict=True))

    def ranked(self, k: int, exclude: Container[str] = (), denom: float | None = None, *,
               ties_first: bool = False) -> Ranked:
        """The *k* most counted successors not in *exclude*, scored count/*denom* (default:
        count/total, the next-request probability); ties by name, for determinism, or with
        *ties_first* by first seen (what ``Counter.most_common`` does, as the traces README's
        reference baselines do)."""
        denom = self.total if denom is None else denom
        if denom <= 0:
            return []
        names, counts = self.names, self.counts
        if ties_first:  # sorted() is stable: equal counts stay in insertion order
            order = sorted(range(len(names)), key=lambda i: -counts[i])
        else:
            order = sorted(range(len(names)), key=lambda i: (-counts[i], names[i]))
        out: Ranked = []
        for i in order:
            resource = names[i]
            if resource in exclude:
                continue
            out.append((resource, min(1.0, counts[i] / denom)))
            if len(out) >= k:
                break
        return out

    def __len__(self) -> int:
        return len(self.names)


class ContextTable:
    """Context -> :class:`Successors`: at most *max_contexts* contexts, each with at most
    *max_successors* successors, evicted by segmented LRU.

    Why segmented: most contexts of a request stream occur once and never again (three in
    four on the web log), and under plain LRU they push out the contexts that recur, which
    are the only ones worth a byte. A new context enters the *probation* segment (at most
    *probation* of the table); its second occurrence promotes it to the *protected* segment.
    Probation's least recent context is evicted first; protected's least recent one is
    demoted to probation when protected is full.
    """

    def __init__(self, max_contexts: int, max_successors: int, probation: float = 0.5) -> None:
        if max_contexts < 2 or max_successors < 1 or not 0.0 < probation < 1.0:
            raise ValueError("table bounds must be positive (at least two contexts)")
        self.max_contexts = max_contexts
        self.max_successors = max_successors
        self.max_probation = max(1, int(max_contexts * probation))
        self.max_protected = max_contexts - self.max_probation
        self._probation: OrderedDict[object, Successors] = OrderedDict()
        self._protected: OrderedDict[object, Successors] = OrderedDict()
        self._entries = 0

    def add(self, context: object, resource: str, weight: float = 1.0, *,
            occurrence: bool = True) -> None:
        """Count *resource* after *context*. ``occurrence=False`` credits a context that
        occurred earlier (lookahead): it neither creates nor promotes the context."""
        if occurrence:
            succ: Successors | None = self.touch(context)
        else:
            succ = self.get(context)
        if succ is None:
            return
        before = len(succ)
        succ.add(resource, weight)
        self._entries += len(succ) - before

    def get(self, context: object) -> Successors | None:
        succ = self._protected.get(context)
        return succ if succ is not None else self._probation.get(context)

    def touch(self, context: object) -> Successors:
        """An occurrence of *context*: its successors, created or promoted if need be."""
        protected, probation = self._protected, self._probation
        succ = protected.get(context)
        if succ is not None:
            protected.move_to_end(context)
            return succ
        succ = probation.pop(context, None)
        if succ is None:
            succ = probation[context] = Successors(self.max_successors)
        else:
            protected[context] = succ
            if len(protected) > self.max_protected:
                old_ctx, old = protected.popitem(last=False)
                probation[old_ctx] = old
        while len(probation) > self.max_probation:
            _, old = probation.popitem(last=False)
            self._entries -= len(old)
        return succ

    def __len__(self) -> int:
        return len(self._probation) + len(self._protected)

    def entries(self) -> int:
        """Contexts plus successor entries."""
        return len(self) + self._entries

    def max_entries(self) -> int:
        return self.max_contexts * (1 + self.max_successors)


class Histories:
    """The last *depth* resources (and their times) of each device, at most *max_devices*
    devices (least recently seen evicted)."""

    def __init__(self, depth: int, max_devices: int) -> None:
        if depth < 1 or max_devices < 1:
            raise ValueError("history bounds must be positive")
        self.depth = depth
        self.max_devices = max_devices
        self._hist: OrderedDict[str, deque[tuple[str, float]]] = OrderedDict()

    def push(self, device: str, resource: str, t: float) -> deque[tuple[str, float]]:
        """Append and return the device's history (oldest first), *resource* last."""
        hist = self._hist.get(device)
        if hist is None:
            if len(self._hist) >= self.max_devices:
                self._hist.popitem(last=False)
            hist = self._hist[device] = deque(maxlen=self.depth)
        else:
            self._hist.move_to_end(device)
        hist.append((resource, t))
        return hist

    def get(self, device: str) -> deque[tuple[str, float]]:
        hist = self._hist.get(device)
        return hist if hist is not None else deque()

    def entries(self) -> int:
        return sum(len(h) for h in self._hist.values()) + len(self._hist)

    def max_entries(self) -> int:
        return self.max_devices * (self.depth + 1)


def deep_size(*roots: object) -> int:
    """Bytes of *roots* and everything they reach (dicts, sequences, slotted objects, numpy
    arrays by ``nbytes``), each object once. Interned small ints and None are free."""
    seen: set[int] = set()
    total = 0
    stack: list[object] = list(roots)
    while stack:
        obj = stack.pop()
        if obj is None or id(obj) in seen or isinstance(obj, bool):
            continue
        seen.add(id(obj))
        nbytes = getattr(obj, "nbytes", None)
        if isinstance(nbytes, int) and hasattr(obj, "dtype"):
            total += nbytes + 112
            continue
        total += sys.getsizeof(obj)
        if isinstance(obj, (str, bytes, int, float)):
            continue
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset, deque)):
            stack.extend(obj)
        else:
            for slot in getattr(type(obj), "__slots__", ()):
                stack.append(getattr(obj, slot, None))
            attrs = getattr(obj, "__dict__", None)
            if attrs is not None:
                stack.append(attrs)
    return total


def merge_ranked(parts: Iterable[tuple[float, Ranked]], k: int) -> Ranked:
    """Weighted sum of several rankings, best *k* first (ties by name, for determinism)."""
    acc: dict[str, float] = {}
    for weight, ranked in parts:
        if weight <= 0:
            continue
        for resource, score in ranked:
            acc[resource] = acc.get(resource, 0.0) + weight * score
    items = sorted(acc.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(r, min(1.0, s)) for r, s in items[:k]]


class TableAccounting:
    """Size and memory of a predictor made of a context table and per-device histories
    (Markov/PPM and lookahead): the Predictor protocol's accounting, written once."""

    table: ContextTable
    histories: Histories

    def state_size(self) -> int:
        return self.table.entries() + self.histories.entries()

    def max_state(self) -> int:
        return self.table.max_entries() + self.histories.max_entries()

    def memory_bytes(self) -> int:
        return deep_size(self.table)

    def context_bytes(self) -> int:
        return deep_size(self.histories)
