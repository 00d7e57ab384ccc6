"""The authority's timing constants, in one injectable value.

Every duration the policy compares is measured on *one* device's monotonic clock (never a
difference between two devices' clocks), so a constant offset between clocks does not
matter; only the rate difference (drift) does, and docs/authority.md states the bound.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Timing:
    """Seconds. The defaults are the agent's; tests and the simulator may change them (for
    instance to show that ``lease >= dead_after`` breaks the single-authority property)."""

    tick: float = 0.05
    """One Raft tick."""
    election_ticks: int = 6
    """Election timeout 0.3-0.6 s (randomised in [6, 12) ticks)."""
    heartbeat_ticks: int = 2
    """Leader heartbeat every 100 ms (a third of the shortest election timeout)."""
    lease: float = 0.4
    """An authority acts only while it heard from a leader (a leader: from a quorum) this
    recently, only this long after its assignment applied, and only this long after it
    (re)gained contact with a leader."""
    dead_after: float = 0.6
    """The leader moves authority off a holder silent this long (> lease)."""
    evaluate_interval: float = 0.1
    full_evaluate_interval: float = 2.0
    proposal_retry: float = 1.0
    """At most one proposal per resource in flight; retried after this long."""
    report_stale: float = 7.0
    membership_interval: float = 1.0
    """Cluster announcements (hellos) and voter management."""
    demote_after: float = 30.0
    """A member silent this long is removed (a voter only if it is not wanted as a voter)."""
    stranded_after: float = 3.0
    """A member with no leader this long whose cluster cannot elect one any more (too few of
    its voters are still paired with it and in it) leaves: it joins a paired cluster that has a
    leader, else it founds a new one-member cluster."""
    join_timeout: float = 6.0
    """A join request whose membership change has not committed by then is refused."""

    @property
    def safe(self) -> bool:
        """The lease argument needs ``lease < dead_after`` (docs/authority.md, "Lease")."""
        return 0 < self.lease < self.dead_after


DEFAULT_TIMING = Timing()
