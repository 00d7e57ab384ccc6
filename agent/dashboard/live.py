"""The live view's feed: one snapshot per interval at most, and only while a page is open;
each page gets only the sections that changed.

Why this shape: the browser holds one server-sent-event stream per page. A timer per page
would multiply the work by the pages open, and pushing every tick would wake the browser
for nothing. Here a single task reads the agent's state at most once per ``interval`` while
anyone listens (nothing at all otherwise), compares each section with what was last sent
and hands each listener only the changed ones. A listener that reads slowly keeps only the
newest value of each section (a dict, not a queue), so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable

from agent.log import kv

log = logging.getLogger("shoal.dashboard")
Sections = dict[str, object]


class Listener:
    """One page's stream: the newest unsent value of each section."""

    def __init__(self) -> None:
        self.pending: dict[str, str] = {}
        self.ready = asyncio.Event()

    def offer(self, section: str, text: str) -> None:
        self.pending[section] = text
        self.ready.set()

    async def next(self) -> dict[str, str]:
        await self.ready.wait()
        self.ready.clear()
        out, self.pending = self.pending, {}
        return out


class LiveFeed:
    """Reads *source* (the sections) while listeners exist; fans out what changed."""

    def __init__(self, source: Callable[[], Awaitable[Sections]], interval: float) -> None:
        self._source = source
        self.interval = interval
        self._listeners: set[Listener] = set()
        self._last: dict[str, str] = {}
        self._last_obj: dict[str, object] = {}  # the object last encoded, per section
        self._task: asyncio.Task[None] | None = None
        self._poke = asyncio.Event()
        self.reads = 0  # snapshots taken (tests and the footprint bench read it)

    @property
    def listening(self) -> int:
        return len(self._listeners)

    def subscribe(self) -> Listener:
        lst = Listener()
        for section, text in self._last.items():  # a new page starts from the whole picture
            lst.offer(section, text)
        self._listeners.add(lst)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="shoal:dashboard-feed")
        return lst

    def unsubscribe(self, lst: Listener) -> None:
        self._listeners.discard(lst)

    def poke(self) -> None:
        """Something changed (an action finished): read again at the next allowed moment."""
        self._poke.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._listeners:
            started = loop.time()
            try:
                sections = await self._source()
                self.reads += 1
            except Exception as e:  # a failing section must not end the live view
                log.warning("dashboard snapshot failed", extra=kv(reason=e))
                sections = {}
            for name, value in sections.items():
                if self._last_obj.get(name) is value:
                    continue  # the very object encoded last time: unchanged, not re-encoded
                self._last_obj[name] = value
                text = json.dumps(value, allow_nan=False, default=str, separators=(",", ":"))
                if self._last.get(name) != text:
                    self._last[name] = text
                    for lst in self._listeners:
                        lst.offer(name, text)
            self._poke.clear()
            rest = self.interval - (loop.time() - started)
            # sleep out the interval; a poke ends the wait early, but never below a tenth
            # of the interval (no storm however often the agent pokes)
            await asyncio.sleep(max(rest, 0.0) / 10)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), max(rest * 0.9, 0.0))
        self._task = None
