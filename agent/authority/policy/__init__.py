"""The authority's policy, without I/O: time comes in as ``now``, decisions go out as values.

* :mod:`.timing` - the constants (lease, dead-after, intervals) as one injectable value.
* :mod:`.lease` - holder liveness as the leader sees it, and when a holder may act.
* :mod:`.reports` - members' holdings reports, reputation scores.
* :mod:`.reassign` - leader: what to Assign or Revoke.
* :mod:`.voters` - leader: the next voter/learner change.
* :mod:`.merge` - cluster formation: whom to join, when to give up, when a join is done.
* :mod:`.member` - one device's policy, composing the above for the adapters.

Nothing here reads a clock, sleeps, sends or touches a file; everything is deterministic.
See docs/authority.md ("Policy and adapters").
"""

from .lease import NEVER, Lease, Liveness
from .member import AuthorityPolicy, Paired, committed_members, for_earlier_incarnation
from .merge import (
    AddLearner,
    Admitted,
    ClusterView,
    Hello,
    Join,
    JoinAnswer,
    JoinDesk,
    MergeDecision,
    Merger,
    Refound,
    Refuse,
    RemoveFirst,
)
from .reassign import Command, LeaderView, Reassigner, Revoked
from .reports import HolderReport, Reports
from .timing import DEFAULT_TIMING, Timing
from .voters import Membership, VoterChange, voter_change

__all__ = [
    "DEFAULT_TIMING",
    "NEVER",
    "AddLearner",
    "Admitted",
    "AuthorityPolicy",
    "ClusterView",
    "Command",
    "Hello",
    "HolderReport",
    "Join",
    "JoinAnswer",
    "JoinDesk",
    "LeaderView",
    "Lease",
    "Liveness",
    "Membership",
    "MergeDecision",
    "Merger",
    "Paired",
    "Reassigner",
    "Refound",
    "Refuse",
    "RemoveFirst",
    "Reports",
    "Revoked",
    "Timing",
    "VoterChange",
    "committed_members",
    "for_earlier_incarnation",
    "voter_change",
]
