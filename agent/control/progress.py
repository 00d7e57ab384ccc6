"""Fetch progress on stderr: bytes, rate and time left, and what a resumed fetch already had.

Why the rate counts only this run's bytes: a resumed fetch starts with part of the resource
already in the store; counting those bytes as transferred in the first second showed an
absurd speed and an ETA of zero. The agent's progress events say how many bytes (and chunks)
were already held when the fetch started (``already``, ``chunks_already``); the rate is
``(done - already) / elapsed`` and the ETA ``(total - done) / rate``.

Shown only when stderr is a terminal (one line redrawn in place), or with ``--progress``
(then one plain line per second, for logs). Nothing from a peer is printed here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TextIO

from agent.control.render import duration, size

BAR = 24
LOG_EVERY = 1.0  # seconds between lines when stderr is not a terminal


def _num(event: Mapping[str, Any], key: str) -> float | None:
    v = event.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def resume_text(chunks_already: int, chunks_total: int, already: int, total: int) -> str:
    """``resuming: 12 of 40 chunks (30.0 %) already here``."""
    frac = already / total if total else 0.0
    return f"resuming: {chunks_already} of {chunks_total} chunks ({frac * 100:.1f} %) already here"


def progress_text(done: float, total: float, already: float, elapsed: float,
                  sources: int | None = None) -> str:
    """One progress line: bar, percentage, bytes, this run's rate and the time left."""
    frac = min(1.0, done / total) if total else 1.0
    moved = max(0.0, done - already)
    rate = moved / elapsed if elapsed > 0 else 0.0
    if done >= total:
        eta = "done"
    elif rate > 0:
        eta = f"ETA {duration((total - done) / rate)}"
    else:
        eta = "ETA -"
    bar = "#" * int(frac * BAR)
    src = f"  {sources} source{'s' if sources != 1 else ''}" if sources is not None else ""
    return (f"[{bar:<{BAR}}] {frac * 100:5.1f} %  {size(done)} of {size(total)}  "
            f"{size(rate)}/s  {eta}{src}")


class FetchProgress:
    """Turns the agent's progress events into lines on *stream* (stderr)."""

    def __init__(self, stream: TextIO, *, enabled: bool, redraw: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.redraw = redraw  # a terminal: redraw one line in place
        self._started = False
        self._shown = 0  # width of the line on screen (redraw mode)
        self._last_logged = -LOG_EVERY

    def update(self, event: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        done, total, elapsed = (_num(event, k) for k in ("done", "total", "elapsed"))
        if done is None or total is None or elapsed is None:
            return  # not a transfer progress event (e.g. a stage announcement)
        already = _num(event, "already") or 0.0
        if not self._started:
            self._started = True
            c_already, c_total = _num(event, "chunks_already"), _num(event, "chunks_total")
            if already > 0 and c_already is not None and c_total is not None:
                self._line(resume_text(int(c_already), int(c_total), int(already),
                                       int(total)), final=True)
        sources = _num(event, "sources")
        text = progress_text(done, total, already, elapsed,
                             int(sources) if sources is not None else None)
        if self.redraw:
            self._line(text, final=False)
        elif elapsed - self._last_logged >= LOG_EVERY or done >= total:
            self._last_logged = elapsed
            self._line(text, final=True)

    def _line(self, text: str, *, final: bool) -> None:
        if self.redraw:
            pad = " " * max(0, self._shown - len(text))
            self.stream.write("\r" + text + pad + ("\n" if final else ""))
            self._shown = 0 if final else len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """End the redrawn line (before anything else is printed)."""
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = 0
