"""Holder liveness (what the leader heard) and the lease (when a holder may act).

Pure: every method takes ``now`` (seconds on this device's monotonic clock).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .timing import Timing

NEVER = float("-inf")


@dataclass
class Liveness:
    """When this device last heard anything (Raft message, report) from each member."""

    timing: Timing
    last_heard: dict[str, float] = field(default_factory=dict)

    def heard(self, member: str, now: float) -> None:
        self.last_heard[member] = now

    def silent_for(self, member: str, now: float, since: float = NEVER) -> float:
        """How long *member* has been silent, counting from *since* at the latest (a new
        leader measures silence from its election: what it heard as a follower is sparse)."""
        return now - max(self.last_heard.get(member, NEVER), since)

    def alive(self, me: str, member: str, now: float) -> bool:
        return member == me or self.silent_for(member, now) < self.timing.dead_after

    def quorum_contact(self, me: str, voters: Iterable[str], now: float) -> float:
        """The latest instant by which a quorum of *voters* (me counted as *now*) had all been
        heard from: a leader may act on its own authority until this + lease."""
        times = sorted((now if v == me else self.last_heard.get(v, NEVER) for v in voters),
                       reverse=True)
        if not times:
            return NEVER
        return times[len(times) // 2]


@dataclass
class Lease:
    """A holder's side of the single-authority rule.

    A device acts for a resource only while all of these hold (its own clock):

    1. the map names it;
    2. its assignment was applied at least ``lease`` ago (the previous holder has applied
       the change or lost its own lease by then);
    3. as a follower: it heard from the leader less than ``lease`` ago, in an unbroken run of
       contacts (gaps < lease) that already lasted at least ``lease`` (a device that comes
       back after a silence first catches up on the entries it missed); as the leader: a
       quorum of voters was heard from less than ``lease`` ago and its map is caught up with
       its commit index.
    """

    timing: Timing
    assigned_at: dict[str, float] = field(default_factory=dict)
    last_leader_contact: float = NEVER
    contact_since: float = NEVER

    def leader_contact(self, now: float) -> None:
        if now - self.last_leader_contact >= self.timing.lease:
            self.contact_since = now  # the lease lapsed: a new unbroken run starts
        self.last_leader_contact = now

    def assigned(self, resource_id: str, now: float) -> None:
        self.assigned_at[resource_id] = now

    def reset(self, resource_ids: Iterable[str], now: float) -> None:
        """The whole map was replaced (snapshot, new cluster): every assignment is new."""
        self.assigned_at = dict.fromkeys(resource_ids, now)

    def forget_leader(self) -> None:
        self.last_leader_contact = NEVER
        self.contact_since = NEVER

    def window(self, resource_id: str, holder: str | None, me: str, *, is_leader: bool,
               quorum_contact: float, caught_up: bool) -> tuple[float, float] | None:
        """The interval [start, end) of this device's clock during which it acts for the
        resource if nothing else happens (no message, no apply), or None."""
        lease = self.timing.lease
        if holder != me:
            return None
        assigned = self.assigned_at.get(resource_id)
        if assigned is None:
            return None
        if is_leader:
            if not caught_up:
                return None
            start, end = assigned + lease, quorum_contact + lease
        else:
            # an unbroken run of leader contact at least `lease` long: one contact after a
            # silence (a restart, a partition healing) may come before the entries we missed
            if self.last_leader_contact < self.contact_since + lease:
                return None
            start = max(assigned, self.contact_since) + lease
            end = self.last_leader_contact + lease
        return (start, end) if start < end else None

    def acting(self, resource_id: str, holder: str | None, me: str, now: float, *,
               is_leader: bool, quorum_contact: float, caught_up: bool) -> bool:
        w = self.window(resource_id, holder, me, is_leader=is_leader,
                        quorum_contact=quorum_contact, caught_up=caught_up)
        return w is not None and w[0] <= now < w[1]
