"""How the `shoal` command shows things: escaping, sizes, tables, errors.

Why one module: every string a peer chose (device names, resource names, holders) reaches
the terminal through :func:`display`, and every listing through :func:`table`, so there is
exactly one place where a terminal could receive something raw, and one table layout.

Errors have two forms (README, "Errors"): one line ``shoal: error: MESSAGE; NEXT STEP`` on
stderr, or with ``--json`` one object on stdout::

    {"error": {"kind": "not_found", "message": "...", "hint": "..."}}

``kind`` is one of :class:`agent.errors.ErrorKind` or ``"usage"`` (a command-line mistake).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: What a terminal must never receive raw from a peer-supplied string: controls (escape
#: sequences), format characters (bidi overrides such as U+202E reorder what follows, zero
#: width ones hide), surrogates, line/paragraph separators, unassigned code points.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp", "Cn"})
_JOINERS = frozenset("\u200c\u200d")  # ZWNJ/ZWJ: scripts and emoji need them
_KEEP = _JOINERS | frozenset("\n\t")  # and our own layout, in text only


def _unsafe(ch: str, keep: frozenset[str] = _KEEP) -> bool:
    return ch not in keep and unicodedata.category(ch) in _UNSAFE_CATEGORIES


def _escape(ch: str) -> str:
    return f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}"


def display(text: str, keep: frozenset[str] = _KEEP) -> str:
    """*text* with every unsafe character shown as an escape (``\\u202e``).

    Names of resources and devices come from peers: whatever the agent validated, the CLI
    is the boundary to the terminal and escapes again rather than trust every path there.
    """
    if not any(_unsafe(ch, keep) for ch in text):
        return text
    return "".join(_escape(ch) if _unsafe(ch, keep) else ch for ch in text)


def cell(value: object) -> str:
    """One table cell: escaped, and on one line (a newline or tab in a name is escaped too)."""
    return display("-" if value is None else str(value), _JOINERS)


class UnusableName(ValueError):
    """A resource name that cannot become a file name, even escaped."""


def output_name(name: str) -> str:
    """A file name for a fetched resource: its last path component with every unsafe
    character replaced by its code point (``U+202E``), never used raw."""
    base = Path(name).name
    safe = "".join(f"U+{ord(ch):04X}" if _unsafe(ch, _JOINERS) else ch for ch in base)
    if safe in ("", ".", ".."):
        raise UnusableName(f"the resource name {display(name)!r} is not usable as a file "
                           "name; use -o PATH")
    return safe


def size(n: float) -> str:
    """Bytes in binary units: ``512 B``, ``1.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def duration(seconds: float) -> str:
    """A short duration: ``42 s``, ``3 min 05 s``, ``2 h 10 min``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def width(text: str) -> int:
    """Columns *text* takes on a terminal (wide East Asian characters take two)."""
    return sum(0 if unicodedata.combining(ch) else
               2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


@dataclass(frozen=True)
class Column:
    header: str
    right: bool = False  # numbers align right


def table(columns: Sequence[Column | str], rows: Iterable[Sequence[object]],
          note: str | None = None) -> str:
    """A table with a header row; every cell goes through :func:`cell` (escaped, one line).

    *note* is printed under the table: what a column means (``-`` = unknown, units).
    """
    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    body = [[cell(v) for v in r] for r in rows]
    grid = [[c.header for c in cols], *body]
    widths = [max(width(r[i]) for r in grid) for i in range(len(cols))]
    lines = []
    for r in grid:
        parts = []
        for i, (c, text) in enumerate(zip(cols, r, strict=True)):
            pad = " " * (widths[i] - width(text))
            last = i == len(cols) - 1
            parts.append(pad + text if c.right else text + ("" if last else pad))
        lines.append("  ".join(parts).rstrip())
    if note:
        lines.append(note)
    return "\n".join(lines)


# ------------------------------------------------------------------------------- errors
@dataclass(frozen=True)
class Failure:
    """A failure as the user sees it: what kind, what happened, what to do next."""

    kind: str
    message: str
    hint: str | None = None

    def as_json(self) -> str:
        return json.dumps({"error": {"kind": self.kind, "message": self.message,
                                     "hint": self.hint}})

    def as_line(self) -> str:
        """``shoal: error: MESSAGE; HINT``: one line, escaped; the hint is left out when the
        message already names the next step (it says which `shoal` command to run)."""
        text = " ".join(self.message.split()) or self.kind
        if self.hint and not _names_next_step(text):
            text += f"; {self.hint}"
        return "shoal: error: " + display(text, _JOINERS)


#: A message that already says what to do: names a `shoal` command or an option to use.
_NEXT_STEP = re.compile(r"\bshoal [a-z]|\b(use|pass|with|try|add) -{1,2}[a-z]|\bwith: ")


def _names_next_step(message: str) -> bool:
    return _NEXT_STEP.search(message) is not None


def print_json(value: Any) -> str:
    """JSON output: non-ASCII escaped by json.dumps, so nothing raw reaches a terminal."""
    return json.dumps(value, indent=2)
