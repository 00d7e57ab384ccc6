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


#: syslog priorities (sd-daemon(3)) for the journal: ``<3>`` makes a line an error there.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (custom levels round down to the next)."""
    for level in sorted(_PRIORITY, reverse=True):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


class KeyValueFormatter(logging.Formatter):
    """``[ts] LEVEL logger: message k=v k=v`` with the timestamp left out under systemd.

    With *journal* each line starts with its ``<N>`` priority prefix, which journald reads
    from a service's stderr (SyslogLevelPrefix=yes, the default): `journalctl -p warning`
    and the colours of `journalctl` then follow the agent's own levels.
    """

    def __init__(self, timestamps: bool, journal: bool = False) -> None:
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s" if timestamps else (
            "%(levelname)s %(name)s: %(message)s"
        )
        super().__init__(fmt)
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        line = clean(super().format(record).replace("\n", " | "))
        fields = getattr(record, _KV_ATTR, None)
        if fields:
            line += " " + " ".join(f"{k}={_render(v)}" for k, v in fields.items())
        return f"<{priority(record.levelno)}>{line}" if self.journal else line


def under_systemd() -> bool:
    """True when stderr is connected to the journal (systemd sets JOURNAL_STREAM)."""
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


def stderr_is_journal() -> bool:
    """True when stderr *is* the journal stream systemd named in $JOURNAL_STREAM
    (device:inode): a child whose stderr was redirected must not print ``<N>`` prefixes."""
    dev, _, ino = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
        return bool(dev and ino) and (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError, AttributeError):
        return False


def setup_logging(level: str = "info") -> None:
    """Configure the root logger once for the process."""
    numeric = getattr(logging, level.upper(), None)
    if not isinstance(numeric, int):
        raise ValueError(f"--log-level: expected debug, info, warning or error, got {level!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter(timestamps=not under_systemd(),
                                           journal=stderr_is_journal()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
