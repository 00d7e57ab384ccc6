"""The replicated authority map: the state machine that Raft keeps identical everywhere.

Every device applies the same committed entries in the same order, so every device ends
up with the same map. Decisions that could race (two proposals for one resource built on
the same view) are settled *at apply time* by a compare-and-set on the resource's epoch:
the first committed one wins, the other is rejected deterministically on every node, so
authority can never flip-flop between concurrent proposers.

Guarantee ("single authority"): per resource there is one global sequence of accepted
assignments with epochs 1, 2, 3, ...; each is stamped with the Raft term and index of its
entry. Every node's view of a resource is a prefix of that sequence, so for any
(resource, epoch) all nodes agree on the holder, and since an entry has exactly one term,
for any (resource, term) all nodes agree on the holders assigned in it and their order.
A holder acts under the fencing token (epoch, term); a newer epoch supersedes it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .raft.messages import Entry, EntryType, valid_node_id

MAX_COMMAND_SIZE = 4096
MAX_RESOURCE_ID_LEN = 256
_RESOURCE_RE = re.compile(r"[\x21-\x7e]{1,256}\Z")  # printable ASCII, no spaces
SNAPSHOT_VERSION = 1


class CommandError(ValueError):
    """A command or a snapshot does not match the schema."""


def valid_resource_id(value: object) -> bool:
    return type(value) is str and _RESOURCE_RE.match(value) is not None


@dataclass(frozen=True, slots=True)
class Assign:
    """Make *holder* the authority for *resource_id* if its epoch is still *expected_epoch*
    (0 for a resource never assigned)."""

    resource_id: str
    holder: str
    expected_epoch: int


@dataclass(frozen=True, slots=True)
class Revoke:
    """Leave *resource_id* without authority if its epoch is still *expected_epoch*."""

    resource_id: str
    expected_epoch: int


Command = Assign | Revoke


def _uint(d: Mapping[str, Any], key: str) -> int:
    v = d[key]
    if type(v) is not int or v < 0 or v > 2**63 - 1:
        raise CommandError(f"{key}: expected a non-negative integer")
    return v


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise CommandError("duplicate keys")
    return d


def _loads(data: bytes, limit: int) -> Any:
    if not isinstance(data, bytes | bytearray):
        raise CommandError("expected bytes")
    if len(data) > limit:
        raise CommandError(f"{len(data)} bytes exceeds limit {limit}")
    try:
        return json.loads(bytes(data).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise CommandError(f"not valid JSON: {exc}") from exc


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def encode_command(cmd: Command) -> bytes:
    """Canonical JSON for a command (what gets proposed to Raft)."""
    if isinstance(cmd, Assign):
        return _dumps(
            {
                "op": "assign",
                "resource_id": cmd.resource_id,
                "holder": cmd.holder,
                "expected_epoch": cmd.expected_epoch,
            }
        )
    return _dumps(
        {"op": "revoke", "resource_id": cmd.resource_id, "expected_epoch": cmd.expected_epoch}
    )


_ASSIGN_KEYS = frozenset({"op", "resource_id", "holder", "expected_epoch"})
_REVOKE_KEYS = frozenset({"op", "resource_id", "expected_epoch"})


def decode_command(data: bytes) -> Command:
    """Strictly parse a command; anything else raises CommandError."""
    d = _loads(data, MAX_COMMAND_SIZE)
    if type(d) is not dict:
        raise CommandError("command must be a JSON object")
    op = d.get("op")
    keys = {"assign": _ASSIGN_KEYS, "revoke": _REVOKE_KEYS}.get(op) if type(op) is str else None
    if keys is None:
        raise CommandError(f"unknown op {op!r:.40}")
    if set(d) != keys:
        raise CommandError(f"{op}: expected keys {sorted(keys)}, got {sorted(map(str, d))}")
    rid = d["resource_id"]
    if not valid_resource_id(rid):
        raise CommandError(f"invalid resource id {rid!r:.80}")
    epoch = _uint(d, "expected_epoch")
    if op == "assign":
        holder = d["holder"]
        if not valid_node_id(holder):
            raise CommandError(f"invalid holder {holder!r:.80}")
        return Assign(rid, holder, epoch)
    return Revoke(rid, epoch)


@dataclass(frozen=True, slots=True)
class Assignment:
    """Who is authority for a resource, stamped with the Raft (term, index) that decided it.

    `holder` is None after a Revoke (the epoch is kept so it keeps increasing).
    """

    holder: str | None
    term: int
    index: int
    epoch: int


@dataclass(frozen=True, slots=True)
class ApplyResult:
    index: int
    accepted: bool
    resource_id: str | None = None
    assignment: Assignment | None = None
    reason: str = ""


class AuthorityMap:
    """resource_id -> Assignment, changed only by applying committed log entries."""

    def __init__(self) -> None:
        self._map: dict[str, Assignment] = {}
        self.applied_index = 0

    # --- reads (local, no consensus round) ---------------------------------------------
    def authority_for(self, resource_id: str) -> Assignment | None:
        """Current authority for *resource_id* as of this node's applied index."""
        a = self._map.get(resource_id)
        return a if a is not None and a.holder is not None else None

    def epoch_of(self, resource_id: str) -> int:
        a = self._map.get(resource_id)
        return a.epoch if a is not None else 0

    def assignments(self) -> Iterator[tuple[str, Assignment]]:
        return iter(sorted(self._map.items()))

    def __len__(self) -> int:
        return len(self._map)

    def assign_command(self, resource_id: str, holder: str) -> Assign:
        """An Assign built on this node's view (it may lose to a concurrent one)."""
        return Assign(resource_id, holder, self.epoch_of(resource_id))

    # --- apply -------------------------------------------------------------------------
    def apply(self, entry: Entry) -> ApplyResult | None:
        """Apply one committed entry; None for entries that are not commands.

        Never raises for bad payloads: a malformed command is rejected the same way on
        every node. Entries must arrive in index order (replays are ignored).
        """
        if entry.index <= self.applied_index:
            return None
        if entry.index != self.applied_index + 1:
            raise ValueError(f"entry {entry.index} applied after {self.applied_index}")
        self.applied_index = entry.index
        if entry.type is not EntryType.NORMAL or not entry.data:
            return None
        try:
            cmd = decode_command(entry.data)
        except CommandError as exc:
            return ApplyResult(entry.index, False, reason=f"malformed command: {exc}")
        current = self._map.get(cmd.resource_id)
        epoch = current.epoch if current is not None else 0
        if cmd.expected_epoch != epoch:
            return ApplyResult(
                entry.index,
                False,
                cmd.resource_id,
                current,
                f"stale epoch: expected {cmd.expected_epoch}, current {epoch}",
            )
        if isinstance(cmd, Revoke) and (current is None or current.holder is None):
            return ApplyResult(entry.index, False, cmd.resource_id, current, "not assigned")
        holder = cmd.holder if isinstance(cmd, Assign) else None
        new = Assignment(holder, entry.term, entry.index, epoch + 1)
        self._map[cmd.resource_id] = new
        return ApplyResult(entry.index, True, cmd.resource_id, new)

    # --- snapshots ---------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """Canonical JSON of the whole map (identical bytes on every node at one index)."""
        return _dumps(
            {
                "version": SNAPSHOT_VERSION,
                "applied_index": self.applied_index,
                "assignments": {
                    rid: {"holder": a.holder, "term": a.term, "index": a.index, "epoch": a.epoch}
                    for rid, a in self._map.items()
                },
            }
        )

    @classmethod
    def restore(cls, data: bytes) -> AuthorityMap:
        """Rebuild from :meth:`snapshot` output (b"" is the empty initial state)."""
        m = cls()
        if not data:
            return m
        d = _loads(data, 1 << 30)
        if type(d) is not dict or set(d) != {"version", "applied_index", "assignments"}:
            raise CommandError("snapshot: unexpected structure")
        if d["version"] != SNAPSHOT_VERSION:
            raise CommandError(f"snapshot: unsupported version {d['version']!r:.20}")
        m.applied_index = _uint(d, "applied_index")
        items = d["assignments"]
        if type(items) is not dict:
            raise CommandError("snapshot: assignments must be an object")
        for rid, a in items.items():
            if not valid_resource_id(rid):
                raise CommandError(f"snapshot: invalid resource id {rid!r:.80}")
            if type(a) is not dict or set(a) != {"holder", "term", "index", "epoch"}:
                raise CommandError(f"snapshot: bad assignment for {rid!r:.80}")
            holder = a["holder"]
            if holder is not None and not valid_node_id(holder):
                raise CommandError(f"snapshot: invalid holder for {rid!r:.80}")
            m._map[rid] = Assignment(holder, _uint(a, "term"), _uint(a, "index"), _uint(a, "epoch"))
        return m
