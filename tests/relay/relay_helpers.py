"""In-process agents for the relay tests: real Nodes on loopback, no mDNS, paired by hand."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from agent.node import Node
from tests.integration import inprocess
from tests.integration.inprocess import AVG, connect, pair

__all__ = ["AVG", "EVERY", "connect", "ident", "nodes", "pair"]

# circuits are counted exactly here: the DHT's upkeep would open relayed sessions too
EVERY = {"prefetch": {"enabled": False}, "dht": {"enabled": False}}


@contextlib.asynccontextmanager
async def nodes(*names: str, config: dict[str, dict[str, Any]] | None = None
                ) -> AsyncIterator[dict[str, Node]]:
    """Running Nodes by name; *config*: extra config sections per node name."""
    async with inprocess.nodes(*names, every=EVERY, config=config, prefix="relay-") as n:
        yield n


def ident(n: Node) -> bytes:
    return n.identity.device_id
