"""Logging: one line per event with key=value context; journald adds its own timestamps.

Use ``log.info("peer connected", extra=kv(peer=..., addr=...))`` or the :func:`event` helper.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

_KV_ATTR = "shoal_kv"


def kv(**fields: Any) -> dict[str, Any]:
    """Context for one log record, rendered as key=value after the message."""
    return {_KV_ATTR: fields}


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_CONTROL.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


def clean(text: str) -> str:
    """*text* with every control character escaped: names and reasons come from peers and
    files, and a raw ESC or CR in a log line can rewrite an operator's terminal."""
    return text.translate(_CONTROL)


def _render(value: Any) -> str:
    s = str(value)
    if not s or any(c in s for c in ' "=\\') or s != clean(s):
        s = '"' + clean(s.replace("\\", "\\\\").replace('"', '\\"')) + '"'
    return s


class KeyValueFormatter(logging.Formatter):
    """``[ts] LEVEL logger: message k=v k=v`` with the timestamp left out under systemd."""

    def __init__(self, timestamps: bool) -> None:
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s" if timestamps else (
            "%(levelname)s %(name)s: %(message)s"
        )
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        line = clean(super().format(record).replace("\n", " | "))
        fields = getattr(record, _KV_ATTR, None)
        if fields:
            line += " " + " ".join(f"{k}={_render(v)}" for k, v in fields.items())
        return line


def under_systemd() -> bool:
    """True when stderr is connected to the journal (systemd sets JOURNAL_STREAM)."""
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


def setup_logging(level: str = "info") -> None:
    """Configure the root logger once for the process."""
    numeric = getattr(logging, level.upper(), None)
    if not isinstance(numeric, int):
        raise ValueError(f"--log-level: expected debug, info, warning or error, got {level!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter(timestamps=not under_systemd()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
