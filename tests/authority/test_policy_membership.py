"""Voter changes, cluster merging, stranded and lost members, join handling (pure)."""

from __future__ import annotations

from agent.authority.policy import (
    NEVER,
    AddLearner,
    Admitted,
    ClusterView,
    Hello,
    Join,
    JoinDesk,
    Liveness,
    Membership,
    Merger,
    Refound,
    Refuse,
    RemoveFirst,
    Timing,
    voter_change,
)
from agent.authority.raft.messages import ConfChangeType

T = Timing()
X, Y, Z = "1" * 32, "2" * 32, "3" * 32


def everyone(_: str) -> bool:
    return True


# ---------------------------------------------------------------------------- voters
def _change(m: Membership, live: Liveness, now: float, paired: object = everyone,
            since: float = 0.0) -> tuple[ConfChangeType, str] | None:
    c = voter_change(m, live, lambda _x: 1.0, paired, T, now, since)  # type: ignore[arg-type]
    return None if c is None else (c.op, c.member)


def test_promotes_a_caught_up_live_learner() -> None:
    live = Liveness(T)
    live.heard("b", 9.9)
    m = Membership("a", ("a",), ("b",), {"b": 10}, 10)
    assert _change(m, live, 10.0) == (ConfChangeType.PROMOTE_LEARNER, "b")


def test_does_not_promote_a_lagging_learner_or_beyond_five() -> None:
    live = Liveness(T)
    for x in "bcdefg":
        live.heard(x, 9.9)
    lagging = Membership("a", ("a",), ("b",), {"b": 2}, 10)
    assert _change(lagging, live, 10.0) is None
    full = Membership("a", tuple("abcde"), ("f", "g"), dict.fromkeys("fg", 10), 10)
    assert _change(full, live, 10.0) is None


def test_unpaired_member_is_removed_at_once() -> None:
    live = Liveness(T)
    m = Membership("a", ("a", "b", "c"), (), {}, 5)
    assert _change(m, live, 1.0, paired=lambda x: x != "c") == (ConfChangeType.REMOVE_VOTER, "c")


def test_new_learner_is_not_removed_as_silent() -> None:
    """Regression: silence was counted from -inf for a member never heard from."""
    live = Liveness(T)
    live.heard("b", 100.0)  # its join request
    m = Membership("a", ("a",), ("b",), {"b": 0}, 50)
    assert _change(m, live, 101.0, since=0.0) is None


def test_long_silent_learner_and_unwanted_voter_are_removed() -> None:
    live = Liveness(T)
    live.heard("b", 0.0)
    m = Membership("a", ("a",), ("b",), {"b": 0}, 50)
    assert _change(m, live, 40.0) == (ConfChangeType.REMOVE_VOTER, "b")
    for x in "bcd":
        live.heard(x, 40.0)
    m = Membership("a", ("a", "b", "c", "d"), (), dict.fromkeys("bcd", 50), 50)
    live.heard("d", 0.0)
    assert _change(m, live, 40.0) == (ConfChangeType.REMOVE_VOTER, "d")


# ---------------------------------------------------------------------------- merging
def view(cluster: str = X, voters: tuple[str, ...] = ("me",), learners: tuple[str, ...] = (),
         leader: bool = True, contact: float = NEVER) -> ClusterView:
    return ClusterView(cluster, voters, learners, leader, contact)


def test_smaller_joins_larger_ties_to_the_larger_id() -> None:
    m = Merger("me", T, 0.0)
    m.on_hello("p", Hello(Y, 1, "p"), 1.0)
    assert m.decide(view(X), 1.0, everyone) == Join(Y, "p", "p")  # (1, Y) > (1, X)
    m = Merger("me", T, 0.0)
    m.on_hello("p", Hello(X, 1, "p"), 1.0)
    assert m.decide(view(Y), 1.0, everyone) is None  # they come to us
    m.on_hello("q", Hello(Z, 3, "q"), 1.0)
    assert m.decide(view(Y, ("me", "p")), 1.0, everyone) == Join(Z, "q", "q")


def test_unled_unpaired_or_stale_announcements_are_ignored() -> None:
    m = Merger("me", T, 0.0)
    m.on_hello("p", Hello(Y, 5, ""), 1.0)  # no leader: nobody could add us
    m.on_hello("q", Hello(Z, 5, "q"), 1.0)
    assert m.decide(view(X), 1.0, lambda x: x != "q") is None
    assert m.decide(view(X), 10.0, everyone) is None  # stale hellos


def test_no_new_join_while_joining_or_unconfigured() -> None:
    m = Merger("me", T, 0.0)
    m.on_hello("p", Hello(Y, 5, "p"), 1.0)
    m.join_started(Y, 1.0)
    assert m.decide(view(X), 1.5, everyone) is None
    m.switched(2.0)
    m.on_hello("q", Hello(Z, 9, "q"), 2.5)
    # just switched to Y, members not known yet: never chase another announcement
    assert m.decide(view(Y, (), leader=False), 2.5, everyone) is None


def test_join_attempt_expires() -> None:
    m = Merger("me", T, 0.0)
    m.on_hello("p", Hello(Y, 5, "p"), 7.0)
    m.join_started(Y, 1.0)
    assert m.decide(view(X), 7.5, everyone) == Join(Y, "p", "p")


def test_stranded_by_unpairing_joins_a_led_cluster_or_refounds() -> None:
    v = view(X, ("me", "gone"), leader=False, contact=0.0)
    m = Merger("me", T, 0.0)
    paired = lambda x: x != "gone"  # noqa: E731
    assert m.decide(v, 2.0, paired) is None  # not for stranded_after yet
    assert m.stranded(v, 3.5, paired)
    assert m.decide(v, 3.5, paired) == Refound()
    m.on_hello("p", Hello(Y, 1, "p"), 3.4)
    assert m.decide(v, 3.5, paired) == Join(Y, "p", "p")


def test_partition_strands_nobody() -> None:
    v = view(X, ("me", "b", "c"), leader=False, contact=0.0)
    m = Merger("me", T, 0.0)
    assert not m.stranded(v, 100.0, everyone)  # b and c silent: they may come back


def test_cluster_dissolved_under_us() -> None:
    v = view(X, ("me", "b", "c"), leader=False, contact=0.0)
    m = Merger("me", T, 0.0)
    m.on_hello("b", Hello(Y, 4, "b"), 9.5)
    m.on_hello("c", Hello(Y, 4, "b"), 9.5)
    assert m.decide(v, 10.0, everyone) == Join(Y, "b", "c")


def test_unconfigured_joiner_is_stranded_after_a_while() -> None:
    m = Merger("me", T, 0.0)
    m.switched(10.0)
    v = view(Y, (), leader=False)
    assert m.decide(v, 12.0, everyone) is None
    assert m.decide(v, 13.5, everyone) == Refound()


def test_lost_member_rejoins_its_own_cluster() -> None:
    """Peers follow a leader of our cluster we never hear from: it removed us."""
    v = view(X, ("me", "b", "c"), leader=False, contact=0.0)
    m = Merger("me", T, 0.0)
    m.on_hello("b", Hello(X, 2, "c"), 9.5)
    assert m.decide(v, 10.0, everyone) == Join(X, "c", "b", rejoin=True)
    # not paired with that leader: cannot rejoin, and b (following it) is not with us
    assert m.decide(v, 10.0, lambda x: x != "c") == Refound()


# ---------------------------------------------------------------------------- unpairing
def test_unpairing_the_other_of_two_voters_strands_us_at_once() -> None:
    """Regression: after an unpair the follower waited ``stranded_after`` without a leader
    (and showed the unpaired device as its voter meanwhile) for a loss that is certain."""
    v = view(X, ("me", "gone"), leader=False, contact=9.9)  # the leader was heard just now
    m = Merger("me", T, 0.0)
    paired = lambda x: x != "gone"  # noqa: E731
    assert m.decide(v, 10.0, paired) is None  # an ordinary silence: wait and see
    assert m.decide(v, 10.0, paired, at_once=True) == Refound()
    v3 = view(X, ("me", "gone", "c"), leader=False, contact=9.9)
    assert m.decide(v3, 10.0, paired, at_once=True) is None  # c and we are still a quorum


def test_a_voter_following_a_leader_we_are_not_paired_with_is_not_with_us() -> None:
    v = view(X, ("me", "b", "c"), leader=False, contact=9.9)
    m = Merger("me", T, 0.0)
    m.on_hello("b", Hello(X, 3, "c"), 9.9)
    paired = lambda x: x != "c"  # noqa: E731
    assert m.stranded(v, 10.0, paired, at_once=True)
    assert not m.stranded(v, 10.0, everyone, at_once=True)


def test_stranded_in_a_cluster_of_one_other_device_refounds() -> None:
    """Regression (mesh seed 137 with notices): removed from a cluster whose only member is
    the device that unpaired us, we saw "size 1" and took it for our own one-member cluster:
    no leader, ever."""
    m = Merger("me", T, 0.0)
    v = view(X, ("d1",), leader=False, contact=0.0)
    assert m.decide(v, 10.0, lambda x: False) == Refound()
    assert m.decide(view(X, ("me",), leader=False, contact=0.0), 10.0, everyone) is None


def test_a_cluster_led_by_a_device_we_are_not_paired_with_is_not_joined() -> None:
    """Its leader would refuse us (and we drop its messages): joining it only loops."""
    m = Merger("me", T, 0.0)
    m.on_hello("p", Hello(Y, 5, "l"), 1.0)
    assert m.decide(view(X), 1.0, lambda x: x != "l") is None
    assert m.decide(view(X), 1.0, everyone) == Join(Y, "l", "p")


# ---------------------------------------------------------------------------- join desk
def test_join_desk_answers() -> None:
    desk = JoinDesk(T)
    me = view(X, ("me",))
    assert desk.request("j", Y, me, {"me"}, "me", rejoin=False) == Refuse("not this cluster", "")
    follower = view(X, ("me", "l"), leader=False)
    assert desk.request("j", X, follower, {"me"}, "l", rejoin=False) == Refuse("not leader", "l")
    assert desk.request("j", X, me, {"me"}, "me", rejoin=False) == AddLearner()
    assert desk.request("j", X, me, {"me", "j"}, "me", rejoin=True) == Admitted()
    assert desk.request("j", X, me, {"me", "j"}, "me", rejoin=False) == RemoveFirst()
    pending = view(X, ("me",), ("j",))
    assert isinstance(desk.request("j", X, pending, {"me"}, "me", rejoin=False), Refuse)


def test_join_answered_only_once_committed() -> None:
    desk = JoinDesk(T)
    desk.proposed("j", 7, 1.0)
    desk.proposed("k", 8, 1.0)
    assert desk.settle(6, {"me"}, True, 1.1) == ([], [])
    assert desk.settle(7, {"me", "j"}, True, 1.2) == (["j"], [])
    assert desk.settle(8, {"me", "j"}, True, 1.3) == ([], ["k"])  # entry applied, k not in
    desk.proposed("l", 9, 2.0)
    assert desk.settle(8, {"me"}, False, 2.1) == ([], ["l"])  # lost leadership
    desk.proposed("m", 10, 2.0)
    assert desk.settle(9, {"me"}, True, 2.0 + T.join_timeout) == ([], ["m"])
    desk.proposed("n", 11, 3.0)
    assert desk.clear() == ["n"]
