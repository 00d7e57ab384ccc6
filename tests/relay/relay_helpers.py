"""In-process agents for the relay tests: real Nodes on loopback, no mDNS, paired by hand."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agent.config import config_from_dict
from agent.node import Node
from agent.peer.connection import PeerConnection

AVG = 16 * 1024


def _config(data_dir: Path, name: str, extra: dict[str, Any]) -> Any:
    raw: dict[str, Any] = {
        "node": {"name": name, "data_dir": str(data_dir)},
        "lan": {"listen": "127.0.0.1", "port": 0, "mdns": False, "heartbeat_interval": 0.5,
                "peer_timeout": 30.0, "connect_timeout": 5.0},
        "ble": {"enabled": False},
        "authority": {"enabled": False},
        "prefetch": {"enabled": False},
        # circuits are counted exactly here: the DHT's upkeep would open relayed sessions too
        "dht": {"enabled": False},
        "store": {"avg_chunk_size": AVG},
    }
    for section, values in extra.items():
        raw.setdefault(section, {}).update(values)
    return config_from_dict(raw)


@contextlib.asynccontextmanager
async def nodes(*names: str, config: dict[str, dict[str, Any]] | None = None
                ) -> AsyncIterator[dict[str, Node]]:
    """Running Nodes by name; *config*: extra config sections per node name."""
    base = Path(tempfile.mkdtemp(prefix="relay-"))
    running: dict[str, tuple[Node, asyncio.Future[None]]] = {}
    try:
        for name in names:
            node = Node(_config(base / name, name, (config or {}).get(name, {})))
            task = asyncio.ensure_future(node.run())
            await asyncio.wait_for(node.ready.wait(), 10)
            running[name] = (node, task)
        yield {n: v[0] for n, v in running.items()}
    finally:
        for node, _ in running.values():
            node.stop()
        for _, task in running.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 15)
        shutil.rmtree(base, ignore_errors=True)


def pair(x: Node, y: Node) -> None:
    """What a completed numeric-comparison pairing leaves in both trust stores."""
    for me, other in ((x, y), (y, x)):
        o = other.identity
        me.trust.add(o.device_id, o.public_key, other.cfg.node.name,
                     signing_key=o.signing_public)


async def connect(x: Node, y: Node) -> PeerConnection:
    assert y.connections.lan_port is not None
    return await x.connections.connect(("127.0.0.1", y.connections.lan_port))


def ident(n: Node) -> bytes:
    return n.identity.device_id
