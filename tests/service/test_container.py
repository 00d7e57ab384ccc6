"""The service under a real systemd: boot this machine's own /usr in a systemd-nspawn
container (../shared/docs/TESTBED.md §2, with a private network so nothing leaves it, and
only basic.target so the host's own enabled services do not start there),
install Shoal there with `shoal service install`, and check what systemd sees: READY,
`shoal status` through the service's socket with no flags, a restart after SIGKILL, a
watchdog restart of a frozen (SIGSTOPped) agent, a clean stop.

The steps run inside the container (container/driver.sh, as a oneshot unit) and write
their results to a bound folder; this test boots the container, waits for it to power
off, and asserts on those results. Needs root and systemd-nspawn (`apt install
systemd-container`); skips with the reason otherwise. About 1-2 minutes.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent / "container"
BOOT_TIMEOUT = 420  # seconds for boot + every step + power-off on a busy 2-core machine

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(BOOT_TIMEOUT + 60),
    pytest.mark.skipif(os.geteuid() != 0, reason="booting a container needs root"),
    pytest.mark.skipif(shutil.which("systemd-nspawn") is None,
                       reason="systemd-nspawn is missing: apt install systemd-container"),
    pytest.mark.skipif(not Path("/usr/lib/systemd/systemd").exists() and
                       not Path("/lib/systemd/systemd").exists(),
                       reason="no systemd binary in /usr to boot in the container"),
]


def _binds() -> list[str]:
    """What the container needs besides /usr: this checkout, its virtualenv and the
    interpreter's own prefix (a pyenv or /opt build), all read-only at their own paths."""
    paths = {REPO, Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    keep = sorted(p for p in paths if not p.is_relative_to("/usr"))
    # a path inside another bound path needs no bind of its own
    keep = [p for p in keep if not any(p != q and p.is_relative_to(q) for q in keep)]
    return [f"--bind-ro={p}" for p in keep]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("container")
    shutil.copy(HERE / "driver.sh", out / "driver.sh")
    python = str(Path(sys.executable))
    (out / "shoaltest.service").write_text(
        (HERE / "shoaltest.service").read_text().replace("@PYTHON@", python)
        .replace("@REPO@", str(REPO)))
    name = f"shoaltest-{secrets.token_hex(3)}"
    argv = ["systemd-nspawn", "--keep-unit", "--register=no", "--quiet", "-D", "/",
            "--volatile=yes", "-M", name, "--private-network", *_binds(),
            f"--bind={out}:/results",
            f"--bind-ro={out / 'shoaltest.service'}:/etc/systemd/system/shoaltest.service",
            "-b", "--", "systemd.firstboot=off", "systemd.unit=basic.target",
            "systemd.wants=shoaltest.service"]
    with open(out / "console.log", "wb") as console:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console,
                                stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=BOOT_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()  # the container's PID 1 dies with nspawn
            proc.wait()
    if not (out / "done").exists():
        log = (out / "driver.log").read_text() if (out / "driver.log").exists() else ""
        console_text = (out / "console.log").read_text(errors="replace")
        if not log and ("Failed" in console_text or proc.returncode):
            pytest.skip(f"the container did not boot here (nspawn exit {proc.returncode}): "
                        f"{console_text[-400:]}")
        pytest.fail(f"the driver did not finish; its log ends:\n{log[-3000:]}")
    return out


def _props(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_install_starts_the_service_and_readiness_means_serving(results):
    assert (results / "install.rc").read_text().strip() == "0", \
        (results / "driver.log").read_text()[-3000:]
    done = json.loads((results / "install.json").read_text())
    assert done["started"] and "systemctl enable --now shoal.service" in done["commands"]
    after = _props(results / "after-install.txt")
    # `systemctl enable --now` of a Type=notify unit returns once READY=1 arrived
    assert after["ActiveState"] == "active" and after["SubState"] == "running", after
    assert after["StatusText"].startswith("serving: 0 peers connected"), after


def test_shoal_status_reaches_the_service_without_flags(results):
    assert (results / "status.rc").read_text().strip() == "0"
    status = json.loads((results / "status.json").read_text())
    assert status["data_dir"] == "/var/lib/shoal"
    # another user gets one line saying why and what to do
    assert (results / "status-other.rc").read_text().strip() == "1"
    other = (results / "status-other.out").read_text()
    assert other.startswith("shoal: error: permission denied on /run/shoal/control.sock")
    assert "sudo shoal status" in other
    svc = json.loads((results / "service-status.json").read_text())
    assert svc["active"] == "active" and svc["enabled"] == "enabled"


def test_sigkill_is_restarted(results):
    first, now, restarts, state = (results / "after-kill.txt").read_text().split()
    assert now != first and now != "0" and state == "active"
    assert int(restarts) >= 1


def test_frozen_loop_is_restarted_by_the_watchdog(results):
    before, now, restarts, state = (results / "after-stop.txt").read_text().split()
    assert now != before and state == "active" and int(restarts) >= 2
    journal = (results / "journal.txt").read_text()
    assert "Watchdog timeout" in journal, journal[-2000:]
    assert json.loads((results / "status-after-watchdog.json").read_text())["name"]


def test_clean_stop(results):
    rc, state, result, _status = (results / "after-stop-clean.txt").read_text().split()
    assert (rc, state, result) == ("0", "inactive", "success")
    journal = (results / "journal.txt").read_text()
    assert "agent stopped" in journal


def test_journal_priorities_and_doctor_inside(results):
    # the agent's own lines reach the journal with their levels (no "<6>" left in text)
    journal = (results / "journal.txt").read_text()
    assert "agent ready" in journal and "<6>" not in journal
    doctor = json.loads((results / "doctor.json").read_text())
    service = [f for f in doctor["findings"] if f["check"] == "service"]
    assert service and service[0]["status"] in ("ok", "warn")
    assert doctor["config"].startswith("/etc/shoal/shoal.toml")


def test_reinstall_from_a_pip_install_keeps_the_data_and_purge_removes_it(results):
    """`uninstall` kept /var/lib/shoal: the service installed again from /opt/shoal (a
    pip-style install, no PYTHONPATH) has the same identity; `--purge` removes it all."""
    assert json.loads((results / "uninstall.json").read_text())["kept"]
    assert (results / "install-pip.rc").read_text().strip() == "0", \
        (results / "driver.log").read_text()[-3000:]
    unit = (results / "unit-pip.txt").read_text()
    assert unit.startswith("ExecStart=/opt/shoal/bin/python -m agent ") and \
        "PYTHONPATH" not in unit, unit
    before = json.loads((results / "status.json").read_text())
    after = json.loads((results / "status-pip.json").read_text())
    assert after["display_id"] == before["display_id"]
    assert (results / "after-purge.txt").read_text().split() == ["end"]
