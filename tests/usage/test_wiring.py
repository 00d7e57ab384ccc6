"""The fetch and serve paths report every request through the AccessRecorder port."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_fetcher import FakeConn

from agent.config import TransferConfig
from agent.peer import wire
from agent.security.identity import Identity
from agent.store import ContentStore
from agent.transfer.server import ChunkServer, NoSuchResource
from agent.transfer.service import FetchService

pytestmark = pytest.mark.timeout(60)
PUBLISHER = Identity.generate()
ME = b"m" * 32


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[bytes, str, int, bool, str]] = []

    def record_access(self, requester: bytes, resource_id: str, size: int, *, hit: bool,
                      source: str) -> None:
        self.calls.append((requester, resource_id, size, hit, source))


class Conns:
    device_id = ME

    def __init__(self, *conns: FakeConn) -> None:
        self.conns = list(conns)

    def live_connections(self) -> list[FakeConn]:
        return self.conns


class Peer:
    peer_id = b"p" * 32
    transport = "lan"
    name = "peer"


class Trust:
    def is_trusted(self, device_id: bytes) -> bool:
        return device_id == Peer.peer_id


@pytest.fixture
def source(tmp_path: Path):
    src = ContentStore(tmp_path / "src", avg_chunk_size=16 * 1024)
    f = tmp_path / "data.bin"
    f.write_bytes(os.urandom(100 * 1024))
    m = src.publish_file(f, name="data.bin", public=True, signer=PUBLISHER)
    yield src, m
    src.close()


async def test_the_chunk_server_records_each_manifest_it_serves(source) -> None:
    src, m = source
    rec = Recorder()
    server = ChunkServer(src, Trust(), None, compress=False, access=rec)  # type: ignore[arg-type]
    await server.handlers()["manifest"](Peer(), wire.Request(1, "manifest",  # type: ignore[arg-type]
                                                            {"resource": "data.bin"}))
    assert rec.calls == [(Peer.peer_id, m.resource_id, m.size, True, "local")]
    with pytest.raises(NoSuchResource):
        await server.handlers()["manifest"](Peer(), wire.Request(2, "manifest",  # type: ignore[arg-type]
                                                                {"resource": "nope"}))
    assert len(rec.calls) == 1  # a refused lookup names no resource: not logged
    for i, why in enumerate(("prefetch", "mirror", "check")):  # not a use by the requester
        await server.handlers()["manifest"](Peer(), wire.Request(  # type: ignore[arg-type]
            3 + i, "manifest", {"resource": "data.bin", "c": why}))
    assert len(rec.calls) == 1


async def test_a_fetch_records_a_miss_served_by_the_peer_then_a_local_hit(tmp_path, source):
    src, m = source
    dst = ContentStore(tmp_path / "dst", avg_chunk_size=16 * 1024)
    rec = Recorder()
    peer = FakeConn("a", src)
    service = FetchService(dst, Conns(peer), TransferConfig(),  # type: ignore[arg-type]
                           connect_timeout=1.0, default_port=1, access=rec)
    await service.fetch(m.manifest_hash)
    await service.fetch(m.resource_id)  # held now
    assert rec.calls == [(ME, m.resource_id, m.size, False, peer.peer_id.hex()[:16]),
                         (ME, m.resource_id, m.size, True, "local")]
    dst.close()
