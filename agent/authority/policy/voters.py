"""Leader: keep 3-5 voters chosen by uptime, one single-server change at a time."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..raft.messages import ConfChangeType
from ..reputation import choose_voters
from .lease import Liveness
from .timing import Timing


@dataclass(frozen=True, slots=True)
class VoterChange:
    op: ConfChangeType
    member: str


@dataclass(frozen=True, slots=True)
class Membership:
    """The leader's view of its configuration and replication progress."""

    me: str
    voters: tuple[str, ...]
    learners: tuple[str, ...]
    match: Mapping[str, int]
    commit: int


def voter_change(m: Membership, liveness: Liveness, uptime: Callable[[str], float],
                 paired: Callable[[str], bool], timing: Timing, now: float,
                 leader_since: float) -> VoterChange | None:
    """The next membership change, or None.

    * A member no longer paired with the leader can never hear it: removed at once.
    * Promote a caught-up, live learner while there are fewer voters than
      :func:`choose_voters` wants (a full voter set changes only when a dead voter is
      removed below: else 5 voters + a promotion = 6).
    * Remove a voter silent for ``demote_after`` that is not wanted as a voter, and a learner
      silent that long (it left, for instance it joined another cluster). Silence counts
      from our election at the latest (as a follower we heard members rarely), and a joiner
      was heard when it asked to join.
    """

    def silent(x: str) -> float:
        return liveness.silent_for(x, now, leader_since)

    for x in (*m.voters, *m.learners):
        if x != m.me and not paired(x):
            return VoterChange(ConfChangeType.REMOVE_VOTER, x)
    uptimes: dict[str, float] = {}
    for x in (*m.voters, *m.learners):
        alive = x == m.me or silent(x) < timing.demote_after
        uptimes[x] = uptime(x) + (1.0 if alive else -1.0)
    want_voters, _ = choose_voters(uptimes)
    for x in want_voters:
        if x in m.learners and len(m.voters) < len(want_voters) \
                and m.match.get(x, 0) >= m.commit - 5 and liveness.alive(m.me, x, now):
            return VoterChange(ConfChangeType.PROMOTE_LEARNER, x)
    for x in m.voters:
        if x not in want_voters and x != m.me and \
                silent(x) > timing.demote_after:
            return VoterChange(ConfChangeType.REMOVE_VOTER, x)
    for x in m.learners:
        if silent(x) > timing.demote_after:
            return VoterChange(ConfChangeType.REMOVE_VOTER, x)
    return None
