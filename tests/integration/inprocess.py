"""In-process agents for integration tests: real Nodes on loopback, no mDNS, paired by hand.

One place for what the signed-manifest, follow, relay and DHT tests all need: a config that
keeps an agent to loopback and off the radios, running Nodes by name that are stopped and
removed whatever the test does, what a completed pairing leaves in the trust stores, and a
direct session between two of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from agent.config import Config, config_from_dict
from agent.node import Node
from agent.peer.connection import PeerConnection

AVG = 16 * 1024

Sections = Mapping[str, Mapping[str, Any]]


def loopback_config(data_dir: Path, name: str, *extra: Sections | None) -> Config:
    """An agent on 127.0.0.1 with an ephemeral port, no mDNS, BLE or authority, small
    chunks; each of *extra* (config sections) is laid over it in turn."""
    raw: dict[str, dict[str, Any]] = {
        "node": {"name": name, "data_dir": str(data_dir)},
        "lan": {"listen": "127.0.0.1", "port": 0, "mdns": False, "heartbeat_interval": 0.5,
                "peer_timeout": 30.0, "connect_timeout": 5.0},
        "ble": {"enabled": False},
        "authority": {"enabled": False},
        "store": {"avg_chunk_size": AVG},
        "dashboard": {"port": 0},  # any free port: never the default a real agent uses
    }
    for layer in extra:
        for section, values in (layer or {}).items():
            raw.setdefault(section, {}).update(values)
    return config_from_dict(raw)


@contextlib.asynccontextmanager
async def nodes(*names: str, every: Sections | None = None,
                config: Mapping[str, Sections] | None = None,
                prefix: str = "nodes-") -> AsyncIterator[dict[str, Node]]:
    """Running Nodes by name. *every*: config sections for all of them; *config*: more
    sections per node name."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    running: dict[str, tuple[Node, asyncio.Future[None]]] = {}
    try:
        for name in names:
            node = Node(loopback_config(base / name, name, every, (config or {}).get(name)))
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


def pair(*group: Node) -> None:
    """What completed numeric-comparison pairings leave in the trust stores: every node of
    *group* paired with every other."""
    for me in group:
        for other in group:
            if other is not me:
                o = other.identity
                me.trust.add(o.device_id, o.public_key, other.cfg.node.name,
                             signing_key=o.signing_public)


async def connect(x: Node, y: Node) -> PeerConnection:
    """A direct LAN session from *x* to *y*."""
    assert y.connections.lan_port is not None
    return await x.connections.connect(("127.0.0.1", y.connections.lan_port))
