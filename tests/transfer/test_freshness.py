"""A held copy found to be the newest is served without asking the holders again for
``[transfer] fresh_for`` seconds; a paired announcement of a newer version ends that."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from agent.config import TransferConfig
from agent.transfer.service import MAX_FRESH, FetchService


def _service(fresh_for: float) -> FetchService:
    return FetchService(None, None, TransferConfig(fresh_for=fresh_for),  # type: ignore[arg-type]
                        connect_timeout=1.0, default_port=1)


def _rec(version: int, rid: str = "ab" * 16) -> Any:
    return SimpleNamespace(resource_id=rid, version=version)


def test_known_newest_is_served_until_a_newer_version_is_announced() -> None:
    svc = _service(30.0)
    assert svc._fresh_note(_rec(2)) is None  # never checked: ask the holders
    svc.known_newest("ab" * 16, 2)
    note = svc._fresh_note(_rec(2))
    assert note is not None and note.startswith("local v2, the newest ")
    assert svc._fresh_note(_rec(3)) is None  # another version held than the one checked
    svc.stale("ab" * 16, 2)  # not news
    assert svc._fresh_note(_rec(2)) is not None
    svc.stale("ab" * 16, 3)
    assert svc._fresh_note(_rec(2)) is None


def test_fresh_for_zero_always_asks_and_the_memory_is_bounded() -> None:
    svc = _service(0.0)
    svc.known_newest("ab" * 16, 1)
    assert svc._fresh_note(_rec(1)) is None
    for i in range(MAX_FRESH + 10):
        svc.known_newest(f"{i:032x}", 1)
    assert len(svc._fresh) == MAX_FRESH
