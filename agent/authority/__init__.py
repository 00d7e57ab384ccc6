"""Authority for shared resources: who serves each resource, agreed by every device.

* :mod:`.raft` - pure, deterministic Raft (the replication core).
* :mod:`.authority_map` - the replicated state machine (resource -> assignment).
* :mod:`.reputation` - scoring holders and choosing authorities with hysteresis.
* :mod:`.policy` - every decision of the service (lease, liveness, reassignment, voters,
  cluster merging) without I/O: time comes in as ``now``.
* :mod:`.service` - the asyncio adapter: clock, peer sessions, storage.
* :mod:`.sim` - seeded whole-cluster simulator of the Raft core with invariant checks.
* :mod:`.mesh_sim` - seeded whole-mesh simulator of the policy (drift, pairing, unpairing).

See docs/authority.md.
"""

from .authority_map import (
    ApplyResult,
    Assign,
    Assignment,
    AuthorityMap,
    CommandError,
    Revoke,
    decode_command,
    encode_command,
)
from .reputation import (
    HolderStats,
    QualityMetrics,
    ReputationWeights,
    UsageCounter,
    choose_authority,
    choose_voters,
    proximity_weight,
    reputation_score,
)

__all__ = [
    "ApplyResult",
    "Assign",
    "Assignment",
    "AuthorityMap",
    "CommandError",
    "HolderStats",
    "QualityMetrics",
    "ReputationWeights",
    "Revoke",
    "UsageCounter",
    "choose_authority",
    "choose_voters",
    "decode_command",
    "encode_command",
    "proximity_weight",
    "reputation_score",
]
