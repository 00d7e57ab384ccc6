"""Lease and liveness: pure functions of the time passed in (no clock is read)."""

from __future__ import annotations

import pytest

from agent.authority.policy import NEVER, Lease, Liveness, Timing

T = Timing()


def _follower(lease: Lease, rid: str, now: float) -> bool:
    return lease.acting(rid, "me", "me", now, is_leader=False, quorum_contact=NEVER,
                        caught_up=False)


def test_timing_safety_flag() -> None:
    assert T.safe
    assert not Timing(lease=0.6, dead_after=0.6).safe


def test_follower_acts_only_after_an_unbroken_run_and_the_handover_wait() -> None:
    lease = Lease(T)
    lease.assigned("r", 0.0)
    lease.leader_contact(0.0)
    assert not _follower(lease, "r", 0.1)  # assignment too fresh, contact run too short
    for t in (0.1, 0.2, 0.3, 0.4):
        lease.leader_contact(t)
    assert _follower(lease, "r", 0.45)
    assert _follower(lease, "r", 0.79)
    assert not _follower(lease, "r", 0.8)  # lease ran out: no leader contact for 0.4 s


def test_single_contact_after_a_silence_is_not_enough() -> None:
    lease = Lease(T)
    lease.assigned("r", 0.0)
    lease.leader_contact(10.0)
    lease.leader_contact(10.05)
    assert lease.window("r", "me", "me", is_leader=False, quorum_contact=NEVER,
                        caught_up=False) is None
    assert not _follower(lease, "r", 10.1)


def test_gap_of_a_lease_restarts_the_run() -> None:
    lease = Lease(T)
    for t in (0.0, 0.2, 0.4, 0.6):
        lease.leader_contact(t)
    assert lease.contact_since == 0.0
    lease.leader_contact(1.1)  # silent 0.5 s >= lease
    assert lease.contact_since == 1.1


def test_only_the_named_holder_acts() -> None:
    lease = Lease(T)
    lease.assigned("r", 0.0)
    for t in (0.0, 0.2, 0.4, 0.6):
        lease.leader_contact(t)
    assert not lease.acting("r", "other", "me", 0.7, is_leader=False, quorum_contact=NEVER,
                            caught_up=False)
    assert not _follower(lease, "unknown", 0.7)


def test_leader_needs_a_recent_quorum_and_a_caught_up_map() -> None:
    lease = Lease(T)
    lease.assigned("r", 0.0)
    def acting(now: float, caught_up: bool) -> bool:
        return lease.acting("r", "me", "me", now, is_leader=True, quorum_contact=0.5,
                            caught_up=caught_up)

    assert acting(0.8, True)
    assert not acting(0.8, False)
    assert not acting(0.95, True)


def test_reset_makes_every_assignment_fresh() -> None:
    lease = Lease(T)
    lease.assigned("a", 0.0)
    lease.reset(["a", "b"], 5.0)
    assert lease.assigned_at == {"a": 5.0, "b": 5.0}


def test_liveness_and_silence_since_election() -> None:
    live = Liveness(T)
    live.heard("x", 1.0)
    assert live.alive("me", "x", 1.5)
    assert not live.alive("me", "x", 1.6)
    assert live.alive("me", "me", 99.0)
    assert live.silent_for("x", 3.0) == pytest.approx(2.0)
    assert live.silent_for("x", 3.0, since=2.5) == pytest.approx(0.5)
    assert live.silent_for("never", 3.0, since=2.0) == pytest.approx(1.0)


def test_quorum_contact() -> None:
    live = Liveness(T)
    live.heard("b", 4.0)
    live.heard("c", 2.0)
    assert live.quorum_contact("a", ("a", "b", "c"), 5.0) == 4.0  # me + b
    assert live.quorum_contact("a", ("a",), 5.0) == 5.0
    assert live.quorum_contact("a", ("a", "b", "c", "d", "e"), 5.0) == 2.0
    assert live.quorum_contact("a", (), 5.0) == NEVER
