"""When a watched path's changes become a new version: the pure policy (sans-I/O).

Why: an editor saves a file as several writes and renames, a copy into a folder is
thousands of events, and every version is signed, stored and announced. So a change is
published only after the path has been *quiet* for a while, never more often than once per
*min_interval*, and never while the previous publish of the same path still runs (changes
that arrive meanwhile make exactly one more). Times are any monotonic clock's seconds; the
adapter (agent/folders/watch.py) turns :meth:`Debounce.due` into one timer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Debounce"]


@dataclass
class Debounce:
    quiet: float
    min_interval: float
    dirty: bool = False
    busy: bool = False
    last_change: float = -math.inf
    last_publish: float = -math.inf

    def changed(self, now: float) -> None:
        """Something under the path changed at *now*."""
        self.dirty = True
        self.last_change = now

    def due(self) -> float | None:
        """When to publish next (a time on the same clock), or None: nothing to do."""
        if not self.dirty or self.busy:
            return None
        return max(self.last_change + self.quiet, self.last_publish + self.min_interval)

    def start(self) -> None:
        """A publish begins: changes from now on need another one."""
        self.busy, self.dirty = True, False

    def finished(self, now: float) -> None:
        self.busy = False
        self.last_publish = now
