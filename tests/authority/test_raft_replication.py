"""Replication: commit rule (Figure 8), conflict repair, snapshots, flow control, Ready."""

from __future__ import annotations

import pytest
from raft_harness import Cluster

from agent.authority.authority_map import Assign, encode_command
from agent.authority.raft import (
    AppendResponse,
    InstallSnapshot,
    ProposalDroppedError,
    RaftError,
    StateType,
)

LEADER = StateType.LEADER


def _win(c: Cluster, cand: str, voters: list[str]) -> None:
    """One real election of *cand* in which only *voters* hear it."""
    c[cand].campaign()
    c.process_ready(cand)
    c.deliver(voters)
    for v in voters:
        c.process_ready(v)
    c.deliver([cand])
    c.pending = [m for m in c.pending if m.dst != cand]


def _figure8(c: Cluster) -> None:
    """Raft paper Figure 8 up to (c): an old-term entry sits on a majority, uncommitted.

    Indexes are shifted by the 5 bootstrap entries and the term-2 no-op (index 6).
    """
    c.elect("1")  # term 2
    for n in "345":
        c.cut("1", n)
    c["1"].propose(b"a")  # (a) 2/7 reaches S2 only
    c.stabilize()
    c.heal()
    c.isolate("1")
    _win(c, "5", ["3", "4"])  # (b) S5 leads term 3; its 3/7 stays local
    assert c["5"].state is LEADER and c["5"].term == 3
    c.isolate("5")
    c.process_ready("5")
    c.drop_pending()
    c.restart("1")
    c.heal()
    c.isolate("4")
    c.isolate("5")
    _win(c, "1", ["2", "3"])  # term 3 fails: S3 already voted for S5
    _win(c, "1", ["2", "3"])  # (c) S1 leads term 4
    assert c["1"].state is LEADER and c["1"].term == 4
    c.cut("1", "3")
    c.stabilize()  # S2 gets the no-op 4/8, S3 nothing yet
    c.heal()
    c.isolate("4")
    c.isolate("5")
    c.tick("1")  # heartbeat; S3's answer starts probing it, one entry per append
    for _ in range(3):
        c.process_ready("1")
        c.deliver(["3"])
        c.process_ready("3")
        c.deliver(["1"])
    c.process_ready("1")


def test_figure8_old_term_entry_on_majority_is_not_committed() -> None:
    c = Cluster(5, pre_vote=False, check_quorum=False, max_entries_per_msg=1)
    _figure8(c)
    assert [c.log_of(n)[-1] for n in "123"] == [(8, 4), (8, 4), (7, 2)]
    assert c["1"].progress("3").match == 7  # 2/7 is on S1, S2, S3: a majority...
    assert c["1"].commit_index == 6  # ...but it is from term 2, so it is not committed.

    # (d) S1 crashes; S5 (last entry 3/7) can legitimately win and overwrite 2/7.
    c.drop_pending()
    c.heal()
    c.isolate("1")
    c.restart("5")  # S5 had crashed in (c); it comes back as a follower of term 3
    _win(c, "5", ["2", "3", "4"])  # term 4: S2 and S3 already voted
    _win(c, "5", ["2", "3", "4"])  # term 5: S3 and S4 vote for it (S2 has 4/8: refuses)
    assert c["5"].state is LEADER and c["5"].term == 5
    c.stabilize()
    assert c.log_of("3")[6] == (7, 3) and c.log_of("2")[6] == (7, 3)
    for n in "2345":
        assert (7, 2, b"a") not in c.applied[n]  # the overwritten entry was never applied


def test_figure8_current_term_entry_on_majority_commits_everything_before() -> None:
    c = Cluster(5, pre_vote=False, check_quorum=False, max_entries_per_msg=1)
    _figure8(c)
    # (e) The no-op 4/8 reaches S3 as well: now 7 and 8 commit together.
    c.stabilize(["1", "2", "3"])
    assert c["1"].commit_index == 8
    c.drop_pending()
    c.heal()
    c.isolate("1")
    c.restart("5")
    for _ in range(3):
        _win(c, "5", ["2", "3", "4"])
    assert c["5"].state is not LEADER  # S5's log (3/7) is behind a majority now


def test_commit_needs_a_majority() -> None:
    c = Cluster(5)
    c.elect("1")
    c.isolate("3")
    c.isolate("4")
    c.isolate("5")
    idx = c["1"].propose(b"x")
    c.stabilize()
    assert c["1"].commit_index < idx
    c.heal()
    c.isolate("4")
    c.isolate("5")
    c.tick("1")
    c.stabilize()
    assert c["1"].commit_index == idx


def test_log_conflict_repair_with_fast_backoff() -> None:
    c = Cluster(3, check_quorum=False)
    c.elect("1")
    c.isolate("1")
    for i in range(30):  # a long divergent suffix that will never commit
        c["1"].propose(f"stale-{i}".encode())
    c.stabilize()
    c.tick_election("2")
    c.stabilize()
    assert c["2"].state is LEADER
    for i in range(5):
        c["2"].propose(f"new-{i}".encode())
    c.stabilize()
    c["2"].transfer_leadership("3")  # 3 will probe 1 from its (later) last index
    c.stabilize()
    assert c["3"].state is LEADER
    c.heal()
    rejects = 0
    c.tick("3")
    for _ in range(50):
        c.process_ready("1")
        c.process_ready("2")
        c.process_ready("3")
        for m in c.pending:
            if isinstance(m, AppendResponse) and m.reject and m.src == "1":
                rejects += 1
        if not c.pending:
            break
        c.deliver()
    assert c["1"].state is StateType.FOLLOWER
    assert c.log_of("1") == c.log_of("3")
    assert c["1"].commit_index == c["3"].commit_index
    # 3 probes at index 11 while 1 diverges from index 5 on: one rejection carrying a
    # (index, term) hint is enough, instead of one per conflicting entry.
    assert rejects == 1


def test_lagging_follower_is_caught_up_by_snapshot() -> None:
    c = Cluster(3)
    c.elect("1")
    c.isolate("3")
    for i in range(10):
        c["1"].propose(encode_command(Assign(f"r{i % 3}", "1", c.apps["1"].epoch_of(f"r{i % 3}"))))
        c.stabilize()
    leader_app = c.apps["1"]
    snap = c["1"].compact(c["1"].applied_index, leader_app.snapshot())
    assert c["1"].log.first_index() == snap.index + 1
    c.heal()
    c.tick("1")  # heartbeat -> response marks 3 active -> snapshot is sent
    sent: list[InstallSnapshot] = []
    for _ in range(20):
        c.process_ready("1")
        c.process_ready("2")
        c.process_ready("3")
        sent += [m for m in c.pending if isinstance(m, InstallSnapshot)]
        if not c.pending:
            break
        c.deliver()
    assert len(sent) == 1 and sent[0].snapshot.index == snap.index
    assert c.storages["3"].snapshot().index == snap.index
    assert c.apps["3"].snapshot() == leader_app.snapshot()
    assert c["1"].progress("3").state.value == "replicate"
    # And it keeps replicating normally afterwards.
    c["1"].propose(encode_command(Assign("r9", "3", 0)))
    c.stabilize()
    assert c.apps["3"].authority_for("r9").holder == "3"


def test_lost_snapshot_is_retried() -> None:
    c = Cluster(3)
    c.elect("1")
    c.isolate("3")
    for i in range(5):
        c["1"].propose(f"x{i}".encode())
    c.stabilize()
    c["1"].compact(c["1"].applied_index, c.apps["1"].snapshot())
    c.heal()
    lost: list[InstallSnapshot] = []

    def lose_first_snapshot(m: object) -> bool:
        if isinstance(m, InstallSnapshot) and not lost:
            lost.append(m)
            return True
        return False

    c.drop_filters.append(lose_first_snapshot)
    for _ in range(2 * c["1"].election_tick):
        c.tick("1")
        c.stabilize()
    assert len(lost) == 1
    retried = [m for m in c.delivered if isinstance(m, InstallSnapshot)]
    assert len(retried) == 1  # sent again after the snapshot timeout, and only once
    assert c.storages["3"].snapshot().index == c.storages["1"].snapshot().index


def test_flow_control_limits_inflight_appends() -> None:
    c = Cluster(3, max_inflight=2)
    c.elect("1")
    for i in range(5):
        c["1"].propose(f"p{i}".encode())
    rd = c.process_ready("1")
    assert rd is not None
    to2 = [m for m in c.pending if m.dst == "2"]
    assert len(to2) == 2  # two appends in flight, the rest waits for acks
    c.stabilize()
    assert c["2"].commit_index == c["1"].commit_index == c["1"].last_index


def test_proposal_on_follower_is_dropped_with_leader_hint() -> None:
    c = Cluster(3)
    c.elect("1")
    with pytest.raises(ProposalDroppedError) as exc:
        c["2"].propose(b"x")
    assert exc.value.leader_hint == "1"


def test_ready_contract() -> None:
    c = Cluster(3, pre_vote=False)
    n = c["1"]
    rd = n.ready()
    with pytest.raises(RaftError):
        n.ready()
    n.advance(rd)
    with pytest.raises(RaftError):
        n.advance(rd)
    assert rd.hard_state is not None and rd.hard_state.commit == 3  # bootstrap
    assert [e.index for e in rd.entries] == [1, 2, 3]
    assert [e.index for e in rd.committed_entries] == [1, 2, 3]
    c.storages["1"].append(rd.entries)
    c.storages["1"].set_hard_state(rd.hard_state)
    c.storages["1"].sync()
    assert not n.has_ready()
    n.campaign()
    rd = n.ready()
    # The vote travels in the same Ready as the hard state that records it.
    assert rd.hard_state is not None and rd.hard_state.vote == "1"
    assert rd.soft_state_changed and rd.soft_state.state is StateType.CANDIDATE
    assert {m.dst for m in rd.messages} == {"2", "3"}
    n.advance(rd)


def test_restart_loses_only_unsynced_state_and_catches_up() -> None:
    c = Cluster(3)
    c.elect("1")
    c["1"].propose(b"durable")
    c.stabilize()
    # 3 receives an append but "loses power" before syncing it.
    c["1"].propose(b"volatile")
    c.process_ready("1")
    c.deliver(["3"])
    rd = c["3"].ready()
    c.storages["3"].append(rd.entries)
    c.pending = [m for m in c.pending if m.dst != "3"]
    c.restart("3")
    assert c.storages["3"].last_index() == 5  # "volatile" (6) was never synced
    c.stabilize()
    c.tick("1")
    c.stabilize()
    assert c["3"].commit_index == c["1"].commit_index == 6
    assert c.applied["3"][-1][2] == b"volatile"


def test_transport_feedback_and_compaction_guards() -> None:
    c = Cluster(3)
    c.elect("1")
    leader = c["1"]
    leader.report_unreachable("2")
    assert leader.progress("2").state.value == "probe"  # type: ignore[union-attr]
    leader.report_snapshot("2", True)  # not in snapshot state: ignored
    with pytest.raises(ValueError, match="applied"):
        leader.compact(leader.applied_index + 1, b"")
    leader.compact(leader.applied_index, c.apps["1"].snapshot())
    with pytest.raises(ValueError, match="already compacted"):
        leader.compact(leader.applied_index, b"")
    c.isolate("3")
    leader.propose(b"x")
    c.stabilize()
    leader.compact(leader.applied_index, c.apps["1"].snapshot())
    c.heal()
    c.tick("1")
    c.process_ready("1")
    c.deliver(["3"])
    c.process_ready("3")
    c.deliver(["1"])
    c.process_ready("1")
    c.deliver(["3"])
    c.process_ready("3")
    c.deliver(["1"])  # rejection -> snapshot queued
    c.process_ready("1")
    assert leader.progress("3").state.value == "snapshot"  # type: ignore[union-attr]
    c.drop_pending()
    leader.report_snapshot("3", False)
    assert leader.progress("3").state.value == "probe"  # type: ignore[union-attr]
    c.tick("1")
    c.stabilize()
    assert c.storages["3"].snapshot().index == leader.log.first_index() - 1
    st = leader.status()
    assert st.state is LEADER and set(st.progress) == {"1", "2", "3"}
