"""Hybrids: several predictors observed together, their scores mixed.

Why: the lookahead table is precise where it has seen a context, the GRU generalises over
sessions, popularity answers when there is no context at all (a device that has just joined).
A blend asks each member for candidates and adds their scores with fixed weights; a member's
weight is its say, so a score stays in ``[0, 1]`` when the weights sum to at most one.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence

from agent.predict.base import Predictor, Ranked, merge_ranked
from agent.predict.traces import Request


class Blend:
    """Weighted sum of member predictors' scores (members learn from every request)."""

    def __init__(self, members: Sequence[tuple[float, Predictor]], name: str = "blend",
                 extra: int = 4) -> None:
        if not members or any(w < 0 for w, _ in members):
            raise ValueError("a blend needs members with non-negative weights")
        self.members = list(members)
        self.name = name
        self.extra = extra  # candidates asked of each member beyond k

    def fit(self, requests: Iterable[Request]) -> None:
        reqs = list(requests)
        for _, member in self.members:
            fit = getattr(member, "fit", None)
            if fit is not None:
                fit(reqs)

    def observe(self, device: str, resource: str, t: float, size: int) -> None:
        for _, member in self.members:
            member.observe(device, resource, t, size)

    def predict(self, device: str, k: int, exclude: Container[str] = ()) -> Ranked:
        if k <= 0:
            return []
        parts = [(w, m.predict(device, k + self.extra, exclude)) for w, m in self.members]
        return merge_ranked(parts, k)

    def state_size(self) -> int:
        return sum(m.state_size() for _, m in self.members)

    def max_state(self) -> int:
        return sum(m.max_state() for _, m in self.members)

    def memory_bytes(self) -> int:
        return sum(m.memory_bytes() for _, m in self.members)

    def context_bytes(self) -> int:
        return sum(m.context_bytes() for _, m in self.members)


class Fallback:
    """The first member that has an answer answers (e.g. a sequence model, then popularity
    for a device with no context yet); scores of later members are scaled by *discount*."""

    def __init__(self, members: Sequence[Predictor], name: str = "fallback",
                 discount: float = 1.0) -> None:
        if not members:
            raise ValueError("a fallback needs members")
        self.members = list(members)
        self.name = name
        self.discount = discount

    def fit(self, requests: Iterable[Request]) -> None:
        reqs = list(requests)
        for member in self.members:
            fit = getattr(member, "fit", None)
            if fit is not None:
                fit(reqs)

    def observe(self, device: str, resource: str, t: float, size: int) -> None:
        for member in self.members:
            member.observe(device, resource, t, size)

    def predict(self, device: str, k: int, exclude: Container[str] = ()) -> Ranked:
        scale = 1.0
        for member in self.members:
            ranked = member.predict(device, k, exclude)
            if ranked:
                return [(r, s * scale) for r, s in ranked]
            scale *= self.discount
        return []

    def state_size(self) -> int:
        return sum(m.state_size() for m in self.members)

    def max_state(self) -> int:
        return sum(m.max_state() for m in self.members)

    def memory_bytes(self) -> int:
        return sum(m.memory_bytes() for m in self.members)

    def context_bytes(self) -> int:
        return sum(m.context_bytes() for m in self.members)
