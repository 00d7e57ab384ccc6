"""How `shoal doctor` shows its findings: a table, then the why and fix of each problem;
or one JSON object with ``--json``. Also builds :class:`Expect` from the configuration."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.doctor.checks import Finding, Status, exit_code
from agent.doctor.state import Expect

if TYPE_CHECKING:
    from agent.config import Config


def expect_from(cfg: Config) -> Expect:
    return Expect(ble=cfg.ble.enabled, ble_adapter=cfg.ble.adapter, lan=cfg.lan.enabled,
                  mdns=cfg.lan.mdns, port=cfg.lan.port,
                  interfaces_pinned=bool(cfg.lan.interfaces))


def as_json(findings: list[Finding]) -> dict[str, Any]:
    code = exit_code(findings)
    return {"ok": code == 0, "exit": code,
            "counts": {s.value: sum(f.status is s for f in findings) for s in Status},
            "findings": [f.as_dict() for f in findings]}


def as_text(findings: list[Finding], table: Any) -> str:
    """*table* is agent.control.render.table (the CLI's one table layout, escaping cells)."""
    lines = [table(["STATUS", "CHECK", "FINDING"],
                   [(f.status.value.upper(), f.check, f.what) for f in findings])]
    problems = [f for f in findings if f.status is not Status.OK]
    for n, f in enumerate(problems, 1):
        lines.append(f"\n{n}. [{f.status.value}] {f.check}: {f.what}")
        if f.why:
            lines.append(f"   why: {f.why}")
        if f.fix:
            lines.append(f"   fix: {f.fix}")
    fails = sum(f.status is Status.FAIL for f in findings)
    warns = sum(f.status is Status.WARN for f in findings)
    if fails:
        lines.append(f"\n{fails} problem(s) block normal operation, {warns} warning(s).")
    elif warns:
        lines.append(f"\nNothing blocks normal operation; {warns} warning(s) above.")
    else:
        lines.append("\nEverything checked is fine.")
    return "\n".join(lines)
