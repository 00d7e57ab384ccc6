"""Elections: basic voting, randomized timeouts, PreVote, CheckQuorum and the leader lease."""

from __future__ import annotations

import random

from raft_harness import Cluster

from agent.authority.raft import (
    AppendEntries,
    AppendResponse,
    MemoryStorage,
    RaftNode,
    RequestVote,
    StateType,
    VoteResponse,
)

LEADER, FOLLOWER = StateType.LEADER, StateType.FOLLOWER


def test_single_voter_elects_itself_and_commits_alone() -> None:
    c = Cluster(1)
    c.elect("1")
    idx = c["1"].propose(b"x")
    c.stabilize()
    assert c["1"].commit_index == idx
    assert c.applied["1"][-1] == (idx, c["1"].term, b"x")


def test_three_nodes_elect_one_leader_and_followers_learn_it() -> None:
    c = Cluster(3)
    c.elect("1")
    assert c.leaders() == ["1"]
    assert [c[n].lead for n in "123"] == ["1", "1", "1"]
    assert {c[n].term for n in "123"} == {2}
    # The no-op of the new term is committed and applied everywhere.
    assert all(c[n].commit_index == 4 for n in "123")


def test_randomized_election_timeout_stays_in_range() -> None:
    node = RaftNode("1", ["1", "2", "3"], MemoryStorage(), random.Random(7), election_tick=10)
    seen = set()
    for _ in range(300):
        node._reset(node.term)  # re-draws the timeout, as every role change does
        seen.add(node.randomized_election_timeout)
    assert seen == set(range(10, 20))


def test_follower_times_out_and_becomes_leader_of_quiet_cluster() -> None:
    c = Cluster(3)
    c.tick_election("2")
    assert c["2"].state is StateType.PRE_CANDIDATE
    c.stabilize()
    assert c.leaders() == ["2"]


def test_vote_refused_to_candidate_with_stale_log() -> None:
    c = Cluster(3, check_quorum=False)  # no lease, so the request is judged on the log
    c.elect("1")
    c.isolate("3")
    c["1"].propose(b"a")
    c.stabilize()
    c.heal()
    # 3 lacks entry 5; a real vote request from it must be refused by 2.
    c["2"].step(RequestVote(term=5, src="3", dst="2", last_index=4, last_term=2))
    (resp,) = [m for m in c["2"]._msgs if isinstance(m, VoteResponse)]
    assert not resp.granted
    assert c["2"].vote is None


def test_one_vote_per_term() -> None:
    c = Cluster(3, pre_vote=False, check_quorum=False)
    n = c["1"]
    n.step(RequestVote(term=2, src="2", dst="1", last_index=3, last_term=1))
    n.step(RequestVote(term=2, src="3", dst="1", last_index=3, last_term=1))
    votes = [m for m in n._msgs if isinstance(m, VoteResponse)]
    assert [v.granted for v in votes] == [True, False]
    assert n.vote == "2"
    # The vote must be in the next Ready's hard state, i.e. persisted before it is sent.
    rd = n.ready()
    assert rd.hard_state is not None and rd.hard_state.vote == "2"


def test_candidate_steps_down_on_append_from_leader_of_same_term() -> None:
    c = Cluster(3, pre_vote=False)
    c["2"].campaign()
    assert c["2"].state is StateType.CANDIDATE
    term = c["2"].term
    c["2"].step(AppendEntries(term=term, src="3", dst="2", prev_index=3, prev_term=1, commit=3))
    assert c["2"].state is FOLLOWER and c["2"].lead == "3"


def test_prevote_rejoining_node_does_not_disrupt_stable_leader() -> None:
    c = Cluster(3)
    c.elect("1")
    term = c["1"].term
    c.isolate("3")
    for _ in range(5):  # many election timeouts in isolation
        c.tick_election("3")
        c.stabilize()
    assert c["3"].term == term  # pre-votes failed, so the term never moved
    assert c["3"].state is StateType.PRE_CANDIDATE
    c.heal()
    c.tick_all(1)  # leader heartbeat reaches 3 again
    c.stabilize()
    assert c.leaders() == ["1"] and c["1"].term == term
    assert c["3"].state is FOLLOWER and c["3"].lead == "1"


def test_without_prevote_rejoining_node_disrupts_leader() -> None:
    """The contrast case that motivates PreVote."""
    c = Cluster(3, pre_vote=False, check_quorum=False)
    c.elect("1")
    term = c["1"].term
    c.isolate("3")
    c.tick_election("3")
    c.stabilize()
    assert c["3"].term == term + 1
    c.heal()
    c.tick_election("3")  # its next candidacy carries a higher term than the leader's
    c.stabilize()
    assert c["1"].term > term  # the old leader was deposed by a useless election


def test_checkquorum_leader_in_minority_steps_down() -> None:
    c = Cluster(5)
    c.elect("1")
    c.isolate("1")
    for _ in range(2):
        c.tick_election("1")
        c.stabilize()
    assert c["1"].state is FOLLOWER and c["1"].lead is None


def test_checkquorum_leader_with_quorum_stays() -> None:
    c = Cluster(5)
    c.elect("1")
    c.isolate("5")
    c.isolate("4")
    for _ in range(3):
        for _ in range(c["1"].election_tick):
            c.tick("1")
            c.stabilize()
    assert c["1"].state is LEADER


def test_leader_lease_ignores_vote_requests_from_disruptive_candidates() -> None:
    c = Cluster(3)
    c.elect("1")
    term = c["2"].term
    c["2"].step(RequestVote(term=term + 5, src="3", dst="2", last_index=99, last_term=term))
    assert c["2"].term == term and c["2"].vote == "1"
    assert not c["2"]._msgs  # silently ignored: no response at all


def test_stale_leader_learns_newer_term_from_lower_term_append() -> None:
    c = Cluster(3, check_quorum=False)  # no lease, and the old leader never steps down alone
    c.elect("1")
    c.isolate("1")
    c.tick_election("2")
    c.stabilize()
    assert c["2"].state is LEADER
    assert c["1"].state is LEADER  # stale: it has not heard of the new term
    new_term = c["2"].term
    c.heal()
    c.tick("1")  # its heartbeat is answered with the newer term
    c.stabilize()
    assert c["1"].state is FOLLOWER and c["1"].term == new_term
    assert c.leaders() == ["2"]


def test_lower_term_append_gets_a_response_carrying_our_term() -> None:
    c = Cluster(3)
    c.elect("2")
    c["2"].step(AppendEntries(term=1, src="1", dst="2", prev_index=3, prev_term=1, commit=3))
    (resp,) = c["2"]._msgs
    assert isinstance(resp, AppendResponse) and resp.term == c["2"].term


def test_learner_never_campaigns() -> None:
    c = Cluster(3, voters=["1", "2"], learners=["3"])
    for _ in range(50):
        c.tick("3")
    assert c["3"].state is FOLLOWER and c["3"].term == 1
    assert not [m for m in c["3"]._msgs if isinstance(m, RequestVote)]
    c.elect("1")
    assert c["3"].lead == "1" and c["3"].commit_index == c["1"].commit_index
