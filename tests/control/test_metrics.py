"""The optional Prometheus endpoint: off by default, served from the event loop on a local
port, the issue's metrics in the text format, hostile requests answered or dropped."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from agent.config import Config, config_from_dict
from agent.control.metrics import MetricsServer, render

SNAP = {"peers_seen": 3, "peers_connected": 2, "peers_paired": 1, "transfers": 1,
        "bytes_by_class": {"demand": 1000, "prefetch": 20},
        "raft_term": 7, "authority_assignments": 4,
        "prefetch": {"prefetched": 5, "used": 3, "local_hits": 2, "mirror_hits": 1,
                     "peer_fetches": 4, "wasted_bytes": 10, "used_ratio": 0.6},
        "mirrors_using": 2, "mirrors_hosting": 1}


def test_metrics_are_off_by_default():
    assert Config().metrics.enabled is False
    assert Config().metrics.listen == "127.0.0.1"


def test_render_has_every_metric_of_the_issue():
    body, ctype = render(SNAP)
    text = body.decode()
    assert ctype.startswith("text/plain")
    for line in ("shoal_peers 3.0", "shoal_peers_connected 2.0", "shoal_peers_paired 1.0",
                 "shoal_transfers_running 1.0", 'shoal_fetched_bytes_total{class="demand"} '
                 "1000.0", 'shoal_fetched_bytes_total{class="prefetch"} 20.0',
                 "shoal_prefetch_hit_ratio 0.6", "shoal_mirrors_using 2.0",
                 "shoal_mirrors_hosting 1.0", "shoal_authority_assignments 4.0",
                 "shoal_raft_term 7.0", "shoal_prefetch_used_total 3.0"):
        assert line in text, line
    # unknown values (no authority, no prefetch yet) are left out, not reported as 0
    bare = render({k: SNAP[k] for k in ("peers_seen", "peers_connected", "peers_paired",
                                        "transfers", "bytes_by_class")})[0].decode()
    assert "shoal_raft_term" not in bare and "hit_ratio" not in bare


async def _get(port: int, request: bytes) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(request)
    await w.drain()
    data = await asyncio.wait_for(r.read(), 10)
    w.close()
    return data


async def test_server_answers_metrics_and_404_and_drops_oversized_requests():
    async def source():
        return SNAP

    server = MetricsServer("127.0.0.1", 0, source)
    port = await server.start()
    try:
        ok = await _get(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200 OK") and b"shoal_peers 3.0" in ok
        assert (await _get(port, b"GET / HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
        assert await _get(port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000) == b""
    finally:
        await server.close()


async def test_a_node_with_metrics_enabled_serves_them(tmp_path, caplog):
    from agent.node import Node

    caplog.set_level(logging.INFO, "shoal.metrics")
    cfg = config_from_dict({
        "node": {"name": "m", "data_dir": str(tmp_path / "d"),
                 "control_socket": str(tmp_path / "c.sock")},
        "lan": {"listen": "127.0.0.1", "port": 0, "mdns": False},
        "ble": {"enabled": False}, "metrics": {"enabled": True, "port": 0}})
    node = Node(cfg)
    task = asyncio.ensure_future(node.run())
    try:
        await asyncio.wait_for(node.ready.wait(), 15)
        port = int(re.search(r"address=127\.0\.0\.1:(\d+)", caplog.text).group(1))
        text = (await _get(port, b"GET /metrics HTTP/1.1\r\n\r\n")).decode()
        assert "shoal_peers 0.0" in text and "shoal_raft_term" in text
    finally:
        node.stop()
        await asyncio.wait_for(task, 15)


def test_a_bad_metrics_port_is_a_config_error():
    from agent.config import ConfigError

    with pytest.raises(ConfigError, match=r"metrics\.port"):
        config_from_dict({"metrics": {"port": 70000}})
