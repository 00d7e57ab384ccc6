"""`shoal doctor` and `shoal service ...`: the CLI side of running Shoal as a service.

Kept apart from :mod:`agent.control.cli` (which talks to a running agent): these commands
look at the machine and at systemd, and work with no agent at all.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from agent.config import (
    SERVICE_CONFIG_PATH,
    SERVICE_DATA_DIR,
    Config,
    load_config,
    render_defaults,
    with_overrides,
)
from agent.control.render import display, print_json, table
from agent.daemon import SERVICE_CONTROL_SOCKET
from agent.doctor.checks import diagnose, exit_code
from agent.doctor.probes import probe_machine
from agent.doctor.report import as_json, as_text, expect_from
from agent.service import install as svc
from agent.service.units import Launcher


def doctor_config(args: argparse.Namespace) -> tuple[Config, str]:
    """The configuration to check: --config if given, else the service's when installed
    (that is the agent this machine runs), else the defaults."""
    path: Path | None = args.config
    where = str(path) if path else "built-in defaults"
    if path is None and os.access(SERVICE_CONFIG_PATH, os.R_OK):
        path, where = SERVICE_CONFIG_PATH, f"{SERVICE_CONFIG_PATH} (the service's)"
    cfg = load_config(path)
    data_dir = args.data_dir or (SERVICE_DATA_DIR if path == SERVICE_CONFIG_PATH else None)
    if data_dir:
        cfg = with_overrides(cfg, node={"data_dir": Path(data_dir).expanduser().resolve()})
    return cfg, where


def doctor(args: argparse.Namespace) -> int:
    cfg, where = doctor_config(args)
    expect = expect_from(cfg)
    machine = asyncio.run(probe_machine(expect, cfg.node.data_dir, cfg.lan.interfaces))
    findings = diagnose(machine, expect)
    if args.json:
        print(print_json(as_json(findings) | {"config": where}))
    else:
        print(display(f"config: {where}\n\n" + as_text(findings, table)))
    return exit_code(findings)


def service(args: argparse.Namespace, launcher: Launcher | None = None) -> int:
    root = (args.root or Path("/")).resolve()
    sub = args.service_command
    if sub == "install":
        r = svc.install(root, launcher or svc.find_launcher(), render_defaults(),
                        start=not args.no_start)
        lines = [f"installed {r['unit']}"]
        lines += [f"  wrote {p}" for p in r["written"]]  # type: ignore[attr-defined]
        if r["config_kept"]:
            lines.append(f"  kept your {r['config']} (never overwritten)")
        if r["pythonpath"]:
            lines.append(f"  runs {r['python']} -m agent from the clone at {r['pythonpath']}")
        lines += [f"  ran: {c}" for c in r["commands"]]  # type: ignore[attr-defined]
        if r["started"]:
            lines.append("service running: sudo shoal status (talks to it, no flags needed); "
                         "check the machine: sudo shoal doctor")
        _out(args, r, "\n".join(lines))
        return 0
    if sub == "uninstall":
        r = svc.uninstall(root, purge=args.purge)
        lines = [f"removed {p}" for p in r["removed"]]  # type: ignore[attr-defined]
        if r["kept"]:
            lines.append("kept " + ", ".join(r["kept"])  # type: ignore[arg-type]
                         + " (delete them with: shoal service uninstall --purge)")
        _out(args, r, "\n".join(lines) or "nothing to remove: the service is not installed")
        return 0
    r = svc.status(root)
    if not r["installed"]:
        _out(args, r, "shoal.service is not installed: sudo shoal service install")
        return 3  # what `systemctl status` returns for a unit that is not active
    keys = ("load", "active", "sub", "enabled", "main_pid", "restarts", "status_text", "since")
    rows: list[tuple[str, object]] = [(k, r[k]) for k in keys if k in r]
    rows.append(("control_socket", SERVICE_CONTROL_SOCKET))
    files = r["files"]
    if isinstance(files, dict):
        rows += [(f"file:{k}", "present" if v else "missing") for k, v in files.items()]
    _out(args, r, table(["PROPERTY", "VALUE"], rows))
    return 0 if r.get("active", "active") == "active" else 3


def _out(args: argparse.Namespace, value: object, human: str) -> None:
    print(print_json(value) if args.json else display(human))
