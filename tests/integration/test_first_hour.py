"""A newcomer's first hour, as real `shoal` processes: a second agent on one machine, local
mode, and start-up failures that are one line with a next step, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from agent.daemon import lock_data_dir

from .agents import PY, Agent, current_mesh, wait_until


def _run(data_dir: Path, *args: str, config: Path | None = None
         ) -> subprocess.CompletedProcess[str]:
    cmd = [PY, "-m", "agent", *(["--config", str(config)] if config else []),
           "--data-dir", str(data_dir), "run", "--mesh", current_mesh(), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def _one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    """The agent's error: rc 1, its last stderr line is `shoal: error: ...`, no traceback."""
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr and "ExceptionGroup" not in res.stderr, res.stderr
    last = res.stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith("shoal: error: "), res.stderr
    return last.removeprefix("shoal: error: ")


def test_port_in_use_is_one_line_naming_the_port(tmp_path):
    with socket.socket() as held:  # what a first agent on the default port looks like
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        res = _run(tmp_path / "second", "--listen", "127.0.0.1", "--port", str(port))
    assert _one_line_error(res) == (f"port {port} is already in use (another agent?): use "
                                    "--port 0 for any free port, or --local")


def test_busy_data_dir_is_one_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    fd = lock_data_dir(data)  # a first agent holds the data dir
    try:
        res = _run(data, "--local")
    finally:
        os.close(fd)
    msg = _one_line_error(res)
    assert "already running with data dir" in msg and "--data-dir DIR" in msg


def test_bad_listen_address_fails_before_start_up(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[lan]\nlisten = "not-an-ip"\n')
    msg = _one_line_error(_run(tmp_path / "d", config=cfg))
    assert "'lan.listen'" in msg and "IPv4 or IPv6 address" in msg
    # an address that is valid but not this machine's: refused by the OS at start-up
    msg = _one_line_error(_run(tmp_path / "d", "--listen", "203.0.113.254", "--port", "0"))
    assert msg.startswith("cannot listen on 203.0.113.254: not an address of this machine")


def _listeners(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on *port* (from /proc/net/tcp{,6})."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with open(table) as f:
            next(f)
            for line in f:
                local, _remote, state = line.split()[1:4]
                addr, hexport = local.split(":")
                if state == "0A" and int(hexport, 16) == port:
                    raw = bytes.fromhex(addr)
                    # the kernel prints each 32-bit word in host (little-endian) order
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                    fam = socket.AF_INET if width == 8 else socket.AF_INET6
                    found.add(socket.inet_ntop(fam, words))
    return found


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc/net/tcp")
def test_local_mode_binds_only_loopback_and_finds_local_agents(tmp_path):
    a = Agent("alpha", tmp_path / "alpha")
    b = Agent("bravo", tmp_path / "bravo")
    try:
        for x in (a, b):  # only --local: no config file, no --listen, no --port
            x.data_dir.mkdir(parents=True)
            x.proc = subprocess.Popen(
                [PY, "-m", "agent", "--data-dir", str(x.data_dir), "run", "--local",
                 "--name", x.name, "--mesh", x.mesh],
                stdout=open(x.log_path, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
                start_new_session=True)
        for x in (a, b):
            x.port = wait_until(lambda x=x: x.cli("--json", "status", check=False).returncode
                                == 0 and x.json("status")["lan_port"], 20, f"{x.name} ready")
            assert x.port != 47474  # port 0: any free port, so two fit on one machine
            assert _listeners(x.port) == {"127.0.0.1"}
            # it says how to reach it, with its real port
            wait_until(lambda x=x: f"127.0.0.1:{x.port}" in x.log(), 10, "the local banner")
            assert f"pair 127.0.0.1:{x.port}" in x.log()
            assert f"shoal --data-dir {x.data_dir} status" in x.log()
            assert "advertising" in x.log() and " on lo=127.0.0.1" in x.log()
        # discovery stays on this machine and still finds the other local agent
        wait_until(lambda: any(p["name"] == "bravo" and p["reachable"]
                               for p in a.json("peers")), 20, "alpha sees bravo")
    finally:
        for x in (a, b):
            x.stop(timeout=5)


def test_pairing_with_yourself_is_one_line_and_lists_no_self(agents):
    a = agents("alpha")
    a.cli("pair", "--open")
    res = a.cli("pair", a.address, "--no-wait", check=False)
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith(f"shoal: error: cannot pair with {a.address}: that is this "
                                 "agent")
    assert a.json("peers") == [] and a.json("pair", "--pending") == []
