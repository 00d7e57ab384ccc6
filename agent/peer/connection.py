"""One authenticated connection to a peer: symmetric request/response over a secure channel.

Either side may send requests; responses are matched by id so many requests (chunk fetches)
are in flight at once. A malformed message ends the connection with a logged reason: a peer
that breaks the protocol is not given a second guess.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from agent.errors import ErrorKind, ShoalError
from agent.log import kv
from agent.peer import wire
from agent.security.identity import short_device_id
from agent.security.session import Buffer, ConnectionClosedError, SessionError

log = logging.getLogger("shoal.peer")

MAX_CONCURRENT_HANDLERS = 128


class RemoteError(ShoalError):
    """The peer answered a request with an error.

    ``remote_kind`` is the kind the peer gave its refusal (None from older peers): e.g. a
    chunk server's NOT_FOUND says "not in my store", which a fetcher acts on differently
    from a failing source. This error's own kind stays REFUSED.
    """

    kind = ErrorKind.REFUSED

    def __init__(self, message: str, remote_kind: ErrorKind | None = None) -> None:
        super().__init__(message)
        self.remote_kind = remote_kind


class PeerGone(ShoalError, ConnectionError):
    """The connection closed before the answer came."""

    kind = ErrorKind.GONE


class Refused(ShoalError):
    """Raised by a request handler to answer with a clear error message."""

    kind = ErrorKind.REFUSED


@dataclass(frozen=True)
class RawReply:
    """A handler result that is already one complete wire message, given as parts.

    Why parts: a chunk reply is a small header plus megabytes read from the store; the parts
    go down to the record layer as they are (:meth:`SecureChannel.send_parts`), so served
    bytes are never joined into a new buffer. Why ``hold``: the peer layer applies no policy;
    the service that built the reply may pass a context (the chunk server's bandwidth
    permit) that is entered right before the send and left once the bytes are written and
    drained, so "done" means the bytes left.
    """

    parts: Sequence[Buffer]
    hold: AbstractAsyncContextManager[None] | None = None


Handler = Callable[["PeerConnection", wire.Request], Awaitable[Any]]
#: Events, and relay circuit frames (binary, agent/relay/), in arrival order.
EventHandler = Callable[["PeerConnection", wire.Event | wire.RelayFrame], None]


class PeerConnection:
    """Wraps a SecureChannel; `serve()` must run for responses to be delivered."""

    def __init__(
        self,
        channel: Any,
        *,
        peer_id: bytes,
        peer_key: bytes,
        hello: dict[str, Any],
        handler: Handler,
        on_event: EventHandler | None = None,
        outgoing: bool,
        address: tuple[str, int] | None = None,
        transport: str = "lan",
    ) -> None:
        self.channel = channel
        self.peer_id = peer_id
        self.peer_key = peer_key
        self.hello = hello
        self.outgoing = outgoing
        self.address = address
        # "lan" (TCP), "ble" (no bulk data) or "relay" (a circuit through paired devices)
        self.transport = transport
        self.handshake_hash: bytes = channel.handshake_hash
        self._handler = handler
        self._on_event = on_event
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._send_lock = asyncio.Lock()
        self._handlers = asyncio.Semaphore(MAX_CONCURRENT_HANDLERS)
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.last_seen = time.monotonic()
        self.rtt: float | None = None
        self.bytes_in = 0

    @property
    def name(self) -> str:
        return str(self.hello.get("name", "?"))

    def __repr__(self) -> str:
        return f"<PeerConnection {short_device_id(self.peer_id)} {self.name}>"

    async def _send(self, payload: bytes) -> None:
        await self._send_parts((payload,))

    async def _send_parts(self, parts: Sequence[Buffer]) -> None:
        """Send one message made of *parts* (not joined: see :class:`RawReply`)."""
        if self.closed.is_set():
            raise PeerGone(f"connection to {self.name} is closed: {self.close_reason}")
        async with self._send_lock:
            try:
                await self.channel.send_parts(parts)
            except (ConnectionError, OSError, SessionError) as e:  # closed underneath us
                raise PeerGone(f"connection to {self.name} lost: {e}") from None

    async def send_raw(self, parts: Sequence[Buffer]) -> None:
        """Send one already-encoded wire message given as parts (a relay frame: its header
        and a view of the ciphertext it carries, never joined). Raises PeerGone."""
        await self._send_parts(parts)

    async def request(self, op: str, args: dict[str, Any], timeout: float = 10.0) -> Any:
        """Send a request and wait for its answer (raises RemoteError, PeerGone, TimeoutError).

        The timeout covers the send too: a peer that stops reading blocks the send, and
        its caller must still get its answer (a TimeoutError) in time.
        """
        req_id = next(self._ids) & wire.MAX_REQUEST_ID
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        try:
            async with asyncio.timeout(timeout):
                await self._send(wire.encode_request(req_id, op, args))
                return await fut
        except TimeoutError:
            raise TimeoutError(f"{self.name} did not answer {op} within {timeout:.1f} s") from None
        finally:
            self._pending.pop(req_id, None)
            _settle(fut)

    async def ping(self, timeout: float = 5.0) -> float:
        t0 = time.monotonic()
        await self.request("ping", {"t": time.time()}, timeout)
        self.rtt = time.monotonic() - t0
        return self.rtt

    async def send_event(self, op: str, args: dict[str, Any]) -> None:
        await self._send(wire.encode_event(op, args))

    async def serve(self) -> None:
        """Read messages until the channel closes; dispatch requests, events and answers."""
        reason = "closed by peer"
        try:
            while True:
                try:
                    raw = await self.channel.recv()
                except (ConnectionError, ConnectionClosedError, asyncio.IncompleteReadError,
                        EOFError):  # a clean end (TCP's SecureChannel: ConnectionClosedError)
                    break
                self.last_seen = time.monotonic()
                self.bytes_in += len(raw)
                msg = wire.decode(raw)
                if isinstance(msg, wire.Request):
                    await self._handlers.acquire()
                    task = asyncio.create_task(self._answer(msg))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                elif isinstance(msg, (wire.Response, wire.ChunkReply)):
                    fut = self._pending.get(msg.id)
                    if fut is not None and not fut.done():
                        if isinstance(msg, wire.ChunkReply):
                            fut.set_result(msg)
                        elif msg.ok:
                            fut.set_result(msg.result)
                        else:
                            fut.set_exception(RemoteError(msg.result, msg.kind))
                elif self._on_event is not None:
                    self._on_event(self, msg)
        except wire.WireError as e:
            reason = f"protocol error: {e}"
            log.warning("closing connection", extra=kv(peer=self.name, reason=reason))
        except Exception as e:  # session errors (tamper, oversize) end the connection
            reason = f"{type(e).__name__}: {e}"
            log.warning("closing connection", extra=kv(peer=self.name, reason=reason))
        finally:
            await self._shutdown(reason)

    async def _answer(self, req: wire.Request) -> None:
        """Answer one request; whatever fails is handled here (this task is never awaited,
        so an exception left in it would only surface as "never retrieved" at GC)."""
        try:
            await self._reply(req)
        except (PeerGone, ConnectionError):
            pass  # the session ended: there is nobody to answer
        except Exception:
            log.exception("answering a request failed", extra=kv(op=req.op, peer=self.name))
        finally:
            self._handlers.release()

    async def _reply(self, req: wire.Request) -> None:
        try:
            result = await self._handler(self, req)
        except Refused as e:
            await self._send(wire.encode_response(req.id, False, str(e), e.kind))
            return
        except Exception as e:
            log.exception("request handler failed", extra=kv(op=req.op, peer=self.name))
            await self._send(wire.encode_response(req.id, False, f"internal error: {e}",
                                                  ErrorKind.INTERNAL))
            return
        if isinstance(result, RawReply):
            async with result.hold or contextlib.nullcontext():
                await self._send_parts(result.parts)
            return
        try:
            payload = wire.encode_response(req.id, True, result)
        except (wire.WireError, TypeError, ValueError) as e:  # too large, not JSON
            log.error("cannot encode a reply", extra=kv(op=req.op, peer=self.name, reason=e))
            payload = wire.encode_response(req.id, False, "internal error: reply not sendable",
                                           ErrorKind.INTERNAL)
        await self._send(payload)

    async def _shutdown(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(PeerGone(f"connection to {self.name} closed: {reason}"))
        for t in list(self._tasks):
            t.cancel()
        with contextlib.suppress(Exception):
            await self.channel.close()

    async def close(self, reason: str = "closed locally") -> None:
        await self._shutdown(reason)


def _settle(fut: asyncio.Future[Any]) -> None:
    """Leave *fut* with nobody owed its outcome: cancel it if still open, else mark its
    exception as seen. A request whose send failed (the connection closed underneath it)
    never awaits its future, which :meth:`PeerConnection._shutdown` may still fail; asyncio
    would then log "Future exception was never retrieved" for every such request."""
    if not fut.done():
        fut.cancel()
    elif not fut.cancelled():
        fut.exception()
