"""Suite-wide fixtures."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import pytest

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:  # shared helper modules (waiting.py) in any import mode
    sys.path.insert(0, _TESTS)

from agent.log import KeyValueFormatter  # noqa: E402  (after the path set-up)

# Hermetic meshes: every agent a test starts (in-process Config(), `python -m agent`
# children, bench helpers, netns hosts) takes its mesh ID from $SHOAL_MESH unless told
# otherwise, so agents only ever discover, dial and accept agents of the same test, even
# with another copy of the suite, a demo or a real agent on this machine. This value covers
# code that runs outside a test (collection, module-level set-up); ``_hermetic_mesh`` below
# gives every test its own.
os.environ["SHOAL_MESH"] = f"t-{secrets.token_hex(6)}"


@pytest.fixture(autouse=True)
def _hermetic_mesh(monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh mesh ID for this test, in $SHOAL_MESH (read by tests' helpers and agents)."""
    mesh = f"t-{secrets.token_hex(6)}"
    monkeypatch.setenv("SHOAL_MESH", mesh)
    return mesh


@pytest.fixture(autouse=True)
def _caplog_renders_key_values(caplog: pytest.LogCaptureFixture) -> None:
    """Log context travels as ``extra=kv(...)``; render it in ``caplog.text`` the way the
    agent's own log does, so tests assert on what an operator would read."""
    caplog.handler.setFormatter(KeyValueFormatter(timestamps=False))
