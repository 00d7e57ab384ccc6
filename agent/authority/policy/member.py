"""One device's authority policy: every decision of the service, none of its I/O.

The adapters (:mod:`agent.authority.service` over asyncio and peer sessions,
:mod:`agent.authority.mesh_sim` over a seeded virtual network) own the Raft node, persist
and send its Ready, and call in here at fixed points with the time on *their* clock:

==========================  ====================================================
adapter event               call
==========================  ====================================================
any message from a member   :meth:`heard`
Raft message stepped        :meth:`raft_message` (leader contact for the lease)
soft state changed          :meth:`soft_state`
snapshot restored           :meth:`restored`
committed entry             :meth:`apply`
report received             :meth:`report`
hello received              :meth:`hello` -> merge decision
a device unpaired           :meth:`unpaired` -> membership change or merge decision
every evaluate interval     :meth:`evaluate` (leader) -> commands to propose
every membership interval   :meth:`voter_change` (leader), :meth:`merge`
join request (leader)       :meth:`join_request`, then :meth:`join_settle`
switched cluster            :meth:`switched`
==========================  ====================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..authority_map import ApplyResult, Assign, AuthorityMap, Revoke
from ..raft.core import RaftNode
from ..raft.messages import ConfChangeType, Entry, Heartbeat, Message
from ..reputation import ReputationWeights
from .lease import NEVER, Lease, Liveness
from .merge import ClusterView, Hello, JoinAnswer, JoinDesk, MergeDecision, Merger
from .reassign import LeaderView, Reassigner
from .reports import HolderReport, Reports
from .timing import DEFAULT_TIMING, Timing
from .voters import Membership, VoterChange, voter_change

Paired = Callable[[str], bool]
"""Is this device ID a paired member (role "member") right now?"""


class AuthorityPolicy:
    def __init__(self, me: str, cluster: str, now: float, *, timing: Timing = DEFAULT_TIMING,
                 hysteresis: float = 0.15, weights: ReputationWeights | None = None) -> None:
        self.me = me
        self.cluster = cluster
        self.timing = timing
        self.map = AuthorityMap()
        self.liveness = Liveness(timing)
        self.lease = Lease(timing)
        self.reports = Reports(timing, weights or ReputationWeights())
        self.reassigner = Reassigner(timing, hysteresis)
        self.merger = Merger(me, timing, now)
        self.desk = JoinDesk(timing)
        self._followed: str | None = None  # the last leader we followed

    # ------------------------------------------------------------------ cluster life
    def restored(self, amap: AuthorityMap, now: float) -> None:
        """The whole map was replaced (restart from a snapshot, or a snapshot installed)."""
        self.map = amap
        self.reassigner.reindex(amap)
        self.lease.reset((rid for rid, _ in amap.assignments()), now)

    def switched(self, cluster: str, now: float) -> list[str]:
        """We entered another cluster with empty state. Returns join requests to refuse."""
        self.cluster = cluster
        self.map = AuthorityMap()
        self.reassigner.clear()
        self.lease = Lease(self.timing)
        self._followed = None
        self.merger.switched(now)
        return self.desk.clear()

    # ------------------------------------------------------------------ inputs
    def heard(self, member: str, now: float) -> None:
        self.liveness.heard(member, now)

    def raft_message(self, src: str, lead: str | None, now: float) -> None:
        """Call after stepping a Raft message from *src* (lead = the node's leader then)."""
        if src == lead:
            self.lease.leader_contact(now)

    def soft_state(self, is_leader: bool, lead: str | None, now: float) -> None:
        if is_leader:
            self.reassigner.became_leader(now, self._followed)
        else:
            self.reassigner.lost_leadership()
        if lead and not is_leader:
            self._followed = lead
            self.lease.leader_contact(now)

    def apply(self, entry: Entry, now: float) -> ApplyResult | None:
        """Apply one committed entry to the map and keep the bookkeeping in step."""
        result = self.map.apply(entry)
        if result is not None and result.accepted and result.assignment is not None:
            rid = result.resource_id or ""
            self.lease.assigned(rid, now)
            self.reassigner.applied(rid, result.assignment, now)
        return result

    def report(self, member: str, report: HolderReport | None, now: float) -> None:
        """A member's holdings report (None: unchanged since the last one)."""
        if report is None and self.reports.touch(member, now):
            return
        if report is not None:
            self.reassigner.newly_held(self.reports.update(member, report))

    def hello(self, peer: str, hello: Hello, raft: RaftNode, now: float,
              paired: Paired) -> MergeDecision:
        self.merger.on_hello(peer, hello, now)
        return self.merge(raft, now, paired)

    def unpaired(self, peer: str, raft: RaftNode, now: float,
                 paired: Paired) -> VoterChange | MergeDecision:
        """*peer* is no longer paired with us (our user unpaired it, or its own notice said
        it no longer trusts us): it can neither hear us nor be heard, so it leaves our
        cluster now, not at the next membership round.

        * As the leader: the single-server change that removes it (proposed before
          CheckQuorum deposes us for lack of its answers: with two voters it is the other
          half of every quorum).
        * As another member: if our cluster can no longer reach a quorum of paired voters,
          we are stranded for certain and leave at once (:meth:`Merger.decide`, *at_once*);
          else its leader removes it (the leader is paired with it only if the unpairing was
          between two followers: then it stays a voter we do not talk to, docs/authority.md
          section 10, limitation).
        """
        self.merger.unpaired(peer)
        if raft.is_leader():
            if peer in raft.voters or peer in raft.learners:
                return VoterChange(ConfChangeType.REMOVE_VOTER, peer)
            return None
        if peer not in raft.voters:
            return None
        return self.merger.decide(self.cluster_view(raft), now, paired, at_once=True)

    # ------------------------------------------------------------------ reads
    def cluster_view(self, raft: RaftNode) -> ClusterView:
        return ClusterView(self.cluster, raft.voters, raft.learners, raft.is_leader(),
                           self.lease.last_leader_contact)

    def hello_for(self, raft: RaftNode, now: float) -> Hello | None:
        """What we announce (None right after a switch: we do not know our members yet).

        The leader is named only if we are it or heard from it recently: a learner keeps its
        last leader forever, and announcing it from a dead cluster would draw joiners there.
        """
        if not raft.voters:
            return None
        recent = now - self.lease.last_leader_contact < 2 * self.timing.membership_interval
        lead = raft.lead if raft.lead and (raft.is_leader() or recent) else ""
        return Hello(self.cluster, len(raft.voters) + len(raft.learners), lead)

    def acting_for(self, resource_id: str, raft: RaftNode, now: float) -> bool:
        """May this device act as the resource's authority now? (:class:`Lease`)"""
        w = self.acting_window(resource_id, raft, now)
        return w is not None and w[0] <= now < w[1]

    def acting_window(self, resource_id: str, raft: RaftNode,
                      now: float) -> tuple[float, float] | None:
        """When (on this device's clock) it acts for the resource if nothing else happens."""
        a = self.map.authority_for(resource_id)
        if a is None or a.holder != self.me:
            return None
        return self.acting_windows(raft, now, (resource_id,)).get(resource_id)

    def acting_windows(self, raft: RaftNode, now: float,
                       resource_ids: Iterable[str] | None = None) -> dict[str, tuple[float, float]]:
        """:meth:`acting_window` of every resource the map gives us (the simulator's view)."""
        mine = self.reassigner.by_holder.get(self.me)
        if not mine:
            return {}
        leader = raft.is_leader()
        quorum = self.liveness.quorum_contact(self.me, raft.voters, now) if leader else NEVER
        caught_up = leader and raft.log.term_of(raft.commit_index) == raft.term \
            and self.map.applied_index >= raft.commit_index
        out: dict[str, tuple[float, float]] = {}
        for rid in sorted(mine if resource_ids is None else set(resource_ids) & mine):
            w = self.lease.window(rid, self.me, self.me, is_leader=leader,
                                  quorum_contact=quorum, caught_up=caught_up)
            if w is not None:
                out[rid] = w
        return out

    def scores(self, resource_id: str, now: float, wall: float) -> dict[str, float]:
        return self.reports.scores(resource_id, now, wall)

    # ------------------------------------------------------------------ decisions
    def evaluate(self, raft: RaftNode, now: float, wall: float, *,
                 full: bool) -> list[Assign | Revoke]:
        st = raft.status()
        match = {m: p.match for m, p in st.progress.items()}
        view = LeaderView(self.me, frozenset((*st.voters, *st.learners)), match)
        return self.reassigner.evaluate(view, self.map, self.reports, self.liveness, now, wall,
                                        full=full)

    def voter_change(self, raft: RaftNode, now: float, paired: Paired) -> VoterChange | None:
        st = raft.status()
        m = Membership(self.me, st.voters, st.learners,
                       {x: p.match for x, p in st.progress.items()}, st.commit)
        since = self.reassigner.leader_since
        return voter_change(m, self.liveness, self.reports.uptime, paired, self.timing, now,
                            now if since is None else since)

    def merge(self, raft: RaftNode, now: float, paired: Paired) -> MergeDecision:
        return self.merger.decide(self.cluster_view(raft), now, paired)

    def join_request(self, joiner: str, cluster: str, raft: RaftNode, now: float, *,
                     rejoin: bool) -> JoinAnswer:
        self.liveness.heard(joiner, now)  # its request is news from it
        return self.desk.request(joiner, cluster, self.cluster_view(raft),
                                 committed_members(raft), raft.lead, rejoin=rejoin)

    def join_settle(self, raft: RaftNode, now: float) -> tuple[list[str], list[str]]:
        if not self.desk.waiting:
            return [], []
        return self.desk.settle(self.map.applied_index, committed_members(raft),
                                raft.is_leader(), now)


def for_earlier_incarnation(raft: RaftNode, msg: Message) -> bool:
    """A heartbeat whose commit lies beyond our log was meant for an earlier incarnation of
    this device in the same cluster (we rejoined with an empty log while it was in flight,
    or the leader still has the match of our previous life): drop it, the leader's probe
    will find where we are. Stepping it would trip the core's lost-log check."""
    return isinstance(msg, Heartbeat) and msg.commit > raft.last_index


def committed_members(raft: RaftNode) -> set[str]:
    """Voters and learners of the configuration in force at the applied index."""
    cs = raft.conf_state_at(raft.applied_index)
    return {*cs.voters, *cs.learners}
