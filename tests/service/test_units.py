"""The unit files as systemd reads them: `systemd-analyze verify` on every unit, the
sandbox's exposure score, and well-formed sysusers/tmpfiles/D-Bus companions."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from agent.service.units import Launcher, default_config, render_unit, template

FILES = Path(__file__).resolve().parents[2] / "agent/service/files"
MAX_EXPOSURE = 2.0
analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                             reason="systemd-analyze is not installed (apt install systemd)")


def _rendered(tmp_path: Path, launcher: Launcher) -> Path:
    unit = tmp_path / "shoal.service"
    unit.write_text(render_unit(launcher))
    return unit


def test_every_unit_file_is_rendered_and_listed():
    units = sorted(p.name for p in FILES.glob("*.service"))
    assert units == ["shoal.service"]  # a new unit must be added to the tests below


@analyze
@pytest.mark.parametrize("pythonpath", [None, "/opt/shoal src"])
def test_systemd_analyze_verify(tmp_path, pythonpath):
    unit = _rendered(tmp_path, Launcher(sys.executable, pythonpath))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    problems = [line for line in r.stderr.splitlines() if "shoal.service" in line]
    assert not problems, problems


@analyze
def test_exposure_is_at_most_2(tmp_path):
    unit = _rendered(tmp_path, Launcher(sys.executable))
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for shoal\.service: (\d+\.\d+)", r.stdout)
    if m is None and "offline" in r.stderr:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE


def test_smallest_capability_set_and_notify_protocol():
    text = template("shoal.service")
    settings = dict(line.split("=", 1) for line in text.splitlines()
                    if "=" in line and not line.startswith("#"))
    assert settings["CapabilityBoundingSet"] == "" and settings["AmbientCapabilities"] == ""
    assert settings["Type"] == "notify" and settings["NotifyAccess"] == "main"
    assert settings["Restart"] == "on-failure" and int(settings["WatchdogSec"]) > 0
    assert settings["User"] == "shoal"


def test_exec_start_quotes_paths_and_escapes_specifiers():
    unit = render_unit(Launcher("/opt/my env/bin/python3", "/src/100%"))
    assert "ExecStart='/opt/my env/bin/python3' -m agent --config /etc/shoal/shoal.toml " \
        "--data-dir /var/lib/shoal run" in unit
    assert "Environment=PYTHONPATH=/src/100%%" in unit


def test_sysusers_puts_the_user_in_the_bluez_and_wpa_groups():
    lines = [line.split() for line in template("shoal.sysusers.conf").splitlines()
             if line and not line.startswith("#")]
    assert lines[0][:2] == ["u", "shoal"]
    assert ["m", "shoal", "bluetooth"] in lines and ["m", "shoal", "netdev"] in lines


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="no systemd-sysusers")
def test_sysusers_and_tmpfiles_apply_offline(tmp_path):
    (tmp_path / "etc/sysusers.d").mkdir(parents=True)
    (tmp_path / "etc/tmpfiles.d").mkdir(parents=True)
    (tmp_path / "etc/sysusers.d/shoal.conf").write_text(template("shoal.sysusers.conf"))
    (tmp_path / "etc/tmpfiles.d/shoal.conf").write_text(template("shoal.tmpfiles.conf"))
    subprocess.run(["systemd-sysusers", f"--root={tmp_path}"], check=True, timeout=60,
                   capture_output=True)
    subprocess.run(["systemd-tmpfiles", f"--root={tmp_path}", "--create"], check=True,
                   timeout=60, capture_output=True)
    passwd = (tmp_path / "etc/passwd").read_text()
    assert re.search(r"^shoal:x:\d+:\d+:Shoal mesh agent:/var/lib/shoal:", passwd, re.M)
    assert (tmp_path / "var/lib/shoal").stat().st_mode & 0o777 == 0o700


def test_dbus_policy_is_well_formed_and_scoped_to_the_user():
    root = ET.fromstring(template("shoal.dbus.conf").encode())
    policies = root.findall("policy")
    assert [p.attrib for p in policies] == [{"user": "shoal"}]
    assert {"send_destination": "org.bluez"} in [a.attrib for a in policies[0]]


def test_default_config_comments_out_what_the_unit_sets():
    from agent.config import config_from_dict, render_defaults

    text = default_config(render_defaults())
    assert "\ndata_dir =" not in text and "# data_dir: set by the unit" in text
    import tomllib

    config_from_dict(tomllib.loads(text))  # still a valid configuration
