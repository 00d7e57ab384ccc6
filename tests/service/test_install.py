"""`shoal service install | uninstall | status` under a --root tree (no systemd running):
files written, an edited config kept, data kept unless --purge, root needed for /."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.service import install as svc
from agent.service.units import Launcher

ROOT = Path(__file__).resolve().parents[2]


def shoal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


def test_install_then_uninstall_keeps_data_and_an_edited_config(tmp_path):
    r = shoal("service", "install", "--root", str(tmp_path), "--no-start", "--json")
    assert r.returncode == 0, r.stderr
    done = json.loads(r.stdout)
    paths = svc.Paths(tmp_path)
    for p in (paths.unit, paths.sysusers, paths.tmpfiles, paths.dbus, paths.config):
        assert p.exists(), p
    assert "-m agent --config /etc/shoal/shoal.toml --data-dir /var/lib/shoal run" in \
        paths.unit.read_text()
    assert done["config_kept"] is False and not done["started"]
    if shutil.which("systemd-sysusers"):  # the user exists in the tree: the service
        gid = svc.group_id(tmp_path, "shoal")  # (group shoal) can read the config it got
        assert gid is not None and paths.config.stat().st_gid == gid
        assert paths.config.stat().st_mode & 0o777 == 0o640
    if shutil.which("systemctl"):
        assert (tmp_path / "etc/systemd/system/multi-user.target.wants/shoal.service"
                ).is_symlink()
    # the user edits the config; a second install keeps it byte for byte
    paths.config.write_text("[node]\nname = \"edited\"\n")
    r = shoal("service", "install", "--root", str(tmp_path), "--no-start", "--json")
    assert json.loads(r.stdout)["config_kept"] is True
    assert paths.config.read_text() == "[node]\nname = \"edited\"\n"
    paths.data.mkdir(parents=True, exist_ok=True)
    (paths.data / "keep.me").write_text("x")
    r = shoal("service", "uninstall", "--root", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    assert not paths.unit.exists() and not paths.dbus.exists()
    assert (paths.data / "keep.me").exists() and paths.config.exists()
    r = shoal("service", "uninstall", "--root", str(tmp_path), "--purge", "--json")
    assert not paths.data.exists() and not paths.config_dir.exists()


def test_status_of_a_tree_without_the_service(tmp_path):
    r = shoal("service", "status", "--root", str(tmp_path))
    assert r.returncode == 3 and "not installed" in r.stdout and "service install" in r.stdout


def test_installing_on_the_real_system_needs_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(svc.NeedsRoot, match=r"sudo .* service install"):
        svc.install(Path("/"), Launcher(sys.executable), "")
    with pytest.raises(svc.NeedsRoot, match=r"sudo .* service uninstall"):
        svc.uninstall(Path("/"))


def test_a_clone_gets_pythonpath_and_an_installed_package_does_not(tmp_path):
    launcher = svc.find_launcher()
    # this suite runs from an editable install (bootstrap.sh): importable from anywhere
    assert launcher.python == sys.executable and launcher.pythonpath is None
    bare = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True,
                   timeout=120)
    clone = svc.find_launcher(str(bare / "bin/python"))
    assert clone.pythonpath == str(svc.source_root())


def test_unreadable_install_location_is_refused_with_a_fix(tmp_path):
    private = tmp_path / "private"
    (private / "bin").mkdir(parents=True)
    os.chmod(private, 0o700)
    found = svc.unreadable_for_others(private / "bin")
    assert found is not None and private.is_relative_to(found)  # (or a 0700 parent of it)
    assert svc.unreadable_for_others(Path("/usr/bin/env")) is None


def test_cli_finds_the_service_socket_when_it_runs_no_agent_of_its_own(tmp_path, monkeypatch):
    import argparse

    import agent.daemon
    from agent.config import Config, NodeConfig
    from agent.control.cli import control_socket

    service_sock = tmp_path / "run/control.sock"
    monkeypatch.setattr(agent.daemon, "SERVICE_CONTROL_SOCKET", service_sock)
    monkeypatch.delenv("SHOAL_CONTROL_SOCKET", raising=False)
    monkeypatch.delenv("SHOAL_DATA_DIR", raising=False)
    cfg = Config(node=NodeConfig(data_dir=tmp_path / "user"))
    plain = argparse.Namespace(config=None, data_dir=None)
    assert control_socket(plain, cfg) == tmp_path / "user/control.sock"  # no service
    service_sock.parent.mkdir()
    service_sock.touch()
    assert control_socket(plain, cfg) == service_sock
    (tmp_path / "user").mkdir()
    (tmp_path / "user/control.sock").touch()  # the user's own agent wins
    assert control_socket(plain, cfg) == tmp_path / "user/control.sock"
    explicit = argparse.Namespace(config=None, data_dir=tmp_path / "other")
    assert control_socket(explicit, cfg) == tmp_path / "user/control.sock"


def test_a_user_who_may_not_see_the_service_socket_is_told_to_use_sudo(tmp_path,
                                                                      monkeypatch):
    import argparse

    import agent.daemon
    from agent.config import Config, NodeConfig
    from agent.control.cli import CliError, control_socket

    class Hidden(type(tmp_path)):  # what Path.exists() does under a 0750 directory
        def exists(self, *a, **k):
            raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(agent.daemon, "SERVICE_CONTROL_SOCKET", Hidden("/run/shoal/x.sock"))
    monkeypatch.delenv("SHOAL_CONTROL_SOCKET", raising=False)
    monkeypatch.delenv("SHOAL_DATA_DIR", raising=False)
    cfg = Config(node=NodeConfig(data_dir=tmp_path / "user"))
    with pytest.raises(CliError, match=r"run it as root: sudo shoal status"):
        control_socket(argparse.Namespace(config=None, data_dir=None, command="status"), cfg)


def test_a_hung_systemctl_is_one_line_with_a_next_step(monkeypatch, tmp_path):
    """`systemctl enable --now` waits for READY=1: an agent that never gets ready must end
    in a one-line error pointing at the journal, not a TimeoutExpired traceback."""
    fake = tmp_path / "systemctl"
    fake.write_text("#!/bin/sh\nsleep 5\n")
    fake.chmod(0o755)
    monkeypatch.setattr(svc, "COMMAND_TIMEOUT", 0.2)
    with pytest.raises(svc.ServiceError, match=r"did not finish within 0 s; .*journalctl"):
        svc.run_command([str(fake), "enable", "--now", "shoal.service"])
    with pytest.raises(svc.ServiceError, match="is systemd installed"):
        svc.run_command([str(tmp_path / "absent")])


def test_service_errors_carry_a_service_hint_in_json():
    from agent.control.hints import failure_of

    f = failure_of(svc.NeedsRoot("installing the service needs root: sudo shoal service "
                                 "install"), "service")
    assert (f.kind, f.hint) == ("refused", "run it as root (sudo)")
    f = failure_of(svc.ServiceError("`systemctl enable --now shoal.service` failed: x"),
                   "service")
    assert f.kind == "unavailable" and "shoal service status" in (f.hint or "")
