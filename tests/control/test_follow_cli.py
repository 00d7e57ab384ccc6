"""`shoal versions`, `follow`, `unfollow`, `unpublish`, `fetch --version`: parsing and tables."""

from __future__ import annotations

import pytest

from agent.control.listings import follow_table, versions_table
from agent.control.parser import UsageError, build_parser


def test_the_new_commands_parse() -> None:
    p = build_parser()
    a = p.parse_args(["fetch", "x", "--version", "3", "--json"])
    assert a.at_version == 3 and a.json
    a = p.parse_args(["follow", "x", "--to", "/srv/x"])
    assert a.resource == "x" and str(a.to) == "/srv/x"
    a = p.parse_args(["follow"])
    assert a.resource is None
    assert p.parse_args(["unfollow", "x"]).resource == "x"
    assert p.parse_args(["unpublish", "x"]).resource == "x"
    assert p.parse_args(["versions", "x"]).resource == "x"
    with pytest.raises(UsageError):
        p.parse_args(["fetch", "x", "--version", "two"])
    with pytest.raises(UsageError):
        p.parse_args(["versions"])


def test_versions_is_a_table_with_headers_and_escaped_peer_strings() -> None:
    text = versions_table({
        "resource_id": "ab" * 16, "name": "map\x1b[2J", "publisher_short": "R4VF-XC7D",
        "held_version": 3, "keep_versions": 5, "versions": [
            {"version": 3, "created": 1_700_000_000.0, "size": 2048, "chunks_added": 1,
             "chunks_removed": 1, "here": True, "holders": [], "manifest": "cd" * 32},
            {"version": 1, "created": None, "size": 1024, "chunks_added": None,
             "chunks_removed": None, "here": False, "holders": ["kitchen\x07"],
             "manifest": "ef" * 32}]})
    assert "\x1b" not in text and "\x07" not in text
    lines = text.splitlines()
    assert lines[1].split()[:2] == ["VERSION", "CREATED"]
    assert "2023-11-14 22:13:20" in text and "v3 held here" in text
    assert "shoal fetch NAME --version N" in text


def test_the_follow_listing_says_what_is_followed_and_how_current() -> None:
    assert "not following" in follow_table([])
    text = follow_table([{"name": "map", "resource_id": "ab" * 16, "version": 2,
                          "announced": 3, "syncing": False, "failures": 0, "to": "/srv/m",
                          "next_check_s": 540.0, "last": {"error": "timeout\x1b"}}])
    assert "NAME" in text.splitlines()[0] and "v3 announced" in text and "\x1b" not in text
