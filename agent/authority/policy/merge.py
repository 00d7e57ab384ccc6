"""Cluster formation: which cluster to join, when to give up on ours, and (leader side) when
a join is done.

The convergence rule (docs/authority.md, "Convergence"):

1. Every device starts in a one-member cluster of its own (the map works offline).
2. Paired members announce ``Hello(cluster, size, leader)`` every ``membership_interval``
   (the leader only if they heard from it recently). A member of a *configured* cluster (it
   knows its voters) that hears of a larger cluster *with a leader*
   (``(size, cluster id)`` compared as a pair, so ties go to the larger id) asks that
   cluster's leader to add it. A device that has just switched and does not know its
   members yet never starts another join (it would otherwise look like a cluster of 0 and
   follow any announcement).
3. The leader answers a join only once the ``add_learner`` entry has **committed**; only then
   does the joiner drop its old state and switch. An answer that is lost costs a retry, never
   a device stranded in a cluster that does not know it.
4. A member that has not heard from a leader for ``stranded_after`` while paired peers
   announce a leader of its own cluster is **lost** (typically: removed while it was
   unpaired, it never received its removal): it asks that leader to add it again, keeping
   its log (Raft repairs the log; the configuration follows it).
5. A member is **stranded** when it has had no leader for ``stranded_after`` and its cluster
   cannot elect one any more: it knows no voters (its join never took effect), or fewer than a
   quorum of its voters are still paired with it and have not announced another cluster.
   A stranded member joins the largest paired cluster that has a leader, or, if there is
   none, founds a new one-member cluster. (A partition does not strand anyone: peers that
   are silent still count as with us.)

Each rule only moves devices toward the maximum ``(size, id)`` among clusters of paired
members, or out of clusters that can never make progress, so once pairing and the network
are stable every clique of paired devices ends in one cluster with one leader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .timing import Timing


@dataclass(frozen=True, slots=True)
class Hello:
    """A paired member's announcement."""

    cluster: str
    size: int
    leader: str
    """The leader it knows ("" for none)."""


@dataclass(frozen=True, slots=True)
class ClusterView:
    """This device's own cluster as the merge policy needs it."""

    cluster: str
    voters: tuple[str, ...]
    learners: tuple[str, ...]
    is_leader: bool
    leader_contact: float
    """When we last heard from a leader of our cluster (NEVER if not since the switch)."""

    @property
    def configured(self) -> bool:
        return bool(self.voters)

    @property
    def size(self) -> int:
        return len(self.voters) + len(self.learners)


@dataclass(frozen=True, slots=True)
class Join:
    """Ask to join *cluster*: at *leader* if we can reach it, else through *via*.

    *rejoin*: it is our own cluster, whose leader we cannot hear although our peers can (it
    removed us, for instance while we were unpaired): we ask to be added again and keep our
    log (Raft repairs it where it differs; a voter must never lose its log)."""

    cluster: str
    leader: str
    via: str
    rejoin: bool = False


@dataclass(frozen=True, slots=True)
class Refound:
    """Leave our cluster for a new one-member cluster of our own."""


MergeDecision = Join | Refound | None


@dataclass
class Merger:
    me: str
    timing: Timing
    started: float
    """When we entered our current cluster (founding, restart or switch)."""
    hellos: dict[str, tuple[Hello, float]] = field(default_factory=dict)
    joining: tuple[str, float] | None = None

    # ------------------------------------------------------------------ inputs
    def on_hello(self, peer: str, hello: Hello, now: float) -> None:
        self.hellos[peer] = (hello, now)

    def unpaired(self, peer: str) -> None:
        """Its announcements no longer count (it can no longer add us, nor we it)."""
        self.hellos.pop(peer, None)

    def join_started(self, cluster: str, now: float) -> None:
        self.joining = (cluster, now)

    def join_ended(self) -> None:
        self.joining = None

    def switched(self, now: float) -> None:
        """We entered a new cluster (joined, or refounded)."""
        self.joining = None
        self.started = now

    # ------------------------------------------------------------------ decision
    def _followable(self, leader: str, paired: Callable[[str], bool]) -> bool:
        """Could we follow *leader* ("" = none known)? Not if we are not paired with it:
        it would refuse our join, and we drop its messages."""
        return not leader or leader == self.me or paired(leader)

    def stranded(self, view: ClusterView, now: float, paired: Callable[[str], bool], *,
                 at_once: bool = False) -> bool:
        """*at_once*: a member was just unpaired, so a lost quorum is certain, not a silence
        that may end: no need to wait ``stranded_after`` without a leader first."""
        if view.is_leader:
            return False
        if not at_once and \
                now - max(view.leader_contact, self.started) < self.timing.stranded_after:
            return False
        if not view.configured:
            return True
        with_us = 0
        for v in view.voters:
            if v == self.me:
                with_us += 1
                continue
            if not paired(v):
                continue
            last = self.hellos.get(v)
            if last is None:
                with_us += 1  # silent peers may come back: a partition strands nobody
            elif last[0].cluster == view.cluster and self._followable(last[0].leader, paired):
                with_us += 1  # (one following a leader we are not paired with is not)
        return with_us < len(view.voters) // 2 + 1

    def lost(self, view: ClusterView, now: float, paired: Callable[[str], bool]) -> Join | None:
        """Peers announce a leader of *our* cluster that we have not heard for
        ``stranded_after``: we are probably no longer in its configuration."""
        if view.is_leader or not view.configured:
            return None
        if now - max(view.leader_contact, self.started) < self.timing.stranded_after:
            return None
        fresh = 3 * self.timing.membership_interval
        for peer, (h, at) in sorted(self.hellos.items()):
            if (h.cluster == view.cluster and h.leader and h.leader != self.me
                    and paired(peer) and paired(h.leader) and now - at < fresh):
                return Join(view.cluster, h.leader, peer, rejoin=True)
        return None

    def decide(self, view: ClusterView, now: float, paired: Callable[[str], bool], *,
               at_once: bool = False) -> MergeDecision:
        """Called on every hello and every membership interval, and (*at_once*, see
        :meth:`stranded`) when a member was unpaired."""
        if self.joining is not None:
            if now - self.joining[1] < self.timing.join_timeout:
                return None
            self.joining = None
        fresh = 3 * self.timing.membership_interval
        # only clusters with a leader are worth joining (nobody could add us to the others)
        others = sorted(
            ((h.size, h.cluster, h.leader, peer) for peer, (h, at) in self.hellos.items()
             if h.cluster != view.cluster and h.leader and paired(peer) and now - at < fresh
             and self._followable(h.leader, paired)),
            reverse=True)
        lost = self.lost(view, now, paired)
        if lost is not None:
            return lost
        if self.stranded(view, now, paired, at_once=at_once):
            if others:
                _, cluster, leader, peer = others[0]
                return Join(cluster, leader, peer)
            alone = view.voters == (self.me,) and not view.learners  # already our own
            return None if alone else Refound()
        if not view.configured or not others:
            return None
        size, cluster, leader, peer = others[0]
        if (size, cluster) <= (view.size, view.cluster):
            return None  # they come to us
        return Join(cluster, leader, peer)


# ---------------------------------------------------------------------- leader side
@dataclass(frozen=True, slots=True)
class Refuse:
    reason: str
    leader: str
    """Who we think leads ("" if nobody): the joiner may retry there."""


@dataclass(frozen=True, slots=True)
class Admitted:
    """The joiner is already in our configuration (committed): it may switch (a rejoining
    member keeps its state)."""


@dataclass(frozen=True, slots=True)
class RemoveFirst:
    """The joiner comes from another cluster (it will start with an empty log) but is still
    in our configuration from an earlier stay: what we know of its log is stale, and as a
    voter it would vote with amnesia. Propose its removal and refuse for now; its next
    attempt adds it afresh."""


@dataclass(frozen=True, slots=True)
class AddLearner:
    """Propose ``add_learner(joiner)``; answer once it has committed."""


JoinAnswer = Refuse | Admitted | RemoveFirst | AddLearner


@dataclass
class JoinDesk:
    """Join requests waiting for their ``add_learner`` entry to commit."""

    timing: Timing
    waiting: dict[str, tuple[int, float]] = field(default_factory=dict)
    """joiner -> (log index of its add_learner entry, when it was proposed)."""

    def request(self, joiner: str, cluster: str, view: ClusterView, committed_members: set[str],
                leader: str | None, *, rejoin: bool) -> JoinAnswer:
        if cluster != view.cluster:
            return Refuse("not this cluster", "")
        if not view.is_leader:
            return Refuse("not leader", leader or "")
        if joiner in committed_members:
            return Admitted() if rejoin else RemoveFirst()
        if joiner in view.voters or joiner in view.learners:
            return Refuse("membership change in progress", leader or "")
        return AddLearner()

    def proposed(self, joiner: str, index: int, now: float) -> None:
        self.waiting[joiner] = (index, now)

    def settle(self, applied: int, committed_members: set[str], is_leader: bool,
               now: float) -> tuple[list[str], list[str]]:
        """(admitted, refused) joiners: admitted once their entry applied and they are in the
        committed configuration; refused when that failed (truncated, lost leadership, timed
        out)."""
        admitted: list[str] = []
        refused: list[str] = []
        for joiner, (index, at) in sorted(self.waiting.items()):
            if joiner in committed_members and applied >= index:
                admitted.append(joiner)
            elif not is_leader or now - at >= self.timing.join_timeout or applied >= index:
                refused.append(joiner)
        for j in (*admitted, *refused):
            del self.waiting[j]
        return admitted, refused

    def clear(self) -> list[str]:
        refused = sorted(self.waiting)
        self.waiting.clear()
        return refused

