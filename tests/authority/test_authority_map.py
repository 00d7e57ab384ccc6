"""The replicated authority map: apply rules, stale epochs, snapshots, and over Raft."""

from __future__ import annotations

import pytest
from raft_harness import Cluster

from agent.authority.authority_map import (
    Assign,
    Assignment,
    AuthorityMap,
    CommandError,
    Revoke,
    decode_command,
    encode_command,
)
from agent.authority.raft import ConfChange, ConfChangeType, Entry, EntryType


def cmd_entry(index: int, term: int, cmd: Assign | Revoke) -> Entry:
    return Entry(index, term, EntryType.NORMAL, encode_command(cmd))


def test_command_codec_is_strict() -> None:
    a = Assign("cam/front", "n1", 0)
    assert decode_command(encode_command(a)) == a
    r = Revoke("cam/front", 3)
    assert decode_command(encode_command(r)) == r
    for bad in (
        b"",
        b"[]",
        b'{"op":"assign","resource_id":"x","holder":"n1"}',
        b'{"op":"assign","resource_id":"x","holder":"n1","expected_epoch":-1}',
        b'{"op":"assign","resource_id":"x","holder":"n 1","expected_epoch":0}',
        b'{"op":"assign","resource_id":"","holder":"n1","expected_epoch":0}',
        b'{"op":"assign","resource_id":"x","holder":"n1","expected_epoch":0,"x":1}',
        b'{"op":"steal","resource_id":"x","expected_epoch":0}',
        b'{"op":"revoke","resource_id":"x","expected_epoch":0,"expected_epoch":1}',
    ):
        with pytest.raises(CommandError):
            decode_command(bad)


def test_assign_is_stamped_with_term_index_and_epoch() -> None:
    m = AuthorityMap()
    res = m.apply(cmd_entry(1, 4, Assign("r", "n1", 0)))
    assert res is not None and res.accepted
    assert m.authority_for("r") == Assignment("n1", term=4, index=1, epoch=1)
    res = m.apply(cmd_entry(2, 5, Assign("r", "n2", 1)))
    assert res is not None and res.accepted
    assert m.authority_for("r") == Assignment("n2", term=5, index=2, epoch=2)


def test_stale_epoch_is_rejected_so_concurrent_proposals_cannot_flip_flop() -> None:
    m = AuthorityMap()
    m.apply(cmd_entry(1, 2, Assign("r", "n1", 0)))
    # Two devices both saw epoch 1 and proposed a move; only the first committed wins.
    first = m.apply(cmd_entry(2, 2, Assign("r", "n2", 1)))
    second = m.apply(cmd_entry(3, 2, Assign("r", "n3", 1)))
    assert first is not None and first.accepted
    assert second is not None and not second.accepted and "stale epoch" in second.reason
    assert m.authority_for("r").holder == "n2"  # type: ignore[union-attr]
    assert m.applied_index == 3


def test_revoke_keeps_the_epoch_increasing() -> None:
    m = AuthorityMap()
    m.apply(cmd_entry(1, 1, Assign("r", "n1", 0)))
    res = m.apply(cmd_entry(2, 1, Revoke("r", 1)))
    assert res is not None and res.accepted
    assert m.authority_for("r") is None and m.epoch_of("r") == 2
    again = m.apply(cmd_entry(3, 1, Revoke("r", 2)))
    assert again is not None and not again.accepted
    assert m.apply(cmd_entry(4, 1, Assign("r", "n3", 2))).accepted  # type: ignore[union-attr]


def test_non_commands_and_malformed_payloads_are_deterministic_no_ops() -> None:
    m = AuthorityMap()
    cc = ConfChange(ConfChangeType.ADD_LEARNER, "n4").encode()
    assert m.apply(Entry(1, 1, EntryType.CONF_CHANGE, cc)) is None
    assert m.apply(Entry(2, 2)) is None  # leader no-op
    res = m.apply(Entry(3, 2, EntryType.NORMAL, b"\xff garbage"))
    assert res is not None and not res.accepted and "malformed" in res.reason
    assert m.applied_index == 3 and len(m) == 0


def test_entries_must_be_applied_in_order() -> None:
    m = AuthorityMap()
    m.apply(Entry(1, 1))
    assert m.apply(Entry(1, 1)) is None  # replay ignored
    with pytest.raises(ValueError):
        m.apply(Entry(3, 1))


def test_snapshot_is_canonical_and_restores_exactly() -> None:
    a, b = AuthorityMap(), AuthorityMap()
    cmds = [Assign("z", "n1", 0), Assign("a", "n2", 0), Assign("z", "n3", 1)]
    for i, c in enumerate(cmds, 1):
        a.apply(cmd_entry(i, 3, c))
    for i, c in enumerate(cmds, 1):
        b.apply(cmd_entry(i, 3, c))
    assert a.snapshot() == b.snapshot()
    r = AuthorityMap.restore(a.snapshot())
    assert r.snapshot() == a.snapshot() and r.applied_index == 3
    assert r.authority_for("z") == Assignment("n3", 3, 3, 2)
    assert AuthorityMap.restore(b"").applied_index == 0
    for bad in (b"{}", b"[]", b'{"version":2,"applied_index":0,"assignments":{}}'):
        with pytest.raises(CommandError):
            AuthorityMap.restore(bad)


def test_all_nodes_agree_on_authority_through_raft() -> None:
    c = Cluster(3)
    c.elect("1")
    # Two proposals built on the same (leader-local) view: one wins everywhere.
    view = c.apps["1"]
    c["1"].propose(encode_command(view.assign_command("printer", "2")))
    c["1"].propose(encode_command(view.assign_command("printer", "3")))
    c.stabilize()
    holders = {c.apps[n].authority_for("printer") for n in "123"}
    assert len(holders) == 1
    (a,) = holders
    assert a is not None and a.holder == "2" and a.term == c["1"].term and a.epoch == 1
