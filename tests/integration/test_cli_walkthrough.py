"""The `shoal` command against real agents on loopback, as a new user types it: options after
the subcommand, errors as one line or one JSON object, a closed pipe, `run-agent.sh` with
arguments, and `stop --data-dir`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from .agents import LOOPBACK_ONLY, PY, current_mesh, wait_until

ROOT = Path(__file__).resolve().parents[2]


def shoal(*argv: str, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "agent", *argv], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, timeout=60, check=False)


def test_a_new_users_commands_against_two_agents(agents, tmp_path):
    a, b = agents("alpha"), agents("beta")
    d = str(a.data_dir)
    wait_until(lambda: a.json("peers"), 20, "alpha to see beta")
    # global options after the subcommand
    status = json.loads(shoal("status", "--json", "--data-dir", d).stdout)
    assert status["name"] == "alpha"
    peers = shoal("peers", "--data-dir", d).stdout.splitlines()
    assert peers[0].split()[:2] == ["NAME", "ID"] and "LAST SEEN" in peers[0]
    assert any(line.startswith("beta ") for line in peers[1:])
    # a fetch nobody can serve: one line, counted, whatever the number of peers
    res = shoal("fetch", "no-such-thing", "--data-dir", d, "--json")
    assert res.returncode == 1 and res.stderr == ""
    err = json.loads(res.stdout)["error"]
    assert err["kind"] == "not_found"
    assert err["message"].startswith("no holder could serve 'no-such-thing': 1 peer tried "
                                     "(1 not holding it); it answered: ")
    # an unknown resource in the authority map is an error
    res = shoal("--data-dir", d, "authority", "nope")
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "'nope'" in res.stderr
    # a pairing wait that times out: one sentence, never a bare exception name
    res = shoal("--data-dir", d, "pair", "--timeout", "1")
    last = res.stderr.splitlines()[-1]
    assert res.returncode == 1 and last.startswith("shoal: error: ")
    assert "TimeoutError" not in res.stderr
    # output into a closed pipe (`shoal status | head -0`): quiet, 141
    r, w = os.pipe()
    os.close(r)
    try:
        res = subprocess.run([PY, "-m", "agent", "status", "--data-dir", d], stdout=w,
                             stderr=subprocess.PIPE, timeout=60, check=False)
    finally:
        os.close(w)
    assert (res.returncode, res.stderr) == (141, b"")
    # stop, with --data-dir after the subcommand, stops that agent (not another)
    assert shoal("stop", "--data-dir", str(b.data_dir)).returncode == 0
    assert b.proc is not None and b.proc.wait(timeout=20) == 0
    assert shoal("status", "--data-dir", d).returncode == 0


def test_run_agent_script_passes_its_arguments_to_shoal_run(tmp_path):
    """`bash scripts/run-agent.sh --config X ...` starts `shoal run --config X ...`. The
    script runs from a copy whose bootstrap is a no-op (no pip here) and whose .venv/bin/shoal
    is this interpreter's `python -m agent`: the script and the real CLI, nothing else."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "run-agent.sh", repo / "scripts")
    (repo / "scripts" / "bootstrap.sh").write_text("#!/usr/bin/env bash\nexit 0\n")
    venv_bin = repo / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "shoal").write_text(f'#!/bin/sh\nexec "{PY}" -m agent "$@"\n')
    (venv_bin / "shoal").chmod(0o755)
    cfg = tmp_path / "x.toml"
    cfg.write_text(LOOPBACK_ONLY + '[node]\nname = "from-config-file"\n')
    data = tmp_path / "data"
    log = (tmp_path / "agent.log").open("wb")
    proc = subprocess.Popen(
        ["bash", str(repo / "scripts" / "run-agent.sh"), "--config", str(cfg), "--data-dir",
         str(data), "--port", "0", "--listen", "127.0.0.1", "--mesh", current_mesh()],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        def status() -> dict[str, object] | None:
            assert proc.poll() is None, (tmp_path / "agent.log").read_text()
            res = shoal("status", "--json", "--data-dir", str(data))
            return json.loads(res.stdout) if res.returncode == 0 else None

        s = wait_until(status, 30, "the agent started by run-agent.sh")
        assert s["name"] == "from-config-file"  # --config reached `shoal run`
        assert shoal("stop", "--data-dir", str(data)).returncode == 0
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()

