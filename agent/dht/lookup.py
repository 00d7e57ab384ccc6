"""The iterative lookup: ask the closest known nodes, learn closer ones, repeat.

One state machine serves FIND_NODE (the k closest live nodes to a target) and GET_PROVIDERS
(stop as soon as enough holders are known). At most *alpha* requests are in flight; a request
that times out or fails counts as an answer with nothing in it, so a lookup converges even
when whole waves of replies are lost. The caller sends the requests ``next_queries`` returns
and reports each outcome with ``on_reply`` or ``on_failure``; records must already have
passed ``records.check_record``.

*rounds*: a seed is asked in round 1, a contact first learned from a round-r reply is asked in
round r + 1; a lookup's rounds are those of the reply that finished it (its first provider,
or for FIND_NODE the deepest reply it used). That is Kademlia's hop count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from agent.dht.records import ProviderRecord
from agent.dht.routing import K

ALPHA = 3  # requests in flight per lookup, as in the Kademlia paper


class State(Enum):
    NEW = 0
    WAITING = 1
    ANSWERED = 2
    FAILED = 3


@dataclass
class _Candidate:
    dist: int
    round: int
    state: State = State.NEW


@dataclass
class Lookup:
    target: bytes
    want_providers: int = 0  # 0: FIND_NODE; n: GET_PROVIDERS until n holders are known
    k: int = K
    alpha: int = ALPHA
    max_candidates: int = 8 * K  # bound on what a lookup remembers
    candidates: dict[bytes, _Candidate] = field(default_factory=dict)
    providers: dict[bytes, ProviderRecord] = field(default_factory=dict)
    rounds: int = 0
    replies: int = 0
    failures: int = 0

    def __post_init__(self) -> None:
        self._t = int.from_bytes(self.target, "big")

    def seed(self, contacts: list[bytes]) -> None:
        self._learn(contacts, 1)

    def _learn(self, contacts: tuple[bytes, ...] | list[bytes], round_: int) -> None:
        for c in contacts:
            if c not in self.candidates:
                self.candidates[c] = _Candidate(int.from_bytes(c, "big") ^ self._t, round_)
        if len(self.candidates) > self.max_candidates:
            ranked = sorted(self.candidates.items(), key=lambda kv: kv[1].dist)
            keep = {c for c, _ in ranked[: self.max_candidates]}
            keep |= {c for c, v in ranked if v.state is State.WAITING}
            self.candidates = {c: v for c, v in self.candidates.items() if c in keep}

    def _frontier(self) -> list[tuple[bytes, _Candidate]]:
        """The k closest candidates that have not failed, closest first."""
        live = [(c, v) for c, v in self.candidates.items() if v.state is not State.FAILED]
        live.sort(key=lambda kv: kv[1].dist)
        return live[: self.k]

    @property
    def in_flight(self) -> int:
        return sum(1 for v in self.candidates.values() if v.state is State.WAITING)

    @property
    def finished(self) -> bool:
        if self.want_providers and len(self.providers) >= self.want_providers:
            return True
        frontier = self._frontier()
        return all(v.state is State.ANSWERED for _, v in frontier) or (
            self.in_flight == 0 and not any(v.state is State.NEW for _, v in frontier)
        )

    def next_queries(self) -> list[bytes]:
        """Contacts to ask now (up to alpha in flight); marks them as waiting."""
        if self.finished:
            return []
        room = self.alpha - self.in_flight
        out: list[bytes] = []
        for c, v in self._frontier():
            if room <= 0:
                break
            if v.state is State.NEW:
                v.state = State.WAITING
                out.append(c)
                room -= 1
        return out

    def round_of(self, node: bytes) -> int:
        cand = self.candidates.get(node)
        return cand.round if cand else 0

    def on_reply(
        self, node: bytes, closer: tuple[bytes, ...], providers: tuple[ProviderRecord, ...] = ()
    ) -> None:
        cand = self.candidates.get(node)
        if cand is None or cand.state is not State.WAITING:
            return  # unsolicited or late: ignored
        cand.state = State.ANSWERED
        self.replies += 1
        had_enough = self.want_providers and len(self.providers) >= self.want_providers
        for rec in providers:
            if rec.key == self.target:
                self.providers.setdefault(rec.holder, rec)
        if self.want_providers:
            if not had_enough and len(self.providers) >= self.want_providers:
                self.rounds = cand.round
        else:
            self.rounds = max(self.rounds, cand.round)
        self._learn(closer, cand.round + 1)

    def on_failure(self, node: bytes) -> None:
        cand = self.candidates.get(node)
        if cand is not None and cand.state is State.WAITING:
            cand.state = State.FAILED
            self.failures += 1

    def closest(self) -> list[bytes]:
        """The k closest nodes that answered (FIND_NODE's result)."""
        return [c for c, v in self._frontier() if v.state is State.ANSWERED]
