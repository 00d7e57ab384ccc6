"""The followed set and known withdrawals persist (agent/transfer/follow/state.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.security.identity import Identity
from agent.security.tombstone import withdraw
from agent.transfer.follow import state
from agent.transfer.follow.state import FollowBook, Followed, WithdrawalBook

PUB = Identity.generate()


def followed(i: int, to: str | None = None) -> Followed:
    return Followed(f"{i:032x}", PUB.hex_id, f"r{i}", to, 1_700_000_000.0)


def test_the_followed_set_survives_a_restart(tmp_path: Path) -> None:
    book = FollowBook(tmp_path)
    book.add(followed(1, "/srv/x.bin"))
    book.add(followed(2))
    book.remove(f"{2:032x}")
    again = FollowBook(tmp_path)
    assert [f.resource_id for f in again.all()] == [f"{1:032x}"]
    assert again.get(f"{1:032x}") == followed(1, "/srv/x.bin")
    assert (tmp_path / "follows.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("text", [
    "not json", '{"v": 2, "follows": []}', '{"v": 1}', '{"v": 1, "follows": {}}',
    '{"v": 1, "follows": [], "extra": 1}',
])
def test_a_damaged_file_is_set_aside_not_fatal(tmp_path: Path, text: str) -> None:
    (tmp_path / "follows.json").write_text(text)
    assert FollowBook(tmp_path).all() == []
    assert (tmp_path / "follows.bad").exists()


@pytest.mark.parametrize("entry", [
    {"resource_id": "zz", "publisher": PUB.hex_id, "name": "x", "to": None, "since": 1.0},
    {"resource_id": "ab" * 16, "publisher": PUB.hex_id, "name": "../x", "to": None,
     "since": 1.0},
    {"resource_id": "ab" * 16, "publisher": PUB.hex_id, "name": "x", "to": "relative/p",
     "since": 1.0},
    {"resource_id": "ab" * 16, "publisher": PUB.hex_id, "name": "x", "to": "/a\x1b[2J",
     "since": 1.0},
    {"resource_id": "ab" * 16, "publisher": PUB.hex_id, "name": "x", "to": None, "since": 1.0,
     "more": True},
])
def test_bad_entries_are_dropped_one_by_one(tmp_path: Path, entry: dict[str, object]) -> None:
    good = followed(7).to_obj()
    (tmp_path / "follows.json").write_text(json.dumps({"v": 1, "follows": [entry, good]}))
    assert [f.name for f in FollowBook(tmp_path).all()] == ["r7"]


def test_the_followed_set_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "MAX_FOLLOWS", 3)
    book = FollowBook(tmp_path)
    for i in range(3):
        book.add(followed(i))
    with pytest.raises(ValueError, match="limit"):
        book.add(followed(9))


def test_withdrawals_persist_verified_and_newest_first(tmp_path: Path) -> None:
    wb = WithdrawalBook(tmp_path)
    t = withdraw(PUB, "ab" * 16, 2, 5.0)
    assert wb.add(t) and not wb.add(t)
    assert not wb.add(withdraw(PUB, "ab" * 16, 1, 6.0))  # an older one changes nothing
    again = WithdrawalBook(tmp_path)
    got = again.get("ab" * 16)
    assert got is not None and got.tombstone.version == 3
    # a forged one in the file is dropped at load
    body = json.loads((tmp_path / "withdrawn.json").read_text())
    body["withdrawn"][0]["withdrawal"] = body["withdrawn"][0]["withdrawal"].replace(
        '"version":3', '"version":8')
    (tmp_path / "withdrawn.json").write_text(json.dumps(body))
    assert WithdrawalBook(tmp_path).get("ab" * 16) is None
