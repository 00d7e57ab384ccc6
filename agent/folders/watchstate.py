"""The watched paths, kept across restarts in one small file (strictly parsed: a damaged or
hostile file never becomes a watch on something else).

Form (``<data dir>/watches.json``, written atomically)::

    {"watches": [{"path": "/abs/dir", "public": false, "resource_id": "<32 hex>"}]}
"""

from __future__ import annotations

import json
import logging
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from agent.fsutil import atomic_write_bytes
from agent.log import kv

__all__ = ["MAX_STATE_BYTES", "MAX_WATCH_PATH", "WatchEntry", "check_path", "load", "save"]

log = logging.getLogger("shoal.watch")

MAX_STATE_BYTES = 256 * 1024
MAX_WATCH_PATH = 4096
MAX_ENTRIES = 1024


@dataclass(frozen=True)
class WatchEntry:
    path: Path  # absolute
    resource_id: str
    public: bool

    def to_obj(self) -> dict[str, object]:
        return {"path": str(self.path), "public": self.public, "resource_id": self.resource_id}


def check_path(value: object) -> Path:
    """An absolute path without control characters, bounded (ValueError otherwise)."""
    if not isinstance(value, str) or not value.startswith("/") or not (
            0 < len(value.encode("utf-8", "surrogateescape")) <= MAX_WATCH_PATH):
        raise ValueError("a watched path is an absolute path of at most 4096 bytes")
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValueError("a watched path has no control characters")
    return Path(value)


def _entry(obj: object) -> WatchEntry:
    if not isinstance(obj, dict) or set(obj) != {"path", "public", "resource_id"}:
        raise ValueError("an entry is {path, public, resource_id}")
    rid = obj["resource_id"]
    if not (isinstance(rid, str) and len(rid) == 32 and rid.isascii()
            and all(c in "0123456789abcdef" for c in rid)):
        raise ValueError("resource_id is 32 lower-case hex characters")
    if not isinstance(obj["public"], bool):
        raise ValueError("public is true or false")
    return WatchEntry(check_path(obj["path"]), rid, obj["public"])


def load(path: Path) -> list[WatchEntry]:
    """The saved watches; a missing file is none, a damaged one is logged and ignored (the
    user re-adds watches; nothing is watched that was not asked for)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return []
    except OSError as e:
        log.warning("watch list unreadable", extra=kv(path=path, error=e))
        return []
    try:
        if len(data) > MAX_STATE_BYTES:
            raise ValueError(f"larger than {MAX_STATE_BYTES} bytes")
        obj = json.loads(data)
        if not isinstance(obj, dict) or set(obj) != {"watches"} or not isinstance(
                obj["watches"], list) or len(obj["watches"]) > MAX_ENTRIES:
            raise ValueError("expected {\"watches\": [...]}")
        out = [_entry(e) for e in obj["watches"]]
    except ValueError as e:
        log.warning("damaged watch list ignored", extra=kv(path=path, error=e))
        return []
    return list({e.path: e for e in out}.values())


def save(path: Path, entries: list[WatchEntry]) -> None:
    body = {"watches": [e.to_obj() for e in entries[:MAX_ENTRIES]]}
    atomic_write_bytes(path, json.dumps(body, sort_keys=True).encode(), 0o600)
