"""Wire schema: round trips, strict rejection, and fuzzing (only RaftMessageError escapes)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.authority.raft import (
    AppendEntries,
    AppendResponse,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    RaftMessageError,
    RequestVote,
    Snapshot,
    TimeoutNow,
    VoteResponse,
    decode,
    message_from_dict,
)
from agent.authority.raft.messages import MAX_ENTRY_SIZE, HardState

SAMPLES: list[Message] = [
    AppendEntries(
        term=3,
        src="a",
        dst="b",
        prev_index=4,
        prev_term=2,
        entries=(
            Entry(5, 2, EntryType.NORMAL, b"x\x00\xff"),
            Entry(
                6, 3, EntryType.CONF_CHANGE, ConfChange(ConfChangeType.ADD_LEARNER, "c").encode()
            ),
        ),
        commit=4,
    ),
    AppendEntries(term=1, src="a", dst="b", prev_index=0, prev_term=0, commit=0),
    AppendResponse(term=3, src="b", dst="a", index=9, reject=True, reject_hint=4, hint_term=2),
    RequestVote(term=4, src="a", dst="b", last_index=9, last_term=3, pre_vote=True),
    RequestVote(term=4, src="a", dst="b", last_index=9, last_term=3, transfer=True),
    VoteResponse(term=4, src="b", dst="a", granted=False, pre_vote=True),
    Heartbeat(term=4, src="a", dst="b", commit=7),
    HeartbeatResponse(term=4, src="b", dst="a"),
    InstallSnapshot(
        term=4,
        src="a",
        dst="n-7.lan:1",
        snapshot=Snapshot(10, 3, ConfState(("a", "b"), ("n-7.lan:1",)), b"state"),
    ),
    TimeoutNow(term=4, src="a", dst="b"),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: Message) -> None:
    data = msg.encode()
    assert decode(data) == msg
    assert message_from_dict(json.loads(data)) == msg
    assert type(msg).from_dict(msg.to_dict()) == msg
    assert decode(data).encode() == data  # canonical


def _d(msg: Message) -> dict[str, Any]:
    return json.loads(msg.encode())


def _bad(d: object, match: str) -> None:
    with pytest.raises(RaftMessageError, match=match):
        message_from_dict(d)


def test_rejects_unknown_type_and_keys() -> None:
    d = _d(SAMPLES[6])
    _bad({**d, "type": "gossip"}, "unknown type")
    _bad({**d, "extra": 1}, "unknown keys")
    d2 = dict(d)
    del d2["commit"]
    _bad(d2, "missing keys 'commit'|missing keys commit")
    _bad([d], "expected an object")


def test_rejects_wrong_types_and_ranges() -> None:
    d = _d(SAMPLES[6])
    _bad({**d, "term": "4"}, "heartbeat.term: expected integer")
    _bad({**d, "term": True}, "expected integer")
    _bad({**d, "term": 4.0}, "expected integer")
    _bad({**d, "commit": -1}, "non-negative")
    _bad({**d, "commit": 2**64}, "too large")
    _bad({**d, "src": ""}, "invalid node id")
    _bad({**d, "src": "a b"}, "invalid node id")
    _bad({**d, "src": "x" * 65}, "invalid node id")
    _bad({**d, "dst": d["src"]}, "src and dst")
    v = _d(SAMPLES[3])
    _bad({**v, "pre_vote": 1}, "expected boolean")


def test_rejects_bad_entries() -> None:
    d = _d(SAMPLES[0])
    e0 = d["entries"][0]
    _bad({**d, "entries": [{**e0, "data": "***"}]}, "invalid base64")
    _bad({**d, "entries": [{**e0, "type": 7}]}, "expected 0 or 1")
    _bad({**d, "entries": [{**e0, "index": 0}]}, "must be >= 1")
    _bad({**d, "entries": [e0, e0]}, "not contiguous")
    _bad({**d, "entries": [{**e0, "term": 9}]}, "out of order")
    _bad({**d, "entries": "nope"}, "expected a list")
    with pytest.raises(RaftMessageError, match="exceeds"):
        message_from_dict(d, max_entry_size=2)


def test_rejects_oversize_entry_and_message() -> None:
    big = AppendEntries(
        term=1,
        src="a",
        dst="b",
        prev_index=0,
        prev_term=0,
        entries=(Entry(1, 1, EntryType.NORMAL, b"x" * (MAX_ENTRY_SIZE + 1)),),
        commit=0,
    )
    with pytest.raises(RaftMessageError, match="exceeds"):
        decode(big.encode())
    with pytest.raises(RaftMessageError, match="exceeds limit"):
        decode(SAMPLES[6].encode(), max_size=10)


def test_rejects_malformed_json() -> None:
    for raw in (b"", b"{", b"\xff\xfe", b"[" * 100_000, b'{"a":NaN}', b"1" * 5000):
        with pytest.raises(RaftMessageError):
            decode(raw)
    ok = SAMPLES[6].encode()
    dup = ok[:-1] + b',"term":1}'
    with pytest.raises(RaftMessageError, match="duplicate"):
        decode(dup)


def test_snapshot_message_validation() -> None:
    d = _d(SAMPLES[8])
    _bad({**d, "snapshot": {**d["snapshot"], "index": 0}}, "index and term must be >= 1")
    cs = {"voters": ["a", "a"], "learners": []}
    _bad({**d, "snapshot": {**d["snapshot"], "conf_state": cs}}, "duplicate")
    cs = {"voters": ["a"], "learners": ["a"]}
    _bad({**d, "snapshot": {**d["snapshot"], "conf_state": cs}}, "both voter and learner")


def test_conf_change_and_hard_state_codecs() -> None:
    cc = ConfChange(ConfChangeType.PROMOTE_LEARNER, "n4")
    assert ConfChange.decode(cc.encode()) == cc
    with pytest.raises(RaftMessageError):
        ConfChange.decode(b'{"op":"nuke","node_id":"n4"}')
    hs = HardState(3, "n1", 9)
    assert HardState.from_dict(hs.to_dict()) == hs
    with pytest.raises(RaftMessageError):
        HardState.from_dict({"term": 1, "vote": 5, "commit": 0})


# --- fuzzing ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_only_raise_message_error(data: bytes) -> None:
    with contextlib.suppress(RaftMessageError):
        decode(data)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_fuzz_random_json_only_raise_message_error(value: object) -> None:
    with contextlib.suppress(RaftMessageError):
        decode(json.dumps(value).encode())


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(SAMPLES),
    st.lists(st.tuples(st.text(max_size=12), json_values), min_size=1, max_size=3),
    st.data(),
)
def test_fuzz_mutated_valid_messages(msg: Message, edits: list, data: st.DataObject) -> None:
    """Replace or add fields of a valid message (possibly nested) with random JSON."""
    d = _d(msg)
    for key, value in edits:
        target = d
        if data.draw(st.booleans()):  # sometimes edit a nested object instead
            ents = d.get("entries")
            first = ents[0] if isinstance(ents, list) and ents else None
            nested = [v for v in (d.get("snapshot"), first) if isinstance(v, dict)]
            if nested:
                target = data.draw(st.sampled_from(nested))
        if data.draw(st.booleans()) and target:
            key = data.draw(st.sampled_from(sorted(target)))
        target[key] = value
    try:
        out = message_from_dict(d)
    except RaftMessageError:
        return
    assert isinstance(out, Message)
    assert decode(out.encode()) == out


messages = st.one_of(
    st.builds(
        Heartbeat,
        term=st.integers(0, 2**63 - 1),
        src=st.sampled_from(["a", "b"]),
        dst=st.just("c"),
        commit=st.integers(0, 2**63 - 1),
    ),
    st.builds(
        AppendResponse,
        term=st.integers(0, 100),
        src=st.just("a"),
        dst=st.just("b"),
        index=st.integers(0, 100),
        reject=st.booleans(),
        reject_hint=st.integers(0, 100),
        hint_term=st.integers(0, 100),
    ),
    st.integers(1, 50).flatmap(
        lambda term: st.builds(
            lambda n, data: AppendEntries(
                term=term,
                src="a",
                dst="b",
                prev_index=7,
                prev_term=min(term, 1),
                entries=tuple(Entry(8 + i, term, EntryType.NORMAL, data) for i in range(n)),
                commit=3,
            ),
            st.integers(0, 4),
            st.binary(max_size=40),
        )
    ),
)


@settings(max_examples=200, deadline=None)
@given(messages)
def test_generated_messages_round_trip(msg: Message) -> None:
    assert decode(msg.encode()) == msg
