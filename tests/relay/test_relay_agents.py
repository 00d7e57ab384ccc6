"""Multi-hop reach with real agents in one process: A reaches B through paired relays.

Every agent is a real Node on loopback; only direct sessions that the test opens exist, so
a relayed session is the only way A can reach B.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from relay_helpers import connect, ident, nodes, pair

from agent.errors import ErrorKind
from agent.peer import wire
from agent.peer.connection import PeerGone, RemoteError
from agent.relay.service import NoRoute, RelayRefused, RelayUntrusted
from tests.waiting import wait_until


def _publish(node, tmp_path: Path, name: str, size: int, public: bool = False) -> bytes:
    data = os.urandom(size)
    src = tmp_path / name
    src.write_bytes(data)
    node.store.publish_file(src, signer=node.identity, public=public)
    return data


def _held(node, tmp_path: Path, name: str) -> bytes:
    rec = node.store.find(name)
    out = tmp_path / f"out-{name}"
    node.store.export(rec.manifest, out)
    return out.read_bytes()


async def test_fetch_through_one_relay_sees_only_ciphertext(tmp_path: Path) -> None:
    async with nodes("a", "r", "b") as n:
        a, r, b = n["a"], n["r"], n["b"]
        pair(a, r), pair(r, b), pair(a, b)
        await connect(a, r)
        await connect(r, b)
        data = _publish(b, tmp_path, "plan-7f3.bin", 600 * 1024)
        seen: list[bytes] = []
        forward = r.relay.on_frame

        def record(conn, frame):  # everything the relay is handed to forward
            seen.append(bytes(frame.data))
            forward(conn, frame)

        r.router._frames = record
        s = await a.relay.open(ident(b), via=ident(r))
        assert s.transport == "relay" and s.peer_id == ident(b)
        result = await a.fetcher.fetch("plan-7f3.bin")
        assert result["version"] == 1
        assert _held(a, tmp_path, "plan-7f3.bin") == data
        # the target authenticated A itself (not the relay) and applied its own trust
        back = [c for c in b.connections.sessions() if c.transport == "relay"]
        assert [c.peer_id for c in back] == [ident(a)]
        assert b.trust.is_trusted(back[0].peer_id)
        # the relay saw only ciphertext: no piece of the resource, nor its name
        blob = b"".join(seen)
        assert len(blob) > len(data)
        for off in range(0, len(data) - 64, 37 * 1024):
            assert data[off:off + 64] not in blob
        assert b"plan-7f3" not in blob
        # relayed bytes are counted in the relay class, and shown
        stats = r.relay.stats()
        assert stats["forwarded_bytes"] >= len(data)
        assert r.gate.scheduler.released_bytes["relay"] >= len(data)
        status = await r.commands.status({}, None)
        assert status["relay"]["forwarding"] == 1
        peers = await a.commands.peers({}, None)
        row = next(p for p in peers if p["peer_id"] == ident(b).hex())
        assert "relay" in row["sources"] and row["connected"]
