"""Data-driven Raft scenarios: testdata/*.txt must reproduce exactly.

Regenerate after an intended behaviour change with ``SHOAL_REWRITE=1 pytest ...`` and
review the diff like code.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest
from raft_script import render

TESTDATA = Path(__file__).resolve().parent / "testdata"
SCRIPTS = sorted(TESTDATA.glob("*.txt"))


def test_there_are_scenarios() -> None:
    names = {p.stem for p in SCRIPTS}
    assert {"prevote", "checkquorum", "leader_transfer", "membership"} <= names


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_script(path: Path) -> None:
    text = path.read_text()
    actual = render(text)
    if actual == text:
        return
    if os.environ.get("SHOAL_REWRITE") == "1":
        path.write_text(actual)
        return
    diff = "".join(
        difflib.unified_diff(
            text.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            fromfile=f"{path.name} (expected)",
            tofile=f"{path.name} (actual)",
        )
    )
    pytest.fail(f"{path.name} differs (SHOAL_REWRITE=1 to accept):\n{diff}")
