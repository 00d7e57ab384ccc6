"""Raft wire types with a strict, JSON-compatible schema.

Why strict: these bytes arrive from other devices. Even paired devices run different
versions and can be buggy, so `decode` rejects anything that is not exactly one of the
known shapes (unknown types or keys, wrong JSON types, negative or huge integers, bad
node ids, oversize entries, non-contiguous entry batches) with :class:`RaftMessageError`
instead of letting a malformed value reach the state machine. No pickle: JSON only, with
bytes as base64.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from enum import IntEnum, StrEnum
from typing import Any, ClassVar

U64_MAX = 2**63 - 1
"""Largest integer accepted on the wire (indexes and terms)."""
MAX_NODE_ID_LEN = 64
MAX_MEMBERS = 256
MAX_ENTRY_SIZE = 1 << 20
"""Largest entry payload accepted (bytes, before base64)."""
MAX_ENTRIES_PER_MESSAGE = 4096
DEFAULT_MAX_MESSAGE_SIZE = 16 << 20
"""Default cap for an encoded message; snapshots are the only large messages."""

_NODE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")


class RaftMessageError(ValueError):
    """A message (or a field inside one) does not match the schema."""


def valid_node_id(value: object) -> bool:
    """True if *value* is an acceptable node id (short, printable ASCII, no spaces)."""
    return type(value) is str and _NODE_ID_RE.match(value) is not None


# ---------------------------------------------------------------------------------------
# Field validators (all raise RaftMessageError with the field path in the message).


def _expect_dict(value: object, where: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise RaftMessageError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _check_keys(d: Mapping[Any, Any], expected: frozenset[str], where: str) -> None:
    keys = set(d.keys())
    if keys == expected:
        return
    unknown = sorted(repr(k) for k in keys - expected)
    missing = sorted(expected - keys)
    parts = []
    if unknown:
        parts.append(f"unknown keys {', '.join(unknown)}")
    if missing:
        parts.append(f"missing keys {', '.join(missing)}")
    raise RaftMessageError(f"{where}: {'; '.join(parts)}")


def _uint(value: object, where: str) -> int:
    if type(value) is not int:
        raise RaftMessageError(f"{where}: expected integer, got {type(value).__name__}")
    if value < 0:
        raise RaftMessageError(f"{where}: must be non-negative, got {value}")
    if value > U64_MAX:
        raise RaftMessageError(f"{where}: too large")
    return value


def _bool(value: object, where: str) -> bool:
    if type(value) is not bool:
        raise RaftMessageError(f"{where}: expected boolean, got {type(value).__name__}")
    return value


def _node(value: object, where: str) -> str:
    if not valid_node_id(value):
        raise RaftMessageError(f"{where}: invalid node id {value!r:.80}")
    assert isinstance(value, str)
    return value


def _opt_node(value: object, where: str) -> str | None:
    return None if value is None else _node(value, where)


def _b64(value: object, where: str, max_size: int) -> bytes:
    if type(value) is not str:
        raise RaftMessageError(f"{where}: expected base64 string, got {type(value).__name__}")
    if len(value) > 4 * ((max_size + 2) // 3):
        raise RaftMessageError(f"{where}: payload exceeds {max_size} bytes")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise RaftMessageError(f"{where}: invalid base64") from exc
    if len(raw) > max_size:
        raise RaftMessageError(f"{where}: payload exceeds {max_size} bytes")
    return raw


def _b64enc(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _node_list(value: object, where: str) -> tuple[str, ...]:
    if type(value) is not list:
        raise RaftMessageError(f"{where}: expected a list, got {type(value).__name__}")
    if len(value) > MAX_MEMBERS:
        raise RaftMessageError(f"{where}: more than {MAX_MEMBERS} members")
    out = tuple(_node(v, f"{where}[{i}]") for i, v in enumerate(value))
    if len(set(out)) != len(out):
        raise RaftMessageError(f"{where}: duplicate node ids")
    return out


# ---------------------------------------------------------------------------------------
# Log-level types.


class EntryType(IntEnum):
    """What an entry's payload means: application data or a membership change."""

    NORMAL = 0
    CONF_CHANGE = 1


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. An empty NORMAL entry is the no-op a new leader appends."""

    index: int
    term: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "term": self.term,
            "type": int(self.type),
            "data": _b64enc(self.data),
        }

    @classmethod
    def from_dict(
        cls, d: object, *, where: str = "entry", max_entry_size: int = MAX_ENTRY_SIZE
    ) -> Entry:
        d = _expect_dict(d, where)
        _check_keys(d, _ENTRY_KEYS, where)
        etype = d["type"]
        if type(etype) is not int or etype not in (0, 1):
            raise RaftMessageError(f"{where}.type: expected 0 or 1, got {etype!r:.40}")
        index = _uint(d["index"], f"{where}.index")
        if index == 0:
            raise RaftMessageError(f"{where}.index: must be >= 1")
        return cls(
            index=index,
            term=_uint(d["term"], f"{where}.term"),
            type=EntryType(etype),
            data=_b64(d["data"], f"{where}.data", max_entry_size),
        )


_ENTRY_KEYS = frozenset({"index", "term", "type", "data"})


@dataclass(frozen=True, slots=True)
class ConfState:
    """Cluster membership: voters count for elections and commits, learners only replicate."""

    voters: tuple[str, ...] = ()
    learners: tuple[str, ...] = ()

    def members(self) -> tuple[str, ...]:
        return tuple(sorted((*self.voters, *self.learners)))

    def to_dict(self) -> dict[str, Any]:
        return {"voters": list(self.voters), "learners": list(self.learners)}

    @classmethod
    def from_dict(cls, d: object, *, where: str = "conf_state") -> ConfState:
        d = _expect_dict(d, where)
        _check_keys(d, _CONF_KEYS, where)
        voters = _node_list(d["voters"], f"{where}.voters")
        learners = _node_list(d["learners"], f"{where}.learners")
        if set(voters) & set(learners):
            raise RaftMessageError(f"{where}: a node cannot be both voter and learner")
        return cls(voters=tuple(sorted(voters)), learners=tuple(sorted(learners)))


_CONF_KEYS = frozenset({"voters", "learners"})


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Application state up to `index` (whose term is `term`) plus the membership then."""

    index: int = 0
    term: int = 0
    conf_state: ConfState = ConfState()
    data: bytes = b""

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "term": self.term,
            "conf_state": self.conf_state.to_dict(),
            "data": _b64enc(self.data),
        }

    @classmethod
    def from_dict(
        cls, d: object, *, where: str = "snapshot", max_size: int = DEFAULT_MAX_MESSAGE_SIZE
    ) -> Snapshot:
        d = _expect_dict(d, where)
        _check_keys(d, _SNAPSHOT_KEYS, where)
        return cls(
            index=_uint(d["index"], f"{where}.index"),
            term=_uint(d["term"], f"{where}.term"),
            conf_state=ConfState.from_dict(d["conf_state"], where=f"{where}.conf_state"),
            data=_b64(d["data"], f"{where}.data", max_size),
        )


_SNAPSHOT_KEYS = frozenset({"index", "term", "conf_state", "data"})


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before any message of the same Ready leaves the device."""

    term: int = 0
    vote: str | None = None
    commit: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"term": self.term, "vote": self.vote, "commit": self.commit}

    @classmethod
    def from_dict(cls, d: object, *, where: str = "hard_state") -> HardState:
        d = _expect_dict(d, where)
        _check_keys(d, _HS_KEYS, where)
        return cls(
            term=_uint(d["term"], f"{where}.term"),
            vote=_opt_node(d["vote"], f"{where}.vote"),
            commit=_uint(d["commit"], f"{where}.commit"),
        )


_HS_KEYS = frozenset({"term", "vote", "commit"})


class ConfChangeType(StrEnum):
    """Single-server membership operations (one pending at a time)."""

    ADD_VOTER = "add_voter"
    REMOVE_VOTER = "remove_voter"
    ADD_LEARNER = "add_learner"
    PROMOTE_LEARNER = "promote_learner"


@dataclass(frozen=True, slots=True)
class ConfChange:
    """Payload of a CONF_CHANGE entry."""

    op: ConfChangeType
    node_id: str

    def encode(self) -> bytes:
        return json.dumps(
            {"op": str(self.op), "node_id": self.node_id}, separators=(",", ":"), sort_keys=True
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        d = _loads(data, 1024)
        d = _expect_dict(d, "conf_change")
        _check_keys(d, _CC_KEYS, "conf_change")
        op = d["op"]
        if type(op) is not str or op not in _CC_OPS:
            raise RaftMessageError(f"conf_change.op: unknown operation {op!r:.40}")
        return cls(op=ConfChangeType(op), node_id=_node(d["node_id"], "conf_change.node_id"))


_CC_KEYS = frozenset({"op", "node_id"})
_CC_OPS = frozenset(str(t) for t in ConfChangeType)


# ---------------------------------------------------------------------------------------
# Messages.


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """Common header: the sender's term and the two endpoints."""

    term: int
    src: str
    dst: str

    TYPE: ClassVar[str] = ""
    KINDS: ClassVar[dict[str, str]] = {}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.TYPE}
        for name, kind in self.KINDS.items():
            out[name] = _ENCODERS[kind](getattr(self, name))
        return out

    def encode(self) -> bytes:
        """Canonical JSON bytes (sorted keys, no spaces)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_dict(
        cls,
        d: object,
        *,
        max_entry_size: int = MAX_ENTRY_SIZE,
        max_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> Message:
        d = _expect_dict(d, "message")
        if d.get("type") != cls.TYPE:
            raise RaftMessageError(
                f"message: expected type {cls.TYPE!r}, got {d.get('type')!r:.40}"
            )
        where = cls.TYPE
        _check_keys(d, _KEYSETS[cls.TYPE], where)
        kwargs: dict[str, Any] = {}
        for name, kind in cls.KINDS.items():
            path = f"{where}.{name}"
            value = d[name]
            if kind == "uint":
                kwargs[name] = _uint(value, path)
            elif kind == "node":
                kwargs[name] = _node(value, path)
            elif kind == "bool":
                kwargs[name] = _bool(value, path)
            elif kind == "entries":
                kwargs[name] = _entries(value, path, max_entry_size)
            else:  # snapshot
                kwargs[name] = Snapshot.from_dict(value, where=path, max_size=max_size)
        msg = cls(**kwargs)
        if msg.src == msg.dst:
            raise RaftMessageError(f"{where}: src and dst are both {msg.src!r}")
        msg._validate()
        return msg

    def _validate(self) -> None:
        """Cross-field checks; overridden where a message has them."""


def _entries(value: object, where: str, max_entry_size: int) -> tuple[Entry, ...]:
    if type(value) is not list:
        raise RaftMessageError(f"{where}: expected a list, got {type(value).__name__}")
    if len(value) > MAX_ENTRIES_PER_MESSAGE:
        raise RaftMessageError(f"{where}: more than {MAX_ENTRIES_PER_MESSAGE} entries")
    return tuple(
        Entry.from_dict(v, where=f"{where}[{i}]", max_entry_size=max_entry_size)
        for i, v in enumerate(value)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendEntries(Message):
    """Leader -> follower: entries after (prev_index, prev_term), plus the commit index."""

    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...] = ()
    commit: int

    TYPE: ClassVar[str] = "append"

    def _validate(self) -> None:
        prev_term = self.prev_term
        if prev_term > self.term:
            raise RaftMessageError("append.prev_term: newer than the message term")
        for i, e in enumerate(self.entries):
            if e.index != self.prev_index + 1 + i:
                raise RaftMessageError(f"append.entries[{i}].index: entries are not contiguous")
            if e.term < prev_term or e.term > self.term:
                raise RaftMessageError(f"append.entries[{i}].term: out of order")
            prev_term = e.term


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendResponse(Message):
    """Follower -> leader. On success `index` is the follower's last matching index; on
    rejection `index` echoes prev_index and (reject_hint, hint_term) let the leader skip a
    whole conflicting term at once (fast backoff)."""

    index: int
    reject: bool = False
    reject_hint: int = 0
    hint_term: int = 0

    TYPE: ClassVar[str] = "append_resp"


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestVote(Message):
    """(Pre-)candidate -> voter. `transfer` marks a leader-transfer election, which may
    override a live leader's lease."""

    last_index: int
    last_term: int
    pre_vote: bool = False
    transfer: bool = False

    TYPE: ClassVar[str] = "vote"


@dataclass(frozen=True, slots=True, kw_only=True)
class VoteResponse(Message):
    granted: bool
    pre_vote: bool = False

    TYPE: ClassVar[str] = "vote_resp"


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat(Message):
    """Leader -> follower. `commit` is min(follower match, leader commit)."""

    commit: int

    TYPE: ClassVar[str] = "heartbeat"


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatResponse(Message):
    TYPE: ClassVar[str] = "heartbeat_resp"


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallSnapshot(Message):
    snapshot: Snapshot

    TYPE: ClassVar[str] = "snapshot"

    def _validate(self) -> None:
        if self.snapshot.index == 0 or self.snapshot.term == 0:
            raise RaftMessageError("snapshot.snapshot: index and term must be >= 1")
        if self.snapshot.term > self.term:
            raise RaftMessageError("snapshot.snapshot.term: newer than the message term")


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutNow(Message):
    """Leader -> transfer target: campaign immediately (skipping pre-vote)."""

    TYPE: ClassVar[str] = "timeout_now"


_HEADER = {"term": "uint", "src": "node", "dst": "node"}
AppendEntries.KINDS = {
    **_HEADER,
    "prev_index": "uint",
    "prev_term": "uint",
    "entries": "entries",
    "commit": "uint",
}
AppendResponse.KINDS = {
    **_HEADER,
    "index": "uint",
    "reject": "bool",
    "reject_hint": "uint",
    "hint_term": "uint",
}
RequestVote.KINDS = {
    **_HEADER,
    "last_index": "uint",
    "last_term": "uint",
    "pre_vote": "bool",
    "transfer": "bool",
}
VoteResponse.KINDS = {**_HEADER, "granted": "bool", "pre_vote": "bool"}
Heartbeat.KINDS = {**_HEADER, "commit": "uint"}
HeartbeatResponse.KINDS = dict(_HEADER)
InstallSnapshot.KINDS = {**_HEADER, "snapshot": "snapshot"}
TimeoutNow.KINDS = dict(_HEADER)

MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        AppendEntries,
        AppendResponse,
        RequestVote,
        VoteResponse,
        Heartbeat,
        HeartbeatResponse,
        InstallSnapshot,
        TimeoutNow,
    )
}
_KEYSETS = {t: frozenset({"type", *cls.KINDS}) for t, cls in MESSAGE_TYPES.items()}
for _cls in MESSAGE_TYPES.values():  # the schema must name exactly the dataclass fields
    assert set(_cls.KINDS) == {f.name for f in fields(_cls)}, _cls

_ENCODERS: dict[str, Callable[[Any], Any]] = {
    "uint": lambda v: v,
    "node": lambda v: v,
    "bool": lambda v: v,
    "entries": lambda v: [e.to_dict() for e in v],
    "snapshot": lambda v: v.to_dict(),
}


def message_from_dict(
    d: object, *, max_entry_size: int = MAX_ENTRY_SIZE, max_size: int = DEFAULT_MAX_MESSAGE_SIZE
) -> Message:
    """Validate a decoded JSON object and build the matching message."""
    d = _expect_dict(d, "message")
    mtype = d.get("type")
    cls = MESSAGE_TYPES.get(mtype) if type(mtype) is str else None
    if cls is None:
        raise RaftMessageError(f"message: unknown type {mtype!r:.40}")
    return cls.from_dict(d, max_entry_size=max_entry_size, max_size=max_size)


def _reject_constant(name: str) -> Any:
    raise RaftMessageError(f"invalid JSON constant {name}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise RaftMessageError(f"duplicate key {k!r:.40}")
        out[k] = v
    return out


def _loads(data: bytes, max_size: int) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RaftMessageError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise RaftMessageError(f"message of {len(data)} bytes exceeds limit {max_size}")
    try:
        text = bytes(data).decode("utf-8")
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except RaftMessageError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, ...
        raise RaftMessageError(f"not valid JSON: {exc}") from exc


def decode(
    data: bytes, max_size: int = DEFAULT_MAX_MESSAGE_SIZE, *, max_entry_size: int = MAX_ENTRY_SIZE
) -> Message:
    """Parse wire bytes into a message; anything off-schema raises RaftMessageError."""
    return message_from_dict(
        _loads(data, max_size), max_entry_size=max_entry_size, max_size=max_size
    )


def encode(msg: Message) -> bytes:
    return msg.encode()


# ---------------------------------------------------------------------------------------
# Human-readable rendering (interaction tests, simulator traces, logs).


def describe_entry(e: Entry) -> str:
    if e.type is EntryType.CONF_CHANGE:
        try:
            cc = ConfChange.decode(e.data)
            body = f"{cc.op} {cc.node_id}"
        except RaftMessageError:
            body = "<malformed>"
        return f"{e.term}/{e.index} EntryConfChange {body}"
    try:
        text = e.data.decode("utf-8")
        shown = json.dumps(text, ensure_ascii=True)
    except UnicodeDecodeError:
        shown = "0x" + e.data.hex()
    return f"{e.term}/{e.index} EntryNormal {shown}"


def describe_snapshot(s: Snapshot) -> str:
    return (
        f"Index:{s.index} Term:{s.term} Voters:[{' '.join(s.conf_state.voters)}]"
        f" Learners:[{' '.join(s.conf_state.learners)}]"
    )


def describe_message(m: Message) -> str:
    head = f"{m.src}->{m.dst}"
    if isinstance(m, AppendEntries):
        text = f"{head} MsgApp Term:{m.term} Log:{m.prev_term}/{m.prev_index} Commit:{m.commit}"
        if m.entries:
            text += " Entries:[" + ", ".join(describe_entry(e) for e in m.entries) + "]"
        return text
    if isinstance(m, AppendResponse):
        if m.reject:
            return (
                f"{head} MsgAppResp Term:{m.term} Log:0/{m.index} Rejected"
                f" (Hint: {m.hint_term}/{m.reject_hint})"
            )
        return f"{head} MsgAppResp Term:{m.term} Log:0/{m.index}"
    if isinstance(m, RequestVote):
        kind = "MsgPreVote" if m.pre_vote else "MsgVote"
        extra = " (transfer)" if m.transfer else ""
        return f"{head} {kind} Term:{m.term} Log:{m.last_term}/{m.last_index}{extra}"
    if isinstance(m, VoteResponse):
        kind = "MsgPreVoteResp" if m.pre_vote else "MsgVoteResp"
        return f"{head} {kind} Term:{m.term}" + ("" if m.granted else " Rejected")
    if isinstance(m, Heartbeat):
        return f"{head} MsgHeartbeat Term:{m.term} Commit:{m.commit}"
    if isinstance(m, HeartbeatResponse):
        return f"{head} MsgHeartbeatResp Term:{m.term}"
    if isinstance(m, InstallSnapshot):
        return f"{head} MsgSnap Term:{m.term} Snapshot: {describe_snapshot(m.snapshot)}"
    if isinstance(m, TimeoutNow):
        return f"{head} MsgTimeoutNow Term:{m.term}"
    return f"{head} {type(m).__name__} Term:{m.term}"
