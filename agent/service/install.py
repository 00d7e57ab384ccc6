"""Install, remove and inspect the systemd service: files under a root directory (``/`` or
a test's ``--root``), then systemd-sysusers, systemd-tmpfiles and systemctl.

What is Shoal's is overwritten (the unit and its companions); what the user owns is not:
an existing /etc/shoal/shoal.toml is kept byte for byte, and `uninstall` keeps the data
and the config unless ``--purge``. Under a ``--root`` other than ``/`` nothing is started:
only ``systemctl --root`` (offline) enables the unit there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import agent
from agent.daemon import SERVICE_CONTROL_SOCKET
from agent.errors import ErrorKind, ShoalError
from agent.service.units import UNIT_NAME, Launcher, default_config, render_unit, template

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]
COMMAND_TIMEOUT = 120.0  # `systemctl enable --now` waits for READY=1 (TimeoutStartSec=60)


class ServiceError(ShoalError):
    """Installing or removing the service failed; the message says what to do next."""

    kind = ErrorKind.UNAVAILABLE


class NeedsRoot(ServiceError):
    kind = ErrorKind.REFUSED


@dataclass(frozen=True)
class Paths:
    """Where each file goes under *root*."""

    root: Path

    def _p(self, rel: str) -> Path:
        return self.root / rel

    @property
    def unit(self) -> Path:
        return self._p(f"etc/systemd/system/{UNIT_NAME}")

    @property
    def sysusers(self) -> Path:
        return self._p("etc/sysusers.d/shoal.conf")

    @property
    def tmpfiles(self) -> Path:
        return self._p("etc/tmpfiles.d/shoal.conf")

    @property
    def dbus(self) -> Path:
        return self._p("etc/dbus-1/system.d/shoal.conf")

    @property
    def config_dir(self) -> Path:
        return self._p("etc/shoal")

    @property
    def config(self) -> Path:
        return self.config_dir / "shoal.toml"

    @property
    def data(self) -> Path:
        return self._p("var/lib/shoal")

    @property
    def live(self) -> bool:
        """The real system: commands run and take effect."""
        return self.root.resolve() == Path("/")


def run_command(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, check=False,
                              timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        hint = ("the agent did not report READY=1: journalctl -u shoal -n 50"
                if "systemctl" in argv[0] else "is the system overloaded?")
        raise ServiceError(f"`{' '.join(argv)}` did not finish within "
                           f"{COMMAND_TIMEOUT:.0f} s; {hint}") from None
    except OSError as e:
        raise ServiceError(f"cannot run {argv[0]}: {e.strerror or e}; is systemd "
                           "installed?") from None


def _checked(run: Runner, argv: Sequence[str], fix: str) -> None:
    r = run(argv)
    if r.returncode != 0:
        last = (r.stderr or r.stdout or "").strip().splitlines()
        raise ServiceError(f"`{' '.join(argv)}` failed: {last[-1] if last else r.returncode}"
                           f"; {fix}")


def source_root() -> Path:
    """The directory holding the ``agent`` package this process runs."""
    return Path(agent.__file__).resolve().parent.parent


def find_launcher(python: str | None = None, run: Runner = run_command) -> Launcher:
    """The interpreter to start (this one), and PYTHONPATH if it cannot import this very
    ``agent`` package from a neutral directory (a clone run with ``python -m agent``)."""
    python = python or sys.executable
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        r = subprocess.run([python, "-c", "import agent; print(agent.__file__)"], cwd="/",
                           env=env, capture_output=True, text=True, timeout=30, check=False)
        found = Path(r.stdout.strip()).resolve() if r.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        found = None
    ours = Path(agent.__file__).resolve()
    return Launcher(python, None if found == ours else str(source_root()))


def unreadable_for_others(path: Path) -> Path | None:
    """The first directory on *path*'s way that other users cannot traverse (or the file
    they cannot read): the service user will not be able to start Shoal from there."""
    p = path.resolve()
    for d in reversed(p.parents):
        if not os.stat(d).st_mode & 0o001:
            return d
    mode = os.stat(p).st_mode
    return None if mode & 0o004 or (p.is_dir() and mode & 0o001) else p


def group_id(root: Path, name: str) -> int | None:
    """*name*'s GID in *root*/etc/group (what systemd-sysusers just wrote there)."""
    try:
        lines = (root / "etc/group").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in lines.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name and fields[2].isdigit():
            return int(fields[2])
    return None


def _write(path: Path, text: str, mode: int) -> bool:
    """Write *text* if it differs; True when the file changed."""
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True


def _config_for_service(paths: Paths, kept: bool) -> None:
    """A config we wrote: readable by the service's group (the shoal user just created),
    never by other users. One the user already had keeps its owner and mode."""
    gid = group_id(paths.root, "shoal")
    if gid is None:
        return
    os.chown(paths.config_dir, 0, gid)
    if not kept:
        os.chown(paths.config, 0, gid)


def install(root: Path, launcher: Launcher, defaults: str, *, start: bool = True,
            run: Runner = run_command) -> dict[str, object]:
    """Write the unit and its companions, create user and directories, enable and start."""
    paths = Paths(root)
    if paths.live and os.geteuid() != 0:
        raise NeedsRoot("installing the service needs root: sudo "
                        f"{shutil.which('shoal') or 'shoal'} service install")
    if paths.live:
        for p in (Path(launcher.python), Path(agent.__file__).parent):
            blocked = unreadable_for_others(p)
            if blocked is not None:
                raise ServiceError(
                    f"the shoal user cannot read {blocked} (it holds {p}); install Shoal "
                    "where every user can read it, e.g. python3 -m venv /opt/shoal && "
                    "/opt/shoal/bin/pip install shoal, then sudo /opt/shoal/bin/shoal "
                    "service install")
    written = [str(p) for p, text, mode in (
        (paths.unit, render_unit(launcher), 0o644),
        (paths.sysusers, template("shoal.sysusers.conf"), 0o644),
        (paths.tmpfiles, template("shoal.tmpfiles.conf"), 0o644),
        (paths.dbus, template("shoal.dbus.conf"), 0o644),
    ) if _write(p, text, mode)]
    kept = paths.config.exists()
    if not kept:
        _write(paths.config, default_config(defaults), 0o640)
        written.append(str(paths.config))
    commands: list[str] = []

    def do(argv: list[str], fix: str) -> None:
        _checked(run, argv, fix)
        commands.append(" ".join(argv))

    if paths.live:
        do(["systemd-sysusers", str(paths.sysusers)], "check /etc/sysusers.d/shoal.conf")
        do(["systemd-tmpfiles", "--create", str(paths.tmpfiles)],
           "check /etc/tmpfiles.d/shoal.conf")
        _config_for_service(paths, kept)
        do(["systemctl", "daemon-reload"], "is systemd running? (systemctl is-system-running)")
        enable = ["systemctl", "enable", *(["--now"] if start else []), UNIT_NAME]
        do(enable, "see why: journalctl -u shoal -n 50")
    else:  # an image or a test tree: the same tools offline, nothing started
        if shutil.which("systemd-sysusers"):
            do(["systemd-sysusers", f"--root={paths.root}"], f"check {paths.sysusers}")
        if shutil.which("systemd-tmpfiles"):
            do(["systemd-tmpfiles", f"--root={paths.root}", "--create"],
               f"check {paths.tmpfiles}")
        _config_for_service(paths, kept)
        if shutil.which("systemctl"):
            do(["systemctl", f"--root={paths.root}", "enable", UNIT_NAME],
               f"check {paths.unit}")
    return {"root": str(paths.root), "unit": str(paths.unit), "written": written,
            "config_kept": kept, "config": str(paths.config), "commands": commands,
            "started": paths.live and start, "python": launcher.python,
            "pythonpath": launcher.pythonpath}


def uninstall(root: Path, *, purge: bool = False, run: Runner = run_command
              ) -> dict[str, object]:
    """Stop, disable and remove the unit files; the data and config only with *purge*."""
    paths = Paths(root)
    if paths.live and os.geteuid() != 0:
        raise NeedsRoot("removing the service needs root: sudo "
                        f"{shutil.which('shoal') or 'shoal'} service uninstall")
    commands: list[str] = []
    if paths.live:
        if paths.unit.exists():
            run(["systemctl", "disable", "--now", UNIT_NAME])  # a stopped unit is fine too
            commands.append(f"systemctl disable --now {UNIT_NAME}")
    elif shutil.which("systemctl") and paths.unit.exists():
        run(["systemctl", f"--root={paths.root}", "disable", UNIT_NAME])
        commands.append(f"systemctl --root={paths.root} disable {UNIT_NAME}")
    removed = []
    for p in (paths.unit, paths.sysusers, paths.tmpfiles, paths.dbus):
        if p.exists():
            p.unlink()
            removed.append(str(p))
    if paths.live:
        _checked(run, ["systemctl", "daemon-reload"], "run it again: systemctl daemon-reload")
        commands.append("systemctl daemon-reload")
    kept = [str(p) for p in (paths.data, paths.config_dir) if p.exists()]
    if purge:
        for p in (paths.data, paths.config_dir):
            if p.exists():
                shutil.rmtree(p)
                removed.append(str(p))
        kept = []
        if paths.live and run(["getent", "passwd", "shoal"]).returncode == 0:
            run(["userdel", "shoal"])
            commands.append("userdel shoal")
    return {"root": str(paths.root), "removed": removed, "kept": kept, "commands": commands}


def status(root: Path, run: Runner = run_command) -> dict[str, object]:
    """The unit's state as systemd sees it (or, under a --root, which files are there)."""
    paths = Paths(root)
    files = {name: p.exists() for name, p in (
        ("unit", paths.unit), ("sysusers", paths.sysusers), ("tmpfiles", paths.tmpfiles),
        ("dbus_policy", paths.dbus), ("config", paths.config))}
    out: dict[str, object] = {"root": str(paths.root), "installed": files["unit"],
                              "files": files, "control_socket": str(SERVICE_CONTROL_SOCKET)}
    if not paths.live or not shutil.which("systemctl"):
        return out
    r = run(["systemctl", "show", UNIT_NAME, "--property",
             "LoadState,ActiveState,SubState,UnitFileState,MainPID,NRestarts,StatusText,"
             "ExecMainStartTimestamp"])
    props = dict(line.partition("=")[::2] for line in r.stdout.splitlines() if "=" in line)
    out |= {"load": props.get("LoadState", ""), "active": props.get("ActiveState", ""),
            "sub": props.get("SubState", ""), "enabled": props.get("UnitFileState", ""),
            "main_pid": int(props.get("MainPID", "0") or 0),
            "restarts": int(props.get("NRestarts", "0") or 0),
            "status_text": props.get("StatusText", ""),
            "since": props.get("ExecMainStartTimestamp", "")}
    return out
