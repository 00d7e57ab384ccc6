"""Prediction by partial matching (PPM) up to order N, and first-order Markov as its order-1 case.

Why: the classic web-prefetching baseline (Palpanas and Mendelzon; Fan et al.). A context is
the device's last *o* requests (``o = 1..N``); the table, learned from every device of the mesh,
counts what followed each context. Each device keeps only its own short history, so the model
is mesh-wide while the context is per device, which is what lets a device that has just joined
benefit from what the others taught the table.

Two ways to combine orders (``mode``):

- ``"fallback"``: the longest context seen at least *min_count* times ranks first; lower
  orders fill the remaining places with their scores scaled by the escape probability.
- ``"blend"``: PPM method C mixing: every order contributes, the longest with weight
  ``n / (n + d)`` (n = times seen, d = distinct successors) and lower ones with what escapes.
"""

from __future__ import annotations

from collections.abc import Container

from agent.predict.base import ContextTable, Histories, Ranked, TableAccounting, merge_ranked

MODES = ("fallback", "blend")


class PPM(TableAccounting):
    """Mesh-wide PPM table with per-device contexts; bounded contexts and successors."""

    def __init__(self, order: int = 2, mode: str = "fallback", *, min_count: float = 1.0,
                 max_contexts: int = 20_000, max_successors: int = 16,
                 max_devices: int = 4096, session_gap_s: float = float("inf"),
                 name: str | None = None, ties: str = "name") -> None:
        if order < 1 or order > 8:
            raise ValueError("PPM order must be 1..8")
        if mode not in MODES:
            raise ValueError(f"PPM mode must be one of {MODES}")
        if ties not in ("name", "first"):
            raise ValueError("PPM ties must be 'name' or 'first'")
        self.ties_first = ties == "first"  # equal counts: by name, or first seen (reference)
        self.order = order
        self.mode = mode
        self.min_count = min_count
        self.session_gap_s = session_gap_s
        self.name = name or f"ppm{order}" + ("" if mode == "fallback" else "-blend")
        self.table = ContextTable(max_contexts, max_successors)
        self.histories = Histories(order, max_devices)

    def _contexts(self, device: str) -> list[object]:
        """The device's contexts, longest first (order-1 keys are plain strings)."""
        hist = [r for r, _ in self.histories.get(device)]
        out: list[object] = []
        for o in range(min(self.order, len(hist)), 0, -1):
            out.append(hist[-1] if o == 1 else tuple(hist[-o:]))
        return out

    def observe(self, device: str, resource: str, t: float, size: int) -> None:
        hist = self.histories.get(device)
        if hist and t - hist[-1][1] > self.session_gap_s:
            hist.clear()  # a new session: do not learn a transition across the gap
        for ctx in self._contexts(device):
            self.table.add(ctx, resource)
        self.histories.push(device, resource, t)

    def predict(self, device: str, k: int, exclude: Container[str] = ()) -> Ranked:
        if k <= 0:
            return []
        if self.mode == "blend":
            return self._blend(device, k, exclude)
        out: Ranked = []
        seen: set[str] = set()
        escape = 1.0  # what the longer contexts left over: scales the shorter ones' scores
        for ctx in self._contexts(device):
            succ = self.table.get(ctx)
            if succ is None or succ.total < self.min_count:
                continue
            for resource, score in succ.ranked(k + len(seen), exclude,
                                               ties_first=self.ties_first):
                if resource not in seen:
                    seen.add(resource)
                    out.append((resource, escape * score))
                    if len(out) >= k:
                        return out
            escape *= len(succ) / (succ.total + len(succ))
        return out

    def _blend(self, device: str, k: int, exclude: Container[str]) -> Ranked:
        parts: list[tuple[float, Ranked]] = []
        remaining = 1.0
        for ctx in self._contexts(device):
            succ = self.table.get(ctx)
            if succ is None or succ.total < self.min_count:
                continue
            weight = succ.total / (succ.total + len(succ))
            parts.append((remaining * weight, succ.ranked(k, exclude,
                                                          ties_first=self.ties_first)))
            remaining *= 1.0 - weight
        return merge_ranked(parts, k)


class Markov(PPM):
    """First-order Markov: PPM of order 1 (the last request predicts the next)."""

    def __init__(self, *, max_contexts: int = 20_000, max_successors: int = 16,
                 max_devices: int = 4096) -> None:
        super().__init__(1, "fallback", max_contexts=max_contexts,
                         max_successors=max_successors, max_devices=max_devices,
                         name="markov1")
