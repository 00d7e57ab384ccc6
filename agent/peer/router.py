"""The peer request router: a table from operation name to the service that answers it.

Why a table: every service (pairing, chunk serving, authority, the coming mirror and DHT
services) registers the operations it answers, so adding one touches that service and the
composition root, not an ``if op ==`` chain that every change has to walk through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from agent.log import kv
from agent.peer import wire
from agent.peer.connection import Handler, PeerConnection, Refused

log = logging.getLogger("shoal.router")

EventSink = Callable[[PeerConnection, str, dict[str, object]], None]
FrameSink = Callable[[PeerConnection, wire.RelayFrame], None]


class Router:
    """Dispatches requests and events arriving on any session."""

    def __init__(self) -> None:
        self._requests: dict[str, Handler] = {}
        self._events: dict[str, EventSink] = {}
        self._frames: FrameSink | None = None

    def add_requests(self, handlers: Mapping[str, Handler]) -> None:
        for op, handler in handlers.items():
            if op in self._requests:
                raise ValueError(f"peer operation {op!r} registered twice")
            self._requests[op] = handler

    def add_events(self, ops: tuple[str, ...], sink: EventSink) -> None:
        for op in ops:
            if op in self._events:
                raise ValueError(f"peer event {op!r} registered twice")
            self._events[op] = sink

    def set_frames(self, sink: FrameSink) -> None:
        """Where relay circuit frames go (the relay service); without one they are dropped."""
        if self._frames is not None:
            raise ValueError("relay frames have a sink already")
        self._frames = sink

    async def handle(self, conn: PeerConnection, req: wire.Request) -> object:
        handler = self._requests.get(req.op)
        if handler is None:
            raise Refused(f"operation {req.op!r} is not supported")
        return await handler(conn, req)

    def event(self, conn: PeerConnection, event: wire.Event | wire.RelayFrame) -> None:
        if isinstance(event, wire.RelayFrame):
            if self._frames is None:
                return
            try:
                self._frames(conn, event)
            except Exception:  # as for events: a bug must not end the peer's session
                log.exception("relay frame handler failed", extra=kv(peer=conn.name))
            return
        sink = self._events.get(event.op)
        if sink is None:
            log.debug("event ignored", extra=kv(peer=conn.name, op=event.op))
            return
        try:
            sink(conn, event.op, event.args)
        except Exception:  # one service's bug must not end the peer's session
            log.exception("event handler failed", extra=kv(peer=conn.name, op=event.op))
