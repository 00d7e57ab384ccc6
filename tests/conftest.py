"""Suite-wide fixtures."""

from __future__ import annotations

import pytest

from agent.log import KeyValueFormatter


@pytest.fixture(autouse=True)
def _caplog_renders_key_values(caplog: pytest.LogCaptureFixture) -> None:
    """Log context travels as ``extra=kv(...)``; render it in ``caplog.text`` the way the
    agent's own log does, so tests assert on what an operator would read."""
    caplog.handler.setFormatter(KeyValueFormatter(timestamps=False))
