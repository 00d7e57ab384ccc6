"""Suite-wide fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:  # shared helper modules (waiting.py) in any import mode
    sys.path.insert(0, _TESTS)

from agent.log import KeyValueFormatter  # noqa: E402  (after the path set-up)


@pytest.fixture(autouse=True)
def _caplog_renders_key_values(caplog: pytest.LogCaptureFixture) -> None:
    """Log context travels as ``extra=kv(...)``; render it in ``caplog.text`` the way the
    agent's own log does, so tests assert on what an operator would read."""
    caplog.handler.setFormatter(KeyValueFormatter(timestamps=False))
