"""Leadership transfer, learners and single-server membership changes."""

from __future__ import annotations

import pytest
from raft_harness import Cluster

from agent.authority.raft import (
    ConfChange,
    ConfChangeError,
    ConfChangeType,
    ConfState,
    ProposalDroppedError,
    RequestVote,
    StateType,
    TimeoutNow,
    apply_conf_change,
    next_conf_change,
    validate_conf_change,
)

LEADER, FOLLOWER = StateType.LEADER, StateType.FOLLOWER
ADD_VOTER = ConfChangeType.ADD_VOTER
REMOVE_VOTER = ConfChangeType.REMOVE_VOTER
ADD_LEARNER = ConfChangeType.ADD_LEARNER
PROMOTE = ConfChangeType.PROMOTE_LEARNER


# --- leadership transfer ---------------------------------------------------------------


def test_transfer_to_up_to_date_voter_is_immediate() -> None:
    c = Cluster(3)
    c.elect("1")
    term = c["1"].term
    c["1"].transfer_leadership("3")
    assert any(isinstance(m, TimeoutNow) and m.dst == "3" for m in c["1"]._msgs)
    c.stabilize()
    assert c.leaders() == ["3"] and c["3"].term == term + 1
    # The transfer election skips pre-vote and overrides the followers' lease.
    votes = [m for m in c.delivered if isinstance(m, RequestVote) and m.src == "3"]
    assert votes and all(m.transfer and not m.pre_vote for m in votes)


def test_transfer_catches_up_a_lagging_target_first() -> None:
    c = Cluster(3)
    c.elect("1")
    c.isolate("3")
    for i in range(3):
        c["1"].propose(f"p{i}".encode())
    c.stabilize()
    c.heal()
    c["1"].transfer_leadership("3")
    with pytest.raises(ProposalDroppedError):
        c["1"].propose(b"refused during transfer")
    c.stabilize()
    c.tick("1")
    c.stabilize()
    assert c.leaders() == ["3"]
    assert c.log_of("3")[: len(c.log_of("1"))] == c.log_of("1")


def test_transfer_aborts_after_an_election_timeout() -> None:
    c = Cluster(3)
    c.elect("1")
    c.isolate("3")
    c["1"].transfer_leadership("3")
    assert c["1"].lead_transferee == "3"
    for _ in range(c["1"].election_tick):
        c.tick("1")
        c.stabilize()
    assert c["1"].lead_transferee is None and c["1"].state is LEADER
    c["1"].propose(b"accepted again")


def test_transfer_to_learner_or_unknown_is_refused() -> None:
    c = Cluster(3, voters=["1", "2"], learners=["3"])
    c.elect("1")
    with pytest.raises(ConfChangeError):
        c["1"].transfer_leadership("3")
    with pytest.raises(ConfChangeError):
        c["1"].transfer_leadership("9")
    with pytest.raises(ProposalDroppedError):
        c["2"].transfer_leadership("1")


# --- learners ------------------------------------------------------------------------


def test_learner_replicates_but_does_not_count_for_commit() -> None:
    c = Cluster(3, voters=["1", "2"], learners=["3"])
    c.elect("1")
    c.isolate("2")
    idx = c["1"].propose(b"x")
    c.stabilize()
    assert c["3"].last_index == idx  # the learner has it...
    assert c["1"].commit_index < idx  # ...but 1 of 2 voters is not a quorum
    c.heal()
    c.tick("1")
    c.stabilize()
    assert c["3"].commit_index == idx and c.applied["3"][-1][2] == b"x"


def test_learner_is_not_asked_to_vote_and_cannot_campaign() -> None:
    c = Cluster(3, voters=["1", "2"], learners=["3"])
    c["1"].campaign()
    c.process_ready("1")
    assert {m.dst for m in c.pending} == {"2"}
    c.process_ready("3")  # its bootstrap Ready
    c["3"].campaign()
    assert c["3"].state is FOLLOWER and not c["3"].has_ready()


def test_learner_promotion_makes_it_a_voter() -> None:
    c = Cluster(3, voters=["1", "2"], learners=["3"])
    c.elect("1")
    idx = c["1"].propose_conf_change(PROMOTE, "3")
    c.stabilize()
    for n in "123":
        assert c[n].conf_state == ConfState(("1", "2", "3"), ())
    assert c["1"].commit_index >= idx
    # 3 now counts: with 2 down, 1 and 3 still commit.
    c.isolate("2")
    idx = c["1"].propose(b"after promotion")
    c.stabilize()
    assert c["1"].commit_index == idx
    # ...and it can lead.
    c.heal()
    c["1"].transfer_leadership("3")
    c.stabilize()
    assert c.leaders() == ["3"]


def test_adding_a_new_node_as_learner_then_voter() -> None:
    c = Cluster(3)
    c.elect("1")
    c.add_nodes(["4"])  # joins with no configuration: learns it from the log
    assert c["4"].conf_state == ConfState()
    c["1"].propose_conf_change(ADD_LEARNER, "4")
    c.stabilize()
    c.tick("1")
    c.stabilize()
    assert c["4"].conf_state.learners == ("4",)
    assert c["4"].commit_index == c["1"].commit_index
    c["1"].propose_conf_change(PROMOTE, "4")
    c.stabilize()
    assert all(c[n].voters == ("1", "2", "3", "4") for n in "1234")


# --- single-server changes -------------------------------------------------------------


def test_one_conf_change_at_a_time() -> None:
    c = Cluster(3)
    c.elect("1")
    c.isolate("2")
    c.isolate("3")
    c["1"].propose_conf_change(ADD_LEARNER, "4")
    with pytest.raises(ProposalDroppedError, match="pending"):
        c["1"].propose_conf_change(ADD_LEARNER, "5")
    c.heal()
    c.tick("1")
    c.stabilize()
    c["1"].propose_conf_change(ADD_LEARNER, "5")  # the first one committed: allowed now


def test_new_leader_must_commit_in_its_term_before_changing_membership() -> None:
    c = Cluster(3)
    c.elect("1")
    c["1"].transfer_leadership("2")
    c.stabilize(["1", "3"])  # the TimeoutNow is still queued for 2
    c.deliver(["2"])
    c.process_ready("2")
    c.deliver(["1", "3"])
    c.process_ready("1")
    c.process_ready("3")
    c.deliver(["2"])
    assert c["2"].state is LEADER
    # Its no-op is appended but not committed yet (raft-dev 2015 single-server bug fix).
    with pytest.raises(ProposalDroppedError, match="committed an entry of its term"):
        c["2"].propose_conf_change(REMOVE_VOTER, "3")
    c.stabilize()
    c["2"].propose_conf_change(REMOVE_VOTER, "3")


def test_configuration_takes_effect_on_append_for_quorum_counting() -> None:
    c = Cluster(3)
    c.elect("1")
    c["1"].propose_conf_change(REMOVE_VOTER, "3")
    assert c["1"].voters == ("1", "2")  # before any commit
    c.isolate("3")
    c.stabilize()
    idx = c["1"].propose(b"two voters suffice")
    c.stabilize()
    assert c["1"].commit_index == idx


def test_uncommitted_conf_change_is_rolled_back_when_truncated() -> None:
    c = Cluster(3, check_quorum=False)
    c.elect("1")
    c.isolate("2")
    c.isolate("3")
    c["1"].propose_conf_change(ADD_LEARNER, "9")
    c.stabilize()
    assert c["1"].learners == ("9",)
    c.heal()
    c.isolate("1")
    c.tick_election("2")
    c.stabilize()
    assert c["2"].state is LEADER
    c.heal()
    c.tick("2")
    c.stabilize()
    assert c["1"].state is FOLLOWER
    assert c["1"].learners == ()  # its own uncommitted change was truncated away


def test_leader_cannot_remove_itself() -> None:
    c = Cluster(3)
    c.elect("1")
    with pytest.raises(ConfChangeError, match="transfer"):
        c["1"].propose_conf_change(REMOVE_VOTER, "1")


def test_removed_voter_stops_counting_and_cannot_campaign() -> None:
    c = Cluster(3)
    c.elect("1")
    c["1"].propose_conf_change(REMOVE_VOTER, "3")
    c.stabilize()
    c.tick("1")
    c.stabilize()
    # The leader kept replicating to 3 until it held the entry removing it...
    assert c["3"].voters == ("1", "2") and not c["3"].promotable()
    assert c["1"].progress("3") is None  # ...and then forgot it.
    c["3"].campaign()
    assert c["3"].state is FOLLOWER
    c.isolate("3")
    idx = c["1"].propose(b"quorum is 2 of {1, 2}")
    c.stabilize()
    assert c["1"].commit_index == idx


def test_invalid_changes_are_rejected() -> None:
    c = Cluster(3)
    c.elect("1")
    with pytest.raises(ConfChangeError):
        c["1"].propose_conf_change(ADD_VOTER, "2")
    with pytest.raises(ConfChangeError):
        c["1"].propose_conf_change(PROMOTE, "2")
    with pytest.raises(ConfChangeError):
        c["1"].propose_conf_change("demote", "2")
    with pytest.raises(ConfChangeError):
        c["1"].propose_conf_change(ADD_LEARNER, "bad id")


def test_snapshot_carries_the_configuration_at_its_index() -> None:
    c = Cluster(3)
    c.elect("1")
    c["1"].propose_conf_change(ADD_LEARNER, "4")
    c.stabilize()
    at = c["1"].applied_index
    c.isolate("2")
    c.isolate("3")
    c["1"].propose(b"x")
    c.stabilize()
    snap = c["1"].compact(at, c.apps["1"].snapshot())
    assert snap.conf_state == ConfState(("1", "2", "3"), ("4",))


# --- pure helpers ----------------------------------------------------------------------


def test_apply_conf_change_rules() -> None:
    base = ConfState(("1", "2", "3"), ("4",))
    assert apply_conf_change(base, ConfChange(PROMOTE, "4")) == ConfState(("1", "2", "3", "4"))
    assert apply_conf_change(base, ConfChange(REMOVE_VOTER, "4")) == ConfState(("1", "2", "3"))
    assert apply_conf_change(base, ConfChange(ADD_VOTER, "4")) == base  # invalid: no-op
    assert validate_conf_change(ConfState(("1",)), ConfChange(REMOVE_VOTER, "1"))


def test_next_conf_change_plans_adds_before_removes() -> None:
    conf = ConfState(("1", "2", "3"), ())
    steps = []
    want_voters, want_learners = ["2", "3", "4"], ["5"]
    while (cc := next_conf_change(conf, want_voters, want_learners)) is not None:
        steps.append((cc.op.value, cc.node_id))
        conf = apply_conf_change(conf, cc)
    assert steps == [
        ("add_learner", "4"),
        ("add_learner", "5"),
        ("promote_learner", "4"),
        ("remove_voter", "1"),
    ]
    assert conf == ConfState(("2", "3", "4"), ("5",))
