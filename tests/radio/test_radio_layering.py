"""Architecture rules for radio/: it never imports agent/, and core modules stay D-Bus free."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

RADIO = Path(__file__).resolve().parents[2] / "radio"


def test_radio_never_imports_agent() -> None:
    offenders = []
    for path in RADIO.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path}: {n}" for n in names if n == "agent" or n.startswith("agent.")]
    assert offenders == []


def test_core_modules_import_without_bluetooth_libraries() -> None:
    code = (
        "import sys\n"
        "import radio.base, radio.ble, radio.ble.framing, radio.ble.profile, radio.sim\n"
        "import radio.ble.bless_peripheral, radio.ble.bleak_central\n"
        "bad = [m for m in ('bless', 'bleak', 'dbus_next', 'dbus_fast', 'agent') "
        "if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
