"""Single-server membership changes as pure functions on :class:`ConfState`.

Why single-server: changing the voter set by at most one node per step guarantees that
any majority of the old set and any majority of the new set overlap, so no joint
consensus is needed. Learners can be added and removed freely (they never vote).

Applying an invalid change (e.g. promoting a node that is not a learner) leaves the
configuration unchanged. The leader validates before proposing, but the log may still
carry such an entry (a deposed leader's proposal): being a deterministic no-op keeps every
node's derived configuration identical.
"""

from __future__ import annotations

from collections.abc import Iterable

from .messages import ConfChange, ConfChangeType, ConfState


def validate_conf_change(conf: ConfState, cc: ConfChange) -> str | None:
    """Why *cc* is not applicable to *conf*, or None if it is."""
    voters, learners = set(conf.voters), set(conf.learners)
    nid = cc.node_id
    if cc.op is ConfChangeType.ADD_VOTER:
        if nid in voters:
            return f"{nid} is already a voter"
        if nid in learners:
            return f"{nid} is a learner; use promote_learner"
    elif cc.op is ConfChangeType.ADD_LEARNER:
        if nid in voters or nid in learners:
            return f"{nid} is already a member"
    elif cc.op is ConfChangeType.PROMOTE_LEARNER:
        if nid not in learners:
            return f"{nid} is not a learner"
    elif cc.op is ConfChangeType.REMOVE_VOTER:
        if nid not in voters and nid not in learners:
            return f"{nid} is not a member"
        if voters == {nid}:
            return "cannot remove the last voter"
    return None


def apply_conf_change(conf: ConfState, cc: ConfChange) -> ConfState:
    """The configuration after *cc* (unchanged if *cc* is invalid).

    REMOVE_VOTER also removes a learner of that id: "remove from the cluster".
    """
    if validate_conf_change(conf, cc) is not None:
        return conf
    voters, learners = set(conf.voters), set(conf.learners)
    nid = cc.node_id
    if cc.op is ConfChangeType.ADD_VOTER:
        voters.add(nid)
    elif cc.op is ConfChangeType.ADD_LEARNER:
        learners.add(nid)
    elif cc.op is ConfChangeType.PROMOTE_LEARNER:
        learners.discard(nid)
        voters.add(nid)
    else:
        voters.discard(nid)
        learners.discard(nid)
    return ConfState(voters=tuple(sorted(voters)), learners=tuple(sorted(learners)))


def bootstrap_changes(voters: Iterable[str], learners: Iterable[str]) -> list[ConfChange]:
    """The deterministic change list that builds an initial configuration from nothing."""
    vs, ls = sorted(set(voters)), sorted(set(learners))
    if set(vs) & set(ls):
        raise ValueError("a node cannot be both voter and learner")
    return [ConfChange(ConfChangeType.ADD_VOTER, v) for v in vs] + [
        ConfChange(ConfChangeType.ADD_LEARNER, learner) for learner in ls
    ]


def next_conf_change(
    conf: ConfState, want_voters: Iterable[str], want_learners: Iterable[str] = ()
) -> ConfChange | None:
    """Next single step from *conf* toward the desired membership, or None when there.

    Order keeps fault tolerance high: add newcomers as learners first (they catch up
    without affecting quorum), promote, and only then remove. A voter that should become a
    learner is removed and re-added, since demotion is not an operation.
    """
    wv, wl = set(want_voters), set(want_learners)
    if wv & wl:
        raise ValueError("a node cannot be both voter and learner")
    if not wv:
        raise ValueError("at least one voter is required")
    voters, learners = set(conf.voters), set(conf.learners)
    steps = (
        (ConfChangeType.ADD_LEARNER, (wv | wl) - (voters | learners)),
        (ConfChangeType.PROMOTE_LEARNER, wv & learners),
        (ConfChangeType.REMOVE_VOTER, voters - wv),
        (ConfChangeType.REMOVE_VOTER, learners - wl),
    )
    for op, ids in steps:
        if ids:
            return ConfChange(op, min(ids))
    return None
