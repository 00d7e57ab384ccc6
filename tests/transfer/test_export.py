"""FetchService export (``fetch --stream``): which chunks are hashed again on the way out.

Chunks the fetch itself received, hashed and wrote are read back without a second BLAKE3;
chunks that were already held come from the disk's past and are verified.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_fetcher import FakeConn

from agent.config import TransferConfig
from agent.security.identity import Identity
from agent.store import ContentStore, Manifest, QuotaExceeded
from agent.transfer.fetcher import Fetch
from agent.transfer.service import FetchService

pytestmark = pytest.mark.timeout(60)

PUBLISHER = Identity.generate()  # signs every test resource


class Conns:
    def __init__(self, *conns: FakeConn) -> None:
        self.conns = list(conns)

    def live_connections(self) -> list[FakeConn]:
        return self.conns


class Sink:
    def __init__(self) -> None:
        self.manifest: Manifest | None = None
        self.chunks: list[bytes] = []

    async def start(self, manifest: Manifest) -> None:
        self.manifest = manifest

    async def data(self, chunk: bytes) -> None:
        self.chunks.append(bytes(chunk))


@pytest.fixture
def source(tmp_path: Path):
    src = ContentStore(tmp_path / "src", avg_chunk_size=16 * 1024)
    f = tmp_path / "data.bin"
    f.write_bytes(os.urandom(300 * 1024))
    m = src.publish_file(f, name="data.bin", public=True, signer=PUBLISHER)  # no pairing here
    yield src, m, f.read_bytes()
    src.close()


def spy_verify(store: ContentStore, monkeypatch: pytest.MonkeyPatch) -> dict[bytes, bool]:
    seen: dict[bytes, bool] = {}
    real = store.get_chunk

    def get_chunk(cid: bytes, *, verify: bool = True) -> bytes:
        seen[cid] = verify
        return real(cid, verify=verify)

    monkeypatch.setattr(store, "get_chunk", get_chunk)
    return seen


async def test_export_after_fetch_rehashes_only_chunks_it_did_not_just_store(
        tmp_path, source, monkeypatch):
    src, m, data = source
    dst = ContentStore(tmp_path / "dst", avg_chunk_size=16 * 1024)
    early = {c.chunk_id for c in m.chunks[:3]}
    for cid in early:  # held before the fetch (a resumed fetch)
        dst.put_chunk(cid, src.get_chunk(cid))
    seen = spy_verify(dst, monkeypatch)
    service = FetchService(dst, Conns(FakeConn("a", src)), TransferConfig(),
                           connect_timeout=1.0, default_port=1)
    sink = Sink()
    result = await service.fetch(m.manifest_hash, export=sink)
    assert result["size"] == m.size
    assert sink.manifest == m and b"".join(sink.chunks) == data
    assert {cid for cid, v in seen.items() if v} == early
    assert {cid for cid, v in seen.items() if not v} == {c.chunk_id for c in m.chunks} - early
    dst.close()


async def test_export_of_an_already_held_resource_verifies_every_chunk(
        tmp_path, source, monkeypatch):
    src, _m, data = source
    seen = spy_verify(src, monkeypatch)
    service = FetchService(src, Conns(), TransferConfig(), connect_timeout=1.0, default_port=1)
    sink = Sink()
    result = await service.fetch("data.bin", export=sink)
    assert result["already_held"] is True
    assert b"".join(sink.chunks) == data
    assert seen and all(seen.values())


async def test_fetch_reports_exactly_the_chunks_it_stored(tmp_path, source):
    src, m, _ = source
    dst = ContentStore(tmp_path / "dst", avg_chunk_size=16 * 1024)
    first = m.chunks[0].chunk_id
    dst.put_chunk(first, src.get_chunk(first))
    result = await Fetch(dst, m, [FakeConn("a", src)], request_timeout=2.0).run()
    assert result.stored == {c.chunk_id for c in m.chunks} - {first}
    dst.close()


async def test_a_full_store_stops_the_fetch_with_the_quota_error_itself(tmp_path, source):
    src, m, _ = source
    dst = ContentStore(tmp_path / "dst", avg_chunk_size=16 * 1024, quota_bytes=64 * 1024)
    with pytest.raises(QuotaExceeded):
        await Fetch(dst, m, [FakeConn("a", src), FakeConn("b", src)],
                    request_timeout=2.0).run()
    dst.close()
