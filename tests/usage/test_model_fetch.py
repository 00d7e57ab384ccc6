"""The fetch path refuses a version over the caller's size bound before any chunk moves
(how the model service keeps an oversize model off the device)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_fetcher import FakeConn

from agent.config import TransferConfig
from agent.security.identity import Identity
from agent.store import ContentStore
from agent.transfer.service import FetchFailed, FetchService

pytestmark = pytest.mark.timeout(60)
PUBLISHER = Identity.generate()


class Conns:
    device_id = b"m" * 32

    def __init__(self, *conns: FakeConn) -> None:
        self.conns = list(conns)

    def live_connections(self) -> list[FakeConn]:
        return self.conns


async def test_a_fetch_over_max_size_is_refused_before_any_chunk(tmp_path: Path) -> None:
    src = ContentStore(tmp_path / "src", avg_chunk_size=16 * 1024)
    dst = ContentStore(tmp_path / "dst", avg_chunk_size=16 * 1024)
    try:
        f = tmp_path / "model.bin"
        f.write_bytes(os.urandom(40 * 1024))
        m = src.publish_file(f, name=".shoal.model.gru", public=True, signer=PUBLISHER)
        service = FetchService(dst, Conns(FakeConn("a", src)), TransferConfig(),  # type: ignore[arg-type]
                               connect_timeout=1.0, default_port=1)
        with pytest.raises(FetchFailed, match="over the 32768 allowed"):
            await service.fetch(m.manifest_hash, max_size=32 * 1024)
        assert dst.resources() == [] and dst.usage()[0] == 0
        await service.fetch(m.manifest_hash, max_size=64 * 1024)
        assert dst.find(m.resource_id).size == 40 * 1024
    finally:
        src.close()
        dst.close()
