"""Leader: which resources to (re)assign, and to whom. Pure: returns commands to propose."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..authority_map import Assign, Assignment, AuthorityMap, Revoke
from ..reputation import choose_authority
from .lease import NEVER, Liveness
from .reports import Reports
from .timing import Timing

Command = Assign | Revoke
Silent = Callable[[str], float]
"""Seconds a member has been silent (as the leader measures it)."""


@dataclass(frozen=True, slots=True)
class Revoked:
    """A committed Revoke as this device applied it."""

    at: float
    index: int
    previous: str | None


@dataclass(frozen=True, slots=True)
class LeaderView:
    """What the leader knows of its cluster when it evaluates."""

    me: str
    members: frozenset[str]
    match: Mapping[str, int]
    """Replication progress per member (the leader's match index; its own = last index)."""


@dataclass
class Reassigner:
    """Bookkeeping of the leader's reassignment passes (also kept up to date on followers,
    so a new leader starts with it).

    The quick pass (every ``evaluate_interval``) looks only at resources whose authority went
    silent and at newly reported or revoked ones, so a mesh with thousands of resources costs
    nothing while nothing changes; the full pass compares every score.
    """

    timing: Timing
    hysteresis: float = 0.15
    by_holder: dict[str, set[str]] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)
    proposed: dict[str, float] = field(default_factory=dict)
    revoked: dict[str, Revoked] = field(default_factory=dict)
    leader_since: float | None = None
    predecessor: str | None = None
    """The leader we followed before our election: we heard it every heartbeat, so its
    silence is known exactly (and as a leader it acted only under a quorum lease)."""

    # ------------------------------------------------------------------ inputs
    def reindex(self, amap: AuthorityMap) -> None:
        """Rebuild holder -> resources after the whole map was replaced (snapshot)."""
        self.by_holder = {}
        for rid, a in amap.assignments():
            if a.holder is not None:
                self.by_holder.setdefault(a.holder, set()).add(rid)

    def clear(self) -> None:
        self.by_holder.clear()
        self.pending.clear()
        self.proposed.clear()
        self.revoked.clear()
        self.leader_since = None

    def applied(self, resource_id: str, a: Assignment, now: float) -> None:
        """An accepted Assign/Revoke was applied here."""
        self.proposed.pop(resource_id, None)
        previous: str | None = None
        for holder, held in self.by_holder.items():
            if resource_id in held:
                previous = holder
                held.discard(resource_id)
        if a.holder is not None:
            self.by_holder.setdefault(a.holder, set()).add(resource_id)
            self.revoked.pop(resource_id, None)
        else:
            self.pending.add(resource_id)  # revoked: a successor is chosen next pass
            self.revoked[resource_id] = Revoked(now, a.index, previous)

    def newly_held(self, resource_ids: set[str]) -> None:
        self.pending.update(resource_ids)

    def became_leader(self, now: float, predecessor: str | None = None) -> None:
        self.leader_since = now
        self.predecessor = predecessor

    def lost_leadership(self) -> None:
        self.leader_since = None

    # ------------------------------------------------------------------ decision
    def evaluate(self, view: LeaderView, amap: AuthorityMap, reports: Reports,
                 liveness: Liveness, now: float, wall: float, *, full: bool) -> list[Command]:
        t = self.timing
        since = self.leader_since if self.leader_since is not None else now
        self.leader_since = since

        def silent(member: str) -> float:
            # measured from our election at the latest: as a follower we heard members only
            # through their reports, except the leader we followed (every heartbeat)
            if member == view.me:
                return 0.0
            if member == self.predecessor:
                return liveness.silent_for(member, now)
            return liveness.silent_for(member, now, since)

        if full:
            resources = reports.held_resources(set(view.members), now) | self.pending
        else:
            resources = set(self.pending)
            for holder, held in self.by_holder.items():
                if held and silent(holder) >= t.dead_after:
                    resources |= held
        self.pending = set()
        out: list[Command] = []
        for rid in sorted(resources):
            if now - self.proposed.get(rid, NEVER) < t.proposal_retry:
                self.pending.add(rid)
                continue  # our last proposal for it is still in flight
            scores = {h: s for h, s in reports.scores(rid, now, wall).items()
                      if h in view.members and liveness.alive(view.me, h, now)}
            a = amap.authority_for(rid)
            current = a.holder if a is not None else None
            incumbent_ok = current in scores
            best = choose_authority(current if incumbent_ok else None, scores, self.hysteresis)
            if best is None or best == current:
                continue
            epoch = amap.epoch_of(rid)
            if current is not None and (incumbent_ok or silent(current) < t.dead_after):
                # a live incumbent (losing on score, or no longer a fresh holder or member):
                # revoke first, assign only once it surely stopped acting
                out.append(Revoke(rid, epoch))
                self.proposed[rid] = now
                continue
            if current is None and not self._revoke_settled(rid, view, silent, now):
                self.pending.add(rid)
                continue
            out.append(Assign(rid, best, epoch))
            self.proposed[rid] = now
        return out

    def _revoke_settled(self, rid: str, view: LeaderView, silent: Silent, now: float) -> bool:
        """After a Revoke, the next holder may be assigned once the old one surely stopped:
        ``lease`` after the Revoke applied here, and the old holder has the Revoke in its log
        (any leader message it gets from now on makes it apply it) or is dead."""
        r = self.revoked.get(rid)
        if r is None:
            return True
        if now - r.at < self.timing.lease:
            return False
        old = r.previous
        if old is None or old == view.me or view.match.get(old, 0) >= r.index:
            return True
        return silent(old) >= self.timing.dead_after

