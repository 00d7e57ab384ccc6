"""Prometheus metrics on a local HTTP port ([metrics] enabled = true; off by default).

Why served from the event loop and not by prometheus_client's own HTTP server: that server
runs a thread that would read the agent's state while the loop changes it. Here a scrape is
an asyncio connection: the values are read in the loop (a consistent snapshot), then
prometheus_client renders the text format. prometheus_client is imported only when metrics
are enabled (the `metrics` extra); without it the agent runs and says how to get it.

Metrics: peers (seen, connected, paired), transfers running, bytes fetched by traffic class,
prefetch hit ratio and counts, mirrors used and hosted, authority assignments (epochs) and
the Raft term.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from agent.errors import ErrorKind, ShoalError
from agent.log import kv

if TYPE_CHECKING:
    from agent.control.commands import CommandContext

log = logging.getLogger("shoal.metrics")
MAX_REQUEST = 8192  # bytes of request line and headers read from a scraper
READ_TIMEOUT = 5.0

Snapshot = dict[str, Any]


class MetricsUnavailable(ShoalError):
    kind = ErrorKind.UNAVAILABLE


async def snapshot(c: CommandContext) -> Snapshot:
    """Every metric's value, read in the event loop."""
    snap: Snapshot = {
        "peers_seen": len(c.peers.all()), "peers_connected": c.connections.count(),
        "peers_paired": len(c.trust.list()), "transfers": c.fetcher.in_flight,
        "bytes_by_class": dict(c.fetcher.bytes_by_class),
    }
    if c.authority is not None:
        with contextlib.suppress(Exception):  # not elected yet, no Raft state
            a = c.authority.describe()
            snap["raft_term"] = a.get("term")
            rows = a.get("assignments")
            snap["authority_assignments"] = sum(
                int(r.get("epoch", 0)) for r in rows if isinstance(r, dict)
            ) if isinstance(rows, list) else None
    if c.mirrors is not None:
        with contextlib.suppress(Exception):
            p = await c.mirrors.describe_prefetch()
            stats = p.get("stats")
            if isinstance(stats, dict):
                snap["prefetch"] = stats
            m = await c.mirrors.describe_mirrors()
            rows = m.get("mirrors")
            if isinstance(rows, list):
                snap["mirrors_using"] = sum(r.get("role") == "using" for r in rows)
                snap["mirrors_hosting"] = sum(r.get("role") == "hosting" for r in rows)
    return snap


def render(snap: Snapshot) -> tuple[bytes, str]:
    """The Prometheus text format for *snap*, and its content type."""
    try:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.exposition import CONTENT_TYPE_LATEST
        from prometheus_client.metrics_core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            Metric,
        )
    except ImportError:
        raise MetricsUnavailable("[metrics] needs prometheus_client: pip install "
                                 "'shoal[metrics]', or set [metrics] enabled = false") from None

    class Collector:
        def collect(self) -> Iterator[Metric]:
            def gauge(name: str, doc: str, value: object) -> Iterator[Metric]:
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    yield GaugeMetricFamily(name, doc, value=value)

            yield from gauge("shoal_peers", "Devices in the peer table", snap["peers_seen"])
            yield from gauge("shoal_peers_connected", "Peers with a session up",
                             snap["peers_connected"])
            yield from gauge("shoal_peers_paired", "Paired devices", snap["peers_paired"])
            yield from gauge("shoal_transfers_running", "Fetches moving chunks now",
                             snap["transfers"])
            fetched = CounterMetricFamily("shoal_fetched_bytes", "Bytes fetched from "
                                          "peers since start, by traffic class",
                                          labels=["class"])
            for cls, n in sorted(snap["bytes_by_class"].items()):
                fetched.add_metric([cls], n)
            yield fetched
            yield from gauge("shoal_raft_term", "Current Raft term of the authority "
                             "cluster", snap.get("raft_term"))
            yield from gauge("shoal_authority_assignments", "Authority assignments "
                             "and changes so far (sum of resource epochs)",
                             snap.get("authority_assignments"))
            p = snap.get("prefetch") or {}
            yield from gauge("shoal_prefetch_hit_ratio", "Prefetched copies used / settled",
                             p.get("used_ratio"))
            for key in ("prefetched", "used", "local_hits", "mirror_hits", "peer_fetches",
                        "wasted_bytes"):
                if isinstance(p.get(key), int):
                    yield CounterMetricFamily(f"shoal_prefetch_{key}", f"Prefetch: {key}",
                                              value=p[key])
            yield from gauge("shoal_mirrors_using", "Mirrors this device uses",
                             snap.get("mirrors_using"))
            yield from gauge("shoal_mirrors_hosting", "Mirrors this device hosts",
                             snap.get("mirrors_hosting"))

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    return generate_latest(registry), str(CONTENT_TYPE_LATEST)


def check_available() -> None:
    """Fail at start-up (one line) when [metrics] is on but prometheus_client is missing."""
    render({"peers_seen": 0, "peers_connected": 0, "peers_paired": 0, "transfers": 0,
            "bytes_by_class": {}})


class MetricsServer:
    """``GET /metrics`` on *host*:*port*; anything else is 404, a slow client is dropped."""

    def __init__(self, host: str, port: int,
                 source: Callable[[], Awaitable[Snapshot]]) -> None:
        self.host, self.port = host, port
        self._source = source
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        check_available()
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port,
                                                      limit=MAX_REQUEST)
        except OSError as e:
            raise MetricsUnavailable(f"cannot serve metrics on {self.host}:{self.port}: "
                                     f"{e.strerror or e}; change [metrics] port") from None
        port = int(self._server.sockets[0].getsockname()[1])
        log.info("metrics listening", extra=kv(address=f"{self.host}:{port}"))
        return port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            parts = head.split(b"\r\n", 1)[0].split()
            if len(parts) == 3 and parts[0] in (b"GET", b"HEAD") and \
                    parts[1].split(b"?")[0] == b"/metrics":
                body, ctype = render(await self._source())
                status = b"200 OK"
            else:
                body, ctype, status = b"not found: GET /metrics\n", "text/plain", \
                    b"404 Not Found"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype.encode()
                         + b"\r\nContent-Length: " + str(len(body)).encode()
                         + b"\r\nConnection: close\r\n\r\n"
                         + (body if parts[:1] != [b"HEAD"] else b""))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            pass  # a slow, oversized or vanished scraper: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
