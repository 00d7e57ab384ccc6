"""The `shoal` CLI at its boundaries, against a scripted agent (the control call is faked):
peer-supplied names never reach a terminal or a file name raw."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.control import cli

EVIL = "report\u202etxt.exe"  # displays as "reportexe.txt"
RESULT = {"name": EVIL, "version": 1, "size": 5, "why": "test", "resource_id": "ab" * 16}


def script(*items: Any):
    """A fake `call` that answers any command with *items*."""
    async def call(path: Path, cmd: str, args: dict[str, Any] | None = None
                   ) -> AsyncIterator[Any]:
        for item in items:
            yield item
    return call


@pytest.fixture
def agent_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOAL_DATA_DIR", str(tmp_path / "data"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_display_escapes_bidi_format_and_control_characters():
    assert cli.display(EVIL) == "report\\u202etxt.exe"
    assert cli.display("a\u2028b\u200bc\x1b[31m\U000e0001") == \
        "a\\u2028b\\u200bc\\u001b[31m\\U000e0001"
    assert cli.display("two\nlines\tkept, ok: caf\u00e9 \u0645\u200c\u06cc") == \
        "two\nlines\tkept, ok: caf\u00e9 \u0645\u200c\u06cc"


def test_output_name_never_uses_unsafe_characters_raw():
    assert cli.output_name(EVIL) == "reportU+202Etxt.exe"
    assert cli.output_name("dir/name\nx") == "nameU+000Ax"
    with pytest.raises(cli.CliError):
        cli.output_name("..")


def test_fetch_writes_an_escaped_file_name_and_prints_escaped(agent_env, monkeypatch, capsys):
    monkeypatch.setattr(cli, "call", script({"stage": "export", "name": EVIL}, b"hello",
                                            {"ok": True, "result": RESULT}))
    assert cli.main(["fetch", "x"]) == 0
    assert [p.name for p in agent_env.iterdir()] == ["reportU+202Etxt.exe"]
    out = capsys.readouterr().out
    assert "\u202e" not in out and "report\\u202etxt.exe" in out


def test_resources_listing_is_escaped(agent_env, monkeypatch, capsys):
    entry = {"resource_id": "ab" * 16, "version": 1, "size": 5, "public": True,
             "name": EVIL, "publisher_short": "AAAA-BBBB", "holder": "peer\u202e"}
    monkeypatch.setattr(cli, "call", script({"ok": True, "result": {
        "local": [entry], "remote": [entry]}}))
    monkeypatch.setattr("agent.control.client.call", cli.call)
    assert cli.main(["resources"]) == 0
    out = capsys.readouterr().out
    # one row (held here and offered by the peer): escaped name and escaped holder
    assert "\u202e" not in out and out.count("\\u202e") == 2


def test_json_output_escapes_too(agent_env, monkeypatch, capsys):
    monkeypatch.setattr(cli, "call", script({"stage": "export", "name": EVIL}, b"hello",
                                            {"ok": True, "result": RESULT}))
    assert cli.main(["--json", "fetch", "x", "-o", str(agent_env / "out.bin")]) == 0
    assert "\u202e" not in capsys.readouterr().out
    assert os.path.exists(agent_env / "out.bin")


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664),
                                             (0o077, 0o600)])
def test_fetch_output_honours_the_umask(agent_env, monkeypatch, umask, mode):
    monkeypatch.setattr(cli, "call", script({"stage": "export", "name": "a.bin"}, b"hello",
                                            {"ok": True, "result": RESULT}))
    old = os.umask(umask)
    try:
        assert cli.main(["fetch", "x", "-o", str(agent_env / "out.bin")]) == 0
    finally:
        os.umask(old)
    assert (agent_env / "out.bin").read_bytes() == b"hello"
    assert (agent_env / "out.bin").stat().st_mode & 0o777 == mode
    assert [p.name for p in agent_env.iterdir()] == ["out.bin"]  # no temp file left


def test_current_umask_reads_without_changing_it():
    from agent.fsutil import current_umask

    old = os.umask(0o037)
    try:
        assert current_umask() == 0o037
        assert current_umask() == 0o037
    finally:
        os.umask(old)


def test_pair_close_command_human_and_json(agent_env, monkeypatch, capsys):
    asked: list[str] = []

    async def call(path: Path, cmd: str, args: dict[str, Any] | None = None
                   ) -> AsyncIterator[Any]:
        asked.append(cmd)
        yield {"ok": True, "result": {"was_open": True, "cancelled": 2}}

    monkeypatch.setattr("agent.control.client.call", call)
    assert cli.main(["pair", "--close"]) == 0
    assert capsys.readouterr().out == ("pairing window closed; 2 unconfirmed pairing(s) "
                                       "cancelled\n")
    assert cli.main(["--json", "pair", "--close"]) == 0
    import json

    assert json.loads(capsys.readouterr().out) == {"was_open": True, "cancelled": 2}
    assert asked == ["pair_close", "pair_close"]
    assert cli.main(["pair", "--close", "--open"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("shoal: error: --close") and err.count("\n") == 1
    assert "shoal pair --close" in err  # the next step
    assert asked == ["pair_close", "pair_close"]


PENDING = {"pairing_id": "7-abcdef", "peer_name": "bravo", "code": "123456", "incoming": True,
           "complete": False, "cancelled": None, "local_confirmed": False,
           "remote_confirmed": False, "seq": 4}
OPENED = {"open_until": 0.0, "seconds": 120.0, "after": 3,
          "addresses": ["192.0.2.9:47474", "[fd00::9]:47474"]}


def scripted_agent(monkeypatch, answers: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A fake agent answering each control command from *answers*; returns what was asked."""
    asked: list[tuple[str, dict[str, Any]]] = []

    async def call(path: Path, cmd: str, args: dict[str, Any] | None = None
                   ) -> AsyncIterator[Any]:
        asked.append((cmd, dict(args or {})))
        yield {"ok": True, "result": answers[cmd]}

    monkeypatch.setattr("agent.control.client.call", call)
    return asked


def test_waiting_pair_says_where_to_pair_and_waits_for_a_newer_request(
        agent_env, monkeypatch, capsys):
    asked = scripted_agent(monkeypatch, {
        "pair_open": OPENED, "pair_wait": PENDING, "pair_decline": PENDING})
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert cli.main(["pair"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "On the other device run: shoal pair 192.0.2.9:47474\n" in err
    assert "or: shoal pair [fd00::9]:47474\n" in err
    assert "Pairing with bravo: code 123 456" in err
    # only a request newer than the window it opened; the "no" ends it on both devices
    assert asked == [("pair_open", {"seconds": 120.0}),
                     ("pair_wait", {"timeout": 120.0, "after": 3, "code": None}),
                     ("pair_decline", {"pairing_id": "7-abcdef"})]
    assert err.splitlines()[-1] == ("shoal: error: pairing declined and cancelled on both "
                                    "devices; run `shoal pair` again to start over")


def test_pair_open_prints_the_addresses(agent_env, monkeypatch, capsys):
    scripted_agent(monkeypatch, {"pair_open": OPENED | {"addresses": ["127.0.0.1:4100"]}})
    assert cli.main(["pair", "--open"]) == 0
    assert capsys.readouterr().out == ("pairing window open for 120 s\n"
                                       "On the other device run: shoal pair 127.0.0.1:4100\n")


def test_a_code_that_differs_cancels_the_pairing(agent_env, monkeypatch, capsys):
    asked = scripted_agent(monkeypatch, {"pair_start": PENDING, "pair_decline": PENDING})
    assert cli.main(["pair", "127.0.0.1:4100", "--code", "654321"]) == cli.EXIT_ERROR
    assert [c for c, _ in asked] == ["pair_start", "pair_decline"]
    assert "code mismatch" in capsys.readouterr().err
