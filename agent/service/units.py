"""The service's files as text, rendered for where Shoal is installed: no I/O but reading
the package's own templates, so tests check exactly what `install` writes."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from importlib import resources
from pathlib import PurePosixPath

UNIT_NAME = "shoal.service"
SERVICE_CONFIG = PurePosixPath("/etc/shoal/shoal.toml")
SERVICE_DATA = PurePosixPath("/var/lib/shoal")
TEMPLATE_EXEC = "/usr/local/bin/shoal"


def template(name: str) -> str:
    """One of agent/service/files/* (shoal.service, shoal.sysusers.conf, ...)."""
    return (resources.files("agent.service") / "files" / name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Launcher:
    """How systemd starts Shoal: the interpreter Shoal is installed in, ``-m agent``, and
    the source tree on PYTHONPATH when it is a clone the interpreter cannot import alone."""

    python: str
    pythonpath: str | None = None

    def argv(self) -> list[str]:
        return [self.python, "-m", "agent"]


def _quote(arg: str) -> str:
    """A systemd command-line word: specifiers (%) doubled, spaces quoted."""
    arg = arg.replace("%", "%%")
    return shlex.quote(arg) if any(c.isspace() or c in "\"'\\" for c in arg) else arg


def render_unit(launcher: Launcher) -> str:
    """shoal.service with ExecStart= for *launcher* (and its PYTHONPATH when needed)."""
    out = []
    for line in template("shoal.service").splitlines():
        if line.startswith("ExecStart="):
            rest = line.removeprefix(f"ExecStart={TEMPLATE_EXEC}")
            line = "ExecStart=" + " ".join(_quote(a) for a in launcher.argv()) + rest
            out.append(line)
            if launcher.pythonpath:
                out.append(f"Environment={_quote('PYTHONPATH=' + launcher.pythonpath)}")
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def default_config(defaults: str) -> str:
    """/etc/shoal/shoal.toml as first installed: every default, with the keys the unit
    sets on its command line (data_dir) commented out, so editing them here is not silently
    overridden."""
    head = ("# Shoal service configuration (written by `shoal service install`; edits are "
            "kept:\n# the installer never overwrites this file). The unit passes --data-dir "
            f"{SERVICE_DATA}.\n# After a change: systemctl restart shoal\n")
    lines = []
    for line in defaults.splitlines():
        if line.startswith(("data_dir =", "control_socket =")):
            line = f"# {line.split(' =')[0]}: set by the unit"
        lines.append(line)
    return head + "\n".join(lines) + "\n"
