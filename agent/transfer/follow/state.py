"""What this device follows, and the withdrawals it knows: two small files in the data dir.

``follows.json``  — ``{"v": 1, "follows": [{"resource_id", "publisher", "name", "to",
since}]}``: the followed set survives restarts. ``to`` is the absolute path the user asked
the copy to be kept at (or null).
``withdrawn.json`` — ``{"v": 1, "withdrawn": [<signed tombstone>, ...]}``: withdrawals
this device verified (as publisher or holder), kept so that a device that was away learns
them when it next asks (request ``tombstones``).

Both are written atomically (temp + fsync + rename), read strictly (exact keys, types,
sizes) and bounded: a damaged file is set aside (``.bad``) and the agent starts with an
empty set rather than not at all.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.fsutil import atomic_write_bytes
from agent.log import kv
from agent.security.signing import SignatureError
from agent.security.tombstone import SignedTombstone
from agent.store import _schema as s
from agent.store import validate_name

log = logging.getLogger("shoal.follow")

MAX_FOLLOWS = 256
MAX_WITHDRAWN = 256
MAX_PATH = 4096
_MAX_FILE = 1024 * 1024
_KEYS = frozenset({"resource_id", "publisher", "name", "to", "since"})


@dataclass(frozen=True)
class Followed:
    """One followed resource: (publisher, resource_id) and where to keep the file."""

    resource_id: str
    publisher: str
    name: str
    to: str | None
    since: float

    def __post_init__(self) -> None:
        s.check_hex(self.resource_id, "resource_id", length=32)
        s.check_hex(self.publisher, "publisher", length=64)
        validate_name(self.name)
        if self.to is not None:
            check_export_path(self.to)
        s.check_float(float(self.since) if isinstance(self.since, int) else self.since,
                      "since", 0.0, 1e11)

    def to_obj(self) -> dict[str, Any]:
        return {"resource_id": self.resource_id, "publisher": self.publisher,
                "name": self.name, "to": self.to, "since": self.since}

    @classmethod
    def from_obj(cls, obj: object) -> Followed:
        o = s.exact_keys(obj, _KEYS, "followed resource")
        return cls(o["resource_id"], o["publisher"], o["name"], o["to"], o["since"])


def check_export_path(path: object) -> str:
    """An export path: absolute, at most 4096 characters, no NUL or control characters."""
    if not isinstance(path, str) or not 1 <= len(path) <= MAX_PATH:
        raise ValueError("the export path must be 1..4096 characters")
    if not path.startswith("/") or any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise ValueError("the export path must be absolute, without control characters")
    return path


def _load(path: Path, key: str, limit: int) -> list[Any]:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_FILE + 1)
    except FileNotFoundError:
        return []
    try:
        obj = s.loads_strict(data, max_bytes=_MAX_FILE, what=path.name)
        o = s.exact_keys(obj, frozenset({"v", key}), path.name)
        if o["v"] != 1:
            raise ValueError(f"unknown version {o['v']!r}")
        return s.check_list(o[key], key, limit)
    except (ValueError, TypeError) as e:
        log.warning("damaged state file set aside", extra=kv(path=path, error=e))
        with contextlib.suppress(OSError):
            os.replace(path, path.with_suffix(".bad"))
        return []


class FollowBook:
    """The followed set, persisted on every change."""

    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / "follows.json"
        self._items: dict[str, Followed] = {}
        for raw in _load(self._path, "follows", MAX_FOLLOWS):
            try:
                f = Followed.from_obj(raw)
            except (ValueError, TypeError) as e:
                log.warning("bad followed entry dropped", extra=kv(error=e))
                continue
            self._items[f.resource_id] = f

    def all(self) -> list[Followed]:
        return sorted(self._items.values(), key=lambda f: (f.name, f.resource_id))

    def get(self, rid: str) -> Followed | None:
        return self._items.get(rid)

    def add(self, f: Followed) -> None:
        if f.resource_id not in self._items and len(self._items) >= MAX_FOLLOWS:
            raise ValueError(f"already following {MAX_FOLLOWS} resources (the limit)")
        self._items[f.resource_id] = f
        self._save()

    def remove(self, rid: str) -> Followed | None:
        f = self._items.pop(rid, None)
        if f is not None:
            self._save()
        return f

    def _save(self) -> None:
        body = {"v": 1, "follows": [f.to_obj() for f in self.all()]}
        atomic_write_bytes(self._path, s.canonical_json(body), 0o600)


class WithdrawalBook:
    """Verified withdrawals, newest kept when full (by withdrawal time)."""

    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / "withdrawn.json"
        self._items: dict[str, SignedTombstone] = {}
        for raw in _load(self._path, "withdrawn", MAX_WITHDRAWN):
            try:
                t = SignedTombstone.from_obj(raw)
                t.verify()
            except SignatureError as e:
                log.warning("bad withdrawal dropped", extra=kv(error=e))
                continue
            self._items[t.tombstone.resource_id] = t

    def get(self, rid: str) -> SignedTombstone | None:
        return self._items.get(rid)

    def add(self, t: SignedTombstone) -> bool:
        """Keep a verified withdrawal; False if it was known (or an older one)."""
        rid = t.tombstone.resource_id
        old = self._items.get(rid)
        if old is not None and old.tombstone.version >= t.tombstone.version:
            return False
        self._items[rid] = t
        if len(self._items) > MAX_WITHDRAWN:
            oldest = min(self._items.values(), key=lambda x: x.tombstone.withdrawn)
            del self._items[oldest.tombstone.resource_id]
        body = {"v": 1, "withdrawn": [x.to_obj() for x in self._items.values()]}
        atomic_write_bytes(self._path, s.canonical_json(body), 0o600)
        return True
