import asyncio
import logging
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.control import ControlError, call_simple
from agent.control.server import ControlServer
from agent.log import KeyValueFormatter, kv, under_systemd

REPO = Path(__file__).resolve().parents[2]


def _record(msg: str, **fields) -> logging.LogRecord:
    rec = logging.LogRecord("shoal.test", logging.INFO, __file__, 1, msg, None, None)
    for k, v in kv(**fields).items():
        setattr(rec, k, v)
    return rec


def test_key_value_lines_without_timestamps_under_systemd():
    line = KeyValueFormatter(timestamps=False).format(
        _record("peer connected", peer="kitchen pi", port=47474, note='a "quote"'))
    assert line == ('INFO shoal.test: peer connected peer="kitchen pi" port=47474 '
                    'note="a \\"quote\\""')
    with_ts = KeyValueFormatter(timestamps=True).format(_record("x"))
    assert with_ts[:4].isdigit() and "\n" not in with_ts


def test_systemd_detection(monkeypatch):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    assert not under_systemd()
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    assert under_systemd()


async def test_control_socket_is_owner_only_and_answers(tmp_path):
    async def echo(args, reply):
        return {"echo": args["x"]}

    server = ControlServer(tmp_path / "c.sock", {"echo": echo})
    await server.start()
    try:
        mode = stat.S_IMODE(os.stat(tmp_path / "c.sock").st_mode)
        assert mode & 0o077 == 0
        assert await call_simple(tmp_path / "c.sock", "echo", {"x": 5}) == {"echo": 5}
        with pytest.raises(ControlError, match="unknown command"):
            await call_simple(tmp_path / "c.sock", "nope")
        with pytest.raises(ControlError, match="already running"):
            await ControlServer(tmp_path / "c.sock", {}).start()
    finally:
        await server.close()
    with pytest.raises(ControlError, match="no agent is running"):
        await call_simple(tmp_path / "c.sock", "echo", {"x": 1})


async def test_garbage_on_the_control_socket_gets_a_clear_error(tmp_path):
    server = ControlServer(tmp_path / "c.sock", {})
    await server.start()
    try:
        r, w = await asyncio.open_unix_connection(str(tmp_path / "c.sock"))
        w.write(b"not json\n")
        await w.drain()
        line = await r.readline()
        assert b"bad control request" in line
        w.close()
    finally:
        await server.close()


def test_cli_errors_are_one_line_and_nonzero(tmp_path):
    env = {**os.environ, "SHOAL_DATA_DIR": str(tmp_path)}
    res = subprocess.run([sys.executable, "-m", "agent", "status"], capture_output=True,
                         text=True, env=env, timeout=30)
    assert res.returncode == 1
    assert res.stderr.startswith("shoal: error: no agent is running")
    assert res.stderr.count("\n") == 1
    bad = tmp_path / "bad.toml"
    bad.write_text('[store]\navg_chunk_size = "huge"\n')
    res = subprocess.run([sys.executable, "-m", "agent", "--config", str(bad), "config",
                          "check"], capture_output=True, text=True, env=env, timeout=30)
    assert res.returncode == 1 and "store.avg_chunk_size" in res.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_log_lines_never_carry_raw_control_characters() -> None:
    """A peer-chosen name with ESC/CR/NEL must not reach an operator's terminal raw."""
    import logging as _logging

    from agent.log import KeyValueFormatter, kv

    rec = _logging.LogRecord("shoal.t", _logging.WARNING, __file__, 1,
                             "peer \x1b[2J said %s", ("hi\rthere",), None)
    rec.__dict__.update(kv(name="evil\x1b]0;pwned\x07\u0085", ok="plain"))
    line = KeyValueFormatter(timestamps=False).format(rec)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in line), repr(line)
    assert "\\x1b[2J" in line and "hi\\rthere" in line
    assert 'name="evil\\x1b]0;pwned\\x07\\x85"' in line and "ok=plain" in line


def test_journal_lines_carry_syslog_priorities():
    from agent.log import priority

    fmt = KeyValueFormatter(timestamps=False, journal=True)
    for level, prefix in ((logging.DEBUG, "<7>"), (logging.INFO, "<6>"),
                          (logging.WARNING, "<4>"), (logging.ERROR, "<3>"),
                          (logging.CRITICAL, "<2>")):
        rec = logging.LogRecord("shoal.t", level, __file__, 1, "m", None, None)
        assert fmt.format(rec).startswith(prefix + logging.getLevelName(level))
    assert priority(25) == 6 and priority(5) == 7  # custom levels round down
    assert not KeyValueFormatter(timestamps=False).format(_record("x")).startswith("<")


def test_priority_prefix_only_when_stderr_is_the_journal_stream(monkeypatch, tmp_path):
    from agent.log import stderr_is_journal

    with open(tmp_path / "err", "w") as f:
        st = os.fstat(f.fileno())
        monkeypatch.setattr(sys, "stderr", f)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert stderr_is_journal()
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        assert not stderr_is_journal()  # stderr redirected elsewhere: no prefixes
        monkeypatch.setenv("JOURNAL_STREAM", "garbage")
        assert not stderr_is_journal()
