"""Setting up is quiet: pyproject metadata in the current form (no setuptools deprecation
box on every install), and scripts/bootstrap.sh prints a line, or everything on failure."""

from __future__ import annotations

import glob
import os
import shutil
import stat
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_license_metadata_is_an_spdx_expression_with_its_file():
    """A TOML table for `project.license` is deprecated (setuptools prints a 13-line box on
    every install and refuses it from 2027-02-18): PEP 639's SPDX string and
    `license-files`, which need setuptools >= 77 in the build environment."""
    doc = _pyproject()
    project = doc["project"]
    assert isinstance(project, dict)
    assert project["license"] == "Apache-2.0"
    files = project["license-files"]
    assert files and all(glob.glob(str(ROOT / pattern)) for pattern in files)
    assert not any(str(c).startswith("License ::") for c in project.get("classifiers", []))
    build = doc["build-system"]
    assert isinstance(build, dict)
    (setuptools,) = [Requirement(r) for r in build["requires"]
                     if Requirement(r).name == "setuptools"]
    assert not setuptools.specifier.contains("76.9") and setuptools.specifier.contains("77")


@pytest.mark.slow
def test_building_the_package_prints_no_deprecation(tmp_path):
    """What bootstrap's `pip install -e` runs: an isolated build (~15 s: a fresh build
    environment). Built from a copy so two suites at once never share a build dir."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    for pkg in ("agent", "radio"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
         "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout + res.stderr
    assert "deprecated" not in out.lower() and "BuildBackendWarning" not in out, out
    (wheel,) = (tmp_path / "dist").glob("shoal-*.whl")
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA")))
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in z.namelist())
    assert b"License-Expression: Apache-2.0" in meta


NOISE = 100


def _fake_checkout(tmp_path: Path, fail_on: str) -> Path:
    """A copy of the bootstrap script beside a .venv whose python prints NOISE lines for
    every pip step (as pip does) and fails on the step whose arguments contain *fail_on*."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "bootstrap.sh", root / "scripts" / "bootstrap.sh")
    (root / "pyproject.toml").write_text("")
    py = root / ".venv" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text(
        "#!/bin/sh\n"
        f"for i in $(seq {NOISE}); do echo \"noise $i: $*\"; echo \"warning $i\" >&2; done\n"
        f"case \"$*\" in *'{fail_on}'*) echo 'ERROR: the real problem' >&2; exit 1;; esac\n")
    py.chmod(py.stat().st_mode | stat.S_IXUSR)
    return root


def _bootstrap(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(root / "scripts" / "bootstrap.sh"), "test"],
                          capture_output=True, text=True, timeout=60, env=env)


def test_bootstrap_prints_one_line_when_it_installs_and_none_when_up_to_date(tmp_path):
    root = _fake_checkout(tmp_path, fail_on="never")
    first = _bootstrap(root)
    assert first.returncode == 0, first.stderr
    lines = (first.stdout + first.stderr).splitlines()
    assert len(lines) == 1 and lines[0].startswith("bootstrap: installing shoal"), lines
    assert (root / ".venv" / ".shoal-installed-test").exists()
    again = _bootstrap(root)
    assert again.returncode == 0 and again.stdout == again.stderr == ""


def test_bootstrap_shows_everything_when_a_step_fails(tmp_path):
    root = _fake_checkout(tmp_path, fail_on="-e")
    res = _bootstrap(root)
    assert res.returncode != 0
    assert "ERROR: the real problem" in res.stderr
    assert res.stderr.count("noise ") == 2 * NOISE  # both steps' output, in full
    assert res.stderr.rstrip().endswith("-e .[test]")
    assert not (root / ".venv" / ".shoal-installed-test").exists()


def test_run_agent_passes_arguments_through(tmp_path):
    """`run-agent.sh --config X --local` used to fail (`--config` after `run`): every
    argument goes to `shoal run` as given (global options are accepted after the subcommand;
    tests/integration/test_cli_walkthrough.py runs the real command)."""
    root = _fake_checkout(tmp_path, fail_on="never")
    shutil.copy2(ROOT / "scripts" / "run-agent.sh", root / "scripts" / "run-agent.sh")
    (root / ".venv" / ".shoal-installed-run").touch()  # set up already: bootstrap is silent
    shoal = root / ".venv" / "bin" / "shoal"
    shoal.write_text('#!/bin/sh\nprintf "%s|" "$@"\n')
    shoal.chmod(shoal.stat().st_mode | stat.S_IXUSR)
    res = subprocess.run(
        ["bash", str(root / "scripts" / "run-agent.sh"), "--local", "--config", "my file.toml",
         "--name", "a b", "--data-dir=/tmp/d", "--log-level", "debug", "--port", "0"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHON": sys.executable})
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("|")[:-1] == [
        "run", "--local", "--config", "my file.toml", "--name", "a b", "--data-dir=/tmp/d",
        "--log-level", "debug", "--port", "0"]
    assert res.stderr == ""
