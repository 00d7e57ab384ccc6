"""Lookahead prediction: what a device asks for within its next *window* requests after a context.

Why: a cache hit does not need the *next* request to be right, only a request before the
prefetched copy is evicted. Human browsing loads a page and then its images, scripts and
style sheets in an order that varies from visit to visit, so next-request models (Markov,
PPM) split their probability over orderings and miss. Counting "x followed context c within
*window* requests of the same session" (the dependency graph of Padmanabhan and Mogul, 1996,
with PPM's contexts) gives each candidate a score that is directly the chance that
prefetching it pays off, which is also what a precision threshold needs.

Contexts are the device's last 1..*order* requests (mesh-wide table, per-device history, as in
:mod:`agent.predict.ppm`); the longest context seen at least *min_count* times ranks first,
shorter ones fill in. A session ends after *session_gap_s* of silence: nothing is learned
across the gap. Scores are ``count / (seen + prior)``, *seen* counting the context's past
occurrences (not the one the device is in now): a context seen once does not claim certainty.
"""

from __future__ import annotations

from collections.abc import Container

from agent.predict.base import ContextTable, Histories, Ranked, TableAccounting


class Lookahead(TableAccounting):
    """Mesh-wide lookahead-window table with per-device contexts; bounded."""

    def __init__(self, window: int = 4, order: int = 2, *, session_gap_s: float = 1800.0,
                 min_count: float = 1.0, prior: float = 1.0, max_contexts: int = 20_000,
                 max_successors: int = 24, max_devices: int = 4096,
                 name: str | None = None) -> None:
        if window < 1 or window > 64 or order < 1 or order > 8:
            raise ValueError("lookahead window must be 1..64 and order 1..8")
        self.window = window
        self.order = order
        self.session_gap_s = session_gap_s
        self.min_count = min_count
        self.prior = prior
        self.name = name or f"lookahead{window}-o{order}"
        self.table = ContextTable(max_contexts, max_successors)
        self.histories = Histories(window + order - 1, max_devices)

    def observe(self, device: str, resource: str, t: float, size: int) -> None:
        hist = self.histories.get(device)
        if hist and t - hist[-1][1] > self.session_gap_s:
            hist.clear()
        names = [r for r, _ in hist]
        n = len(names)
        # Credit *resource* to every context that ended within the last `window` requests,
        # once per context occurrence (not again if it already came after that context).
        for end in range(n, max(0, n - self.window), -1):  # context ends at names[end-1]
            if resource in names[end:]:
                break  # already credited to this and every earlier context occurrence
            for o in range(1, min(self.order, end) + 1):
                ctx: object = names[end - 1] if o == 1 else tuple(names[end - o:end])
                if ctx == resource:
                    continue
                self.table.add(ctx, resource, occurrence=False)
        names.append(resource)
        for o in range(1, min(self.order, len(names)) + 1):
            ctx = names[-1] if o == 1 else tuple(names[-o:])
            self.table.touch(ctx).seen += 1
        self.histories.push(device, resource, t)

    def predict(self, device: str, k: int, exclude: Container[str] = ()) -> Ranked:
        if k <= 0:
            return []
        names = [r for r, _ in self.histories.get(device)]
        out: Ranked = []
        seen: set[str] = set()
        for o in range(min(self.order, len(names)), 0, -1):
            ctx: object = names[-1] if o == 1 else tuple(names[-o:])
            succ = self.table.get(ctx)
            # The device's own current occurrence is in `seen` but has had no chance yet.
            past = succ.seen - 1 if succ is not None else 0.0
            if succ is None or past < self.min_count or past + self.prior <= 0:
                continue
            for resource, score in succ.ranked(k + len(seen), exclude, past + self.prior):
                if resource not in seen:
                    seen.add(resource)
                    out.append((resource, score))
            if len(out) >= k:
                break
        out.sort(key=lambda rs: (-rs[1], rs[0]))
        return out[:k]
