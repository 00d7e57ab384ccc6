"""The composed policy with a real (in-memory) Raft node, and the policy's import rules."""

from __future__ import annotations

import ast
import random
from pathlib import Path

from raft_harness import Cluster

from agent.authority.authority_map import Assign, encode_command
from agent.authority.policy import (
    AuthorityPolicy,
    Hello,
    Refound,
    VoterChange,
    for_earlier_incarnation,
)
from agent.authority.raft.core import RaftNode
from agent.authority.raft.messages import ConfChangeType, Heartbeat
from agent.authority.raft.storage import MemoryStorage

POLICY = Path(__file__).resolve().parents[2] / "agent" / "authority" / "policy"
R = "cd" * 16


def _solo(now: float = 0.0) -> tuple[AuthorityPolicy, RaftNode]:
    pol = AuthorityPolicy("me", "c" * 32, now)
    raft = RaftNode("me", ["me"], MemoryStorage(), random.Random(1), election_tick=6,
                    heartbeat_tick=2)
    return pol, raft


def _pump(pol: AuthorityPolicy, raft: RaftNode, now: float) -> None:
    while raft.has_ready():
        rd = raft.ready()
        raft.storage.append(rd.entries)
        if rd.hard_state is not None:
            raft.storage.set_hard_state(rd.hard_state)
        for e in rd.committed_entries:
            pol.apply(e, now)
        raft.advance(rd)
        if rd.soft_state_changed:
            pol.soft_state(raft.is_leader(), raft.lead, now)


def test_solo_leader_acts_lease_after_its_assignment() -> None:
    pol, raft = _solo()
    for _ in range(20):
        raft.tick()
        _pump(pol, raft, 0.0)
    assert raft.is_leader()
    raft.propose(encode_command(Assign(R, "me", 0)))
    _pump(pol, raft, 1.0)
    assert pol.map.authority_for(R) is not None
    assert not pol.acting_for(R, raft, 1.2)
    assert pol.acting_for(R, raft, 1.5)
    assert pol.acting_windows(raft, 1.5) == {R: (1.4, 1.5 + pol.timing.lease)}
    assert pol.hello_for(raft, 1.5) == Hello("c" * 32, 1, "me")


def test_joiner_announces_nothing_until_it_knows_its_members() -> None:
    pol = AuthorityPolicy("me", "c" * 32, 0.0)
    raft = RaftNode("me", [], MemoryStorage(), random.Random(1))
    assert pol.hello_for(raft, 0.0) is None
    assert pol.switched("d" * 32, 5.0) == []
    assert pol.cluster == "d" * 32 and pol.merger.started == 5.0


def test_heartbeat_for_an_earlier_incarnation_is_recognised() -> None:
    raft = RaftNode("me", [], MemoryStorage(), random.Random(1))
    assert for_earlier_incarnation(raft, Heartbeat(term=3, src="l", dst="me", commit=9))
    assert not for_earlier_incarnation(raft, Heartbeat(term=3, src="l", dst="me", commit=0))


def _pair_led_by_me() -> tuple[AuthorityPolicy, Cluster]:
    c = Cluster(2, election_tick=6, heartbeat_tick=2, check_quorum=True, pre_vote=True)
    c.elect("1")
    c.stabilize()
    return AuthorityPolicy("1", "c" * 32, 0.0), c


def test_the_leader_removes_an_unpaired_member_at_once_and_commits_alone() -> None:
    """Regression: the unpaired voter stayed until the next membership round, by which time
    CheckQuorum had deposed the leader (the other voter no longer answers): both sides were
    left without a leader until the stranded rule refounded them with an empty map."""
    pol, c = _pair_led_by_me()
    raft = c["1"]
    c.isolate("2")  # unpaired: nothing goes to it any more, nothing from it is stepped
    change = pol.unpaired("2", raft, 1.0, lambda x: x != "2")
    assert change == VoterChange(ConfChangeType.REMOVE_VOTER, "2")
    raft.propose_conf_change(change.op, change.member)
    c.stabilize()
    assert raft.voters == ("1",) and raft.is_leader()
    assert raft.conf_state_at(raft.commit_index).voters == ("1",)  # committed alone
    c.tick("1", 3 * 12)  # CheckQuorum: a quorum of one is always heard
    c.stabilize()
    assert raft.is_leader()
    assert pol.unpaired("2", raft, 2.0, lambda x: x != "2") is None  # gone already


def test_a_follower_leaves_a_cluster_it_can_no_longer_elect_in_at_once() -> None:
    pol = AuthorityPolicy("2", "c" * 32, 0.0)
    _, c = _pair_led_by_me()
    pol.soft_state(False, "1", 0.5)  # following 1, heard just now
    assert pol.unpaired("1", c["2"], 0.6, lambda x: x != "1") == Refound()
    assert "1" not in pol.merger.hellos


def test_policy_imports_nothing_above_authority_and_no_clock_or_io() -> None:
    allowed = ("agent.authority", "agent.errors", "agent.ports")
    banned = {"time", "asyncio", "socket", "os", "random", "secrets", "threading", "pathlib"}
    for path in sorted(POLICY.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if node.level:  # relative: inside agent.authority
                    assert node.level <= 2, (path.name, mod)
                    continue
                assert mod.split(".")[0] in {"__future__", "collections", "dataclasses",
                                             "typing", "enum", "math"} \
                    or mod.startswith(allowed), (path.name, mod)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] not in banned, (path.name, alias.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                assert (node.value.id, node.attr) != ("time", "monotonic"), path.name

