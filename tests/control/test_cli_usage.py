"""The `shoal` command as a demanding user meets it, through the real ``main()``: global
options anywhere, every error one line (or one JSON object), tables with headers, no raw
exception names, quiet broken pipes, progress that tells the truth about a resume, help with
examples. The agent's answers are scripted here; tests/integration/test_cli_walkthrough.py
runs the same command against real agents."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.control import cli
from agent.control.parser import build_parser
from agent.control.progress import FetchProgress, progress_text
from agent.control.render import Failure, table, width
from agent.errors import ErrorKind
from agent.peer.connection import PeerGone, RemoteError
from agent.transfer.failure import summary


class Agent:
    """A scripted agent: answers command *cmd* with the items in ``answers[cmd]`` and
    records each call (socket path, command, args)."""

    def __init__(self, **answers: Any) -> None:
        self.answers = answers
        self.calls: list[tuple[Path, str, dict[str, Any]]] = []

    async def call(self, path: Path, cmd: str, args: dict[str, Any] | None = None
                   ) -> AsyncIterator[Any]:
        self.calls.append((path, cmd, args or {}))
        for item in self.answers.get(cmd, [{"ok": True, "result": {}}]):
            yield item


@pytest.fixture
def agent(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOAL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)

    def install(**answers: Any) -> Agent:
        a = Agent(**answers)
        monkeypatch.setattr(cli, "call", a.call)
        monkeypatch.setattr("agent.control.client.call", a.call)
        return a
    return install


def ok(result: Any) -> list[dict[str, Any]]:
    return [{"ok": True, "result": result}]


def fail(message: str, kind: str) -> list[dict[str, Any]]:
    return [{"ok": False, "error": message, "kind": kind}]


PEER = {"peer_id": "ab" * 32, "display_id": "AAAA-BBBB-CCCC", "short_id": "AAAA-BBBB",
        "name": "kitchen\x1b[31mpi", "addresses": ["127.0.0.1:7420"], "sources": ["mdns"],
        "connected": True, "reachable": True, "trusted": True, "last_seen": 4.2,
        "rtt_ms": 1.52, "rssi": None}


# --------------------------------------------------------------- 1. global options anywhere
@pytest.mark.parametrize("argv", [
    ["--json", "peers"], ["peers", "--json"],
    ["--data-dir", "D", "stop"], ["stop", "--data-dir", "D"],
    ["--config", "c.toml", "run"], ["run", "--config", "c.toml"],
    ["--log-level", "debug", "run"], ["run", "--log-level", "DEBUG"],
    ["trust", "list", "--json"], ["config", "check", "--config", "c.toml"],
    ["fetch", "x", "--json", "-o", "y"],
])
def test_global_options_parse_before_or_after_the_subcommand(argv):
    args = build_parser().parse_args(argv)
    given = {"--json": ("json", True), "--data-dir": ("data_dir", Path("D")),
             "--config": ("config", Path("c.toml")), "--log-level": ("log_level", "debug")}
    for flag, (attr, value) in given.items():
        assert getattr(args, attr) == (value if flag in argv else
                                       {"json": False, "log_level": "info"}.get(attr))


def test_an_option_after_the_subcommand_wins_and_absent_ones_never_reset(tmp_path):
    args = build_parser().parse_args(["--json", "--data-dir", "A", "status", "--data-dir", "B"])
    assert args.json is True and args.data_dir == Path("B")


def test_peers_json_after_the_subcommand_prints_json(agent, capsys):
    agent(peers=ok([PEER]))
    assert cli.main(["peers", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [PEER]


def test_data_dir_after_the_subcommand_picks_that_agent(agent, tmp_path, capsys):
    a = agent(stop=ok({"stopping": True}))
    assert cli.main(["stop", "--data-dir", str(tmp_path / "other")]) == 0
    assert cli.main(["--data-dir", str(tmp_path / "other"), "stop"]) == 0
    assert [c[0] for c in a.calls] == [tmp_path / "other" / "control.sock"] * 2


def test_config_after_run_is_the_config_used(tmp_path):
    c = tmp_path / "c.toml"
    c.write_text('[node]\nname = "from-file"\n')
    args = build_parser().parse_args(["run", "--config", str(c)])
    assert cli.resolve_config(args).node.name == "from-file"


# --------------------------------------------------------------- 2. errors, human and JSON
def test_a_usage_error_is_one_line_with_the_help_to_read(capsys):
    assert cli.main(["fetch"]) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("shoal: error: ")
    assert "resource" in err and "see: shoal fetch --help" in err


@pytest.mark.parametrize("argv", [["--json", "bogus"], ["fetch", "--json"],
                                  ["peers", "--json", "--nope"], ["run", "--json",
                                                                  "--port", "99999"]])
def test_a_usage_error_in_json_mode_is_one_json_object(argv, capsys):
    assert cli.main(argv) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert err == ""
    e = json.loads(out)["error"]
    assert e["kind"] == "usage" and e["message"] and e["hint"].startswith("see: shoal")
    assert set(e) == {"kind", "message", "hint"}


def test_an_agent_error_in_json_mode_is_one_json_object_and_non_zero(agent, capsys):
    agent(unpair=fail("no paired device matches 'zed'", "not_found"))
    assert cli.main(["unpair", "zed", "--json"]) == cli.EXIT_ERROR
    out, err = capsys.readouterr()
    assert err == "" and json.loads(out) == {"error": {
        "kind": "not_found", "message": "no paired device matches 'zed'",
        "hint": "list paired devices: shoal trust list"}}
    assert cli.main(["unpair", "zed"]) == cli.EXIT_ERROR
    assert capsys.readouterr().err == ("shoal: error: no paired device matches 'zed'; "
                                       "list paired devices: shoal trust list\n")


def test_no_agent_running_is_unavailable_with_the_way_to_start_one(tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.setenv("SHOAL_DATA_DIR", str(tmp_path / "none"))
    assert cli.main(["status", "--json"]) == cli.EXIT_ERROR
    e = json.loads(capsys.readouterr().out)["error"]
    assert e["kind"] == "unavailable" and "shoal run" in e["hint"]
    assert cli.main(["status"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "start one with: shoal run" in err


def test_an_error_line_never_carries_raw_control_characters():
    line = Failure("not_found", "no peer named 'x\x1b[2J\u202e'\nsecond", "hint").as_line()
    assert "\x1b" not in line and "\u202e" not in line and "\n" not in line


# --------------------------------------------------------------- 3. tables with headers
def test_peers_is_a_table_with_headers_units_and_last_seen(agent, capsys):
    agent(peers=ok([PEER, PEER | {"name": "attic", "rtt_ms": None, "last_seen": None,
                                  "trusted": False, "connected": False}]))
    assert cli.main(["peers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "ID", "SEEN", "VIA", "ADDRESS", "STATE", "RTT",
                                "PAIRED", "LAST", "SEEN"]
    assert "kitchen\\u001b[31mpi" in lines[1] and "\x1b" not in "".join(lines)
    assert "1.52 ms" in lines[1] and "4 s ago" in lines[1] and " yes " in lines[1]
    assert lines[2].split()[-3:] == ["-", "no", "-"]  # RTT and last seen unknown
    assert "'-': not known yet" in lines[-1]


def test_peers_without_the_last_seen_field_still_render(agent, capsys):
    agent(peers=ok([{k: v for k, v in PEER.items() if k != "last_seen"}]))
    assert cli.main(["peers"]) == 0
    assert "LAST SEEN" in capsys.readouterr().out


def _res(version: int, **kw: Any) -> dict[str, Any]:
    return {"resource_id": "cd" * 16, "name": "map.tiles", "version": version, "size": 2048,
            "public": False, "publisher": "ee" * 32, "publisher_short": "PUBL-ISHR", **kw}


def test_resources_lists_each_resource_once_with_holders(agent, capsys):
    agent(resources=ok({"local": [_res(2)],
                        "remote": [_res(3, holder="alpha"), _res(2, holder="beta")]}))
    assert cli.main(["resources"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "PUBLISHER", "VERSION", "SIZE", "ACCESS", "HERE",
                                "HOLDERS", "ID"]
    rows = [x for x in lines[1:] if "map.tiles" in x]
    assert len(rows) == 1  # held here and offered by two peers: one row
    assert "PUBL-ISHR" in rows[0] and "v3" in rows[0] and "v2 (older)" in rows[0]
    assert "alpha, beta (v2)" in rows[0] and "2.0 KiB" in rows[0]


def test_resources_shows_a_folder_with_its_file_count(agent, capsys):
    agent(resources=ok({"local": [_res(1, name="album", files=12)],
                        "remote": [_res(1, holder="beta", name="album", files=12)]}))
    assert cli.main(["resources"]) == 0
    row = next(x for x in capsys.readouterr().out.splitlines() if "album" in x)
    assert "album/ " in row and "2.0 KiB, 12 files" in row


def test_publish_watching_lists_watched_paths(agent, capsys):
    agent(watching=ok([{"path": "/srv/site", "resource_id": "cd" * 16, "name": "site",
                        "version": 4, "folder": True, "public": False, "dirs": 3,
                        "publishes": 3, "pending": False, "error": None}]))
    assert cli.main(["publish", "--watching"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["PATH", "NAME", "VERSION", "KIND", "DIRS", "STATE"]
    assert lines[1].split() == ["/srv/site", "site", "v4", "folder", "3", "up", "to", "date"]
    agent(watching=ok([]))
    assert cli.main(["publish", "--watching"]) == 0
    assert "nothing watched" in capsys.readouterr().out


def test_publish_without_a_path_is_a_usage_error(agent, capsys):
    agent()
    assert cli.main(["publish"]) == 2
    assert "publish needs a PATH" in capsys.readouterr().err


def test_a_held_resource_offered_back_by_a_peer_is_listed_once(agent, capsys):
    agent(resources=ok({"local": [_res(1)], "remote": [_res(1, holder="beta")]}))
    assert cli.main(["resources"]) == 0
    out = capsys.readouterr().out
    assert out.count("map.tiles") == 1 and " yes " in out and "beta" in out


AUTH = {"cluster": "f" * 32, "term": 3, "role": "leader", "leader": "alpha",
        "voters": ["alpha", "beta"], "learners": [], "assignments": [
            {"resource_id": "cd" * 16, "name": "map.tiles", "holder": "alpha", "term": 3,
             "epoch": 2, "scores": {"alpha": 0.61234, "beta": 0.4}}]}


def test_authority_explains_its_score_column(agent, capsys):
    agent(authority=ok(AUTH))
    assert cli.main(["authority"]) == 0
    out = capsys.readouterr().out
    header = next(x for x in out.splitlines() if x.startswith("RESOURCE"))
    assert "AUTHORITY" in header and "REPUTATION" in header
    assert "alpha=0.61 beta=0.40" in out and "0 to 1" in out


def test_authority_for_an_unknown_resource_fails(agent, capsys):
    agent(authority=ok(AUTH | {"assignments": []}))
    assert cli.main(["authority", "nope"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "'nope'" in err and "shoal authority" in err and err.count("\n") == 1
    assert cli.main(["authority"]) == 0  # the whole (empty) map is not an error


def test_trust_list_is_a_table(agent, capsys):
    agent(trust_list=ok([{"name": "b\u202eeta", "display_id": "XXXX-YYYY", "role": "member",
                          "paired_at": 0}]))
    assert cli.main(["trust", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "ID", "PAIRED", "AT"]
    assert "b\\u202eeta" in lines[1]


def test_table_aligns_wide_characters_and_escapes_every_cell():
    out = table(["A", "B"], [["\u6771\u4eac", "x"], ["ab\tc", None]]).splitlines()
    # columns, not characters: each of the two wide characters takes two
    assert width(out[1][: out[1].index("x")]) == out[0].index("B") == 11
    assert "ab\\u0009c" in out[2] and out[2].rstrip().endswith("-")


# --------------------------------------------------------------- 4. raw errors
def test_a_bare_exception_name_from_the_agent_becomes_a_sentence(agent, capsys):
    agent(pair_open=ok({"open_until": 0, "seconds": 1}),
          pair_wait=fail("TimeoutError", "timeout"))
    assert cli.main(["pair", "--timeout", "1"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == ("shoal: error: pair timed out (TimeoutError); retry with a longer "
                   "--timeout")


def test_no_holder_summary_is_one_line_however_many_peers():
    errors: dict[str, BaseException] = {
        f"p{i}": RemoteError("no such resource", ErrorKind.NOT_FOUND) for i in range(40)}
    errors |= {"gone": PeerGone("closed"), "slow": TimeoutError(), "rude": RemoteError("no")}
    line = summary("x", errors)
    assert line == ("no holder could serve 'x': 43 peers tried (40 not holding it, "
                    "2 unreachable, 1 refused)")


def test_no_holder_summary_quotes_one_answer_only_when_all_peers_gave_it():
    same = {f"p{i}": RemoteError("only public resources are shared before pairing",
                                 ErrorKind.NOT_FOUND) for i in range(3)}
    assert summary("x", same) == ("no holder could serve 'x': 3 peers tried (3 not holding "
                                  "it); each answered: only public resources are shared "
                                  "before pairing")
    assert summary("x", {"a": RemoteError("z" * 1000)}).endswith("z...")
    assert len(summary("x", {"a": RemoteError("z" * 1000)})) < 250


def test_fetch_failure_is_one_line_with_a_next_step(agent, capsys):
    agent(fetch=fail("no holder could serve 'x': 3 peers tried (2 not holding it, "
                     "1 unreachable)", "not_found"))
    assert cli.main(["fetch", "x"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "shoal resources" in err and "--log-level debug" in err


def _closed_pipe_run(*argv: str) -> subprocess.CompletedProcess[bytes]:
    r, w = os.pipe()
    os.close(r)  # the reader is gone before anything is written, as `| head` ends
    try:
        return subprocess.run([sys.executable, "-m", "agent", *argv], stdout=w,
                              stderr=subprocess.PIPE, timeout=60, check=False)
    finally:
        os.close(w)


def test_output_into_a_closed_pipe_ends_quietly_with_141(tmp_path):
    res = _closed_pipe_run("config", "defaults")
    assert res.stderr == b"" and res.returncode == cli.EXIT_PIPE == 141
    res = _closed_pipe_run("--json", "--data-dir", str(tmp_path), "id")
    assert res.stderr == b"" and res.returncode == 141


def test_the_shoal_console_script_also_ends_quietly(tmp_path):
    shoal = Path(sys.executable).with_name("shoal")
    if not shoal.exists():
        pytest.skip("no shoal console script next to this interpreter")
    r, w = os.pipe()
    os.close(r)
    try:
        res = subprocess.run([str(shoal), "config", "defaults"], stdout=w,
                             stderr=subprocess.PIPE, timeout=60, check=False)
    finally:
        os.close(w)
    assert res.stderr == b"" and res.returncode == 141


# --------------------------------------------------------------- 5. progress
def test_resumed_progress_says_so_and_counts_only_this_runs_bytes():
    out = io.StringIO()
    p = FetchProgress(out, enabled=True, redraw=False)
    mib = 1024 * 1024
    p.update({"event": "progress", "done": 40 * mib, "total": 100 * mib, "elapsed": 1.0,
              "sources": 2, "already": 30 * mib, "chunks_already": 12, "chunks_total": 40})
    lines = out.getvalue().splitlines()
    assert lines[0] == "resuming: 12 of 40 chunks (30.0 %) already here"
    # 10 MiB moved in 1 s: 10 MiB/s (not 40), 60 MiB left: 6 s
    assert "40.0 MiB of 100.0 MiB" in lines[1] and "10.0 MiB/s" in lines[1]
    assert "ETA 6 s" in lines[1] and "2 sources" in lines[1]


def test_progress_is_silent_unless_enabled_and_ignores_other_events():
    out = io.StringIO()
    FetchProgress(out, enabled=False, redraw=True).update(
        {"done": 1, "total": 2, "elapsed": 1})
    p = FetchProgress(out, enabled=True, redraw=True)
    p.update({"event": "progress", "stage": "manifest", "resource": "x"})
    assert out.getvalue() == ""
    p.update({"done": 1, "total": 2, "elapsed": 1.0})
    p.finish()
    assert out.getvalue().startswith("\r[") and out.getvalue().endswith("\n")
    assert "resuming" not in out.getvalue()


def test_progress_text_for_a_fresh_fetch():
    assert progress_text(0, 10, 0, 0.0).endswith("0 B/s  ETA -")
    assert progress_text(10, 10, 0, 2.0).endswith("5 B/s  done")


def test_fetch_shows_progress_with_the_flag_when_stderr_is_not_a_terminal(agent, capsys):
    agent(fetch=[{"event": "progress", "done": 5, "total": 10, "elapsed": 1.0,
                  "already": 0}, {"ok": True, "result": {
                      "name": "x", "version": 1, "size": 10, "why": "test",
                      "bytes_fetched": 10}}])
    assert cli.main(["fetch", "x", "--no-output"]) == 0
    assert capsys.readouterr().err == ""
    assert cli.main(["fetch", "x", "--no-output", "--progress"]) == 0
    assert "50.0 %" in capsys.readouterr().err


# --------------------------------------------------------------- 6. help
def _subparsers(p: argparse.ArgumentParser, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append((f"{prefix}{name}", sub))
                out += _subparsers(sub, f"{prefix}{name} ")
    return out


def test_every_subcommand_help_has_a_description_and_an_example():
    subs = _subparsers(build_parser())
    assert {"run", "fetch", "stop", "config check", "trust list", "demo"} <= {n for n, _ in subs}
    for name, sub in subs:
        text = sub.format_help()
        assert sub.description, name
        assert "example:" in text and "shoal " in text.split("example:")[1], name
        assert "--json" in text, name  # the global options are listed on every subcommand


def test_readme_command_table_lists_stop_and_config_check():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for cmd in ("`shoal stop", "`shoal config check", "`shoal config defaults"):
        assert cmd in readme
    assert '{"error": {"kind"' in readme  # the JSON error schema is documented


def test_an_unexpected_failure_is_still_one_json_object(agent, monkeypatch, capsys):
    async def broken(args: Any, sock: Path) -> int:
        raise RuntimeError("boom")

    monkeypatch.setitem(cli.HANDLERS, "status", broken)
    assert cli.main(["status", "--json"]) == cli.EXIT_ERROR
    e = json.loads(capsys.readouterr().out)["error"]
    assert e["kind"] == "internal" and e["message"] == "internal error: RuntimeError: boom"
    assert "--log-level debug" in e["hint"]
    assert cli.main(["status", "--log-level", "debug"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("shoal: error: ")


def test_a_start_up_failure_inside_a_task_group_is_one_line(monkeypatch, capsys):
    def run_agent(cfg: Any, level: str, local: bool = False) -> int:
        raise ExceptionGroup("unhandled errors in a TaskGroup", [
            OSError("cannot listen on 127.0.0.1:7420: address already in use; choose another "
                    "port with --port (0 = any free port)")])

    monkeypatch.setattr(cli, "_run_agent", run_agent)
    assert cli.main(["run"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert err == ("shoal: error: cannot listen on 127.0.0.1:7420: address already in use; "
                   "choose another port with --port (0 = any free port)\n")


def test_malformed_offers_from_peers_are_counted_not_shown(agent, capsys):
    bad = [_res(1, holder="evil") | {"version": "9; rm"}, {"holder": "evil"}, "junk",
           _res(1, holder="evil") | {"size": -1}, _res(1, holder="evil") | {"version": True}]
    agent(resources=ok({"local": [], "remote": [*bad, _res(2, holder="beta")]}))
    assert cli.main(["resources"]) == 0
    out = capsys.readouterr().out
    assert "evil" not in out and "beta" in out and "5 malformed offer(s)" in out


def test_pending_pairings_are_a_table_saying_what_is_missing():
    from agent.control.listings import pending_table

    base = {"code_display": "342 824", "peer_name": "beta\x1b[2J", "incoming": True,
            "local_confirmed": False, "remote_confirmed": False}
    text = pending_table([base, base | {"incoming": False, "remote_confirmed": True},
                          base | {"local_confirmed": True}])
    lines = text.splitlines()
    assert lines[0].split() == ["CODE", "DEVICE", "DIRECTION", "STATE"]
    assert "confirm on both devices" in lines[1] and "incoming" in lines[1]
    assert "confirm here" in lines[2] and "outgoing" in lines[2]
    assert "waiting for the other device" in lines[3]
    assert "\x1b" not in text and "shoal pair --code" in lines[-1]
    assert pending_table([]) == "no pairing in progress"


def test_unwatch_by_path_then_by_name(agent, capsys, monkeypatch):
    """A name that is not a path here is tried as a resource name after the path."""
    a = agent()

    async def call(path, cmd, args=None):
        a.calls.append((path, cmd, args or {}))
        if args and args["target"].startswith("/"):
            yield fail("nothing watched matches", "not_found")[0]
        else:
            yield ok([{"path": "/srv/site", "name": "site"}])[0]

    monkeypatch.setattr(cli, "call", call)
    monkeypatch.setattr("agent.control.client.call", call)
    assert cli.main(["unwatch", "site"]) == 0
    assert "stopped watching /srv/site (site)" in capsys.readouterr().out
    assert [c[2]["target"] for c in a.calls][-1] == "site"
